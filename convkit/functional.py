"""Public ops with the semantics of torch.nn.functional (NCHW).

Each op: picks the backend from the array types (or ``backend=``), checks
dtypes, gets its geometry from convkit._params (all shape logic lives there),
makes the inputs contiguous once, and calls the backend. Every check runs
before any kernel does.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np

from . import _params as P

BACKENDS = ("cpu", "cuda", "reference")


# --------------------------------------------------------------------------- #
# backend and array handling
# --------------------------------------------------------------------------- #

def _is_cupy(a) -> bool:
    module = type(a).__module__
    return module == "cupy" or module.startswith("cupy.")


class _Backend:
    """The backend of one call: its kernels (``impl``), its array module and
    the dtypes it accepts."""

    def __init__(self, name):
        self.name = name
        if name == "cuda":
            from . import cuda
            if not cuda.available():
                raise RuntimeError("convkit: the CUDA backend needs CuPy and an NVIDIA GPU "
                                   "(pip install 'convkit[cuda]'); pass NumPy arrays to run on the CPU")
            import cupy
            self.impl, self.xp, self.dtypes = cuda, cupy, P.FLOAT_DTYPES + (np.dtype(np.float16),)
        elif name == "cpu":
            from . import cpu  # fails here, clearly, if the extension is missing
            self.impl, self.xp, self.dtypes = cpu, np, P.FLOAT_DTYPES
        else:
            self.impl, self.xp, self.dtypes = None, np, P.FLOAT_DTYPES

    def float_arrays(self, fn, **named):
        return P.float_arrays(fn, asarray=self.xp.asarray, dtypes=self.dtypes, **named)

    def index_array(self, fn, indices):
        arr = self.xp.asarray(indices)
        if arr.dtype != np.int64:
            raise TypeError(f"{fn}: indices must be int64 (as returned with return_indices=True), got {arr.dtype}")
        return arr

    def contiguous(self, a, shape):
        """C-contiguous, aligned 4-D view/copy of ``a`` (unbatched inputs get N=1)."""
        if self.xp is not np:
            return self.xp.ascontiguousarray(a).reshape(shape)
        if type(a) is np.ndarray and a.flags.c_contiguous and a.flags.aligned:
            return a if a.shape == shape else a.reshape(shape)  # no copy to check
        _check_alloc("convkit", (shape, a.dtype))
        return np.require(a, requirements=("C", "A")).reshape(shape)


def _backend(fn, backend, *arrays) -> _Backend:
    if backend is None:
        # The common call, plain NumPy arrays on the default backend: no
        # per-array module checks (~2 us of a small call).
        be = _BACKEND_CACHE.get("cpu")
        if be is not None and all(type(a) is np.ndarray or a is None for a in arrays):
            return be
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"{fn}: backend must be one of {BACKENDS} or None, got {backend!r}")
    on_gpu = [_is_cupy(a) for a in arrays if a is not None]
    if any(on_gpu) and not all(on_gpu):
        raise TypeError(f"{fn}: arguments mix CuPy (GPU) and NumPy (CPU) arrays; move them to one device")
    if backend is None:
        backend = "cuda" if any(on_gpu) else "cpu"
    if any(on_gpu) and backend != "cuda":
        raise TypeError(f"{fn}: backend={backend!r} takes NumPy arrays, got CuPy arrays")
    if backend == "cuda" and on_gpu and not all(on_gpu):
        raise TypeError(f"{fn}: backend='cuda' takes CuPy arrays")
    if backend == "cuda" and not any(on_gpu):
        raise TypeError(f"{fn}: backend='cuda' takes CuPy arrays, got NumPy arrays (move them with cupy.asarray)")
    be = _BACKEND_CACHE.get(backend)
    if be is None:
        be = _BACKEND_CACHE[backend] = _Backend(backend)  # raises (and caches nothing) if unavailable
    return be


_BACKEND_CACHE = {}


def _physical_memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


_PHYSICAL_MEMORY = _physical_memory_bytes()


@functools.lru_cache(maxsize=1024)
def _nbytes(shape, dtype):
    return math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize


def _check_alloc(fn, *shapes_and_dtypes):
    """Refuse single host requests larger than physical memory: raising
    MemoryError beats being killed by the OOM killer halfway through a kernel."""
    if _PHYSICAL_MEMORY is None:
        return
    for shape, dtype in shapes_and_dtypes:
        try:
            nbytes = _nbytes(shape, dtype)  # memoised: shapes repeat from call to call
        except TypeError:  # an unhashable shape
            nbytes = _nbytes.__wrapped__(shape, dtype)
        if nbytes > _PHYSICAL_MEMORY:
            raise MemoryError(f"{fn}: an array of shape {tuple(shape)} ({nbytes / 2**30:.1f} GiB) does not "
                              f"fit in this machine's memory ({_PHYSICAL_MEMORY / 2**30:.1f} GiB)")


def _public(a, geometry):
    return a.reshape(geometry.public_shape(a.shape)) if geometry.unbatched else a


# --------------------------------------------------------------------------- #
# convolution
# --------------------------------------------------------------------------- #

def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None):
    """2-D convolution (cross-correlation) as torch.nn.functional.conv2d.

    ``padding`` may also be ``((top, bottom), (left, right))`` or one of
    ``'valid'``, ``'same'`` (stride 1) and ``'full'``.
    """
    fn = "conv2d"
    be = _backend(fn, backend, x, w, bias)
    if be.name == "reference":
        from . import reference
        return reference.conv2d(x, w, bias, stride, padding, dilation, groups)
    x, w, bias = be.float_arrays(fn, input=x, weight=w, bias=bias)
    g = P.conv2d_geometry(fn, x.shape, w.shape, None if bias is None else bias.shape,
                          stride, padding, dilation, groups)
    if be.xp is np:
        _check_alloc(fn, (g.y_shape, x.dtype))
    y = be.impl.conv2d_forward(g, be.contiguous(x, g.x_shape), be.contiguous(w, g.w_shape),
                              None if bias is None else be.contiguous(bias, bias.shape))
    return _public(y, g)


def conv2d_backward(grad_out, x, w, stride=1, padding=0, dilation=1, groups=1,
                    output_mask=(True, True, True), *, backend=None):
    """Gradients of conv2d: ``(grad_input, grad_weight, grad_bias)``; entries
    whose ``output_mask`` is False are None and are not computed."""
    fn = "conv2d_backward"
    be = _backend(fn, backend, grad_out, x, w)
    if be.name == "reference":
        from . import reference
        return reference.conv2d_backward(grad_out, x, w, stride, padding, dilation, groups, output_mask)
    mask = P.check_output_mask(fn, output_mask)
    grad_out, x, w = be.float_arrays(fn, grad_output=grad_out, input=x, weight=w)
    g = P.conv2d_geometry(fn, x.shape, w.shape, None, stride, padding, dilation, groups)
    P.check_grad_shape(fn, grad_out.shape, g.public_shape(g.y_shape))
    if be.xp is np:
        _check_alloc(fn, (g.x_shape, x.dtype))
    impl = be.impl
    gy = be.contiguous(grad_out, g.y_shape)
    grad_x = _public(impl.conv2d_backward_data(g, gy, be.contiguous(w, g.w_shape)), g) if mask[0] else None
    grad_w = impl.conv2d_backward_weight(g, gy, be.contiguous(x, g.x_shape)) if mask[1] else None
    grad_b = impl.conv2d_backward_bias(g, gy) if mask[2] else None
    return grad_x, grad_w, grad_b


def conv_transpose2d(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     *, backend=None):
    """Transposed convolution as torch.nn.functional.conv_transpose2d; weight
    is (in_channels, out_channels/groups, kH, kW)."""
    fn = "conv_transpose2d"
    be = _backend(fn, backend, x, w, bias)
    if be.name == "reference":
        from . import reference
        return reference.conv_transpose2d(x, w, bias, stride, padding, output_padding, groups, dilation)
    x, w, bias = be.float_arrays(fn, input=x, weight=w, bias=bias)
    g = P.conv_transpose2d_geometry(fn, x.shape, w.shape, None if bias is None else bias.shape,
                                    stride, padding, output_padding, groups, dilation)
    if be.xp is np:
        _check_alloc(fn, (g.x_shape, x.dtype))
    # The adjoint of the forward convolution g: its backward-data pass.
    y = be.impl.conv2d_backward_data(g, be.contiguous(x, g.y_shape), be.contiguous(w, g.w_shape))
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    return _public(y, g)


def conv_transpose2d_backward(grad_out, x, w, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                              output_mask=(True, True, True), *, backend=None):
    """Gradients of conv_transpose2d: ``(grad_input, grad_weight, grad_bias)``."""
    fn = "conv_transpose2d_backward"
    be = _backend(fn, backend, grad_out, x, w)
    if be.name == "reference":
        from . import reference
        return reference.conv_transpose2d_backward(grad_out, x, w, stride, padding, output_padding, groups,
                                                   dilation, output_mask)
    mask = P.check_output_mask(fn, output_mask)
    grad_out, x, w = be.float_arrays(fn, grad_output=grad_out, input=x, weight=w)
    g = P.conv_transpose2d_geometry(fn, x.shape, w.shape, None, stride, padding, output_padding,
                                    groups, dilation)
    P.check_grad_shape(fn, grad_out.shape, g.public_shape(g.x_shape))
    impl = be.impl
    gy = be.contiguous(grad_out, g.x_shape)
    grad_x = _public(impl.conv2d_forward(g, gy, be.contiguous(w, g.w_shape)), g) if mask[0] else None
    grad_w = impl.conv2d_backward_weight(g, be.contiguous(x, g.y_shape), gy) if mask[1] else None
    grad_b = gy.sum(axis=(0, 2, 3)) if mask[2] else None
    return grad_x, grad_w, grad_b


# --------------------------------------------------------------------------- #
# pooling
# --------------------------------------------------------------------------- #

def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, backend=None):
    """Max pooling as torch.nn.functional.max_pool2d; indices are int64 flat
    offsets into each H*W plane (first maximum wins; NaN propagates)."""
    fn = "max_pool2d"
    be = _backend(fn, backend, x)
    if be.name == "reference":
        from . import reference
        return reference.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
    return_indices = P.as_bool(fn, "return_indices", return_indices)
    (x,) = be.float_arrays(fn, input=x)
    g = P.pool2d_geometry(fn, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    if be.xp is np:
        _check_alloc(fn, (g.y_shape, np.int64))
    y, idx = be.impl.max_pool2d_forward(g, be.contiguous(x, g.x_shape), return_indices)
    return (_public(y, g), _public(idx, g)) if return_indices else _public(y, g)


def max_pool2d_backward(grad_out, x, indices, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, *, backend=None):
    """Gradient of max_pool2d with respect to its input, routed through the
    recorded ``indices``; indices outside their window raise ValueError."""
    fn = "max_pool2d_backward"
    be = _backend(fn, backend, grad_out, x, indices)
    if be.name == "reference":
        from . import reference
        return reference.max_pool2d_backward(grad_out, x, indices, kernel_size, stride, padding, dilation,
                                             ceil_mode)
    grad_out, x = be.float_arrays(fn, grad_output=grad_out, input=x)
    indices = be.index_array(fn, indices)
    g = P.pool2d_geometry(fn, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    P.check_grad_shape(fn, grad_out.shape, g.public_shape(g.y_shape))
    P.check_indices(fn, indices.shape, indices.dtype, g.public_shape(g.y_shape))
    grad_x = be.impl.max_pool2d_backward(g, be.contiguous(grad_out, g.y_shape), be.contiguous(indices, g.y_shape))
    return _public(grad_x, g)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, backend=None):
    """Average pooling as torch.nn.functional.avg_pool2d."""
    fn = "avg_pool2d"
    be = _backend(fn, backend, x)
    if be.name == "reference":
        from . import reference
        return reference.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                    divisor_override)
    (x,) = be.float_arrays(fn, input=x)
    g = P.pool2d_geometry(fn, x.shape, kernel_size, stride, padding, 1, ceil_mode)
    include_pad = P.as_bool(fn, "count_include_pad", count_include_pad)
    divisor = P.avg_pool2d_divisor(fn, divisor_override)
    if be.xp is np:
        _check_alloc(fn, (g.y_shape, x.dtype))
    return _public(be.impl.avg_pool2d_forward(g, be.contiguous(x, g.x_shape), include_pad, divisor), g)


def avg_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, *, backend=None):
    """Gradient of avg_pool2d with respect to its input."""
    fn = "avg_pool2d_backward"
    be = _backend(fn, backend, grad_out, x)
    if be.name == "reference":
        from . import reference
        return reference.avg_pool2d_backward(grad_out, x, kernel_size, stride, padding, ceil_mode,
                                             count_include_pad, divisor_override)
    grad_out, x = be.float_arrays(fn, grad_output=grad_out, input=x)
    g = P.pool2d_geometry(fn, x.shape, kernel_size, stride, padding, 1, ceil_mode)
    include_pad = P.as_bool(fn, "count_include_pad", count_include_pad)
    divisor = P.avg_pool2d_divisor(fn, divisor_override)
    P.check_grad_shape(fn, grad_out.shape, g.public_shape(g.y_shape))
    grad_x = be.impl.avg_pool2d_backward(g, be.contiguous(grad_out, g.y_shape), include_pad, divisor)
    return _public(grad_x, g)


def lp_pool2d(x, norm_type, kernel_size, stride=None, ceil_mode=False, *, backend=None):
    """Power-average pooling as torch.nn.functional.lp_pool2d:
    ``(sum over the window of x**p) ** (1/p)``; norm_type=2 is L2 pooling."""
    fn = "lp_pool2d"
    be = _backend(fn, backend, x)
    if be.name == "reference":
        from . import reference
        return reference.lp_pool2d(x, norm_type, kernel_size, stride, ceil_mode)
    (x,) = be.float_arrays(fn, input=x)
    p, g = P.lp_pool2d_geometry(fn, x.shape, norm_type, kernel_size, stride, ceil_mode)
    if be.xp is np:
        _check_alloc(fn, (g.y_shape, x.dtype))
    return _public(be.impl.lp_pool2d_forward(g, be.contiguous(x, g.x_shape), p), g)


def lp_pool2d_backward(grad_out, x, norm_type, kernel_size, stride=None, ceil_mode=False, *, backend=None):
    """Gradient of lp_pool2d with respect to its input."""
    fn = "lp_pool2d_backward"
    be = _backend(fn, backend, grad_out, x)
    if be.name == "reference":
        from . import reference
        return reference.lp_pool2d_backward(grad_out, x, norm_type, kernel_size, stride, ceil_mode)
    grad_out, x = be.float_arrays(fn, grad_output=grad_out, input=x)
    p, g = P.lp_pool2d_geometry(fn, x.shape, norm_type, kernel_size, stride, ceil_mode)
    P.check_grad_shape(fn, grad_out.shape, g.public_shape(g.y_shape))
    grad_x = be.impl.lp_pool2d_backward(g, be.contiguous(grad_out, g.y_shape), be.contiguous(x, g.x_shape), p)
    return _public(grad_x, g)


def adaptive_avg_pool2d(x, output_size, *, backend=None):
    """Adaptive average pooling as torch.nn.functional.adaptive_avg_pool2d."""
    return _adaptive_avg("adaptive_avg_pool2d", x, output_size, backend)


def adaptive_avg_pool2d_backward(grad_out, x, *, backend=None):
    """Gradient of adaptive_avg_pool2d; the output size is grad_out's."""
    return _adaptive_avg_backward("adaptive_avg_pool2d_backward", grad_out, x, None, backend)


