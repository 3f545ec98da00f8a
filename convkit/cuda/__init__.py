"""CUDA backend of convkit: NVRTC-compiled kernels (via CuPy) on CuPy arrays.

The backend functions have the names and signatures of convkit.cpu: they take
a geometry from convkit._params and C-contiguous 4-D CuPy arrays of one float
dtype (float16, float32 or float64; float16 accumulates in float32), allocate
their outputs with CuPy on the current device and launch on the current
stream. Indices are int64 flat offsets into each H*W plane.

``compile_all(arch)`` compiles every kernel source with NVRTC without a GPU
(and without a driver), for CI.
"""

from __future__ import annotations

import numpy as np

from . import _loader, _ops

__all__ = [
    "available", "compile_all",
    "conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight", "conv2d_backward_bias",
    "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
    "lp_pool2d_forward", "lp_pool2d_backward", "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d_forward", "adaptive_max_pool2d_backward",
]

DTYPES = ("float16", "float32", "float64")


def available() -> bool:
    """True when CuPy imports and at least one CUDA device is usable."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError (no driver / no device), ...
        return False


def compile_all(arch: str = "sm_90", dtypes=DTYPES) -> dict:
    """Compile every kernel source for every dtype with NVRTC for ``arch``
    (``sm_XX`` -> cubin, ``compute_XX`` -> PTX); no GPU needed.

    Returns ``{"arch", "ok", "sources": {file: {"kernels": [...],
    "dtypes": {dtype: {"ok", "log", "missing"}}}}}``, where ``missing`` lists
    kernels absent from the compiled binary. Raises ImportError without CuPy.
    """
    report = {"arch": arch, "ok": True, "sources": {}}
    for src in _loader.SOURCES:
        names = _loader.kernel_names(src)
        entry = {"kernels": names, "dtypes": {}}
        for dt in dtypes:
            ok, log, binary = _loader.compile_source(src, dt, arch)
            missing = [n for n in names if n.encode() not in binary] if ok else list(names)
            ok = ok and not missing
            entry["dtypes"][np.dtype(dt).name] = {"ok": ok, "log": log, "missing": missing}
            report["ok"] = report["ok"] and ok
        report["sources"][src] = entry
    return report


class _CupyRuntime:
    """Runs _ops on CuPy arrays (current device, current stream)."""

    def __init__(self):
        import cupy
        self.cp = cupy

    def empty(self, shape, dtype):
        return self.cp.empty(shape, dtype=dtype)

    def full(self, shape, value, dtype):
        return self.cp.full(shape, value, dtype=dtype)

    def launch(self, source, kernel, dtype, grid, block, args):
        _loader.get_kernel(source, kernel, dtype)(tuple(grid), tuple(block), args)

    def scalar(self, array, i):
        return int(array[int(i)].get())

    def cap_grid(self, grid):
        return grid


_rt = None


def _runtime():
    global _rt
    if _rt is None:
        _rt = _CupyRuntime()
    return _rt


# ------------------------------------------------------------ convolution ---

def conv2d_forward(g, x, w, bias=None):
    return _ops.conv2d_forward(_runtime(), g, x, w, bias)


def conv2d_backward_data(g, grad_y, w):
    return _ops.conv2d_backward_data(_runtime(), g, grad_y, w)


def conv2d_backward_weight(g, grad_y, x):
    return _ops.conv2d_backward_weight(_runtime(), g, grad_y, x)


def conv2d_backward_bias(g, grad_y):
    return _ops.conv2d_backward_bias(_runtime(), g, grad_y)


# ---------------------------------------------------------------- pooling ---

def max_pool2d_forward(g, x, with_indices):
    return _ops.max_pool2d_forward(_runtime(), g, x, with_indices)


def max_pool2d_backward(g, grad_y, indices):
    return _ops.max_pool2d_backward(_runtime(), g, grad_y, indices)


def avg_pool2d_forward(g, x, count_include_pad, divisor):
    return _ops.avg_pool2d_forward(_runtime(), g, x, count_include_pad, divisor)


def avg_pool2d_backward(g, grad_y, count_include_pad, divisor):
    return _ops.avg_pool2d_backward(_runtime(), g, grad_y, count_include_pad, divisor)


def lp_pool2d_forward(g, x, norm_type):
    return _ops.lp_pool2d_forward(_runtime(), g, x, norm_type)


def lp_pool2d_backward(g, grad_y, x, norm_type):
    return _ops.lp_pool2d_backward(_runtime(), g, grad_y, x, norm_type)


def adaptive_avg_pool2d_forward(g, x):
    return _ops.adaptive_avg_pool2d_forward(_runtime(), g, x)


def adaptive_avg_pool2d_backward(g, grad_y):
    return _ops.adaptive_avg_pool2d_backward(_runtime(), g, grad_y)


def adaptive_max_pool2d_forward(g, x, with_indices):
    return _ops.adaptive_max_pool2d_forward(_runtime(), g, x, with_indices)


def adaptive_max_pool2d_backward(g, grad_y, indices):
    return _ops.adaptive_max_pool2d_backward(_runtime(), g, grad_y, indices)
