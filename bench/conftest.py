"""pytest-benchmark suites of convkit (``pytest bench --benchmark-only``).

The layers come from :data:`convkit.bench.LAYERS` (the suite of ``convkit
bench``), each timed per pass for every implementation ('convkit', 'torch',
'numpy' = ``convkit.reference``) and grouped per layer and pass, so that
pytest-benchmark's table compares the three side by side.

Environment:
  CONVKIT_BENCH_FULL=1               full batches (default: the --quick batches)
  CONVKIT_BENCH_THREADS=N            threads for convkit and torch (default:
                                     convkit.get_num_threads())
  CONVKIT_BENCH_REFERENCE_LIMIT=S    skip the NumPy reference where one call
                                     would take more than S seconds (default 2)
"""

import functools
import os

import pytest

import convkit
from convkit import bench as ckbench

FULL = os.environ.get("CONVKIT_BENCH_FULL", "") not in ("", "0")
REFERENCE_LIMIT = float(os.environ.get("CONVKIT_BENCH_REFERENCE_LIMIT", "2"))


def batch_of(layer):
    return layer.batch if FULL else layer.quick_batch


@functools.lru_cache(maxsize=4)
def _case(name, pass_):
    layer = ckbench.layer_by_name(name)
    return ckbench.Case(layer, pass_, batch_of(layer))


@functools.lru_cache(maxsize=None)
def _reference_fits(name, pass_):
    layer = ckbench.layer_by_name(name)
    case = _case(name, pass_)
    return ckbench.reference_estimate(layer, pass_, batch_of(layer), case.work, REFERENCE_LIMIT)


@pytest.fixture(scope="session", autouse=True)
def _same_threads():
    threads = int(os.environ.get("CONVKIT_BENCH_THREADS", "0") or 0)
    if threads > 0:
        convkit.set_num_threads(threads)
    threads = convkit.get_num_threads()
    torch = ckbench._torch()
    if torch is not None:
        torch.set_num_threads(threads)
    return threads


@pytest.fixture
def bench_item(benchmark):
    """``bench_item(layer, pass_, impl)`` times one implementation of one item."""

    def run(layer, pass_, impl):
        benchmark.group = f"{layer.name} {pass_}"
        if impl == "torch" and ckbench._torch() is None:
            pytest.skip("torch is not installed (pip install torch==2.13.0)")
        case = _case(layer.name, pass_)
        benchmark.extra_info.update({
            "batch": case.batch, "geometry": layer.describe(), "flops": case.flops,
            "bytes": case.nbytes, "threads": convkit.get_num_threads(),
        })
        if impl == "numpy":
            fits, estimate = _reference_fits(layer.name, pass_)
            if not fits:
                pytest.skip(f"NumPy reference: ~{estimate:.1f} s per call "
                            f"(> CONVKIT_BENCH_REFERENCE_LIMIT={REFERENCE_LIMIT:g})")
            # Slow: a fixed, small number of rounds instead of calibration.
            benchmark.pedantic(case.reference_fn(), rounds=3, iterations=1, warmup_rounds=0)
            return
        benchmark(case.fn(impl))

    return run
