"""``convkit train-mnist``: train the two classic MNIST networks end to end on
convkit.nn (same code as ``examples/mnist.py``).

Network A: conv3x3(1->8, pad 1) - ReLU - maxpool 2 - conv3x3(8->16, pad 1) -
ReLU - maxpool 2 - flatten - linear(784->10); SGD, lr 0.05, batch 128.
Network B: conv5x5(1->32, 'same') - ReLU - maxpool 2 - conv5x5(32->64, 'same')
- ReLU - maxpool 2 - flatten - linear(3136->1024) - ReLU - linear(1024->10);
Adam, lr 1e-4, batch 64.

Data: MNIST from its IDX files (``--data DIR``: train-images-idx3-ubyte,
train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each
optionally gzipped; nothing is downloaded), or, without ``--data``,
scikit-learn's 8x8 digits upsampled to 28x28 (a fixed train/test split).
``--compare-torch`` trains the same network in PyTorch from the same initial
weights on the same batches and compares the time per epoch.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

NETS = ("A", "B")
OPTIMIZERS = ("sgd", "adam")
# Per-network defaults of the classic recipes; every one can be overridden.
DEFAULTS = {
    "A": {"optimizer": "sgd", "lr": 0.05, "batch_size": 128},
    "B": {"optimizer": "adam", "lr": 1e-4, "batch_size": 64},
}
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DIGITS_TEST_SIZE = 360  # of sklearn's 1797 digits: a fixed 20% test split
DIGITS_SPLIT_SEED = 0   # the split does not change with --seed

# --------------------------------------------------------------------------- #
# IDX files
# --------------------------------------------------------------------------- #

# IDX type codes (third magic byte) -> big-endian NumPy dtype.
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: str) -> bytes:
    """The file's bytes, gunzipped when it is gzip data (by content, not by name)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as exc:  # BadGzipFile is an OSError; a cut stream is EOFError
        raise ValueError(f"read_idx: {path}: corrupt or truncated gzip data ({exc})") from None


