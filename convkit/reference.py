"""NumPy reference implementation of every convkit op (backend="reference").

Semantics are exactly those of ``torch.nn.functional`` on CPU (NCHW layout,
PyTorch's tie/NaN rules for max pooling, its divisors for average pooling,
its formula for LP pooling). All argument checking and every output shape
comes from :mod:`convkit._params`; this module only does arithmetic.

Implementation notes
--------------------
* Arrays may be float32 or float64 (all arrays of one call share the dtype).
  Arithmetic is done in float64 and the result cast back to the input dtype,
  so the float64 results are accurate to rounding and the float32 ones are
  the correctly rounded float64 values (slightly more accurate than a float32
  kernel; compare float32 backends with a tolerance).
* Everything is vectorised over batch, channels and output pixels; the only
  Python loops run over kernel taps (R*S or kH*kW) or over groups inside an
  einsum, never over pixels.
* Unbatched (C, H, W) inputs are handled by adding a batch of one and
  removing it again (``geometry.public_shape``).

Known deviation from PyTorch: a max-pool window can contain no input pixel at
all (tiny input, large dilation, padding). PyTorch then returns -inf with the
index of the window's first would-be tap, which lies outside the window
(often outside the plane); its backward writes the gradient there (out of
bounds). The forward here reproduces value and index; the backward accepts
exactly that index for such windows and drops its gradient (the output does
not depend on the input).
"""

from __future__ import annotations

import numpy as np

from . import _params
from ._params import (
    adaptive_pool2d_geometry,
    adaptive_window,
    as_bool,
    avg_pool2d_divisor,
    check_grad_shape,
    check_indices,
    check_output_mask,
    conv2d_geometry,
    conv_transpose2d_geometry,
    lp_pool2d_geometry,
    pool2d_geometry,
)

__all__ = [
    "conv2d", "conv2d_backward",
    "conv_transpose2d", "conv_transpose2d_backward",
    "max_pool2d", "max_pool2d_backward",
    "avg_pool2d", "avg_pool2d_backward",
    "lp_pool2d", "lp_pool2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d", "adaptive_max_pool2d_backward",
    "global_avg_pool2d", "global_avg_pool2d_backward",
]


# --------------------------------------------------------------------------- #
# helpers: dtypes, batching, padding
# --------------------------------------------------------------------------- #

def _arrays(fn, **named):
    """_params.float_arrays, plus the common dtype first: (dtype, arrays...)."""
    arrays = _params.float_arrays(fn, **named)
    dtype = next((a.dtype for a in arrays if a is not None), None)
    return (dtype, *arrays)


def _batch4(a, unbatched):
    """(C, H, W) -> (1, C, H, W) float64 for unbatched calls; float64 copy-free when possible."""
    a = np.asarray(a, dtype=np.float64)
    return a[None] if unbatched else a


def _result(a, geom, dtype):
    """Cast back to the caller's dtype and drop the batch for unbatched calls."""
    return np.ascontiguousarray(a.reshape(geom.public_shape(a.shape)), dtype=dtype)


def _pad_or_crop(x, top, bottom, left, right, value=0.0):
    """Pad the last two axes by the given amounts; negative amounts crop."""
    x = np.pad(x, ((0, 0), (0, 0), (max(top, 0), max(bottom, 0)), (max(left, 0), max(right, 0))),
               constant_values=value)
    h, w = x.shape[2], x.shape[3]
    return x[:, :, max(-top, 0):h - max(-bottom, 0), max(-left, 0):w - max(-right, 0)]


def _unpad_grad(shape, top, bottom, left, right):
    """Zero buffer for the gradient of the padded input, the view of it that
    corresponds to ``_pad_or_crop``'s result, and the slice of the original input."""
    n, c, h, w = shape
    buf = np.zeros((n, c, h + max(top, 0) + max(bottom, 0), w + max(left, 0) + max(right, 0)))
    bh, bw = buf.shape[2], buf.shape[3]
    view = buf[:, :, max(-top, 0):bh - max(-bottom, 0), max(-left, 0):bw - max(-right, 0)]
    inner = buf[:, :, max(top, 0):max(top, 0) + h, max(left, 0):max(left, 0) + w]
    return view, inner