def global_avg_pool2d(x, *, backend=None):
    """Mean over H and W, keeping them as 1x1: (N, C, H, W) -> (N, C, 1, 1)."""
    return _adaptive_avg("global_avg_pool2d", x, 1, backend)


def global_avg_pool2d_backward(grad_out, x, *, backend=None):
    """Gradient of global_avg_pool2d with respect to its input."""
    return _adaptive_avg_backward("global_avg_pool2d_backward", grad_out, x, 1, backend)


def _adaptive_avg(fn, x, output_size, backend):
    be = _backend(fn, backend, x)
    if be.name == "reference":
        from . import reference
        return (reference.global_avg_pool2d(x) if fn == "global_avg_pool2d"
                else reference.adaptive_avg_pool2d(x, output_size))
    (x,) = be.float_arrays(fn, input=x)
    g = P.adaptive_pool2d_geometry(fn, x.shape, output_size)
    return _public(be.impl.adaptive_avg_pool2d_forward(g, be.contiguous(x, g.x_shape)), g)


def _output_size_of(fn, grad_out, x):
    if np.ndim(grad_out) != np.ndim(x) or np.ndim(x) not in (3, 4):
        raise ValueError(f"{fn}: grad_output must have the same number of dimensions as input (3 or 4), "
                         f"got shapes {np.shape(grad_out)} and {np.shape(x)}")
    return tuple(np.shape(grad_out)[-2:])