def read_idx(path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into an array of its native
    byte order: magic ``00 00 <type> <ndim>``, ``ndim`` big-endian uint32
    dimensions, then exactly ``prod(dims)`` items. Any deviation (wrong magic,
    unknown type code, too few or too many bytes) is a ValueError naming the
    file."""
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"read_idx: {path}: too short for an IDX header ({len(data)} bytes)")
    zero0, zero1, code, ndim = data[:4]
    if zero0 != 0 or zero1 != 0:
        raise ValueError(f"read_idx: {path}: not an IDX file (magic bytes {data[:4].hex()}, "
                         f"expected 0000<type><ndim>)")
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise ValueError(f"read_idx: {path}: unknown IDX type code 0x{code:02x} (known: {known})")
    if ndim == 0:
        raise ValueError(f"read_idx: {path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"read_idx: {path}: truncated header ({len(data)} bytes, {ndim} dimensions "
                         f"need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=object)) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise ValueError(f"read_idx: {path}: {what}: dimensions {dims} of {dtype.name} need "
                         f"{expected} data bytes, the file has {got}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    # Native byte order and a writeable array that owns its memory.
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _find_idx(directory: str, name: str) -> str:
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"train-mnist: {os.path.join(directory, name)}[.gz] not found "
                            f"(--data needs the four MNIST IDX files: {', '.join(MNIST_FILES.values())})")


def _images_and_labels(images_path: str, labels_path: str):
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"load_mnist: {images_path}: expected uint8 images of shape (N, rows, cols), "
                         f"got {images.dtype} of shape {images.shape}")
    if images.shape[1:] != (28, 28):
        raise ValueError(f"load_mnist: {images_path}: expected 28x28 images, got "
                         f"{images.shape[1]}x{images.shape[2]}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"load_mnist: {labels_path}: expected uint8 labels of shape (N,), "
                         f"got {labels.dtype} of shape {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"load_mnist: {labels_path} has {len(labels)} labels but {images_path} has "
                         f"{len(images)} images")
    if len(labels) and labels.max() > 9:
        raise ValueError(f"load_mnist: {labels_path}: labels must lie in 0..9, found {labels.max()}")
    x = (images.astype(np.float32) / np.float32(255.0))[:, None]
    return x, labels.astype(np.int64)


def load_mnist(directory) -> Dict[str, np.ndarray]:
    """MNIST from ``directory``: float32 images (N, 1, 28, 28) in [0, 1] and
    int64 labels, as ``{"x_train", "y_train", "x_test", "y_test"}``."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"train-mnist: --data {directory}: not a directory")
    paths = {key: _find_idx(directory, name) for key, name in MNIST_FILES.items()}
    x_train, y_train = _images_and_labels(paths["train_images"], paths["train_labels"])
    x_test, y_test = _images_and_labels(paths["test_images"], paths["test_labels"])
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def load_digits() -> Dict[str, np.ndarray]:
    """scikit-learn's 8x8 digits as 28x28 images so that the MNIST networks
    apply: scaled to [0, 1], each pixel repeated 3x3 (24x24) and padded by 2
    on every side (MNIST also centres its digits in a blank border). A fixed
    split: 360 test images, 1437 training images."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise RuntimeError("train-mnist: without --data the digits set of scikit-learn is used, and "
                           "scikit-learn is not installed (pip install scikit-learn), or pass --data DIR "
                           "with the MNIST IDX files") from None
    digits = sk_load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    x = np.repeat(np.repeat(x, 3, axis=1), 3, axis=2)
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(x))
    test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


# --------------------------------------------------------------------------- #
# networks
# --------------------------------------------------------------------------- #

def build_net(name: str, nn=None):
    """Network ``name`` ('A' or 'B') built from ``nn``: convkit.nn by
    default, or torch.nn (the layers and state_dict keys are the same)."""
    if name not in NETS:
        raise ValueError(f"build_net: name must be one of {NETS}, got {name!r}")
    if nn is None:
        import convkit.nn as nn
    if name == "A":
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, 10))


def _batches(n: int, batch_size: int, epochs: int, seed: int) -> List[List[np.ndarray]]:
    """The index batches of every epoch (a fresh permutation per epoch), drawn
    once so that convkit and torch see exactly the same batches."""
    rng = np.random.default_rng(seed)
    plan = []
    for _ in range(epochs):
        perm = rng.permutation(n)
        plan.append([perm[i:i + batch_size] for i in range(0, n, batch_size)])
    return plan


class Progress:
    """One line on stderr, redrawn at most 10 times a second."""

    def __init__(self, enabled: bool, prefix: str, total: int, width: int = 24):
        self.enabled, self.prefix, self.total, self.width = enabled, prefix, max(total, 1), width
        self.start = self.last = time.perf_counter()

    def update(self, done: int, loss: float, acc: float) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < self.total and now - self.last < 0.1:
            return
        self.last = now
        filled = self.width * done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        sys.stderr.write(f"\r{self.prefix} [{bar}] {done}/{self.total} loss {loss:.4f} acc {acc:.4f} "
                         f"{now - self.start:5.1f}s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


class _ConvkitRunner:
    """One training step / evaluation of a convkit.nn network."""

    name = "convkit"

    def __init__(self, net_name: str, optimizer: str, lr: float, momentum: float):
        import convkit.nn as nn
        self.net = build_net(net_name)
        self.loss_fn = nn.CrossEntropyLoss()
        if optimizer == "sgd":
            self.opt = nn.SGD(self.net.parameters(), lr=lr, momentum=momentum)
        else:
            self.opt = nn.Adam(self.net.parameters(), lr=lr)

    def step(self, x, y):
        """Returns (mean loss, number correct) of the batch before the update."""
        self.net.train()
        self.opt.zero_grad()
        logits = self.net(x)
        loss = self.loss_fn(logits, y)
        self.net.backward(self.loss_fn.backward())
        self.opt.step()
        return loss, int((logits.argmax(axis=1) == y).sum())

    def predict(self, x):
        self.net.eval()
        return self.net(x).argmax(axis=1)


class _TorchRunner:
    """The same network in PyTorch, starting from the convkit network's weights."""

    name = "torch"

    def __init__(self, net_name: str, optimizer: str, lr: float, momentum: float, init_state):
        import torch
        self.torch = torch
        self.net = build_net(net_name, torch.nn)
        self.net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in init_state.items()})
        self.loss_fn = torch.nn.CrossEntropyLoss()
        if optimizer == "sgd":
            self.opt = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=momentum)
        else:
            self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)

    def step(self, x, y):
        torch = self.torch
        self.net.train()
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        self.opt.zero_grad()
        logits = self.net(x)
        loss = self.loss_fn(logits, y)
        loss.backward()
        self.opt.step()
        return loss.item(), int((logits.argmax(dim=1) == y).sum())

    def predict(self, x):
        self.net.eval()
        with self.torch.no_grad():
            return self.net(self.torch.from_numpy(x)).argmax(dim=1).numpy()