def _tap(a, r0, c0, n_rows, n_cols, sh, sw):
    """Strided view a[..., r0 + i*sh, c0 + j*sw] for i < n_rows, j < n_cols."""
    return a[:, :, r0:r0 + (n_rows - 1) * sh + 1:sh, c0:c0 + (n_cols - 1) * sw + 1:sw]


def _scatter_planes(idx, vals, planes, hw):
    """Sum ``vals`` (planes, M) into (planes, hw) at flat offsets ``idx`` (planes, M)."""
    flat = (np.arange(planes, dtype=np.int64)[:, None] * hw + idx).ravel()
    return np.bincount(flat, weights=vals.ravel(), minlength=planes * hw).reshape(planes, hw)


# --------------------------------------------------------------------------- #
# convolution cores (float64, batched NCHW, geometry g)
# --------------------------------------------------------------------------- #

def _conv_windows(x, g):
    """(N, G, C/G, OH, OW, R, S) view of the (padded) input windows."""
    xp = _pad_or_crop(x, g.pad_top, g.pad_bottom, g.pad_left, g.pad_right)
    eh, ew = g.dilation_h * (g.kernel_h - 1) + 1, g.dilation_w * (g.kernel_w - 1) + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(2, 3))
    win = win[:, :, ::g.stride_h, ::g.stride_w, ::g.dilation_h, ::g.dilation_w]
    win = win[:, :, :g.out_h, :g.out_w]
    n, c = x.shape[0], x.shape[1]
    return win.reshape(n, g.groups, c // g.groups, g.out_h, g.out_w, g.kernel_h, g.kernel_w)


def _conv_forward(x, w, g):
    """y[n, k] = sum over the group's channels c and taps (r, s) of w[k, c, r, s] * window."""
    win = _conv_windows(x, g)
    kg = g.out_channels // g.groups
    y = np.empty((g.batch, g.groups, kg, g.out_h, g.out_w))
    for gi in range(g.groups):
        wg = w[gi * kg:(gi + 1) * kg]                                   # (Kg, Cg, R, S)
        out = np.tensordot(win[:, gi], wg, axes=([1, 4, 5], [1, 2, 3]))  # (N, OH, OW, Kg)
        y[:, gi] = out.transpose(0, 3, 1, 2)
    return y.reshape(g.y_shape)


def _conv_backward_weight(gy, x, g):
    """grad_w[k, c, r, s] = sum over n, oh, ow of grad_y[n, k] * window[n, c, oh, ow, r, s]."""
    win = _conv_windows(x, g)
    kg = g.out_channels // g.groups
    gyg = gy.reshape(g.batch, g.groups, kg, g.out_h, g.out_w)
    gw = np.empty(g.w_shape)
    for gi in range(g.groups):
        gw[gi * kg:(gi + 1) * kg] = np.tensordot(gyg[:, gi], win[:, gi], axes=([0, 2, 3], [0, 2, 3]))
    return gw


def _conv_backward_data(gy, w, g):
    """Adjoint of _conv_forward wrt x: scatter every kernel tap's contribution."""
    view, inner = _unpad_grad(g.x_shape, g.pad_top, g.pad_bottom, g.pad_left, g.pad_right)
    cg, kg = g.in_channels // g.groups, g.out_channels // g.groups
    gyg = gy.reshape(g.batch, g.groups, kg, g.out_h, g.out_w)
    for gi in range(g.groups):
        wg = w[gi * kg:(gi + 1) * kg]                                   # (Kg, Cg, R, S)
        for r in range(g.kernel_h):
            for s in range(g.kernel_w):
                contrib = np.tensordot(gyg[:, gi], wg[:, :, r, s], axes=([1], [0]))  # (N, OH, OW, Cg)
                _tap(view[:, gi * cg:(gi + 1) * cg], r * g.dilation_h, s * g.dilation_w, g.out_h, g.out_w,
                     g.stride_h, g.stride_w)[...] += contrib.transpose(0, 3, 1, 2)
    return inner


# --------------------------------------------------------------------------- #
# convolution: public functions
# --------------------------------------------------------------------------- #

def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
    fn = "conv2d"
    dtype, x, w, bias = _arrays(fn, input=x, weight=w, bias=bias)
    g = conv2d_geometry(fn, x.shape, w.shape, None if bias is None else bias.shape,
                        stride, padding, dilation, groups)
    y = _conv_forward(_batch4(x, g.unbatched), np.asarray(w, np.float64), g)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)[None, :, None, None]
    return _result(y, g, dtype)


