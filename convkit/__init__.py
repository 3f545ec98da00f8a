"""convkit: native convolution and pooling kernels with the semantics of
torch.nn.functional, forward and backward, for NumPy arrays (C++/OpenMP CPU
kernels)."""

from __future__ import annotations

import numbers
import os

from .functional import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_max_pool2d,
    adaptive_max_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    conv2d,
    conv2d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    global_avg_pool2d,
    global_avg_pool2d_backward,
    lp_pool2d,
    lp_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
)

from . import reference  # noqa: E402  (NumPy reference implementations, same signatures)

__version__ = "0.1.0"

__all__ = [
    "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "lp_pool2d", "lp_pool2d_backward", "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d", "adaptive_max_pool2d_backward", "global_avg_pool2d",
    "global_avg_pool2d_backward", "reference", "set_num_threads", "get_num_threads", "set_isa", "info",
    "__version__",
]


def _native():
    from . import _C
    return _C


def set_num_threads(n: int) -> None:
    """Number of OpenMP threads every kernel uses (default: OMP_NUM_THREADS or
    the number of cores). Results do not depend on it."""
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    _native().set_num_threads(int(n))


def get_num_threads() -> int:
    """Number of threads the kernels use."""
    return _native().get_num_threads()


def set_isa(isa: str) -> None:
    """Force the SIMD path: 'generic', 'avx2' or 'avx512' (no wider than the
    CPU supports). The environment variable CONVKIT_ISA sets it at import."""
    if not isinstance(isa, str):
        raise TypeError(f"set_isa: isa must be a str ('generic', 'avx2' or 'avx512'), got {isa!r}")
    _native().set_isa(isa)


def info() -> dict:
    """Build and run-time facts: version, SIMD path in use, threads."""
    C = _native()
    order = ["generic", "avx2", "avx512"]
    best = C.best_isa()
    return {
        "version": __version__,
        "isa": C.active_isa(),
        "supported_isas": order[: order.index(best) + 1],
        "num_threads": C.get_num_threads(),
        "openmp": bool(C.openmp),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
    }