def _accuracy(runner, x, y, batch_size: int = 1000) -> float:
    if len(x) == 0:
        return float("nan")
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((runner.predict(x[i:i + batch_size]) == y[i:i + batch_size]).sum())
    return correct / len(x)


def _train_epoch(runner, data, batches, progress: Progress) -> dict:
    """One epoch; the seconds count the training steps only (not the test pass)."""
    x, y = data["x_train"], data["y_train"]
    loss_sum, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    for i, idx in enumerate(batches):
        loss, ok = runner.step(x[idx], y[idx])
        loss_sum += loss * len(idx)
        correct += ok
        seen += len(idx)
        progress.update(i + 1, loss_sum / seen, correct / seen)
    seconds = time.perf_counter() - start
    progress.close()
    return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
            "test_acc": _accuracy(runner, data["x_test"], data["y_test"]), "seconds": seconds}


# --------------------------------------------------------------------------- #
# command line
# --------------------------------------------------------------------------- #

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", choices=NETS, default="A", help="network A (default) or B")
    p.add_argument("--data", metavar="DIR",
                   help="directory with the MNIST IDX files (optionally .gz); default: "
                        "scikit-learn's 8x8 digits upsampled to 28x28")
    p.add_argument("--epochs", type=int, default=10, help="epochs (default 10)")
    p.add_argument("--batch-size", type=int, help="batch size (default: A 128, B 64)")
    p.add_argument("--lr", type=float, help="learning rate (default: A 0.05, B 1e-4)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="default: A sgd, B adam")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and batch order")
    p.add_argument("--limit", type=int, metavar="N",
                   help="use at most N training and N test images (a random subset)")
    p.add_argument("--threads", type=int, help="threads of convkit (and torch); default: convkit's")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", metavar="FILE", help="write the per-epoch numbers as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot the learning curves (needs matplotlib)")
    p.add_argument("--compare-torch", action="store_true",
                   help="also train the same network in PyTorch (same initial weights and batches) "
                        "and compare the time per epoch")


def _check_args(args) -> None:
    fn = "train-mnist"
    for name in ("epochs", "batch_size", "limit", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"{fn}: --{name.replace('_', '-')} must be >= 1, got {value}")
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"{fn}: --lr must be > 0, got {args.lr}")
    if args.momentum < 0:
        raise ValueError(f"{fn}: --momentum must be >= 0, got {args.momentum}")
    optimizer = args.optimizer or DEFAULTS[args.net]["optimizer"]
    if args.momentum and optimizer != "sgd":
        raise ValueError(f"{fn}: --momentum applies to --optimizer sgd only (network {args.net} "
                         f"uses {optimizer})")


def _subsample(data, limit: Optional[int], seed: int):
    if limit is None:
        return data
    rng = np.random.default_rng(seed)
    out = {}
    for split in ("train", "test"):
        x, y = data[f"x_{split}"], data[f"y_{split}"]
        keep = np.sort(rng.permutation(len(x))[:limit])
        out[f"x_{split}"], out[f"y_{split}"] = x[keep], y[keep]
    return out