def conv2d_backward(grad_out, x, w, stride=1, padding=0, dilation=1, groups=1,
                    output_mask=(True, True, True)):
    fn = "conv2d_backward"
    dtype, x, w, grad_out = _arrays(fn, input=x, weight=w, grad_output=grad_out)
    g = conv2d_geometry(fn, x.shape, w.shape, None, stride, padding, dilation, groups)
    mask = check_output_mask(fn, output_mask)
    check_grad_shape(fn, grad_out.shape, g.public_shape(g.y_shape))
    gy = _batch4(grad_out, g.unbatched)
    w64 = np.asarray(w, np.float64)
    grad_x = grad_w = grad_b = None
    if mask[0]:
        grad_x = _result(_conv_backward_data(gy, w64, g), g, dtype)
    if mask[1]:
        grad_w = np.ascontiguousarray(_conv_backward_weight(gy, _batch4(x, g.unbatched), g), dtype=dtype)
    if mask[2]:
        grad_b = np.ascontiguousarray(gy.sum(axis=(0, 2, 3)), dtype=dtype)
    return grad_x, grad_w, grad_b


def conv_transpose2d(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    fn = "conv_transpose2d"
    dtype, x, w, bias = _arrays(fn, input=x, weight=w, bias=bias)
    g = conv_transpose2d_geometry(fn, x.shape, w.shape, None if bias is None else bias.shape,
                                  stride, padding, output_padding, groups, dilation)
    # g describes the forward conv whose *input* is our result and whose output is x.
    out = _conv_backward_data(_batch4(x, g.unbatched), np.asarray(w, np.float64), g)
    if bias is not None:
        out = out + np.asarray(bias, np.float64)[None, :, None, None]
    return _result(out, g, dtype)


def conv_transpose2d_backward(grad_out, x, w, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, output_mask=(True, True, True)):
    fn = "conv_transpose2d_backward"
    dtype, x, w, grad_out = _arrays(fn, input=x, weight=w, grad_output=grad_out)
    g = conv_transpose2d_geometry(fn, x.shape, w.shape, None, stride, padding, output_padding,
                                  groups, dilation)
    mask = check_output_mask(fn, output_mask)
    check_grad_shape(fn, grad_out.shape, g.public_shape(g.x_shape))
    go = _batch4(grad_out, g.unbatched)          # the forward conv's input
    grad_x = grad_w = grad_b = None
    if mask[0]:
        gx = _conv_forward(go, np.asarray(w, np.float64), g)   # shape g.y_shape == x's
        grad_x = np.ascontiguousarray(gx.reshape(x.shape), dtype=dtype)
    if mask[1]:
        grad_w = np.ascontiguousarray(_conv_backward_weight(_batch4(x, g.unbatched), go, g), dtype=dtype)
    if mask[2]:
        grad_b = np.ascontiguousarray(go.sum(axis=(0, 2, 3)), dtype=dtype)
    return grad_x, grad_w, grad_b


# --------------------------------------------------------------------------- #
# max pooling
# --------------------------------------------------------------------------- #

def _first_tap(start, dilation):
    """PyTorch's ``while (i0 < 0) i0 += dilation`` on an int array."""
    return np.where(start < 0, start + (-start + dilation - 1) // dilation * dilation, start)


def _max_pool_forward(x, g):
    """PyTorch CPU max pool: scan taps row-major, ``val > max or isnan(val)``
    wins (first maximum, last NaN); the index starts at the first in-range
    tap. Returns (values, int64 flat indices), both (N, C, OH, OW)."""
    n, c, h, w = x.shape
    oh, ow = np.arange(g.out_h), np.arange(g.out_w)
    row0 = oh * g.stride_h - g.pad_h          # window start rows (may be < 0)
    col0 = ow * g.stride_w - g.pad_w
    init = _first_tap(row0, g.dilation_h)[:, None] * w + _first_tap(col0, g.dilation_w)[None, :]
    # -inf padding never wins ("-inf > max" is false and it is not NaN), so
    # padded taps behave exactly like PyTorch's skipped out-of-range taps.
    need_h = (g.out_h - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h + 1
    need_w = (g.out_w - 1) * g.stride_w + (g.kernel_w - 1) * g.dilation_w + 1
    xp = _pad_or_crop(x, g.pad_h, max(need_h - g.pad_h - h, 0), g.pad_w, max(need_w - g.pad_w - w, 0),
                      value=-np.inf)
    best = np.full((n, c, g.out_h, g.out_w), -np.inf)
    best_idx = np.broadcast_to(init, best.shape).astype(np.int64)
    for r in range(g.kernel_h):
        rows = row0 + r * g.dilation_h
        for s in range(g.kernel_w):
            cols = col0 + s * g.dilation_w
            val = _tap(xp, r * g.dilation_h, s * g.dilation_w, g.out_h, g.out_w, g.stride_h, g.stride_w)
            take = (val > best) | np.isnan(val)
            best = np.where(take, val, best)
            best_idx = np.where(take, rows[:, None] * w + cols[None, :], best_idx)
    return best, best_idx


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    fn = "max_pool2d"
    dtype, x = _arrays(fn, input=x)
    g = pool2d_geometry(fn, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return_indices = as_bool(fn, "return_indices", return_indices)
    y, idx = _max_pool_forward(_batch4(x, g.unbatched), g)
    if return_indices:
        return _result(y, g, dtype), _result(idx, g, np.int64)
    return _result(y, g, dtype)


def _scatter_max_grad(fn, gy, idx, valid, empty, init, shape):
    """grad_x from grad_out scattered at ``idx``; ``valid`` marks indices that
    are taps of their window, ``empty``/``init`` the (degenerate) windows with
    no in-range tap, whose PyTorch index is the unused start offset."""
    n, c, h, w = shape
    dropped = empty & (idx == init)
    if not np.all(valid | dropped):
        bad = int(np.count_nonzero(~(valid | dropped)))
        raise ValueError(f"{fn}: indices must be flat offsets ih*W+iw in [0, {h * w}) inside their output's "
                         f"pooling window (as returned with return_indices=True); {bad} are not")
    keep = valid & ~dropped
    planes = n * c
    m = idx.shape[2] * idx.shape[3]
    vals = np.where(keep, gy, 0.0).reshape(planes, m)
    flat_idx = np.where(keep, idx, 0).reshape(planes, m)
    return _scatter_planes(flat_idx, vals, planes, h * w).reshape(shape)


def max_pool2d_backward(grad_out, x, indices, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False):
    fn = "max_pool2d_backward"
    dtype, x, grad_out = _arrays(fn, input=x, grad_output=grad_out)
    g = pool2d_geometry(fn, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    out_shape = g.public_shape(g.y_shape)
    check_grad_shape(fn, grad_out.shape, out_shape)
    indices = np.asarray(indices)
    check_indices(fn, indices.shape, indices.dtype, out_shape)
    idx = indices.reshape(g.y_shape)
    h, w = g.in_h, g.in_w
    row0 = np.arange(g.out_h)[:, None] * g.stride_h - g.pad_h
    col0 = np.arange(g.out_w)[None, :] * g.stride_w - g.pad_w
    in_range = (idx >= 0) & (idx < h * w)
    ih, iw = np.where(in_range, idx // w, -1), np.where(in_range, idx % w, -1)
    valid = (in_range
             & (ih >= row0) & (ih <= row0 + (g.kernel_h - 1) * g.dilation_h) & ((ih - row0) % g.dilation_h == 0)
             & (iw >= col0) & (iw <= col0 + (g.kernel_w - 1) * g.dilation_w) & ((iw - col0) % g.dilation_w == 0))
    first_r, first_c = _first_tap(row0, g.dilation_h), _first_tap(col0, g.dilation_w)
    end_r = np.minimum(row0 + (g.kernel_h - 1) * g.dilation_h + 1, h)
    end_c = np.minimum(col0 + (g.kernel_w - 1) * g.dilation_w + 1, w)
    empty = (first_r >= end_r) | (first_c >= end_c)
    gx = _scatter_max_grad(fn, _batch4(grad_out, g.unbatched), idx, valid, empty,
                           first_r * w + first_c, g.x_shape)
    return _result(gx, g, dtype)


# --------------------------------------------------------------------------- #
# average pooling
# --------------------------------------------------------------------------- #

def _avg_divisor(g, count_include_pad, divisor_override):
    """PyTorch's per-output divisor, (OH, OW) float64, and the mask of windows
    that contain no input pixel (their output is 0)."""
    def axis(n_out, stride, pad, kernel, size):
        start = np.arange(n_out) * stride - pad
        end = np.minimum(start + kernel, size + pad)
        pool = end - start                                   # counts the padding
        count = np.maximum(np.minimum(end, size) - np.maximum(start, 0), 0)
        return pool, count
    pool_h, cnt_h = axis(g.out_h, g.stride_h, g.pad_h, g.kernel_h, g.in_h)
    pool_w, cnt_w = axis(g.out_w, g.stride_w, g.pad_w, g.kernel_w, g.in_w)
    count = cnt_h[:, None] * cnt_w[None, :]
    if divisor_override:
        div = np.full(count.shape, float(divisor_override))
    elif count_include_pad:
        div = (pool_h[:, None] * pool_w[None, :]).astype(np.float64)
    else:
        div = count.astype(np.float64)
    empty = count == 0
    return np.where(empty, 1.0, div), empty


def _avg_pool_forward(x, g, count_include_pad, divisor_override):
    n, c, h, w = x.shape
    need_h = (g.out_h - 1) * g.stride_h + g.kernel_h
    need_w = (g.out_w - 1) * g.stride_w + g.kernel_w
    xp = _pad_or_crop(x, g.pad_h, max(need_h - g.pad_h - h, 0), g.pad_w, max(need_w - g.pad_w - w, 0))
    win = np.lib.stride_tricks.sliding_window_view(xp, (g.kernel_h, g.kernel_w), axis=(2, 3))
    sums = win[:, :, ::g.stride_h, ::g.stride_w][:, :, :g.out_h, :g.out_w].sum(axis=(4, 5))
    div, empty = _avg_divisor(g, count_include_pad, divisor_override)
    return np.where(empty, 0.0, sums / div)


def _avg_pool_backward(gy, g, count_include_pad, divisor_override):
    div, empty = _avg_divisor(g, count_include_pad, divisor_override)
    gq = np.where(empty, 0.0, gy / div)
    need_h = (g.out_h - 1) * g.stride_h + g.kernel_h
    need_w = (g.out_w - 1) * g.stride_w + g.kernel_w
    view, inner = _unpad_grad(g.x_shape, g.pad_h, max(need_h - g.pad_h - g.in_h, 0),
                              g.pad_w, max(need_w - g.pad_w - g.in_w, 0))
    for r in range(g.kernel_h):
        for s in range(g.kernel_w):
            _tap(view, r, s, g.out_h, g.out_w, g.stride_h, g.stride_w)[...] += gq
    return inner


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    fn = "avg_pool2d"
    dtype, x = _arrays(fn, input=x)
    g = pool2d_geometry(fn, x.shape, kernel_size, stride, padding, 1, ceil_mode)
    count_include_pad = as_bool(fn, "count_include_pad", count_include_pad)
    divisor = avg_pool2d_divisor(fn, divisor_override)
    y = _avg_pool_forward(_batch4(x, g.unbatched), g, count_include_pad, divisor)
    return _result(y, g, dtype)


def avg_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None):
    fn = "avg_pool2d_backward"
    dtype, x, grad_out = _arrays(fn, input=x, grad_output=grad_out)
    g = pool2d_geometry(fn, x.shape, kernel_size, stride, padding, 1, ceil_mode)
    count_include_pad = as_bool(fn, "count_include_pad", count_include_pad)
    divisor = avg_pool2d_divisor(fn, divisor_override)
    check_grad_shape(fn, grad_out.shape, g.public_shape(g.y_shape))
    gx = _avg_pool_backward(_batch4(grad_out, g.unbatched), g, count_include_pad, divisor)
    return _result(gx, g, dtype)


# --------------------------------------------------------------------------- #
# LP pooling: PyTorch's (avg_pool2d(x**p) * kH*kW) ** (1/p)
# --------------------------------------------------------------------------- #

def lp_pool2d(x, norm_type, kernel_size, stride=None, ceil_mode=False):
    fn = "lp_pool2d"
    dtype, x = _arrays(fn, input=x)
    p, g = lp_pool2d_geometry(fn, x.shape, norm_type, kernel_size, stride, ceil_mode)
    kk = g.kernel_h * g.kernel_w
    with np.errstate(all="ignore"):
        a = _avg_pool_forward(np.power(_batch4(x, g.unbatched), p), g, True, 0)
        y = np.power(a * kk, 1.0 / p)
    return _result(y, g, dtype)


def lp_pool2d_backward(grad_out, x, norm_type, kernel_size, stride=None, ceil_mode=False):
    fn = "lp_pool2d_backward"
    dtype, x, grad_out = _arrays(fn, input=x, grad_output=grad_out)
    p, g = lp_pool2d_geometry(fn, x.shape, norm_type, kernel_size, stride, ceil_mode)
    check_grad_shape(fn, grad_out.shape, g.public_shape(g.y_shape))
    kk = g.kernel_h * g.kernel_w
    x4 = _batch4(x, g.unbatched)
    gy = _batch4(grad_out, g.unbatched)
    with np.errstate(all="ignore"):
        a = _avg_pool_forward(np.power(x4, p), g, True, 0)
        ga = gy * (1.0 / p) * np.power(a * kk, 1.0 / p - 1.0) * kk
        # PyTorch computes sign(a) * relu(|a|) before the power: its gradient
        # is exactly 0 where the pooled value is 0 (even where the power's is inf).
        ga = np.where(a == 0, 0.0, ga)
        gx = p * np.power(x4, p - 1.0) * _avg_pool_backward(ga, g, True, 0)
    return _result(gx, g, dtype)


# --------------------------------------------------------------------------- #
# adaptive pooling
# --------------------------------------------------------------------------- #

def _adaptive_axis(n_out, size):
    bounds = np.array([adaptive_window(o, size, n_out) for o in range(n_out)], dtype=np.int64)
    return bounds[:, 0], bounds[:, 1]


def _adaptive_taps(g):
    """Yield (rows, cols, valid) for every tap (r, s) of the largest window,
    row-major: rows (OH,), cols (OW,) are clamped input coordinates, valid
    (OH, OW) marks taps inside their output's window."""
    h0, h1 = _adaptive_axis(g.out_h, g.in_h)
    w0, w1 = _adaptive_axis(g.out_w, g.in_w)
    for r in range(int((h1 - h0).max())):
        rows = h0 + r
        vr = rows < h1
        for s in range(int((w1 - w0).max())):
            cols = w0 + s
            vc = cols < w1
            yield np.minimum(rows, g.in_h - 1), np.minimum(cols, g.in_w - 1), vr[:, None] & vc[None, :]


def _adaptive_sizes(g):
    h0, h1 = _adaptive_axis(g.out_h, g.in_h)
    w0, w1 = _adaptive_axis(g.out_w, g.in_w)
    return h0, h1, w0, w1


def _grad_geometry(fn, grad_out, x):
    """Adaptive backward ops take the output size from grad_output."""
    if grad_out.ndim != x.ndim:
        check_grad_shape(fn, grad_out.shape, tuple(x.shape[:-2]) + ("out_h", "out_w"))
    g = adaptive_pool2d_geometry(fn, x.shape, tuple(int(v) for v in grad_out.shape[-2:]))
    check_grad_shape(fn, grad_out.shape, g.public_shape(g.y_shape))
    return g


def _adaptive_avg_forward(x, g):
    h0, h1, w0, w1 = _adaptive_sizes(g)
    total = np.zeros(g.y_shape)
    for rows, cols, valid in _adaptive_taps(g):
        total += np.where(valid, x[:, :, rows[:, None], cols[None, :]], 0.0)
    return total / (h1 - h0)[:, None] / (w1 - w0)[None, :]


def adaptive_avg_pool2d(x, output_size):
    fn = "adaptive_avg_pool2d"
    dtype, x = _arrays(fn, input=x)
    g = adaptive_pool2d_geometry(fn, x.shape, output_size)
    return _result(_adaptive_avg_forward(_batch4(x, g.unbatched), g), g, dtype)


def adaptive_avg_pool2d_backward(grad_out, x):
    fn = "adaptive_avg_pool2d_backward"
    dtype, x, grad_out = _arrays(fn, input=x, grad_output=grad_out)
    g = _grad_geometry(fn, grad_out, x)
    h0, h1, w0, w1 = _adaptive_sizes(g)
    gq = _batch4(grad_out, g.unbatched) / (h1 - h0)[:, None] / (w1 - w0)[None, :]
    planes, hw, m = g.planes, g.in_h * g.in_w, g.out_h * g.out_w
    gx = np.zeros((planes, hw))
    for rows, cols, valid in _adaptive_taps(g):
        idx = np.broadcast_to(rows[:, None] * g.in_w + cols[None, :], g.y_shape).reshape(planes, m)
        gx += _scatter_planes(idx, np.where(valid, gq, 0.0).reshape(planes, m), planes, hw)
    return _result(gx.reshape(g.x_shape), g, dtype)


def _adaptive_max_forward(x, g):
    h0, h1, w0, w1 = _adaptive_sizes(g)
    best = np.full(g.y_shape, -np.inf)
    best_idx = np.broadcast_to(h0[:, None] * g.in_w + w0[None, :], g.y_shape).astype(np.int64)
    for rows, cols, valid in _adaptive_taps(g):
        val = x[:, :, rows[:, None], cols[None, :]]
        take = valid & ((val > best) | np.isnan(val))
        best = np.where(take, val, best)
        best_idx = np.where(take, rows[:, None] * g.in_w + cols[None, :], best_idx)
    return best, best_idx


def adaptive_max_pool2d(x, output_size, return_indices=False):
    fn = "adaptive_max_pool2d"
    dtype, x = _arrays(fn, input=x)
    g = adaptive_pool2d_geometry(fn, x.shape, output_size)
    return_indices = as_bool(fn, "return_indices", return_indices)
    y, idx = _adaptive_max_forward(_batch4(x, g.unbatched), g)
    if return_indices:
        return _result(y, g, dtype), _result(idx, g, np.int64)
    return _result(y, g, dtype)


def adaptive_max_pool2d_backward(grad_out, x, indices):
    fn = "adaptive_max_pool2d_backward"
    dtype, x, grad_out = _arrays(fn, input=x, grad_output=grad_out)
    g = _grad_geometry(fn, grad_out, x)
    indices = np.asarray(indices)
    check_indices(fn, indices.shape, indices.dtype, g.public_shape(g.y_shape))
    idx = indices.reshape(g.y_shape)
    h0, h1, w0, w1 = _adaptive_sizes(g)
    w = g.in_w
    in_range = (idx >= 0) & (idx < g.in_h * w)
    ih, iw = np.where(in_range, idx // w, -1), np.where(in_range, idx % w, -1)
    valid = (in_range & (ih >= h0[:, None]) & (ih < h1[:, None]) & (iw >= w0[None, :]) & (iw < w1[None, :]))
    no_window = np.zeros(idx.shape, dtype=bool)   # adaptive windows are never empty
    gx = _scatter_max_grad(fn, _batch4(grad_out, g.unbatched), idx, valid, no_window, 0, g.x_shape)
    return _result(gx, g, dtype)


def global_avg_pool2d(x):
    fn = "global_avg_pool2d"
    dtype, x = _arrays(fn, input=x)
    g = adaptive_pool2d_geometry(fn, x.shape, 1)
    x4 = _batch4(x, g.unbatched)
    y = x4.sum(axis=(2, 3), keepdims=True) / g.in_h / g.in_w
    return _result(y, g, dtype)


def global_avg_pool2d_backward(grad_out, x):
    fn = "global_avg_pool2d_backward"
    dtype, x, grad_out = _arrays(fn, input=x, grad_output=grad_out)
    g = adaptive_pool2d_geometry(fn, x.shape, 1)
    check_grad_shape(fn, grad_out.shape, g.public_shape(g.y_shape))
    gq = _batch4(grad_out, g.unbatched) / g.in_h / g.in_w
    return _result(np.broadcast_to(gq, g.x_shape), g, dtype)
