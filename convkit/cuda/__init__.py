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
    """Runs _ops on CuPy arrays (current device, current stream; the backend
    functions below make the inputs' device current first)."""

    def __init__(self):
        import cupy
        self.cp = cupy

    def empty(self, shape, dtype):
        return self.cp.empty(shape, dtype=dtype)

    def full(self, shape, value, dtype):
        # A NumPy scalar of the target dtype: a Python int such as 2**64 - 1
        # does not convert to the int64 CuPy uses for Python ints.
        return self.cp.full(shape, np.dtype(dtype).type(value), dtype=dtype)

    def launch(self, source, kernel, dtype, grid, block, args):
        # RawKernel launches on CuPy's current stream of the current device.
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


def _on_device(fn, *named):
    """Check the arrays of a backend call and return a context manager that
    makes their device current (outputs are allocated and kernels launched
    there, on that device's current stream).

    ``named``: ``(name, array, expected shape, expected dtype or None)``;
    an array of None is skipped. The kernels read C-contiguous arrays of
    exactly the geometry's shapes, so a direct call with anything else raises
    instead of reading or writing out of bounds.
    """
    import cupy

    device = None
    first = None
    for name, a, shape, dtype in named:
        if a is None:
            continue
        if not isinstance(a, cupy.ndarray):
            raise TypeError(f"convkit.cuda.{fn}: {name} must be a CuPy array, got {type(a).__name__}")
        if tuple(a.shape) != tuple(shape):
            raise ValueError(f"convkit.cuda.{fn}: {name} has shape {tuple(a.shape)}, the geometry needs "
                             f"{tuple(shape)}")
        if dtype is None:
            _loader.dtype_name(a.dtype)  # TypeError naming the accepted dtypes
        elif a.dtype != np.dtype(dtype):
            raise TypeError(f"convkit.cuda.{fn}: {name} has dtype {a.dtype}, expected {np.dtype(dtype)}")
        if not a.flags.c_contiguous:
            raise ValueError(f"convkit.cuda.{fn}: {name} must be C-contiguous")
        dev = a.device.id
        if device is None:
            device, first = dev, name
        elif dev != device:
            raise ValueError(f"convkit.cuda.{fn}: {name} is on device {dev} but {first} is on device {device}; "
                             "move all arrays of a call to one device")
    return cupy.cuda.Device(device)


# ------------------------------------------------------------ convolution ---

def conv2d_forward(g, x, w, bias=None):
    with _on_device("conv2d_forward", ("x", x, g.x_shape, None), ("w", w, g.w_shape, x.dtype),
                    ("bias", bias, (g.out_channels,), x.dtype)):
        return _ops.conv2d_forward(_runtime(), g, x, w, bias)


def conv2d_backward_data(g, grad_y, w):
    with _on_device("conv2d_backward_data", ("grad_y", grad_y, g.y_shape, None),
                    ("w", w, g.w_shape, grad_y.dtype)):
        return _ops.conv2d_backward_data(_runtime(), g, grad_y, w)


def conv2d_backward_weight(g, grad_y, x):
    with _on_device("conv2d_backward_weight", ("grad_y", grad_y, g.y_shape, None),
                    ("x", x, g.x_shape, grad_y.dtype)):
        return _ops.conv2d_backward_weight(_runtime(), g, grad_y, x)


def conv2d_backward_bias(g, grad_y):
    with _on_device("conv2d_backward_bias", ("grad_y", grad_y, g.y_shape, None)):
        return _ops.conv2d_backward_bias(_runtime(), g, grad_y)


# ---------------------------------------------------------------- pooling ---

def max_pool2d_forward(g, x, with_indices):
    with _on_device("max_pool2d_forward", ("x", x, g.x_shape, None)):
        return _ops.max_pool2d_forward(_runtime(), g, x, with_indices)


def max_pool2d_backward(g, grad_y, indices):
    with _on_device("max_pool2d_backward", ("grad_y", grad_y, g.y_shape, None),
                    ("indices", indices, g.y_shape, np.int64)):
        return _ops.max_pool2d_backward(_runtime(), g, grad_y, indices)


def avg_pool2d_forward(g, x, count_include_pad, divisor):
    with _on_device("avg_pool2d_forward", ("x", x, g.x_shape, None)):
        return _ops.avg_pool2d_forward(_runtime(), g, x, count_include_pad, divisor)


def avg_pool2d_backward(g, grad_y, count_include_pad, divisor):
    with _on_device("avg_pool2d_backward", ("grad_y", grad_y, g.y_shape, None)):
        return _ops.avg_pool2d_backward(_runtime(), g, grad_y, count_include_pad, divisor)


def lp_pool2d_forward(g, x, norm_type):
    with _on_device("lp_pool2d_forward", ("x", x, g.x_shape, None)):
        return _ops.lp_pool2d_forward(_runtime(), g, x, norm_type)


def lp_pool2d_backward(g, grad_y, x, norm_type):
    with _on_device("lp_pool2d_backward", ("grad_y", grad_y, g.y_shape, None),
                    ("x", x, g.x_shape, grad_y.dtype)):
        return _ops.lp_pool2d_backward(_runtime(), g, grad_y, x, norm_type)


def adaptive_avg_pool2d_forward(g, x):
    with _on_device("adaptive_avg_pool2d_forward", ("x", x, g.x_shape, None)):
        return _ops.adaptive_avg_pool2d_forward(_runtime(), g, x)


def adaptive_avg_pool2d_backward(g, grad_y):
    with _on_device("adaptive_avg_pool2d_backward", ("grad_y", grad_y, g.y_shape, None)):
        return _ops.adaptive_avg_pool2d_backward(_runtime(), g, grad_y)


def adaptive_max_pool2d_forward(g, x, with_indices):
    with _on_device("adaptive_max_pool2d_forward", ("x", x, g.x_shape, None)):
        return _ops.adaptive_max_pool2d_forward(_runtime(), g, x, with_indices)


def adaptive_max_pool2d_backward(g, grad_y, indices):
    with _on_device("adaptive_max_pool2d_backward", ("grad_y", grad_y, g.y_shape, None),
                    ("indices", indices, g.y_shape, np.int64)):
        return _ops.adaptive_max_pool2d_backward(_runtime(), g, grad_y, indices)
