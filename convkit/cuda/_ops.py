"""Launch logic of the CUDA backend, written against a small runtime object so
that the same code drives CuPy (``_CupyRuntime`` in __init__) and the CPU
emulation harness in csrc/tests_native/cuda_emulate.

A runtime provides: ``empty(shape, dtype)``, ``full(shape, value, dtype)``,
``launch(source, kernel, dtype, grid, block, args)``, ``scalar(array, i)``
(an element as a Python int; synchronises) and ``cap_grid(grid)``.
Geometries come from convkit._params; arrays are C-contiguous 4-D.
"""

from __future__ import annotations

import numpy as np

NTHREADS = 256
BM = BN = 64
BK = 16
_MAX_BLOCKS_1D = 1 << 20           # grid-stride loops cover the rest
_MAX_GRID_YZ = 65535
# Channel counts (per group) from which the 64-row GEMM tile pays off; below,
# one thread per output (depthwise and friends). Tests may force a path.
GEMM_MIN_ROWS = 16
force_path = None                  # None | "gemm" | "direct"
force_splits = None                # None | int: backward-weight K splits (tests)

i64 = np.int64
i32 = np.int32


def _ceil_div(a, b):
    return -(-a // b)


def _acc_dtype(dtype):
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def _launch_1d(rt, src, kernel, dtype, total, args):
    if total <= 0:
        return
    grid = (min(_ceil_div(total, NTHREADS), _MAX_BLOCKS_1D), 1, 1)
    rt.launch(src, kernel, dtype, rt.cap_grid(grid), (NTHREADS, 1, 1), args)


def _use_gemm(rows):
    if force_path is not None:
        return force_path == "gemm"
    return rows >= GEMM_MIN_ROWS


# ------------------------------------------------------------ convolution ---

def _conv_args(g):
    return (i64(g.batch), i64(g.in_channels), i64(g.in_h), i64(g.in_w), i64(g.out_channels),
            i64(g.kernel_h), i64(g.kernel_w), i64(g.out_h), i64(g.out_w), i64(g.stride_h), i64(g.stride_w),
            i64(g.pad_top), i64(g.pad_left), i64(g.dilation_h), i64(g.dilation_w), i64(g.groups))


def _gemm_grid(rt, tiles_n, tiles_m, z):
    return rt.cap_grid((min(tiles_n, 2**31 - 1), min(tiles_m, _MAX_GRID_YZ), min(z, _MAX_GRID_YZ)))


def conv2d_forward(rt, g, x, w, bias=None):
    y = rt.empty(g.y_shape, x.dtype)
    if y.size == 0:
        return y
    has_bias = bias is not None
    b = bias if has_bias else w  # never read when has_bias == 0
    kg = g.out_channels // g.groups
    args = (x, w, b, i32(has_bias), y) + _conv_args(g)
    if _use_gemm(kg):
        np_ = g.batch * g.out_h * g.out_w
        grid = _gemm_grid(rt, _ceil_div(np_, BN), _ceil_div(kg, BM), g.groups)
        rt.launch("conv2d.cu", "conv2d_forward_gemm", x.dtype, grid, (NTHREADS, 1, 1), args)
    else:
        _launch_1d(rt, "conv2d.cu", "conv2d_forward_direct", x.dtype, y.size, args)
    return y


def conv2d_backward_data(rt, g, grad_y, w):
    grad_x = rt.empty(g.x_shape, grad_y.dtype)
    if grad_x.size == 0:
        return grad_x
    if grad_y.size == 0:  # cannot happen for a valid geometry with a non-empty x, kept for safety
        return rt.full(g.x_shape, 0, grad_y.dtype)
    cg = g.in_channels // g.groups
    args = (grad_y, w, grad_x) + _conv_args(g)
    if _use_gemm(cg):
        nhw = g.batch * g.in_h * g.in_w
        grid = _gemm_grid(rt, _ceil_div(nhw, BN), _ceil_div(cg, BM), g.groups)
        rt.launch("conv2d.cu", "conv2d_backward_data_gemm", grad_y.dtype, grid, (NTHREADS, 1, 1), args)
    else:
        _launch_1d(rt, "conv2d.cu", "conv2d_backward_data_direct", grad_y.dtype, grad_x.size, args)
    return grad_x


def weight_splits(g):
    """(splits, split_len) of the backward-weight reduction over batch*pixels.
    Depends on the shape only, so results are reproducible on any device."""
    kg = g.out_channels // g.groups
    crs = (g.in_channels // g.groups) * g.kernel_h * g.kernel_w
    np_ = g.batch * g.out_h * g.out_w
    if np_ == 0:
        return 1, BK
    if force_splits is not None:
        split_len = _ceil_div(_ceil_div(np_, force_splits), BK) * BK
        return _ceil_div(np_, split_len), split_len
    tiles = _ceil_div(kg, BM) * _ceil_div(crs, BN) * g.groups
    splits = max(1, min(_ceil_div(512, tiles), np_ // 256, 128))
    split_len = _ceil_div(_ceil_div(np_, splits), BK) * BK
    return _ceil_div(np_, split_len), split_len


def conv2d_backward_weight(rt, g, grad_y, x):
    grad_w = rt.empty(g.w_shape, grad_y.dtype)
    if grad_w.size == 0:
        return grad_w
    kg = g.out_channels // g.groups
    crs = (g.in_channels // g.groups) * g.kernel_h * g.kernel_w
    splits, split_len = weight_splits(g)
    partial = rt.empty((splits,) + tuple(g.w_shape), _acc_dtype(grad_y.dtype))
    grid = _gemm_grid(rt, _ceil_div(crs, BN), _ceil_div(kg, BM), g.groups * splits)
    rt.launch("conv2d.cu", "conv2d_backward_weight_gemm", grad_y.dtype, grid, (NTHREADS, 1, 1),
              (grad_y, x, partial) + _conv_args(g) + (i64(splits), i64(split_len)))
    _launch_1d(rt, "conv2d.cu", "conv2d_reduce_splits", grad_y.dtype, grad_w.size,
               (partial, grad_w, i64(grad_w.size), i64(splits)))
    return grad_w


def conv2d_backward_bias(rt, g, grad_y):
    grad_b = rt.empty((g.out_channels,), grad_y.dtype)
    if g.out_channels == 0:
        return grad_b
    grid = rt.cap_grid((min(g.out_channels, _MAX_BLOCKS_1D), 1, 1))
    rt.launch("conv2d.cu", "conv2d_backward_bias", grad_y.dtype, grid, (NTHREADS, 1, 1),
              (grad_y, grad_b, i64(g.batch), i64(g.out_channels), i64(g.out_h * g.out_w)))
    return grad_b


# ---------------------------------------------------------------- pooling ---

def _pool_args(g, dilation=True):
    a = (i64(g.planes), i64(g.in_h), i64(g.in_w), i64(g.out_h), i64(g.out_w), i64(g.kernel_h), i64(g.kernel_w),
         i64(g.stride_h), i64(g.stride_w))
    return a + ((i64(g.pad_h), i64(g.pad_w), i64(g.dilation_h), i64(g.dilation_w)) if dilation else ())


def _adaptive_args(g):
    return (i64(g.planes), i64(g.in_h), i64(g.in_w), i64(g.out_h), i64(g.out_w))


_NO_BAD = 2**64 - 1


def _check_indices(rt, fn, kernel, dtype, g, indices, args):
    bad = rt.full((1,), _NO_BAD, np.uint64)
    _launch_1d(rt, "pool2d.cu", kernel, dtype, indices.size, (indices, bad) + args)
    first = rt.scalar(bad, 0)
    if first != _NO_BAD:
        value = rt.scalar(indices.reshape(-1), first)
        raise ValueError(f"{fn}: indices must be flat offsets ih*W+iw in [0, {g.in_h * g.in_w}) inside their "
                         f"output's pooling window (as returned with return_indices=True); output {first} "
                         f"(flat, N*C*OH*OW order) has index {value}")


def max_pool2d_forward(rt, g, x, with_indices):
    y = rt.empty(g.y_shape, x.dtype)
    idx = rt.empty(g.y_shape, np.int64) if with_indices else rt.empty((1,), np.int64)
    _launch_1d(rt, "pool2d.cu", "max_pool2d_forward", x.dtype, y.size,
               (x, y, idx, i32(with_indices)) + _pool_args(g))
    return y, (idx if with_indices else None)


def max_pool2d_backward(rt, g, grad_y, indices, fn="max_pool2d_backward"):
    grad_x = rt.empty(g.x_shape, grad_y.dtype)
    _check_indices(rt, fn, "max_pool2d_check_indices", grad_y.dtype, g, indices, _pool_args(g))
    _launch_1d(rt, "pool2d.cu", "max_pool2d_backward", grad_y.dtype, grad_x.size,
               (grad_y, indices, grad_x) + _pool_args(g))
    return grad_x


def avg_pool2d_forward(rt, g, x, count_include_pad, divisor):
    y = rt.empty(g.y_shape, x.dtype)
    _launch_1d(rt, "pool2d.cu", "avg_pool2d_forward", x.dtype, y.size,
               (x, y, i32(bool(count_include_pad)), i64(divisor)) + _pool_args(g, dilation=False)
               + (i64(g.pad_h), i64(g.pad_w)))
    return y


def avg_pool2d_backward(rt, g, grad_y, count_include_pad, divisor):
    grad_x = rt.empty(g.x_shape, grad_y.dtype)
    _launch_1d(rt, "pool2d.cu", "avg_pool2d_backward", grad_y.dtype, grad_x.size,
               (grad_y, grad_x, i32(bool(count_include_pad)), i64(divisor)) + _pool_args(g, dilation=False)
               + (i64(g.pad_h), i64(g.pad_w)))
    return grad_x


def lp_pool2d_forward(rt, g, x, norm_type):
    y = rt.empty(g.y_shape, x.dtype)
    _launch_1d(rt, "pool2d.cu", "lp_pool2d_forward", x.dtype, y.size,
               (x, y, np.float64(norm_type)) + _pool_args(g, dilation=False))
    return y


def lp_pool2d_backward(rt, g, grad_y, x, norm_type):
    grad_x = rt.empty(g.x_shape, grad_y.dtype)
    delta = rt.empty(g.y_shape, _acc_dtype(grad_y.dtype))
    _launch_1d(rt, "pool2d.cu", "lp_pool2d_backward_delta", grad_y.dtype, delta.size,
               (grad_y, x, delta, np.float64(norm_type)) + _pool_args(g, dilation=False))
    _launch_1d(rt, "pool2d.cu", "lp_pool2d_backward_gather", grad_y.dtype, grad_x.size,
               (delta, x, grad_x, np.float64(norm_type)) + _pool_args(g, dilation=False))
    return grad_x


def adaptive_avg_pool2d_forward(rt, g, x):
    y = rt.empty(g.y_shape, x.dtype)
    _launch_1d(rt, "pool2d.cu", "adaptive_avg_pool2d_forward", x.dtype, y.size, (x, y) + _adaptive_args(g))
    return y


def adaptive_avg_pool2d_backward(rt, g, grad_y):
    grad_x = rt.empty(g.x_shape, grad_y.dtype)
    _launch_1d(rt, "pool2d.cu", "adaptive_avg_pool2d_backward", grad_y.dtype, grad_x.size,
               (grad_y, grad_x) + _adaptive_args(g))
    return grad_x


def adaptive_max_pool2d_forward(rt, g, x, with_indices):
    y = rt.empty(g.y_shape, x.dtype)
    idx = rt.empty(g.y_shape, np.int64) if with_indices else rt.empty((1,), np.int64)
    _launch_1d(rt, "pool2d.cu", "adaptive_max_pool2d_forward", x.dtype, y.size,
               (x, y, idx, i32(with_indices)) + _adaptive_args(g))
    return y, (idx if with_indices else None)


def adaptive_max_pool2d_backward(rt, g, grad_y, indices):
    grad_x = rt.empty(g.x_shape, grad_y.dtype)
    _check_indices(rt, "adaptive_max_pool2d_backward", "adaptive_max_pool2d_check_indices", grad_y.dtype, g, indices,
                   _adaptive_args(g))
    _launch_1d(rt, "pool2d.cu", "adaptive_max_pool2d_backward", grad_y.dtype, grad_x.size,
               (grad_y, indices, grad_x) + _adaptive_args(g))
    return grad_x