def train(args, out=None) -> dict:
    """Train as ``args`` (from :func:`add_arguments`) says, print the report to
    ``out`` and return the results (the ``--json`` document)."""
    import convkit
    import convkit.nn as nn

    out = sys.stdout if out is None else out
    _check_args(args)
    defaults = DEFAULTS[args.net]
    optimizer = args.optimizer or defaults["optimizer"]
    lr = args.lr if args.lr is not None else defaults["lr"]
    batch_size = args.batch_size or defaults["batch_size"]
    torch = None
    if args.compare_torch:
        try:
            import torch
        except ImportError:
            raise RuntimeError("train-mnist: --compare-torch needs PyTorch (pip install torch)") from None
    if args.plot:
        try:
            import matplotlib  # noqa: F401  (checked before training, not after)
        except ImportError:
            raise RuntimeError("train-mnist: --plot needs matplotlib (pip install matplotlib)") from None

    if args.threads:
        convkit.set_num_threads(args.threads)
    threads = convkit.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)  # compare like with like

    data = load_mnist(args.data) if args.data else load_digits()
    dataset = "mnist" if args.data else "digits"
    data = _subsample(data, args.limit, args.seed)
    n_train, n_test = len(data["x_train"]), len(data["x_test"])
    if n_train == 0:
        raise ValueError("train-mnist: the training set is empty")

    nn.manual_seed(args.seed)
    runners = [_ConvkitRunner(args.net, optimizer, lr, args.momentum)]
    if torch is not None:
        runners.append(_TorchRunner(args.net, optimizer, lr, args.momentum, runners[0].net.state_dict()))
    plan = _batches(n_train, batch_size, args.epochs, args.seed)

    opt_desc = f"{optimizer} lr {lr:g}" + (f" momentum {args.momentum:g}" if args.momentum else "")
    print(f"network {args.net} on {dataset}: {n_train} training / {n_test} test images, "
          f"{opt_desc}, batch {batch_size}, {args.epochs} epochs, {threads} threads", file=out)
    history = {r.name: [] for r in runners}
    show = not args.no_progress and sys.stderr.isatty()
    for epoch in range(args.epochs):
        # Alternate which framework goes first, so that neither always runs on
        # a machine warmed (or throttled) by the other.
        order = runners if epoch % 2 == 0 else runners[::-1]
        for runner in order:
            prefix = f"epoch {epoch + 1}/{args.epochs} {runner.name}"
            row = _train_epoch(runner, data, plan[epoch], Progress(show, prefix, len(plan[epoch])))
            row["epoch"] = epoch + 1
            history[runner.name].append(row)
        for runner in runners:
            row = history[runner.name][-1]
            label = f" {runner.name:>7}" if torch is not None else ""
            print(f"epoch {epoch + 1:3d}/{args.epochs}{label}  train loss {row['train_loss']:.4f}  "
                  f"acc {row['train_acc']:.4f}  test acc {row['test_acc']:.4f}  "
                  f"{row['seconds']:.2f} s/epoch", file=out)
        out.flush()

    result = {
        "net": args.net, "dataset": dataset, "optimizer": optimizer, "lr": lr, "momentum": args.momentum,
        "batch_size": batch_size, "epochs": args.epochs, "seed": args.seed, "threads": threads,
        "n_train": n_train, "n_test": n_test,
        "history": history["convkit"],
        "final_test_acc": history["convkit"][-1]["test_acc"],
    }
    print(f"final test accuracy: {result['final_test_acc']:.4f}", file=out)
    if torch is not None:
        ck = statistics.median(r["seconds"] for r in history["convkit"])
        tt = statistics.median(r["seconds"] for r in history["torch"])
        result["torch"] = {"version": torch.__version__, "history": history["torch"],
                           "final_test_acc": history["torch"][-1]["test_acc"]}
        result["median_seconds_per_epoch"] = {"convkit": ck, "torch": tt}
        result["speedup_vs_torch"] = tt / ck if ck > 0 else None
        print(f"torch final test accuracy: {result['torch']['final_test_acc']:.4f}", file=out)
        print(f"time per epoch (median): convkit {ck:.3f} s, torch {tt:.3f} s, "
              f"torch/convkit {tt / ck:.2f}x (>1: convkit is faster)", file=out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot:
        write_plot(args.plot, result)
    return result


def write_plot(path: str, result: dict) -> None:
    """Learning curves: training loss, and training and test accuracy, per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    curves = [("convkit", result["history"], "-")]
    if "torch" in result:
        curves.append(("torch", result["torch"]["history"], "--"))
    for name, hist, style in curves:
        epochs = [r["epoch"] for r in hist]
        ax_loss.plot(epochs, [r["train_loss"] for r in hist], style, marker="o", label=f"{name} train")
        ax_acc.plot(epochs, [r["train_acc"] for r in hist], style, marker="o", label=f"{name} train")
        ax_acc.plot(epochs, [r["test_acc"] for r in hist], style, marker="s", label=f"{name} test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"network {result['net']} on {result['dataset']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args) -> int:
    """Entry point of ``convkit train-mnist``: 0 on success, 2 on bad input."""
    try:
        train(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="convkit train-mnist", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
