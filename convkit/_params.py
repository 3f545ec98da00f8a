"""Argument normalisation and output-shape arithmetic: the only place for it.

Every public op (CPU, CUDA and the NumPy reference) calls one of the
``*_geometry`` functions below, which checks the arguments against the input
shapes, applies PyTorch's rules (``padding='same'``, pooling's ``ceil_mode``,
"padding at most half the window", ...) and returns a frozen dataclass of
plain integers. The backends never derive a shape themselves.

Errors are ``ValueError`` / ``TypeError`` whose message starts with the public
function's name and names the offending argument.
"""

from __future__ import annotations

import functools
import numbers
import operator
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

# Largest element count we accept for any array: leaves head-room for index
# arithmetic in int64 (bytes = count * 8 must not overflow either).
MAX_ELEMENTS = 2**60

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------- #
# small helpers
# --------------------------------------------------------------------------- #

def _is_int(v) -> bool:
    if type(v) is int:  # the common case, without the ABC check
        return True
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _as_int(fn: str, name: str, v) -> int:
    if not _is_int(v):
        raise TypeError(f"{fn}: {name} must be an int, got {type(v).__name__} {v!r}")
    return operator.index(v)


def pair(fn: str, name: str, value, *, minimum: Optional[int] = None) -> Tuple[int, int]:
    """int or sequence of two ints -> (h, w), checked against ``minimum``."""
    if _is_int(value):
        out = (operator.index(value),) * 2
    elif isinstance(value, (tuple, list, np.ndarray)) and len(value) == 2 and all(_is_int(v) for v in value):
        out = (operator.index(value[0]), operator.index(value[1]))
    elif isinstance(value, (tuple, list)) and len(value) == 1 and _is_int(value[0]):
        out = (operator.index(value[0]),) * 2
    else:
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {value!r}")
    if minimum is not None and min(out) < minimum:
        what = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{fn}: {name} must be {what}, got {value!r}")
    return out


def _check_count(fn: str, what: str, *dims: int) -> int:
    count = 1
    for d in dims:
        count *= int(d)
    if count > MAX_ELEMENTS:
        raise ValueError(f"{fn}: {what} would have {count} elements, more than the supported {MAX_ELEMENTS}")
    return count


