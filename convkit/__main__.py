"""Command line: ``convkit <command>`` (or ``python -m convkit <command>``).

Commands:
  bench   time the kernels on a fixed suite of layers against PyTorch and NumPy
  info    print the build, the ISA path in use and the thread count
  train-mnist  train the classic MNIST networks on convkit.nn (optionally against PyTorch)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence


def _info(args) -> int:
    from . import bench

    info = bench.convkit_info()
    info.setdefault("cpu", bench.cpu_model())
    if args.json:
        print(json.dumps(info, indent=1, default=str))
    else:
        for key, value in info.items():
            if isinstance(value, (list, tuple)):
                value = ", ".join(str(v) for v in value)
            print(f"{key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convkit",
        description="convkit: native convolution and pooling kernels with the semantics of "
                    "torch.nn.functional.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from . import bench
    p = sub.add_parser(
        "bench", help="benchmark the kernels against PyTorch and the NumPy reference",
        description=bench.__doc__.split("\n\n")[1].replace("\n", " "))
    bench.add_arguments(p)
    p.set_defaults(func=bench.run)

    p = sub.add_parser("info", help="print version, ISA path, supported ISAs, threads")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_info)

    from . import mnist
    p = sub.add_parser(
        "train-mnist", help="train the classic MNIST networks A and B end to end on convkit.nn",
        description=mnist.__doc__.split("\n\n")[0].replace("\n", " "))
    mnist.add_arguments(p)
    p.set_defaults(func=mnist.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