def _adaptive_avg_backward(fn, grad_out, x, output_size, backend):
    be = _backend(fn, backend, grad_out, x)
    if be.name == "reference":
        from . import reference
        return (reference.global_avg_pool2d_backward(grad_out, x) if output_size == 1
                else reference.adaptive_avg_pool2d_backward(grad_out, x))
    grad_out, x = be.float_arrays(fn, grad_output=grad_out, input=x)
    if output_size is None:
        output_size = _output_size_of(fn, grad_out, x)
    g = P.adaptive_pool2d_geometry(fn, x.shape, output_size)
    P.check_grad_shape(fn, grad_out.shape, g.public_shape(g.y_shape))
    return _public(be.impl.adaptive_avg_pool2d_backward(g, be.contiguous(grad_out, g.y_shape)), g)


def adaptive_max_pool2d(x, output_size, return_indices=False, *, backend=None):
    """Adaptive max pooling as torch.nn.functional.adaptive_max_pool2d."""
    fn = "adaptive_max_pool2d"
    be = _backend(fn, backend, x)
    if be.name == "reference":
        from . import reference
        return reference.adaptive_max_pool2d(x, output_size, return_indices)
    return_indices = P.as_bool(fn, "return_indices", return_indices)
    (x,) = be.float_arrays(fn, input=x)
    g = P.adaptive_pool2d_geometry(fn, x.shape, output_size)
    y, idx = be.impl.adaptive_max_pool2d_forward(g, be.contiguous(x, g.x_shape), return_indices)
    return (_public(y, g), _public(idx, g)) if return_indices else _public(y, g)