def as_bool(fn: str, name: str, value) -> bool:
    if isinstance(value, (bool, np.bool_)) or (_is_int(value) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{fn}: {name} must be a bool, got {value!r}")


def check_shape_dims(fn: str, name: str, shape, allowed_ndims=(3, 4)) -> None:
    if len(shape) not in allowed_ndims:
        dims = " or ".join(f"{d}-D" for d in allowed_ndims)
        layout = {3: "(C, H, W)", 4: "(N, C, H, W)"}
        shapes = " or ".join(layout[d] for d in allowed_ndims)
        raise ValueError(f"{fn}: {name} must be {dims} {shapes}, got shape {tuple(shape)}")
    _check_count(fn, name, *shape)


def _batched(fn: str, name: str, shape) -> Tuple[int, int, int, int, bool]:
    """(N, C, H, W, unbatched) from a 3-D or 4-D shape."""
    check_shape_dims(fn, name, shape)
    if len(shape) == 3:
        return 1, shape[0], shape[1], shape[2], True
    return shape[0], shape[1], shape[2], shape[3], False


# --------------------------------------------------------------------------- #
# memoised geometries
# --------------------------------------------------------------------------- #

_SCALAR_KEY_TYPES = (int, bool, float, str, type(None), np.integer, np.floating, np.bool_)


def _typed_key(v):
    """Hashable key for an argument that tells 1, True, 1.0 and np.int64(1)
    apart (they are equal, but not all of them are valid). TypeError for
    anything else (arrays, custom objects): such calls are not memoised."""
    t = type(v)
    if t is tuple and all(type(e) is int for e in v):  # shapes: the common case
        return v
    if isinstance(v, _SCALAR_KEY_TYPES):
        return t, v
    if t is tuple or t is list:
        return t, tuple(_typed_key(e) for e in v)
    raise TypeError


_BOOL_TAG = ("bool",)


def _plain_key(args):
    """``args`` itself when every argument is a str, None, an int (not a
    bool) or a tuple of ints, whose equality implies equal validity; with a
    bool (the pools' ceil_mode) it is tagged, (_BOOL_TAG, b), so that True
    and 1 stay apart; else None. (Such a key, a tuple whose first item is the
    function name, cannot equal the (typed args, typed kwargs) pair the memo
    uses otherwise, whose first item is a tuple.)"""
    tagged = False
    for a in args:
        t = type(a)
        if t is int or t is str or a is None:
            continue
        if t is bool:
            tagged = True
            continue
        if t is tuple and all(type(e) is int for e in a):
            continue
        return None
    if tagged:
        return tuple((_BOOL_TAG, a) if type(a) is bool else a for a in args)
    return args


def _memoized(geometry_fn):
    """Cache a geometry function's results by its (typed) arguments: checking
    and deriving a geometry costs tens of microseconds of Python, a large part
    of a small layer's call. Geometries are frozen, so sharing them is safe;
    calls that raise are not cached and raise again."""
    cache = {}

    @functools.wraps(geometry_fn)
    def wrapper(*args, **kwargs):
        key = None if kwargs else _plain_key(args)
        if key is None:
            try:
                key = _typed_key(args), _typed_key(sorted(kwargs.items())) if kwargs else None
            except TypeError:
                return geometry_fn(*args, **kwargs)
        result = cache.get(key)
        if result is None:
            result = geometry_fn(*args, **kwargs)
            if len(cache) >= 1024:
                cache.clear()
            cache[key] = result
        return result

    return wrapper


# --------------------------------------------------------------------------- #
# convolution
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class ConvGeometry:
    """A forward convolution y = conv(x, w); all sizes explicit.

    x: (batch, in_channels, in_h, in_w); w: (out_channels, in_channels/groups,
    kernel_h, kernel_w); y: (batch, out_channels, out_h, out_w). Input row for
    output row oh and kernel row r is ``oh*stride_h - pad_top + r*dilation_h``.
    Transposed convolutions use the geometry of the forward convolution whose
    *input* is their output (so its ``x`` is their result, its ``y`` their input).
    """

    batch: int
    in_channels: int
    in_h: int
    in_w: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    out_h: int
    out_w: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    dilation_h: int
    dilation_w: int
    groups: int
    unbatched: bool = False

    @property
    def x_shape(self):
        return (self.batch, self.in_channels, self.in_h, self.in_w)

    @property
    def w_shape(self):
        return (self.out_channels, self.in_channels // self.groups, self.kernel_h, self.kernel_w)

    @property
    def y_shape(self):
        return (self.batch, self.out_channels, self.out_h, self.out_w)

    def public_shape(self, shape):
        """Drop the batch dimension again for unbatched calls."""
        return tuple(shape[1:]) if self.unbatched else tuple(shape)

    @property
    def flops(self) -> int:
        """Multiply-adds x 2 of one forward pass."""
        return (2 * self.batch * self.out_channels * self.out_h * self.out_w
                * (self.in_channels // self.groups) * self.kernel_h * self.kernel_w)


def _conv_padding(fn: str, padding, kernel, dilation, stride, *, allow_strings=True):
    """-> ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        mode = padding.lower()
        if not allow_strings and mode != "valid":
            raise ValueError(f"{fn}: padding must be an int, a pair or ((top, bottom), (left, right)); "
                             f"the string {padding!r} is not supported here (only 'valid')")
        extent = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if mode == "valid":
            return (0, 0), (0, 0)
        if mode == "same":
            if stride != (1, 1):
                raise ValueError(f"{fn}: padding='same' requires stride 1, got stride={stride}")
            # PyTorch puts the odd extra row/column at the bottom/right.
            return tuple((e // 2, e - e // 2) for e in extent)
        if mode == "full":
            return tuple((e, e) for e in extent)
        raise ValueError(f"{fn}: padding must be 'valid', 'same', 'full', an int or pairs of ints, got {padding!r}")
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) for p in padding)):
        sides = []
        for p in padding:
            if len(p) != 2 or not all(_is_int(v) for v in p):
                raise TypeError(f"{fn}: padding must be ((top, bottom), (left, right)) of ints, got {padding!r}")
            sides.append((operator.index(p[0]), operator.index(p[1])))
        if min(min(s) for s in sides) < 0:
            raise ValueError(f"{fn}: padding must be non-negative, got {padding!r}")
        return tuple(sides)
    ph, pw = pair(fn, "padding", padding, minimum=0)
    return (ph, ph), (pw, pw)


def _check_float_dtype(fn: str, name: str, dtype) -> None:
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: {name} has dtype {np.dtype(dtype)}; accepted dtypes are float32 and float64")


@_memoized
def conv2d_geometry(fn: str, x_shape, w_shape, bias_shape=None, stride=1, padding=0,
                    dilation=1, groups=1) -> ConvGeometry:
    n, c, h, w, unbatched = _batched(fn, "input", x_shape)
    if len(w_shape) != 4:
        raise ValueError(f"{fn}: weight must be 4-D (out_channels, in_channels/groups, kH, kW), "
                         f"got shape {tuple(w_shape)}")
    groups = _as_int(fn, "groups", groups)
    if groups < 1:
        raise ValueError(f"{fn}: groups must be positive, got {groups}")
    k, cg, r, s = w_shape
    if r < 1 or s < 1:
        raise ValueError(f"{fn}: kernel size must be positive, got weight shape {tuple(w_shape)}")
    if k % groups:
        raise ValueError(f"{fn}: out_channels ({k}, weight.shape[0]) must be divisible by groups ({groups})")
    if c != cg * groups:
        raise ValueError(f"{fn}: input has {c} channels but weight expects in_channels/groups={cg} "
                         f"x groups={groups} = {cg * groups}")
    if bias_shape is not None and tuple(bias_shape) != (k,):
        raise ValueError(f"{fn}: bias must have shape ({k},) (out_channels), got {tuple(bias_shape)}")
    sh, sw = pair(fn, "stride", stride, minimum=1)
    dh, dw = pair(fn, "dilation", dilation, minimum=1)
    (pt, pb), (pl, pr) = _conv_padding(fn, padding, (r, s), (dh, dw), (sh, sw))
    ext_h, ext_w = dh * (r - 1) + 1, dw * (s - 1) + 1
    if h + pt + pb < ext_h or w + pl + pr < ext_w:
        raise ValueError(f"{fn}: the dilated kernel ({ext_h}x{ext_w}) is larger than the padded input "
                         f"({h + pt + pb}x{w + pl + pr})")
    oh = (h + pt + pb - ext_h) // sh + 1
    ow = (w + pl + pr - ext_w) // sw + 1
    _check_count(fn, "the output", n, k, oh, ow)
    return ConvGeometry(n, c, h, w, k, r, s, oh, ow, sh, sw, pt, pb, pl, pr, dh, dw, groups, unbatched)


@_memoized
def conv_transpose2d_geometry(fn: str, x_shape, w_shape, bias_shape=None, stride=1, padding=0,
                              output_padding=0, groups=1, dilation=1) -> ConvGeometry:
    """Geometry of the forward convolution that conv_transpose2d is the adjoint of.

    x: (N, C_in, H, W) is that convolution's output ``y``; weight
    (C_in, C_out/groups, kH, kW) is its weight; the result (N, C_out, H', W')
    is its input, with H' = (H-1)*stride - pad_top - pad_bottom
    + dilation*(kH-1) + output_padding + 1.
    """
    n, cin, h, w, unbatched = _batched(fn, "input", x_shape)
    if len(w_shape) != 4:
        raise ValueError(f"{fn}: weight must be 4-D (in_channels, out_channels/groups, kH, kW), "
                         f"got shape {tuple(w_shape)}")
    groups = _as_int(fn, "groups", groups)
    if groups < 1:
        raise ValueError(f"{fn}: groups must be positive, got {groups}")
    wk, coutg, r, s = w_shape
    if r < 1 or s < 1:
        raise ValueError(f"{fn}: kernel size must be positive, got weight shape {tuple(w_shape)}")
    if wk != cin:
        raise ValueError(f"{fn}: input has {cin} channels but weight.shape[0] is {wk}")
    if cin % groups:
        raise ValueError(f"{fn}: in_channels ({cin}) must be divisible by groups ({groups})")
    cout = coutg * groups
    if bias_shape is not None and tuple(bias_shape) != (cout,):
        raise ValueError(f"{fn}: bias must have shape ({cout},) (out_channels), got {tuple(bias_shape)}")
    sh, sw = pair(fn, "stride", stride, minimum=1)
    dh, dw = pair(fn, "dilation", dilation, minimum=1)
    oph, opw = pair(fn, "output_padding", output_padding, minimum=0)
    if (oph >= sh and oph >= dh) or (opw >= sw and opw >= dw):
        raise ValueError(f"{fn}: output_padding must be smaller than either stride or dilation, got "
                         f"output_padding={(oph, opw)}, stride={(sh, sw)}, dilation={(dh, dw)}")
    (pt, pb), (pl, pr) = _conv_padding(fn, padding, (r, s), (dh, dw), (sh, sw), allow_strings=False)
    out_h = (h - 1) * sh - pt - pb + dh * (r - 1) + oph + 1
    out_w = (w - 1) * sw - pl - pr + dw * (s - 1) + opw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"{fn}: the output size ({out_h}x{out_w}) would not be positive; "
                         f"padding {padding!r} is too large")
    _check_count(fn, "the output", n, cout, out_h, out_w)
    # The forward convolution's bottom/right padding absorbs output_padding.
    return ConvGeometry(n, cout, out_h, out_w, cin, r, s, h, w, sh, sw, pt, pb - oph, pl, pr - opw,
                        dh, dw, groups, unbatched)


# --------------------------------------------------------------------------- #
# pooling
# --------------------------------------------------------------------------- #

class _Planes:
    """Shapes shared by the pool geometries (fields batch, channels, in_h, in_w,
    out_h, out_w, unbatched)."""

    @property
    def planes(self) -> int:
        return self.batch * self.channels

    @property
    def x_shape(self):
        return (self.batch, self.channels, self.in_h, self.in_w)

    @property
    def y_shape(self):
        return (self.batch, self.channels, self.out_h, self.out_w)

    def public_shape(self, shape):
        return tuple(shape[1:]) if self.unbatched else tuple(shape)

@dataclass(frozen=True)
class PoolGeometry(_Planes):
    """A sliding-window pool over (batch*channels) planes of in_h x in_w."""

    batch: int
    channels: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dilation_h: int = 1
    dilation_w: int = 1
    unbatched: bool = False


def _pool_output_size(size, kernel, pad, stride, dilation, ceil_mode):
    """PyTorch's pooling_output_shape: the last window must start inside the
    input or the left padding."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1 + ((stride - 1) if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@_memoized
def pool2d_geometry(fn: str, x_shape, kernel_size, stride=None, padding=0, dilation=1,
                    ceil_mode=False) -> PoolGeometry:
    n, c, h, w, unbatched = _batched(fn, "input", x_shape)
    if c < 1 or h < 1 or w < 1:
        raise ValueError(f"{fn}: input must have non-zero channels, height and width "
                         f"(only the batch may be empty), got shape {tuple(x_shape)}")
    kh, kw = pair(fn, "kernel_size", kernel_size, minimum=1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        sh, sw = kh, kw
    else:
        sh, sw = pair(fn, "stride", stride, minimum=1)
    ph, pw = pair(fn, "padding", padding, minimum=0)
    dh, dw = pair(fn, "dilation", dilation, minimum=1)
    ceil_mode = as_bool(fn, "ceil_mode", ceil_mode)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{fn}: padding must be at most half of kernel_size, got padding={(ph, pw)} "
                         f"for kernel_size={(kh, kw)}")
    oh = _pool_output_size(h, kh, ph, sh, dh, ceil_mode)
    ow = _pool_output_size(w, kw, pw, sw, dw, ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"{fn}: the window ({dh * (kh - 1) + 1}x{dw * (kw - 1) + 1} with dilation) is "
                         f"larger than the padded input ({h + 2 * ph}x{w + 2 * pw}); output would be {oh}x{ow}")
    _check_count(fn, "the output", n, c, oh, ow)
    return PoolGeometry(n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, unbatched)


@_memoized
def lp_pool2d_geometry(fn: str, x_shape, norm_type, kernel_size, stride=None, ceil_mode=False):
    if isinstance(norm_type, (bool, np.bool_)) or not isinstance(norm_type, numbers.Real):
        raise TypeError(f"{fn}: norm_type must be a real number, got {norm_type!r}")
    p = float(norm_type)
    if not np.isfinite(p) or p <= 0:
        raise ValueError(f"{fn}: norm_type must be finite and positive, got {norm_type!r}")
    return p, pool2d_geometry(fn, x_shape, kernel_size, stride, 0, 1, ceil_mode)


def avg_pool2d_divisor(fn: str, divisor_override) -> int:
    """None -> 0 (no override); otherwise a non-zero int."""
    if divisor_override is None:
        return 0
    d = _as_int(fn, "divisor_override", divisor_override)
    if d == 0:
        raise ValueError(f"{fn}: divisor_override must be non-zero, got 0")
    if abs(d) > 2**62:
        raise ValueError(f"{fn}: divisor_override is too large: {d}")
    return d


@dataclass(frozen=True)
class AdaptiveGeometry(_Planes):
    """An adaptive pool: output cell o of an axis n -> m covers adaptive_window(o, n, m)."""

    batch: int
    channels: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    unbatched: bool = False


@_memoized
def adaptive_pool2d_geometry(fn: str, x_shape, output_size) -> AdaptiveGeometry:
    n, c, h, w, unbatched = _batched(fn, "input", x_shape)
    if c < 1 or h < 1 or w < 1:
        raise ValueError(f"{fn}: input must have non-zero channels, height and width "
                         f"(only the batch may be empty), got shape {tuple(x_shape)}")
    if _is_int(output_size) or output_size is None:
        sizes = (output_size, output_size)
    elif isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        sizes = tuple(output_size)
    else:
        raise TypeError(f"{fn}: output_size must be an int, None or a pair of ints/None, got {output_size!r}")
    resolved = []
    for size, full in zip(sizes, (h, w)):
        if size is None:
            resolved.append(full)
        elif not _is_int(size):
            raise TypeError(f"{fn}: output_size must be an int, None or a pair of ints/None, got {output_size!r}")
        elif size < 1:
            raise ValueError(f"{fn}: output_size must be positive, got {output_size!r}")
        else:
            resolved.append(operator.index(size))
    _check_count(fn, "the output", n, c, *resolved)
    return AdaptiveGeometry(n, c, h, w, resolved[0], resolved[1], unbatched)


def adaptive_window(o: int, in_size: int, out_size: int) -> Tuple[int, int]:
    """[start, end) of adaptive-pool window o."""
    return (o * in_size) // out_size, -((-(o + 1) * in_size) // out_size)


# --------------------------------------------------------------------------- #
# array checks shared by backends
# --------------------------------------------------------------------------- #

def float_arrays(fn: str, asarray=np.asarray, dtypes=FLOAT_DTYPES, **named):
    """asarray each non-None argument; all must share one float dtype from
    ``dtypes``. Returns the list in argument order (None kept)."""
    out = []
    dtype = first = None
    for name, value in named.items():
        if value is None:
            out.append(None)
            continue
        arr = asarray(value)
        if arr.dtype not in dtypes:
            accepted = " and ".join(str(d) for d in dtypes) if len(dtypes) == 2 else ", ".join(str(d) for d in dtypes)
            raise TypeError(f"{fn}: {name} has dtype {arr.dtype}; accepted dtypes are {accepted}")
        if dtype is None:
            dtype, first = arr.dtype, name
        elif arr.dtype != dtype:
            raise TypeError(f"{fn}: {name} has dtype {arr.dtype} but {first} has dtype {dtype}; all arrays "
                            f"must have the same dtype")
        out.append(arr)
    return out


def check_output_mask(fn: str, output_mask) -> Tuple[bool, bool, bool]:
    try:
        mask = tuple(bool(m) for m in output_mask)
    except TypeError:
        raise TypeError(f"{fn}: output_mask must be a sequence of three bools, got {output_mask!r}") from None
    if len(mask) != 3:
        raise ValueError(f"{fn}: output_mask must have three entries (grad_input, grad_weight, grad_bias), "
                         f"got {output_mask!r}")
    return mask


def check_grad_shape(fn: str, grad_shape, expected_shape) -> None:
    if tuple(grad_shape) != tuple(expected_shape):
        raise ValueError(f"{fn}: grad_output must have shape {tuple(expected_shape)} (the forward output), "
                         f"got {tuple(grad_shape)}")


def check_indices(fn: str, indices_shape, indices_dtype, expected_shape) -> None:
    if np.dtype(indices_dtype) != np.dtype(np.int64):
        raise TypeError(f"{fn}: indices must be int64 (as returned with return_indices=True), "
                        f"got {np.dtype(indices_dtype)}")
    if tuple(indices_shape) != tuple(expected_shape):
        raise ValueError(f"{fn}: indices must have shape {tuple(expected_shape)} (the forward output), "
                         f"got {tuple(indices_shape)}")
