"""Helpers shared by the test modules: shape arithmetic written independently
of convkit/_params.py, tolerant comparisons, and a catalogue of every public
op with small input builders (used by the thread, layout and dtype tests)."""

from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------- #
# argument / shape arithmetic (independent re-derivation of PyTorch's rules)
# --------------------------------------------------------------------------- #


def as_pair(v):
    if isinstance(v, (tuple, list)):
        return tuple(v) if len(v) == 2 else (v[0], v[0])
    return (v, v)


def conv_padding(padding, kernel, dilation):
    """-> ((top, bottom), (left, right)) for any accepted conv padding spec."""
    kh, kw = kernel
    dh, dw = as_pair(dilation)
    if isinstance(padding, str):
        eh, ew = dh * (kh - 1), dw * (kw - 1)
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            return (eh // 2, eh - eh // 2), (ew // 2, ew - ew // 2)
        if padding == "full":
            return (eh, eh), (ew, ew)
        raise AssertionError(padding)
    if isinstance(padding, (tuple, list)) and isinstance(padding[0], (tuple, list)):
        return tuple(padding[0]), tuple(padding[1])
    ph, pw = as_pair(padding)
    return (ph, ph), (pw, pw)


def conv_out_hw(h, w, kernel, stride, padding, dilation):
    (pt, pb), (pl, pr) = conv_padding(padding, kernel, dilation)
    sh, sw = as_pair(stride)
    dh, dw = as_pair(dilation)
    kh, kw = kernel
    return ((h + pt + pb - dh * (kh - 1) - 1) // sh + 1,
            (w + pl + pr - dw * (kw - 1) - 1) // sw + 1)


def conv_transpose_out_hw(h, w, kernel, stride, padding, output_padding, dilation):
    sh, sw = as_pair(stride)
    ph, pw = as_pair(padding)
    oph, opw = as_pair(output_padding)
    dh, dw = as_pair(dilation)
    kh, kw = kernel
    return ((h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1,
            (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1)


def _pool_len(n, k, p, s, d, ceil_mode):
    span = n + 2 * p - d * (k - 1) - 1
    if ceil_mode:
        out = -(-span // s) + 1
        if (out - 1) * s >= n + p:
            out -= 1
    else:
        out = span // s + 1
    return out


def pool_out_hw(h, w, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    kh, kw = as_pair(kernel_size)
    sh, sw = as_pair(kernel_size if stride is None else stride)
    ph, pw = as_pair(padding)
    dh, dw = as_pair(dilation)
    return _pool_len(h, kh, ph, sh, dh, ceil_mode), _pool_len(w, kw, pw, sw, dw, ceil_mode)


def _axis_has_empty_window(n, k, p, s, d, ceil_mode):
    out = _pool_len(n, k, p, s, d, ceil_mode)
    for o in range(out):
        start = o * s - p
        if not any(0 <= start + r * d < n for r in range(k)):
            return True
    return False


def pool_has_empty_window(h, w, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """True when some pooling window (possible with dilation and padding)
    holds no input element at all, only padding."""
    kh, kw = as_pair(kernel_size)
    sh, sw = as_pair(kernel_size if stride is None else stride)
    ph, pw = as_pair(padding)
    dh, dw = as_pair(dilation)
    return (_axis_has_empty_window(h, kh, ph, sh, dh, ceil_mode)
            or _axis_has_empty_window(w, kw, pw, sw, dw, ceil_mode))


def adaptive_out_hw(h, w, output_size):
    oh, ow = as_pair(output_size)
    return (h if oh is None else oh), (w if ow is None else ow)


def batched_shape(n, *rest):
    """(n, *rest), or rest alone when n is None (unbatched)."""
    return tuple(rest) if n is None else (n,) + tuple(rest)


# --------------------------------------------------------------------------- #
# comparisons
# --------------------------------------------------------------------------- #

F64_RTOL = 1e-10
F32_RTOL = 1e-4


def assert_close(actual, expected, rtol=F64_RTOL, dtype=None, err_msg=""):
    """Elementwise |a - e| <= rtol * (|e| + max(1, max|e|)); NaNs must match."""
    assert actual is not None, "got None where an array was expected"
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape} {err_msg}"
    if dtype is not None:
        assert actual.dtype == np.dtype(dtype), f"dtype {actual.dtype} != {np.dtype(dtype)} {err_msg}"
    if expected.size == 0:
        return
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    finite = np.isfinite(e)
    scale = max(1.0, float(np.max(np.abs(e[finite]))) if finite.any() else 1.0)
    np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale, equal_nan=True, err_msg=err_msg)


def assert_bitwise_equal(a, b, err_msg=""):
    a = np.asarray(a)
    b = np.asarray(b)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape} {err_msg}"
    assert a.dtype == b.dtype, f"dtype {a.dtype} != {b.dtype} {err_msg}"
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), (
        f"not bitwise identical {err_msg}; max abs diff "
        f"{np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64))) if a.size else 0}")


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


# --------------------------------------------------------------------------- #
# layout transforms that keep the values but not the memory layout
# --------------------------------------------------------------------------- #


def fortran(a):
    return np.asfortranarray(a)


def transposed_view(a):
    if a.ndim < 2:
        return reversed_view(a)
    t = np.ascontiguousarray(np.swapaxes(a, -1, -2))
    return np.swapaxes(t, -1, -2)


def reversed_view(a):
    if a.ndim == 0:
        return a
    idx = (slice(None, None, -1),) * a.ndim
    return np.ascontiguousarray(a[idx])[idx]


def strided_view(a):
    if a.ndim == 0:
        return a
    big = np.full(a.shape[:-1] + (2 * a.shape[-1] + 1,), np.nan if a.dtype.kind == "f" else -7, dtype=a.dtype)
    big[..., 1::2] = a
    return big[..., 1::2]


def channels_last_view(a):
    if a.ndim != 4:
        return strided_view(a)
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


LAYOUTS = {
    "fortran": fortran,
    "transposed": transposed_view,
    "negative_strides": reversed_view,
    "strided": strided_view,
    "channels_last": channels_last_view,
}


# --------------------------------------------------------------------------- #
# catalogue of every public op
# --------------------------------------------------------------------------- #
#
# Each entry: name -> (make(rng, dtype, big) -> dict of named arrays,
#                      call(ck, arrays, **kw) -> tuple of outputs)
# where ``ck`` is the convkit module (or convkit.reference) and ``kw`` is
# forwarded (e.g. backend=...). Builders that need max-pool indices compute
# them with the reference forward so they are valid.


def _x(rng, dtype, shape, positive=False):
    a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.25
    return a.astype(dtype)


def _sizes(big):
    # big: large enough for the kernels to split work across threads.
    return (4, 16, 20, 20) if big else (2, 4, 7, 6)


CONV_KW = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
CONVT_KW = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=1)
MAXPOOL_KW = dict(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True)
AVGPOOL_KW = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False,
                  divisor_override=None)
LPPOOL_KW = dict(norm_type=2.0, kernel_size=(2, 3), stride=2, ceil_mode=True)
ADAPTIVE_SIZE = (3, 4)


def _conv_make(rng, dtype, big):
    n, c, h, w = _sizes(big)
    k = 2 * c
    x = _x(rng, dtype, (n, c, h, w))
    wt = _x(rng, dtype, (k, c // 2, 3, 3))
    b = _x(rng, dtype, (k,))
    oh, ow = conv_out_hw(h, w, (3, 3), CONV_KW["stride"], CONV_KW["padding"], CONV_KW["dilation"])
    return dict(x=x, w=wt, bias=b, grad_out=_x(rng, dtype, (n, k, oh, ow)))


def _convt_make(rng, dtype, big):
    n, c, h, w = _sizes(big)
    if big:
        h, w = h // 2, w // 2
    k = c  # out channels
    x = _x(rng, dtype, (n, c, h, w))
    wt = _x(rng, dtype, (c, k // 2, 3, 3))
    b = _x(rng, dtype, (k,))
    oh, ow = conv_transpose_out_hw(h, w, (3, 3), 2, 1, 1, 1)
    return dict(x=x, w=wt, bias=b, grad_out=_x(rng, dtype, (n, k, oh, ow)))


def _pool_make(positive=False, kw=None, adaptive=False, global_=False):
    def make(rng, dtype, big):
        n, c, h, w = _sizes(big)
        x = _x(rng, dtype, (n, c, h, w), positive=positive)
        if global_:
            oh, ow = 1, 1
        elif adaptive:
            oh, ow = ADAPTIVE_SIZE
        else:
            k = {kk: v for kk, v in kw.items() if kk in ("kernel_size", "stride", "padding", "dilation", "ceil_mode")}
            oh, ow = pool_out_hw(h, w, **k)
        return dict(x=x, grad_out=_x(rng, dtype, (n, c, oh, ow)))
    return make


def _with_max_indices(make, adaptive):
    def make2(rng, dtype, big):
        import convkit.reference as ref

        d = make(rng, dtype, big)
        if adaptive:
            _, idx = ref.adaptive_max_pool2d(d["x"], ADAPTIVE_SIZE, return_indices=True)
        else:
            _, idx = ref.max_pool2d(d["x"], return_indices=True, **MAXPOOL_KW)
        d["indices"] = idx
        return d
    return make2


def _drop_none(out):
    return tuple(o for o in as_tuple(out) if o is not None)


OPS = {
    "conv2d": (_conv_make, lambda ck, a, **kw: as_tuple(
        ck.conv2d(a["x"], a["w"], a["bias"], **CONV_KW, **kw))),
    "conv2d_backward": (_conv_make, lambda ck, a, **kw: _drop_none(
        ck.conv2d_backward(a["grad_out"], a["x"], a["w"], **CONV_KW, **kw))),
    "conv_transpose2d": (_convt_make, lambda ck, a, **kw: as_tuple(
        ck.conv_transpose2d(a["x"], a["w"], a["bias"], **CONVT_KW, **kw))),
    "conv_transpose2d_backward": (_convt_make, lambda ck, a, **kw: _drop_none(
        ck.conv_transpose2d_backward(a["grad_out"], a["x"], a["w"], **CONVT_KW, **kw))),
    "max_pool2d": (_pool_make(kw=MAXPOOL_KW), lambda ck, a, **kw: as_tuple(
        ck.max_pool2d(a["x"], return_indices=True, **MAXPOOL_KW, **kw))),
    "max_pool2d_backward": (_with_max_indices(_pool_make(kw=MAXPOOL_KW), False), lambda ck, a, **kw: as_tuple(
        ck.max_pool2d_backward(a["grad_out"], a["x"], a["indices"], **MAXPOOL_KW, **kw))),
    "avg_pool2d": (_pool_make(kw=AVGPOOL_KW), lambda ck, a, **kw: as_tuple(
        ck.avg_pool2d(a["x"], **AVGPOOL_KW, **kw))),
    "avg_pool2d_backward": (_pool_make(kw=AVGPOOL_KW), lambda ck, a, **kw: as_tuple(
        ck.avg_pool2d_backward(a["grad_out"], a["x"], **AVGPOOL_KW, **kw))),
    "lp_pool2d": (_pool_make(positive=True, kw=LPPOOL_KW), lambda ck, a, **kw: as_tuple(
        ck.lp_pool2d(a["x"], **LPPOOL_KW, **kw))),
    "lp_pool2d_backward": (_pool_make(positive=True, kw=LPPOOL_KW), lambda ck, a, **kw: as_tuple(
        ck.lp_pool2d_backward(a["grad_out"], a["x"], **LPPOOL_KW, **kw))),
    "adaptive_avg_pool2d": (_pool_make(adaptive=True), lambda ck, a, **kw: as_tuple(
        ck.adaptive_avg_pool2d(a["x"], ADAPTIVE_SIZE, **kw))),
    "adaptive_avg_pool2d_backward": (_pool_make(adaptive=True), lambda ck, a, **kw: as_tuple(
        ck.adaptive_avg_pool2d_backward(a["grad_out"], a["x"], **kw))),
    "adaptive_max_pool2d": (_pool_make(adaptive=True), lambda ck, a, **kw: as_tuple(
        ck.adaptive_max_pool2d(a["x"], ADAPTIVE_SIZE, return_indices=True, **kw))),
    "adaptive_max_pool2d_backward": (_with_max_indices(_pool_make(adaptive=True), True), lambda ck, a, **kw: as_tuple(
        ck.adaptive_max_pool2d_backward(a["grad_out"], a["x"], a["indices"], **kw))),
    "global_avg_pool2d": (_pool_make(global_=True), lambda ck, a, **kw: as_tuple(
        ck.global_avg_pool2d(a["x"], **kw))),
    "global_avg_pool2d_backward": (_pool_make(global_=True), lambda ck, a, **kw: as_tuple(
        ck.global_avg_pool2d_backward(a["grad_out"], a["x"], **kw))),
}

OP_NAMES = sorted(OPS)