def adaptive_max_pool2d_backward(grad_out, x, indices, *, backend=None):
    """Gradient of adaptive_max_pool2d, routed through ``indices``."""
    fn = "adaptive_max_pool2d_backward"
    be = _backend(fn, backend, grad_out, x, indices)
    if be.name == "reference":
        from . import reference
        return reference.adaptive_max_pool2d_backward(grad_out, x, indices)
    grad_out, x = be.float_arrays(fn, grad_output=grad_out, input=x)
    indices = be.index_array(fn, indices)
    g = P.adaptive_pool2d_geometry(fn, x.shape, _output_size_of(fn, grad_out, x))
    P.check_grad_shape(fn, grad_out.shape, g.public_shape(g.y_shape))
    P.check_indices(fn, indices.shape, indices.dtype, g.public_shape(g.y_shape))
    grad_x = be.impl.adaptive_max_pool2d_backward(g, be.contiguous(grad_out, g.y_shape),
                                                 be.contiguous(indices, g.y_shape))
    return _public(grad_x, g)


# --------------------------------------------------------------------------- #
# arrays of other frameworks (PyTorch, JAX, ...) through DLPack
# --------------------------------------------------------------------------- #

from . import _interop  # noqa: E402

PUBLIC_OPS = (
    "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "lp_pool2d", "lp_pool2d_backward", "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "global_avg_pool2d", "global_avg_pool2d_backward", "adaptive_max_pool2d", "adaptive_max_pool2d_backward",
)
# Each public op also takes CPU/CUDA arrays of any DLPack framework, viewed as
# NumPy/CuPy without a copy, and returns the caller's array type.
for _name in PUBLIC_OPS:
    globals()[_name] = _interop.accept_dlpack(globals()[_name])
del _name
