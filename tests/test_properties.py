"""Property-based tests (hypothesis) over every public op and its backward.

What the other test modules do not cover and this one does, on randomly drawn
geometries that include 1-pixel inputs, kernels exactly as large as the padded
input, prime sizes, large kernels (up to 13), strides and dilations larger
than the input, asymmetric and 'valid'/'same'/'full' padding, empty batches
and zero channels (convolutions), unbatched inputs:

* float32 AND float64 results against the float64 NumPy reference computed
  on the same (float32) data. The tolerance is a per-element error bound, not
  a global rtol: |got - exact| <= 4 u (L + 3) * |reference on |inputs||, with
  u the unit roundoff of the dtype and L the length of that element's sum
  (plus rtol 1e-10 of helpers.assert_close for float64). Max pooling values
  and indices must be bitwise exact, with ties, signed zeros, NaN and +-inf
  in the input; NaN/+-inf inputs of the convolutions and average pools must
  propagate exactly as in the reference.
* The same call on randomly re-laid-out inputs (Fortran order, negative
  strides, flipped rows, strided slices with NaN in the gaps, channels-last,
  transposed, unaligned, zero-stride broadcast, read-only) must give BITWISE
  the result on contiguous inputs, and must not modify them; the unbatched
  (C, H, W) call must equal the batched one bitwise; max_pool2d without
  indices equals max_pool2d with them; output_mask subsets equal the full
  backward bitwise. Every one of them runs under a randomly drawn SIMD path
  (convkit.set_isa) and thread count.
* Every output element is written: outputs are checked for NaN (the kernels
  write into np.empty buffers, and the allocator is pre-filled with NaN
  buffers of the output sizes just before each call, so a skipped element
  most likely shows up as NaN) as well as against the reference.
* Random argument combinations, valid and invalid, for all 16 ops: valid
  spellings (np.int64, lists, 1-tuples, NumPy arrays, 'SAME', nested lists
  as inputs) equal the canonical call bitwise; each invalid one (bad values,
  bad types, non-float dtypes such as int64/float16/bool/complex, mixed
  dtypes, wrong shapes, bad indices, impossible geometries) raises ValueError
  or TypeError, of the expected class, whose message starts with the
  function's name, from convkit and from convkit.reference alike.
* With PyTorch installed (marker ``torch``), float64 forward and autograd
  backward of every op against torch.nn.functional on the same strategies.

Profiles: CONVKIT_HYPOTHESIS_PROFILE=ci (default: derandomized, a few hundred
examples per op across the file, well under 90 s on 2 cores) or long (2000+
examples per test, for local bug hunting). They are registered under the
names "convkit-properties-ci" / "convkit-properties-long" and applied to each
test by decorator; no profile is loaded globally, so other modules' hypothesis
settings are untouched.
"""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import convkit
import convkit.reference as ref
from helpers import (
    F64_RTOL,
    assert_bitwise_equal,
    assert_close,
    channels_last_view,
    conv_padding,
    pool_has_empty_window,
    reversed_view,
    strided_view,
    transposed_view,
)

# --------------------------------------------------------------------------- #
# hypothesis profiles
# --------------------------------------------------------------------------- #

_HEALTH = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
           HealthCheck.filter_too_much]
settings.register_profile("convkit-properties-ci", max_examples=100, deadline=None, derandomize=True,
                          database=None, suppress_health_check=_HEALTH, print_blob=True)
settings.register_profile("convkit-properties-long", max_examples=2000, deadline=None,
                          suppress_health_check=_HEALTH, print_blob=True)

_PROFILE = os.environ.get("CONVKIT_HYPOTHESIS_PROFILE", "ci").strip() or "ci"
if _PROFILE not in ("ci", "long"):
    raise ValueError(f"CONVKIT_HYPOTHESIS_PROFILE must be 'ci' or 'long', got {_PROFILE!r}")
_BASE = settings.get_profile(f"convkit-properties-{_PROFILE}")


def prop(ci_examples):
    """Settings for one test: ``ci_examples`` in the ci profile, 2000 or more
    (scaled alike) in the long one."""
    n = ci_examples if _PROFILE == "ci" else max(2000, 20 * ci_examples)
    return settings(_BASE, max_examples=n)


# --------------------------------------------------------------------------- #
# environment: SIMD path, threads, memory layouts
# --------------------------------------------------------------------------- #

ISAS = list(convkit.info()["supported_isas"])


@contextlib.contextmanager
def machine(isa, threads):
    old_isa, old_threads = convkit.info()["isa"], convkit.get_num_threads()
    convkit.set_isa(isa)
    convkit.set_num_threads(threads)
    try:
        yield
    finally:
        convkit.set_isa(old_isa)
        convkit.set_num_threads(old_threads)


def _unaligned(a):
    buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
    u = buf[1:].view(a.dtype).reshape(a.shape)
    u[...] = a
    return u


def _flip_rows(a):
    if a.ndim < 2:
        return reversed_view(a)
    return np.ascontiguousarray(a[..., ::-1, :])[..., ::-1, :]


def _broadcast0(a):
    """Zero stride along axis 0 (the data is made constant along it first)."""
    if a.ndim == 0 or a.shape[0] == 0:
        return a
    return np.broadcast_to(a[:1], a.shape)


LAYOUT_FNS = {
    "c": lambda a: a,
    "fortran": np.asfortranarray,
    "negative": reversed_view,
    "flip_rows": _flip_rows,
    "strided": strided_view,
    "channels_last": channels_last_view,
    "transposed": transposed_view,
    "unaligned": _unaligned,
    "broadcast0": _broadcast0,
}


@st.composite
def envs(draw, names):
    """isa, threads and a (layout, read-only) per named input array."""
    return dict(isa=draw(st.sampled_from(ISAS)), threads=draw(st.sampled_from([1, 2, 3])),
                layouts={n: (draw(st.sampled_from(sorted(LAYOUT_FNS))), draw(st.booleans())) for n in names})


def prepare_layouts(arrays, env):
    """Make arrays that get a zero-stride layout constant along axis 0, so the
    values of every layout equal the contiguous arrays'."""
    for name, (layout, _) in env["layouts"].items():
        a = arrays.get(name)
        if layout == "broadcast0" and a is not None and a.dtype.kind == "f" and a.ndim and a.shape[0]:
            a[...] = a[:1]


def relaid(arrays, env):
    out = {}
    for name, a in arrays.items():
        if name not in env["layouts"] or a is None:
            out[name] = a
            continue
        layout, readonly = env["layouts"][name]
        if layout == "broadcast0" and a.ndim and a.shape[0] and not np.array_equal(a, a[:1] + 0 * a, equal_nan=True):
            layout = "c"      # (indices of data that is not constant along axis 0)
        b = LAYOUT_FNS[layout](a)
        if readonly and b.flags.writeable:
            b = b.view()
            b.flags.writeable = False
        np.testing.assert_array_equal(b, a)
        out[name] = b
    return out


def poison(*shapes_dtypes):
    """Leave freed NaN (or absurd-index) buffers of the output sizes behind, so
    that np.empty in the kernels likely gets memory that is not all zeros."""
    bufs = [np.full(s, np.nan if np.dtype(d).kind == "f" else 2**62, dtype=d) for s, d in shapes_dtypes]
    del bufs


def run_everywhere(call, arrays, env, out_specs):
    """call(arrays) -> tuple of outputs (None allowed) on contiguous arrays and
    on re-laid-out ones under the env's isa/threads; asserts bitwise equality
    and unmodified inputs; returns the contiguous result."""
    saved = {k: None if v is None else v.copy() for k, v in arrays.items()}
    with machine(env["isa"], env["threads"]):
        poison(*out_specs)
        got = call(arrays)
        variants = relaid(arrays, env)
        poison(*out_specs)
        got2 = call(variants)
    assert len(got) == len(got2)
    for a, b in zip(got, got2):
        if a is None:
            assert b is None
        else:
            assert_bitwise_equal(b, a, f"layouts {env['layouts']} isa={env['isa']}")
            assert isinstance(b, np.ndarray) and b.flags.writeable and b.flags.c_contiguous
            for v in variants.values():
                if isinstance(v, np.ndarray):
                    assert not np.may_share_memory(b, v), "an output shares memory with an input"
    for k, v in variants.items():
        if v is not None:
            assert_bitwise_equal(v, saved[k], f"input {k} was modified")
    return got


# --------------------------------------------------------------------------- #
# comparisons
# --------------------------------------------------------------------------- #

UNIT = {np.dtype(np.float32): 2.0 ** -24, np.dtype(np.float64): 2.0 ** -53}
TINY = {np.dtype(np.float32): 1e-30, np.dtype(np.float64): 1e-300}


def up(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def assert_bounded(got, exact, absref, terms, dtype, what, extra_rel=0.0):
    """|got - exact| <= 4 u (terms + 3) |absref| + extra_rel |exact| per element,
    ``exact`` the float64 reference on the same data, ``absref`` the reference
    on absolute values (the sum of |terms| of each element)."""
    dtype = np.dtype(dtype)
    assert got is not None, f"{what}: got None"
    assert got.dtype == dtype, f"{what}: dtype {got.dtype} != {dtype}"
    assert got.shape == exact.shape, f"{what}: shape {got.shape} != {exact.shape}"
    if got.size == 0:
        return
    g, e, r = got.astype(np.float64), np.asarray(exact, np.float64), np.abs(np.asarray(absref, np.float64))
    terms = np.broadcast_to(np.asarray(terms, np.float64), e.shape)
    bound = 4.0 * UNIT[dtype] * (terms + 3.0) * r + extra_rel * np.abs(e) + TINY[dtype]
    with np.errstate(invalid="ignore"):
        ok = (np.abs(g - e) <= bound) | (np.isnan(g) & np.isnan(e)) | (g == e)
    if not ok.all():
        i = np.unravel_index(int(np.argmin(ok)), ok.shape)
        raise AssertionError(f"{what} ({dtype}): {int((~ok).sum())}/{ok.size} elements out of bound; first at "
                             f"{i}: got {g[i]!r}, exact {e[i]!r}, |diff| {abs(g[i] - e[i])!r} > bound {bound[i]!r}")
    if dtype == np.float64:
        assert_close(got, exact, F64_RTOL, err_msg=what)


def assert_no_nan(outs, what):
    for o in outs:
        if o is not None and o.dtype.kind == "f":
            assert not np.isnan(o).any(), f"{what}: NaN in the output of finite inputs (unwritten element?)"


def _data(rng, shape, dtype, mode="normal"):
    a = rng.standard_normal(shape)
    if mode == "ties":
        a = rng.integers(-2, 3, size=shape).astype(np.float64)
        a[rng.random(shape) < 0.2] = -0.0
    elif mode == "nan":
        a[rng.random(shape) < 0.15] = np.nan
    elif mode == "inf":
        a[rng.random(shape) < 0.1] = np.inf
        a[rng.random(shape) < 0.1] = -np.inf
    elif mode == "special":            # NaN, +inf and -inf sprinkled in
        u = rng.random(shape)
        a[u < 0.04] = np.nan
        a[(u >= 0.04) & (u < 0.08)] = np.inf
        a[(u >= 0.08) & (u < 0.12)] = -np.inf
    elif mode == "positive":
        a = np.abs(a) + 0.1
    elif mode == "nonneg":
        a = np.abs(a)
        a[rng.random(shape) < 0.3] = 0.0
    return a.astype(dtype)


def batched(n, *rest):
    return tuple(rest) if n is None else (n,) + tuple(rest)


# --------------------------------------------------------------------------- #
# strategies
# --------------------------------------------------------------------------- #

BIG_KERNELS = [5, 7, 11, 13]
PRIMES = [7, 11, 13, 17]
MAX_EXTENT = 30   # largest dilated window: keeps the float64 reference fast

dtypes = st.sampled_from([np.dtype(np.float32), np.dtype(np.float64)])
seeds = st.integers(0, 2**32 - 1)
kernel_sizes = st.one_of(st.integers(1, 3), st.integers(1, 4), st.sampled_from(BIG_KERNELS))
strides = st.one_of(st.integers(1, 3), st.integers(1, 3), st.sampled_from([4, 5, 8, 17]))
batches = st.sampled_from([None, 0, 1, 2, 3])


def _dilation(draw, k):
    d = draw(st.one_of(st.just(1), st.integers(1, 3), st.sampled_from([5, 9, 16])))
    if k > 1 and d * (k - 1) + 1 > MAX_EXTENT:
        d = max(1, (MAX_EXTENT - 1) // (k - 1))
    return d


def _spatial(draw, lo, zero_ok=False, wide=False):
    """A size >= lo: exactly lo (kernel = padded input), 1, a prime, or a range."""
    kinds = ["tight", "tight", "range", "range", "prime", "one"] + (["zero"] if zero_ok and lo == 0 else []) \
        + (["wide"] if wide else [])
    kind = draw(st.sampled_from(kinds))
    lo1 = max(lo, 1)
    if kind == "tight":
        return lo1
    if kind == "one" and lo <= 1:
        return 1
    if kind == "zero":
        return 0
    if kind == "prime":
        return draw(st.sampled_from([p for p in PRIMES if p >= lo1] or [lo1 + 2]))
    if kind == "wide":
        return lo1 + draw(st.integers(8, 40))
    return lo1 + draw(st.integers(0, 6))


def _pair_or_int(draw, a, b):
    """(a, b) spelled as an int when equal, sometimes."""
    if a == b and draw(st.booleans()):
        return a
    return (a, b)


@st.composite
def conv_cases(draw, torch_ok=False):
    groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
    cg = draw(st.sampled_from([1, 1, 1, 2, 2, 3, 8, 17] + ([] if torch_ok else [0])))
    kg = draw(st.sampled_from([1, 1, 1, 2, 2, 3, 9, 33] + ([] if torch_ok else [0])))
    kh, kw = draw(kernel_sizes), draw(kernel_sizes)
    dh, dw = _dilation(draw, kh), _dilation(draw, kw)
    mode = draw(st.sampled_from(["int", "pair", "sides", "valid", "same", "full"]))
    if mode == "same":
        stride = 1
    else:
        stride = _pair_or_int(draw, draw(strides), draw(strides))
    pads = st.one_of(st.integers(0, 3), st.sampled_from([0, 1, 6]))
    if mode == "int":
        padding = draw(pads)
    elif mode == "pair":
        padding = (draw(pads), draw(pads))
    elif mode == "sides":
        padding = ((draw(pads), draw(pads)), (draw(pads), draw(pads)))
    else:
        padding = mode
    (pt, pb), (pl, pr) = conv_padding(padding, (kh, kw), (dh, dw))
    lo_h = max(0, dh * (kh - 1) + 1 - pt - pb)
    lo_w = max(0, dw * (kw - 1) + 1 - pl - pr)
    h, w = _spatial(draw, lo_h, zero_ok=not torch_ok), _spatial(draw, lo_w, zero_ok=not torch_ok, wide=True)
    n = draw(st.sampled_from([None, 1, 2]) if torch_ok else batches)
    # keep the reference affordable: shrink the batch, then the input, then
    # the channels of huge layers
    sh, sw = (stride, stride) if isinstance(stride, int) else stride

    def cost():
        oh, ow = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
        return (n or 1) * groups * kg * oh * ow * cg * kh * kw
    limit = 1_500_000
    if cost() > limit:
        n = None if n is None else min(n, 1)
    if cost() > limit:
        h, w = (max(lo_h, 1), max(lo_w, 1)) if torch_ok else (lo_h, lo_w)
    if cost() > limit:
        groups, cg, kg = 1, min(cg, 2), min(kg, 2)
    dilation = _pair_or_int(draw, dh, dw)
    return dict(n=n, c=cg * groups, k=kg * groups, kernel=(kh, kw), h=h, w=w, bias=draw(st.booleans()),
                kw=dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


@st.composite
def convt_cases(draw, torch_ok=False):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.sampled_from([1, 1, 1, 2, 2, 3, 8] + ([] if torch_ok else [0])))
    coutg = draw(st.sampled_from([1, 1, 1, 2, 2, 3, 9] + ([] if torch_ok else [0])))
    kh, kw = draw(kernel_sizes), draw(kernel_sizes)
    dh, dw = _dilation(draw, kh), _dilation(draw, kw)
    sh, sw = draw(strides), draw(strides)
    oph = draw(st.integers(0, min(max(sh, dh) - 1, 4)))
    opw = draw(st.integers(0, min(max(sw, dw) - 1, 4)))
    hmax = 4 if max(sh, sw) >= 4 else 7
    h = min(_spatial(draw, 1), hmax)
    w = min(_spatial(draw, 1), hmax)

    def sides(size, s, d, k, op):
        room = (size - 1) * s + d * (k - 1) + op     # total padding that still leaves 1 output pixel
        if draw(st.integers(0, 5)) == 0:
            if torch_ok:
                return room // 2, room // 2
            first = draw(st.integers(0, room))
            return first, room - first                # output of exactly one pixel
        first = draw(st.integers(0, min(room, 4)))
        second = first if torch_ok else draw(st.integers(0, min(room - first, 4)))
        if first + second > room:
            first = second = room // 2
        return first, second

    pt, pb = sides(h, sh, dh, kh, oph)
    pl, pr = sides(w, sw, dw, kw, opw)
    if pt == pb and pl == pr:
        padding = _pair_or_int(draw, pt, pl)
    else:
        padding = ((pt, pb), (pl, pr))
    n = draw(st.sampled_from([None, 1, 2]) if torch_ok else batches)
    return dict(n=n, c=cin, k=coutg * groups, kernel=(kh, kw), h=h, w=w, bias=draw(st.booleans()),
                kw=dict(stride=_pair_or_int(draw, sh, sw), padding=padding,
                        output_padding=_pair_or_int(draw, oph, opw), groups=groups,
                        dilation=_pair_or_int(draw, dh, dw)))


@st.composite
def pool_cases(draw, dilation=True, padding=True, torch_ok=False):
    kh, kw = draw(kernel_sizes), draw(kernel_sizes)
    stride = draw(st.one_of(st.none(), strides, st.tuples(strides, strides)))
    ph = draw(st.integers(0, kh // 2)) if padding else 0
    pw = draw(st.integers(0, kw // 2)) if padding else 0
    dh, dw = (_dilation(draw, kh), _dilation(draw, kw)) if dilation else (1, 1)
    ceil_mode = draw(st.booleans())
    h = _spatial(draw, max(1, dh * (kh - 1) + 1 - 2 * ph))
    w = _spatial(draw, max(1, dw * (kw - 1) + 1 - 2 * pw), wide=True)
    n = draw(st.sampled_from([None, 1, 2]) if torch_ok else batches)
    c = draw(st.sampled_from([1, 2, 3, 4, 17]))
    kwargs = dict(kernel_size=_pair_or_int(draw, kh, kw), stride=stride, ceil_mode=ceil_mode)
    if padding:
        kwargs["padding"] = _pair_or_int(draw, ph, pw)
    if dilation:
        kwargs["dilation"] = _pair_or_int(draw, dh, dw)
    return dict(n=n, c=c, h=h, w=w, kw=kwargs)


@st.composite
def adaptive_cases(draw, torch_ok=False):
    h = draw(st.one_of(st.integers(1, 6), st.sampled_from(PRIMES + [1, 20])))
    w = draw(st.one_of(st.integers(1, 6), st.sampled_from(PRIMES + [1, 33])))

    def size(full):
        return draw(st.one_of(st.integers(1, 4), st.integers(1, 2 * full + 1), st.just(full),
                              st.just(None) if not torch_ok else st.just(full)))
    oh, ow = size(h), size(w)
    spelling = draw(st.sampled_from(["tuple", "list", "int"]))
    if spelling == "int" and oh == ow and oh is not None:
        output_size = oh
    elif spelling == "list":
        output_size = [oh, ow]
    else:
        output_size = (oh, ow)
    n = draw(st.sampled_from([None, 1, 2]) if torch_ok else batches)
    c = draw(st.sampled_from([1, 2, 3, 17]))
    return dict(n=n, c=c, h=h, w=w, output_size=output_size,
                out=(h if oh is None else oh, w if ow is None else ow))


# --------------------------------------------------------------------------- #
# convolution
# --------------------------------------------------------------------------- #


def _conv_arrays(rng, case, dtype, transpose=False, x_mode="normal"):
    n, c, k, (kh, kw) = case["n"], case["c"], case["k"], case["kernel"]
    g = case["kw"]["groups"]
    x = _data(rng, batched(n, c, case["h"], case["w"]), dtype, x_mode)
    if transpose:
        wt = _data(rng, (c, k // g, kh, kw), dtype)
    else:
        wt = _data(rng, (k, c // g, kh, kw), dtype)
    b = _data(rng, (k,), dtype) if case["bias"] else None
    return x, wt, b


# NaN/inf only in the input x: the other operands stay finite, so that no
# result depends on whether a kernel multiplies padding (0 * inf) or skips it.
x_modes = st.sampled_from(["normal"] * 6 + ["special"])


def _abs(a):
    return None if a is None else np.abs(up(a))


@prop(500)
@given(conv_cases(), dtypes, seeds, envs(["x", "w", "bias", "gy"]), st.tuples(*[st.booleans()] * 3), x_modes)
def test_conv2d_and_backward(case, dtype, seed, env, mask, x_mode):
    note(repr(case))
    rng = np.random.default_rng(seed)
    kw = case["kw"]
    finite = x_mode == "normal"
    x, w, b = _conv_arrays(rng, case, dtype, x_mode=x_mode)
    exact = ref.conv2d(up(x), up(w), up(b), **kw)
    gy = _data(rng, exact.shape, dtype)
    arrays = dict(x=x, w=w, bias=b, gy=gy)
    prepare_layouts(arrays, env)
    x, w, b, gy = arrays["x"], arrays["w"], arrays["bias"], arrays["gy"]
    exact = ref.conv2d(up(x), up(w), up(b), **kw)
    cg, (kh, kwid) = case["c"] // kw["groups"], case["kernel"]
    kg = case["k"] // kw["groups"]

    def fwd(a):
        return (convkit.conv2d(a["x"], a["w"], a["bias"], **kw),)
    (y,) = run_everywhere(fwd, arrays, env, [(exact.shape, dtype)])
    assert_bounded(y, exact, ref.conv2d(_abs(x), _abs(w), _abs(b), **kw), cg * kh * kwid + 1, dtype, "conv2d")
    if finite:
        assert_no_nan([y], "conv2d")
    if case["c"] == 0:   # an empty sum: the output is the bias
        np.testing.assert_array_equal(y, np.zeros_like(y) + (0 if b is None else b.reshape(-1, 1, 1)))

    def bwd(a, output_mask=(True, True, True)):
        return convkit.conv2d_backward(a["gy"], a["x"], a["w"], output_mask=output_mask, **kw)
    grads = run_everywhere(bwd, arrays, env, [(x.shape, dtype), (w.shape, dtype), ((case["k"],), dtype)])
    ex = ref.conv2d_backward(up(gy), up(x), up(w), **kw)
    ab = ref.conv2d_backward(_abs(gy), _abs(x), _abs(w), **kw)
    pixels = (1 if case["n"] is None else case["n"]) * y.shape[-1] * y.shape[-2]
    for got, e, a, terms, what in zip(grads, ex, ab, (kg * kh * kwid, pixels, pixels),
                                      ("grad_input", "grad_weight", "grad_bias")):
        assert_bounded(got, e, a, terms, dtype, f"conv2d_backward {what}")
    if finite:
        assert_no_nan(grads, "conv2d_backward")
    # output_mask: only the requested gradients, bitwise those of the full call
    with machine(env["isa"], env["threads"]):
        part = bwd(arrays, mask)
    for p, full, m in zip(part, grads, mask):
        if m:
            assert_bitwise_equal(p, full, f"output_mask={mask}")
        else:
            assert p is None
    # unbatched == batched with N=1
    if case["n"] is None:
        with machine(env["isa"], env["threads"]):  # the same SIMD path
            assert_bitwise_equal(y, convkit.conv2d(x[None], w, b, **kw)[0])
            gb = convkit.conv2d_backward(gy[None], x[None], w, **kw)
            assert_bitwise_equal(grads[0], gb[0][0])
            assert_bitwise_equal(grads[1], gb[1])
            assert_bitwise_equal(grads[2], gb[2])


@prop(400)
@given(convt_cases(), dtypes, seeds, envs(["x", "w", "bias", "gy"]), x_modes)
def test_conv_transpose2d_and_backward(case, dtype, seed, env, x_mode):
    note(repr(case))
    rng = np.random.default_rng(seed)
    kw = case["kw"]
    finite = x_mode == "normal"
    x, w, b = _conv_arrays(rng, case, dtype, transpose=True, x_mode=x_mode)
    exact = ref.conv_transpose2d(up(x), up(w), up(b), **kw)
    gy = _data(rng, exact.shape, dtype)
    arrays = dict(x=x, w=w, bias=b, gy=gy)
    prepare_layouts(arrays, env)
    x, w, b, gy = arrays["x"], arrays["w"], arrays["bias"], arrays["gy"]
    exact = ref.conv_transpose2d(up(x), up(w), up(b), **kw)
    g, (kh, kwid) = kw["groups"], case["kernel"]
    cg, kg = case["c"] // g, case["k"] // g

    def fwd(a):
        return (convkit.conv_transpose2d(a["x"], a["w"], a["bias"], **kw),)
    (y,) = run_everywhere(fwd, arrays, env, [(exact.shape, dtype)])
    assert_bounded(y, exact, ref.conv_transpose2d(_abs(x), _abs(w), _abs(b), **kw), cg * kh * kwid + 1, dtype,
                   "conv_transpose2d")
    if finite:
        assert_no_nan([y], "conv_transpose2d")

    def bwd(a):
        return convkit.conv_transpose2d_backward(a["gy"], a["x"], a["w"], **kw)
    grads = run_everywhere(bwd, arrays, env, [(x.shape, dtype), (w.shape, dtype), ((case["k"],), dtype)])
    ex = ref.conv_transpose2d_backward(up(gy), up(x), up(w), **kw)
    ab = ref.conv_transpose2d_backward(_abs(gy), _abs(x), _abs(w), **kw)
    nb = 1 if case["n"] is None else case["n"]
    for got, e, a, terms, what in zip(grads, ex, ab, (kg * kh * kwid, nb * x.shape[-1] * x.shape[-2],
                                                      nb * y.shape[-1] * y.shape[-2]),
                                      ("grad_input", "grad_weight", "grad_bias")):
        if finite or what != "grad_weight":   # grad_weight multiplies x by grad_out's zero padding
            assert_bounded(got, e, a, terms, dtype, f"conv_transpose2d_backward {what}")
    if finite:
        assert_no_nan(grads, "conv_transpose2d_backward")
    if case["n"] is None:
        with machine(env["isa"], env["threads"]):  # the same SIMD path
            assert_bitwise_equal(y, convkit.conv_transpose2d(x[None], w, b, **kw)[0])
            gb = convkit.conv_transpose2d_backward(gy[None], x[None], w, **kw)
            assert_bitwise_equal(grads[0], gb[0][0])
            assert_bitwise_equal(grads[1], gb[1])


# --------------------------------------------------------------------------- #
# pooling
# --------------------------------------------------------------------------- #


def _pool_x(rng, case, dtype, mode="normal"):
    return _data(rng, batched(case["n"], case["c"], case["h"], case["w"]), dtype, mode)


@prop(400)
@given(pool_cases(), dtypes, seeds, envs(["x", "gy", "idx"]),
       st.sampled_from(["normal", "normal", "ties", "nan", "inf"]))
def test_max_pool2d_and_backward(case, dtype, seed, env, mode):
    note(repr(case))
    rng = np.random.default_rng(seed)
    kw = case["kw"]
    x = _pool_x(rng, case, dtype, mode)
    ey, ei = ref.max_pool2d(x, return_indices=True, **kw)
    gy = _data(rng, ey.shape, dtype)
    arrays = dict(x=x, gy=gy, idx=ei)
    prepare_layouts(arrays, env)
    x, gy = arrays["x"], arrays["gy"]
    ey, ei = ref.max_pool2d(x, return_indices=True, **kw)
    arrays["idx"] = ei

    def fwd(a):
        y, i = convkit.max_pool2d(a["x"], return_indices=True, **kw)
        return y, i, convkit.max_pool2d(a["x"], **kw)
    y, idx, y_noidx = run_everywhere(fwd, arrays, env, [(ey.shape, dtype), (ey.shape, np.int64)])
    assert_bitwise_equal(y, ey, "max_pool2d values")
    assert_bitwise_equal(idx, ei, "max_pool2d indices")
    assert_bitwise_equal(y_noidx, y, "max_pool2d without return_indices")
    if mode != "nan":
        assert_no_nan([y], "max_pool2d")

    def bwd(a):
        return (convkit.max_pool2d_backward(a["gy"], a["x"], a["idx"], **kw),)
    (gx,) = run_everywhere(bwd, arrays, env, [(x.shape, dtype)])
    ex = ref.max_pool2d_backward(up(gy), up(x), ei, **kw)
    ab = ref.max_pool2d_backward(_abs(gy), up(x), ei, **kw)
    assert_bounded(gx, ex, ab, ey.shape[-1] * ey.shape[-2], dtype, "max_pool2d_backward")
    assert_no_nan([gx], "max_pool2d_backward")
    if case["n"] is None:
        with machine(env["isa"], env["threads"]):  # the same SIMD path
            yb, ib = convkit.max_pool2d(x[None], return_indices=True, **kw)
            assert_bitwise_equal(y, yb[0])
            assert_bitwise_equal(idx, ib[0])
            assert_bitwise_equal(gx, convkit.max_pool2d_backward(gy[None], x[None], ei[None], **kw)[0])


avg_extras = st.tuples(st.booleans(), st.sampled_from([None, None, None, 1, 2, 3, 7, -1, -3, 1000]))


@prop(400)
@given(pool_cases(dilation=False), dtypes, seeds, envs(["x", "gy"]), avg_extras, x_modes)
def test_avg_pool2d_and_backward(case, dtype, seed, env, extras, x_mode):
    count_include_pad, divisor_override = extras
    kw = dict(case["kw"], count_include_pad=count_include_pad, divisor_override=divisor_override)
    note(repr(kw))
    rng = np.random.default_rng(seed)
    x = _pool_x(rng, case, dtype, x_mode)
    gy = _data(rng, ref.avg_pool2d(x, **kw).shape, dtype)
    arrays = dict(x=x, gy=gy)
    prepare_layouts(arrays, env)
    exact = ref.avg_pool2d(up(x), **kw)
    kh, kwid = (kw["kernel_size"],) * 2 if isinstance(kw["kernel_size"], int) else kw["kernel_size"]

    (y,) = run_everywhere(lambda a: (convkit.avg_pool2d(a["x"], **kw),), arrays, env, [(exact.shape, dtype)])
    assert_bounded(y, exact, ref.avg_pool2d(_abs(x), **kw), kh * kwid + 1, dtype, "avg_pool2d")
    if x_mode == "normal":
        assert_no_nan([y], "avg_pool2d")
    (gx,) = run_everywhere(lambda a: (convkit.avg_pool2d_backward(a["gy"], a["x"], **kw),), arrays, env,
                           [(x.shape, dtype)])
    overlap = math.ceil(kh / (kh if kw["stride"] is None else _pair(kw["stride"])[0])) * \
        math.ceil(kwid / (kwid if kw["stride"] is None else _pair(kw["stride"])[1]))
    assert_bounded(gx, ref.avg_pool2d_backward(up(gy), up(x), **kw), ref.avg_pool2d_backward(_abs(gy), up(x), **kw),
                   2 * overlap + 1, dtype, "avg_pool2d_backward")
    assert_no_nan([gx], "avg_pool2d_backward")
    if case["n"] is None:
        with machine(env["isa"], env["threads"]):  # the same SIMD path
            assert_bitwise_equal(y, convkit.avg_pool2d(x[None], **kw)[0])
            assert_bitwise_equal(gx, convkit.avg_pool2d_backward(gy[None], x[None], **kw)[0])


def _pair(v):
    if isinstance(v, (tuple, list)):
        return tuple(v) if len(v) == 2 else (v[0], v[0])
    return (v, v)


norm_types = st.one_of(st.sampled_from([1.0, 2.0, 3.0, 0.5, 1 / 3, 1.5, 4.0, 2]),
                       st.floats(0.3, 6.0, allow_nan=False, allow_infinity=False))


@prop(300)
@given(pool_cases(dilation=False, padding=False), dtypes, seeds, envs(["x", "gy"]), norm_types,
       st.sampled_from(["positive", "positive", "signed", "nonneg"]))
def test_lp_pool2d_and_backward(case, dtype, seed, env, p, mode):
    if mode == "signed" and p not in (2.0, 4.0, 2):
        mode = "positive"           # x**p of negative x is NaN unless p is even
    if mode == "nonneg" and p < 1:
        mode = "positive"           # 0**(p-1) is inf for p < 1 (torch alike)
    kw = case["kw"]
    note(f"{kw} p={p} {mode}")
    rng = np.random.default_rng(seed)
    x = _pool_x(rng, case, dtype, "normal" if mode == "signed" else mode)
    gy = _data(rng, ref.lp_pool2d(x, p, **kw).shape, dtype)
    arrays = dict(x=x, gy=gy)
    prepare_layouts(arrays, env)
    exact = ref.lp_pool2d(up(x), p, **kw)
    kh, kwid = _pair(kw["kernel_size"])
    taps = kh * kwid
    (y,) = run_everywhere(lambda a: (convkit.lp_pool2d(a["x"], p, **kw),), arrays, env, [(exact.shape, dtype)])
    # positive sums of x**p: relative error ~ (taps + pow ulps), divided by p by the root
    rel = 8 * UNIT[np.dtype(dtype)] * ((taps + 8) * max(1.0, 1.0 / p) + 8)
    assert_bounded(y, exact, exact, 0, dtype, "lp_pool2d", extra_rel=rel)
    assert_no_nan([y], "lp_pool2d")
    (gx,) = run_everywhere(lambda a: (convkit.lp_pool2d_backward(a["gy"], a["x"], p, **kw),), arrays, env,
                           [(x.shape, dtype)])
    ex = ref.lp_pool2d_backward(up(gy), up(x), p, **kw)
    ab = ref.lp_pool2d_backward(_abs(gy), _abs(x), p, **kw)
    sh, sw = (kh, kwid) if kw["stride"] is None else _pair(kw["stride"])
    overlap = math.ceil(kh / sh) * math.ceil(kwid / sw)
    terms = (abs(1.0 / p - 1.0) + 1.0) * (taps + 1) + overlap + abs(p - 1.0) + 8
    assert_bounded(gx, ex, ab, 2 * terms, dtype, "lp_pool2d_backward")
    assert_no_nan([gx], "lp_pool2d_backward")
    if case["n"] is None:
        with machine(env["isa"], env["threads"]):  # the same SIMD path
            assert_bitwise_equal(y, convkit.lp_pool2d(x[None], p, **kw)[0])
            assert_bitwise_equal(gx, convkit.lp_pool2d_backward(gy[None], x[None], p, **kw)[0])


def _window_sizes(in_size, out_size):
    return np.array([-((-(o + 1) * in_size) // out_size) - (o * in_size) // out_size for o in range(out_size)])


def _max_window(in_size, out_size):
    return int(_window_sizes(in_size, out_size).max())


@prop(300)
@given(adaptive_cases(), dtypes, seeds, envs(["x", "gy"]), x_modes)
def test_adaptive_avg_pool2d_and_backward(case, dtype, seed, env, x_mode):
    note(repr(case))
    rng = np.random.default_rng(seed)
    size = case["output_size"]
    x = _pool_x(rng, case, dtype, x_mode)
    gy = _data(rng, batched(case["n"], case["c"], *case["out"]), dtype)
    arrays = dict(x=x, gy=gy)
    prepare_layouts(arrays, env)
    exact = ref.adaptive_avg_pool2d(up(x), size)
    assert exact.shape[-2:] == case["out"]
    wh, ww = _max_window(case["h"], case["out"][0]), _max_window(case["w"], case["out"][1])
    (y,) = run_everywhere(lambda a: (convkit.adaptive_avg_pool2d(a["x"], size),), arrays, env,
                          [(exact.shape, dtype)])
    assert_bounded(y, exact, ref.adaptive_avg_pool2d(_abs(x), size), wh * ww + 2, dtype, "adaptive_avg_pool2d")
    if x_mode == "normal":
        assert_no_nan([y], "adaptive_avg_pool2d")
    (gx,) = run_everywhere(lambda a: (convkit.adaptive_avg_pool2d_backward(a["gy"], a["x"]),), arrays, env,
                           [(x.shape, dtype)])
    # an input pixel is in at most (out/in + 2) windows per axis
    overlap = (case["out"][0] // case["h"] + 2) * (case["out"][1] // case["w"] + 2)
    assert_bounded(gx, ref.adaptive_avg_pool2d_backward(up(gy), up(x)),
                   ref.adaptive_avg_pool2d_backward(_abs(gy), up(x)), overlap + 2, dtype,
                   "adaptive_avg_pool2d_backward")
    assert_no_nan([gx], "adaptive_avg_pool2d_backward")
    if case["n"] is None:
        with machine(env["isa"], env["threads"]):  # the same SIMD path
            assert_bitwise_equal(y, convkit.adaptive_avg_pool2d(x[None], size)[0])
            assert_bitwise_equal(gx, convkit.adaptive_avg_pool2d_backward(gy[None], x[None])[0])
    # output_size (H, W) or (None, None) is the identity
    if case["n"] != 0:
        assert_bitwise_equal(convkit.adaptive_avg_pool2d(x, (None, None)), x.copy())


@prop(300)
@given(adaptive_cases(), dtypes, seeds, envs(["x", "gy", "idx"]), st.sampled_from(["normal", "ties", "nan", "inf"]))
def test_adaptive_max_pool2d_and_backward(case, dtype, seed, env, mode):
    note(repr(case))
    rng = np.random.default_rng(seed)
    size = case["output_size"]
    x = _pool_x(rng, case, dtype, mode)
    gy = _data(rng, batched(case["n"], case["c"], *case["out"]), dtype)
    arrays = dict(x=x, gy=gy, idx=np.zeros(gy.shape, np.int64))
    prepare_layouts(arrays, env)
    ey, ei = ref.adaptive_max_pool2d(arrays["x"], size, return_indices=True)
    arrays["idx"] = ei
    x, gy = arrays["x"], arrays["gy"]

    def fwd(a):
        y, i = convkit.adaptive_max_pool2d(a["x"], size, return_indices=True)
        return y, i, convkit.adaptive_max_pool2d(a["x"], size)
    y, idx, y2 = run_everywhere(fwd, arrays, env, [(ey.shape, dtype), (ey.shape, np.int64)])
    assert_bitwise_equal(y, ey, "adaptive_max_pool2d values")
    assert_bitwise_equal(idx, ei, "adaptive_max_pool2d indices")
    assert_bitwise_equal(y2, y, "adaptive_max_pool2d without return_indices")
    if mode != "nan":
        assert_no_nan([y], "adaptive_max_pool2d")
    (gx,) = run_everywhere(lambda a: (convkit.adaptive_max_pool2d_backward(a["gy"], a["x"], a["idx"]),),
                           arrays, env, [(x.shape, dtype)])
    assert_bounded(gx, ref.adaptive_max_pool2d_backward(up(gy), up(x), ei),
                   ref.adaptive_max_pool2d_backward(_abs(gy), up(x), ei), case["out"][0] * case["out"][1], dtype,
                   "adaptive_max_pool2d_backward")
    assert_no_nan([gx], "adaptive_max_pool2d_backward")
    if case["n"] is None:
        with machine(env["isa"], env["threads"]):  # the same SIMD path
            yb, ib = convkit.adaptive_max_pool2d(x[None], size, return_indices=True)
            assert_bitwise_equal(y, yb[0])
            assert_bitwise_equal(idx, ib[0])
            assert_bitwise_equal(gx, convkit.adaptive_max_pool2d_backward(gy[None], x[None], ei[None])[0])


@prop(200)
@given(adaptive_cases(), dtypes, seeds, envs(["x", "gy"]), x_modes)
def test_global_avg_pool2d_and_backward(case, dtype, seed, env, x_mode):
    rng = np.random.default_rng(seed)
    x = _pool_x(rng, case, dtype, x_mode)
    gy = _data(rng, batched(case["n"], case["c"], 1, 1), dtype)
    arrays = dict(x=x, gy=gy)
    prepare_layouts(arrays, env)
    exact = ref.global_avg_pool2d(up(x))
    hw = case["h"] * case["w"]
    (y,) = run_everywhere(lambda a: (convkit.global_avg_pool2d(a["x"]),), arrays, env, [(exact.shape, dtype)])
    assert_bounded(y, exact, ref.global_avg_pool2d(_abs(x)), hw + 2, dtype, "global_avg_pool2d")
    # the same numbers as adaptive_avg_pool2d(x, 1), which torch computes as a mean
    assert_bounded(convkit.adaptive_avg_pool2d(x, 1), exact, ref.global_avg_pool2d(_abs(x)), hw + 2, dtype,
                   "adaptive_avg_pool2d(x, 1)")
    (gx,) = run_everywhere(lambda a: (convkit.global_avg_pool2d_backward(a["gy"], a["x"]),), arrays, env,
                           [(x.shape, dtype)])
    assert_bounded(gx, ref.global_avg_pool2d_backward(up(gy), up(x)), ref.global_avg_pool2d_backward(_abs(gy), up(x)),
                   1, dtype, "global_avg_pool2d_backward")
    assert_no_nan([gx], "global_avg_pool2d_backward")
    if x_mode == "normal":
        assert_no_nan([y], "global_avg_pool2d")
    if case["n"] is None:
        with machine(env["isa"], env["threads"]):  # the same SIMD path
            assert_bitwise_equal(y, convkit.global_avg_pool2d(x[None])[0])
            assert_bitwise_equal(gx, convkit.global_avg_pool2d_backward(gy[None], x[None])[0])


# --------------------------------------------------------------------------- #
# random argument combinations, valid and invalid, for all 16 ops
# --------------------------------------------------------------------------- #
#
# A call is (op name, dict of keyword arguments); every public op and its
# reference take the same parameter names. ``base_call`` draws a valid call;
# each mutation returns a copy that is invalid by construction (or None when
# it does not apply to this call) and the exception class(es) it must raise.

VE, TE = ValueError, TypeError
OPS = sorted(convkit.functional.PUBLIC_OPS)


def _small_pool_case(draw, dilation=True, padding=True):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph = draw(st.integers(0, kh // 2)) if padding else 0
    pw = draw(st.integers(0, kw // 2)) if padding else 0
    dh, dw = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    h = max(1, dh * (kh - 1) + 1 - 2 * ph) + draw(st.integers(0, 3))
    w = max(1, dw * (kw - 1) + 1 - 2 * pw) + draw(st.integers(0, 3))
    kwargs = dict(kernel_size=(kh, kw), stride=draw(st.one_of(st.none(), st.tuples(st.integers(1, 3),
                                                                                   st.integers(1, 3)))),
                  ceil_mode=draw(st.booleans()))
    if padding:
        kwargs["padding"] = (ph, pw)
    if dilation:
        kwargs["dilation"] = (dh, dw)
    return dict(n=draw(st.sampled_from([None, 0, 2])), c=draw(st.integers(1, 3)), h=h, w=w, kw=kwargs)


@st.composite
def base_calls(draw, op):
    rng = np.random.default_rng(draw(seeds))
    dtype = draw(dtypes)
    R = lambda *shape: _data(rng, shape, dtype)  # noqa: E731
    if op.startswith("conv2d"):
        groups = draw(st.sampled_from([1, 2]))
        cg, kg = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        padding = draw(st.sampled_from([0, 1, (1, 0), ((0, 1), (1, 0)), "valid", "same", "full"]))
        stride = 1 if padding == "same" else draw(st.sampled_from([1, 2, (1, 2)]))
        kw_ = dict(stride=stride, padding=padding, dilation=draw(st.sampled_from([1, 2, (2, 1)])), groups=groups)
        (pt, pb), (pl, pr) = conv_padding(padding, (kh, kw), _pair(kw_["dilation"]))
        dh, dw = _pair(kw_["dilation"])
        h = max(1, dh * (kh - 1) + 1 - pt - pb) + draw(st.integers(0, 2))
        w = max(1, dw * (kw - 1) + 1 - pl - pr) + draw(st.integers(0, 2))
        n = draw(st.sampled_from([None, 0, 2]))
        x, wt = R(*batched(n, cg * groups, h, w)), R(kg * groups, cg, kh, kw)
        if op == "conv2d":
            return dict(x=x, w=wt, bias=R(kg * groups) if draw(st.booleans()) else None, **kw_)
        gy = R(*ref.conv2d(x, wt, **kw_).shape)
        return dict(grad_out=gy, x=x, w=wt, **kw_)
    if op.startswith("conv_transpose2d"):
        groups = draw(st.sampled_from([1, 2]))
        cin, coutg = groups * draw(st.integers(1, 2)), draw(st.integers(1, 2))
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        s = draw(st.sampled_from([1, 2, (2, 1)]))
        op_ = draw(st.integers(0, max(min(_pair(s)) - 1, 0)))
        h, w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        padding = (0, 1) if (w - 1) * _pair(s)[1] + kw - 2 + op_ >= 1 and draw(st.booleans()) else 0
        kw_ = dict(stride=s, padding=padding, output_padding=op_, groups=groups, dilation=1)
        n = draw(st.sampled_from([None, 0, 2]))
        x, wt = R(*batched(n, cin, h, w)), R(cin, coutg, kh, kw)
        if op == "conv_transpose2d":
            return dict(x=x, w=wt, bias=R(coutg * groups) if draw(st.booleans()) else None, **kw_)
        gy = R(*ref.conv_transpose2d(x, wt, **kw_).shape)
        return dict(grad_out=gy, x=x, w=wt, **kw_)
    if op.startswith(("max_pool2d", "avg_pool2d", "lp_pool2d")):
        kind = op.split("_")[0]
        case = _small_pool_case(draw, dilation=kind == "max", padding=kind != "lp")
        x = _pool_x(rng, case, dtype, "positive" if kind == "lp" else "normal")
        kw_ = dict(case["kw"])
        if kind == "avg":
            kw_.update(count_include_pad=draw(st.booleans()), divisor_override=draw(st.sampled_from([None, 2])))
        if kind == "lp":
            kw_["norm_type"] = draw(st.sampled_from([1.0, 2, 1.5]))
        if kind == "max" and op == "max_pool2d":
            kw_["return_indices"] = draw(st.booleans())
        if not op.endswith("backward"):
            return dict(x=x, **kw_)
        fwd = getattr(ref, f"{kind}_pool2d")
        if kind == "max":
            y, idx = fwd(x, return_indices=True, **kw_)
            return dict(grad_out=R(*y.shape), x=x, indices=idx, **kw_)
        return dict(grad_out=R(*fwd(x, **kw_).shape), x=x, **kw_)
    # adaptive / global
    n = draw(st.sampled_from([None, 0, 2]))
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    x = R(*batched(n, c, h, w))
    if op.startswith("global"):
        return dict(x=x) if op == "global_avg_pool2d" else dict(grad_out=R(*batched(n, c, 1, 1)), x=x)
    size = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    if op == "adaptive_avg_pool2d":
        return dict(x=x, output_size=size)
    if op == "adaptive_max_pool2d":
        return dict(x=x, output_size=size, return_indices=draw(st.booleans()))
    gy = R(*batched(n, c, *size))
    if op == "adaptive_avg_pool2d_backward":
        return dict(grad_out=gy, x=x)
    return dict(grad_out=gy, x=x, indices=ref.adaptive_max_pool2d(x, size, return_indices=True)[1])


def _int_pair(v, default):
    """(a, b) of v when it is a valid int or pair of ints (an earlier mutation may
    have broken it), else ``default``."""
    try:
        a, b = _pair(v)
    except (TypeError, ValueError, IndexError):
        return default
    ok = all(isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)) for i in (a, b))
    return (int(a), int(b)) if ok else default


def _with(call, **changes):
    out = dict(call)
    out.update(changes)
    return out


def _arrays_of(call):
    return [k for k in ("x", "w", "bias", "grad_out") if call.get(k) is not None]


def _bad_dtype(dt):
    def mutate(call, draw):
        name = draw(st.sampled_from(_arrays_of(call)))
        return _with(call, **{name: call[name].astype(dt)})
    return mutate


def _mixed_dtypes(call, draw):
    names = _arrays_of(call)
    if len(names) < 2:
        return None
    name = draw(st.sampled_from(names[1:]))
    other = np.float32 if call["x"].dtype == np.float64 else np.float64
    return _with(call, **{name: call[name].astype(other)})


def _x_ndim(call, draw):
    x = call["x"]
    if x.ndim < 3:
        return None
    return _with(call, x=draw(st.sampled_from([np.ones(x.shape[-2:], x.dtype),
                                               np.ones((1, 1) + x.shape[-3:], x.dtype)])))


def _kwarg(name, values):
    def mutate(call, draw):
        if name not in call:
            return None
        return _with(call, **{name: draw(st.sampled_from(values))})
    return mutate


def _grad_shape(call, draw):
    if "grad_out" not in call:
        return None
    g = call["grad_out"]
    shape = list(g.shape)
    # adaptive_avg_pool2d_backward takes its output size from grad_out: only
    # its leading axes can be wrong
    spatial = "w" in call or "kernel_size" in call
    axis = draw(st.integers(0, len(shape) - (1 if spatial else 3)))
    shape[axis] += draw(st.sampled_from([1, 2]))
    return _with(call, grad_out=np.zeros(shape, g.dtype))


def _grad_ndim(call, draw):
    if "grad_out" not in call:
        return None
    g = call["grad_out"]
    return _with(call, grad_out=g[None] if g.ndim == 3 else np.zeros(g.shape[1:], g.dtype))


def _weight_channels(call, draw):
    if "w" not in call:
        return None
    w = call["w"]
    shape = list(w.shape)
    shape[0 if "output_padding" in call else 1] += 1
    return _with(call, w=np.zeros(shape, w.dtype))


def _weight_ndim(call, draw):
    if "w" not in call:
        return None
    w = call["w"]
    return _with(call, w=draw(st.sampled_from([w[0], w[None]])))


def _bad_bias(call, draw):
    if call.get("bias") is None:
        return None
    b = call["bias"]
    return _with(call, bias=draw(st.sampled_from([np.zeros(b.shape[0] + 1, b.dtype), b[None]])))


def _bad_groups(call, draw):
    if "groups" not in call:
        return None
    g = _int_pair(call["groups"], (None, None))[0]
    choices = [0, -1]
    if g is not None:    # (not after "groups type": g + 1 could be the original groups)
        choices.append(g + 1 if "output_padding" not in call else call["w"].shape[0] + 1)
    return _with(call, groups=draw(st.sampled_from(choices)))


def _bad_indices_dtype(call, draw):
    if "indices" not in call:
        return None
    return _with(call, indices=call["indices"].astype(draw(st.sampled_from([np.int32, np.float64, np.uint64]))))


def _bad_indices_shape(call, draw):
    if "indices" not in call:
        return None
    i = call["indices"]
    return _with(call, indices=np.zeros(i.shape[:-1] + (i.shape[-1] + 1,), np.int64))


def _bad_indices_value(call, draw):
    if "indices" not in call or call["indices"].size == 0:
        return None
    i = call["indices"].copy()
    h, w = call["x"].shape[-2:]
    flat = i.reshape(-1)
    # never a value PyTorch could record for a window of padding only (its start offset)
    flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from([-1, -7, h * w + 10**6, 2**62, -2**62]))
    return _with(call, indices=i)


def _pool_padding_too_big(call, draw):
    if "padding" not in call or "kernel_size" not in call:
        return None
    kh, kw = _int_pair(call["kernel_size"], (1, 1))
    return _with(call, padding=draw(st.sampled_from([(max(kh, 0) // 2 + 1, 0), (0, max(kw, 0) // 2 + 1)])))


def _pool_window_too_big(call, draw):
    if "kernel_size" not in call:
        return None
    h, w = call["x"].shape[-2:]
    # (with ceil_mode, a window larger than the input is fine when it starts inside it)
    kw = dict(call, kernel_size=(h + 3, w + 3), padding=0, ceil_mode=False)
    if "padding" not in call:
        kw.pop("padding")
    return kw


def _pool_zero_size(call, draw):
    x = call["x"]
    if x.ndim < 3:
        return None
    axis = draw(st.sampled_from([-3, -2, -1]))
    shape = list(x.shape)
    shape[axis] = 0
    return _with(call, x=np.zeros(shape, x.dtype))


def _conv_kernel_too_big(call, draw):
    if "w" not in call or "output_padding" in call:
        return None
    w = call["w"]
    h = call["x"].shape[-2]
    return _with(call, w=np.zeros(w.shape[:2] + (h + 50, 1), w.dtype), padding=0, dilation=1)


def _convt_output_nonpositive(call, draw):
    if "output_padding" not in call:
        return None
    return _with(call, padding=100, output_padding=0)


def _convt_output_padding(call, draw):
    if "output_padding" not in call:
        return None
    s, d = _int_pair(call["stride"], (1, 1)), _int_pair(call["dilation"], (1, 1))
    return _with(call, output_padding=(max(s[0], d[0], 1), 0))


def _adaptive_size(call, draw):
    if "output_size" not in call:
        return None
    return _with(call, output_size=draw(st.sampled_from([0, -1, (2, 0)])))


def _adaptive_size_type(call, draw):
    if "output_size" not in call:
        return None
    return _with(call, output_size=draw(st.sampled_from([1.5, "3", (1, 2, 3), (2.0, 2), True])))


def _output_mask(call, draw):
    if "grad_out" not in call or "w" not in call:
        return None
    mask, exc = draw(st.sampled_from([((True, True), VE), ((True,) * 4, VE), (5, TE), (None, TE)]))
    return _with(call, output_mask=mask), exc


def _backend(call, draw):
    return _with(call, backend=draw(st.sampled_from(["gpu", "CPU", "numpy", 1]))), VE


MUTATIONS = [
    ("dtype int64", _bad_dtype(np.int64), TE),
    ("dtype float16", _bad_dtype(np.float16), TE),
    ("dtype bool", _bad_dtype(np.bool_), TE),
    ("dtype complex", _bad_dtype(np.complex128), TE),
    ("dtype int32", _bad_dtype(np.int32), TE),
    ("mixed dtypes", _mixed_dtypes, TE),
    ("input ndim", _x_ndim, VE),
    ("grad_out shape", _grad_shape, VE),
    ("grad_out ndim", _grad_ndim, VE),
    ("weight channels", _weight_channels, VE),
    ("weight ndim", _weight_ndim, VE),
    ("bias shape", _bad_bias, VE),
    ("groups value", _bad_groups, VE),
    ("groups type", _kwarg("groups", [1.0, True, "1", None]), TE),
    ("stride value", _kwarg("stride", [0, -1, (1, 0), (-2, 1)]), VE),
    ("stride type", _kwarg("stride", [1.5, "2", (1, 2, 3), True, (1.0, 1), [None, 1]]), TE),
    ("dilation value", _kwarg("dilation", [0, -1, (1, 0)]), VE),
    ("dilation type", _kwarg("dilation", [1.0, "1", (1, 1, 1), False]), TE),
    ("padding value", _kwarg("padding", [-1, (0, -1)]), VE),
    ("padding type", _kwarg("padding", [1.0, (1, 2, 3), [0.5, 0], None]), TE),
    ("kernel_size value", _kwarg("kernel_size", [0, -1, (2, 0)]), VE),
    ("kernel_size type", _kwarg("kernel_size", [2.0, "2", (1, 2, 3), None, True]), TE),
    ("ceil_mode type", _kwarg("ceil_mode", ["yes", 2, None, 1.0]), TE),
    ("return_indices type", _kwarg("return_indices", ["yes", 2, None]), TE),
    ("count_include_pad type", _kwarg("count_include_pad", ["no", 3, None]), TE),
    ("divisor_override value", _kwarg("divisor_override", [0, 2**63]), VE),
    ("divisor_override type", _kwarg("divisor_override", [1.5, "2", True]), TE),
    ("norm_type value", _kwarg("norm_type", [0, -1.0, float("inf"), float("nan"), -2]), VE),
    ("norm_type type", _kwarg("norm_type", ["2", None, True, 1j]), TE),
    ("indices dtype", _bad_indices_dtype, TE),
    ("indices shape", _bad_indices_shape, VE),
    ("indices value", _bad_indices_value, VE),
    ("pool padding > half window", _pool_padding_too_big, VE),
    ("pool window > padded input", _pool_window_too_big, VE),
    ("pool zero-size input", _pool_zero_size, VE),
    ("conv kernel > padded input", _conv_kernel_too_big, VE),
    ("conv padding string", _kwarg("padding", ["bogus", "Same!", ""]), VE),
    ("conv_transpose2d output <= 0", _convt_output_nonpositive, VE),
    ("output_padding >= stride and dilation", _convt_output_padding, VE),
    ("output_padding value", _kwarg("output_padding", [-1]), VE),
    ("output_padding type", _kwarg("output_padding", [0.0, "0"]), TE),
    ("output_size value", _adaptive_size, VE),
    ("output_size type", _adaptive_size_type, TE),
    ("output_mask", _output_mask, None),
    ("backend", _backend, None),
]


def _not_applicable(op, name):
    """Mutations that do not make a call of this op invalid."""
    if name == "pool zero-size input":
        return op.startswith("conv")             # zero channels/sizes are fine for convolutions
    if name == "conv padding string":
        return not op.startswith("conv")         # pools' padding is no string: TypeError, tested above
    return False


def _spellings(call, draw):
    """A valid re-spelling of the call's scalar arguments (same meaning)."""
    out = dict(call)
    if "kernel_size" in out and out.get("stride") is None:
        out["stride"] = draw(st.sampled_from([None, (), []]))     # stride of the window
    for name in ("stride", "dilation", "kernel_size", "padding", "output_padding"):
        v = out.get(name)
        if isinstance(v, (tuple, list)) and len(v) == 0:
            continue
        if v is None or isinstance(v, str) or (isinstance(v, tuple) and v and isinstance(v[0], tuple)):
            if isinstance(v, str) and draw(st.booleans()):
                out[name] = v.upper()
            continue
        a, b = _pair(v)
        choices = [(a, b), [a, b], np.array([a, b]), (np.int64(a), np.int32(b))]
        if a == b:
            choices += [a, np.int64(a), (a,), [a]]
        out[name] = draw(st.sampled_from(choices))
    if "groups" in out:
        out["groups"] = draw(st.sampled_from([out["groups"], np.int64(out["groups"])]))
    if "norm_type" in out:
        out["norm_type"] = draw(st.sampled_from([out["norm_type"], np.float64(out["norm_type"])]))
    for flag in ("ceil_mode", "count_include_pad", "return_indices"):
        if flag in out:
            out[flag] = draw(st.sampled_from([out[flag], int(out[flag]), np.bool_(out[flag])]))
    if "output_size" in out and isinstance(out["output_size"], tuple):
        a, b = out["output_size"]
        h, w = out["x"].shape[-2:]
        out["output_size"] = draw(st.sampled_from([[a, b], (np.int64(a), b)] + ([(None, b)] if a == h else [])
                                                  + ([(a, None)] if b == w else [])))
    if out["x"].dtype == np.float64 and out["x"].size and draw(st.integers(0, 3)) == 0:
        out["x"] = out["x"].tolist()            # nested lists are float64 arrays
    return out


def _call(mod, op, call):
    kwargs = dict(call)
    if mod is ref:
        kwargs.pop("backend", None)
    return getattr(mod, op)(**kwargs)


def _expect_error(mod, op, call, exc):
    try:
        _call(mod, op, call)
    except (ValueError, TypeError) as e:
        msg = str(e)
        assert msg.startswith(f"{op}:"), f"{mod.__name__}.{op}: message does not start with the name: {msg!r}"
        if exc is not None:
            assert isinstance(e, exc), f"{mod.__name__}.{op} raised {type(e).__name__} ({msg}), expected {exc}"
        return type(e)
    except Exception as e:  # noqa: BLE001 - any other exception is the failure
        raise AssertionError(f"{mod.__name__}.{op} raised {type(e).__name__}: {e}") from e
    raise AssertionError(f"{mod.__name__}.{op} accepted an invalid call")


def _as_outputs(out):
    return out if isinstance(out, tuple) else (out,)


@prop(1600)
@given(st.data())
def test_arguments_valid_and_invalid(data):
    op = data.draw(st.sampled_from(OPS), label="op")
    call = data.draw(base_calls(op), label="base call")
    canonical = _as_outputs(_call(convkit, op, call))
    n_mut = data.draw(st.sampled_from([0, 1, 1, 1, 2]), label="mutations")
    if n_mut == 0:
        # valid spellings: the same result, bitwise, from convkit and the same as the reference
        spelled = _spellings(call, data.draw)
        note(f"spelled: { {k: v for k, v in spelled.items() if not isinstance(v, np.ndarray)} }")
        got = _as_outputs(_call(convkit, op, spelled))
        assert len(got) == len(canonical)
        for a, b in zip(got, canonical):
            if b is None:
                assert a is None
            else:
                assert_bitwise_equal(a, b, f"{op} with equivalent arguments")
        expected = _as_outputs(_call(ref, op, call))
        for a, b in zip(canonical, expected):
            if b is not None:
                if b.dtype.kind == "i" or op.startswith(("max_pool2d", "adaptive_max")) and not op.endswith("backward"):
                    assert_bitwise_equal(a, b)
                else:
                    assert_close(a, b, 1e-4 if b.dtype == np.float32 else F64_RTOL)
        return
    exc = None
    applied = []
    for _ in range(12):                 # draw until n_mut mutations applied to this op
        if len(applied) == n_mut:
            break
        name, fn, mexc = data.draw(st.sampled_from(MUTATIONS), label="mutation")
        if _not_applicable(op, name) or name in applied:   # (a mutation twice may undo itself)
            continue
        out = fn(call, data.draw)
        if out is None:
            continue
        if isinstance(out, tuple):
            out, mexc = out
        call = out
        applied.append(name)
        exc = mexc if len(applied) == 1 else (ValueError, TypeError)
    if not applied:
        return
    note(f"mutations: {applied}")
    got = _expect_error(convkit, op, call, exc)
    got_ref = _expect_error(ref, op, call, exc) if "backend" not in applied else got
    if len(applied) == 1 and exc is not None:
        assert got is got_ref, f"{op}: convkit raised {got.__name__}, the reference {got_ref.__name__}"


# --------------------------------------------------------------------------- #
# PyTorch as the oracle
# --------------------------------------------------------------------------- #


def _t(a, grad=False):
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.requires_grad_(grad) if grad else t


def _torch_conv(F, x, w, b, stride, padding, dilation, groups):
    if isinstance(padding, str) and padding in ("valid", "same"):
        return F.conv2d(x, w, b, stride, padding, dilation, groups)
    (pt, pb), (pl, pr) = conv_padding(padding, tuple(w.shape[-2:]), _pair(dilation))
    return F.conv2d(F.pad(x, (pl, pr, pt, pb)), w, b, stride, 0, dilation, groups)


def _check_grads(got, tensors, what):
    for g, t in zip(got, tensors):
        if t is None:
            continue
        expected = t.grad.numpy() if t.grad is not None else np.zeros(tuple(t.shape))
        assert_close(g, expected, F64_RTOL, err_msg=what)


@pytest.mark.torch
@prop(400)
@given(st.sampled_from(["conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "lp_pool2d", "adaptive_avg",
                        "adaptive_max", "global"]), st.data(), seeds)
def test_matches_torch(family, data, seed):
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    f64 = np.float64
    if family in ("conv2d", "conv_transpose2d"):
        tr = family == "conv_transpose2d"
        case = data.draw(convt_cases(torch_ok=True) if tr else conv_cases(torch_ok=True), label="case")
        kw = case["kw"]
        x, w, b = _conv_arrays(rng, case, f64, transpose=tr)
        xt, wt = _t(x, True), _t(w, True)
        bt = None if b is None else _t(b, True)
        if tr:
            yt = F.conv_transpose2d(xt, wt, bt, kw["stride"], kw["padding"], kw["output_padding"], kw["groups"],
                                    kw["dilation"])
            y = convkit.conv_transpose2d(x, w, b, **kw)
        else:
            yt = _torch_conv(F, xt, wt, bt, **kw)
            y = convkit.conv2d(x, w, b, **kw)
        assert_close(y, yt.detach().numpy(), F64_RTOL, err_msg=family)
        gy = rng.standard_normal(tuple(yt.shape))
        yt.backward(_t(gy))
        grads = (convkit.conv_transpose2d_backward if tr else convkit.conv2d_backward)(gy, x, w, **kw)
        _check_grads(grads, (xt, wt, bt), family + " backward")
        return
    if family in ("max_pool2d", "avg_pool2d", "lp_pool2d"):
        case = data.draw(pool_cases(dilation=family == "max_pool2d", padding=family != "lp_pool2d", torch_ok=True),
                         label="case")
        kw = case["kw"]
        mode = data.draw(st.sampled_from(["normal", "ties", "nan"] if family == "max_pool2d" else ["normal"]))
        dtype = data.draw(dtypes) if family == "max_pool2d" else f64
        x = _pool_x(rng, case, dtype, "positive" if family == "lp_pool2d" else mode)
        xt = _t(x, True) if dtype == f64 else _t(x)
        if family == "max_pool2d":
            yt, it = F.max_pool2d(xt, kw["kernel_size"], kw["stride"], kw["padding"], kw["dilation"],
                                  kw["ceil_mode"], return_indices=True)
            y, idx = convkit.max_pool2d(x, return_indices=True, **kw)
            assert_bitwise_equal(y, yt.detach().numpy(), "max_pool2d vs torch")
            assert_bitwise_equal(idx, it.numpy(), "max_pool2d indices vs torch")
            if dtype != f64 or pool_has_empty_window(case["h"], case["w"], **kw):
                return   # torch's backward writes out of bounds for windows of padding only
            gy = rng.standard_normal(tuple(yt.shape))
            yt.backward(_t(gy))
            _check_grads([convkit.max_pool2d_backward(gy, x, idx, **kw)], [xt], "max_pool2d backward")
            return
        if family == "avg_pool2d":
            cip, div = data.draw(avg_extras)
            yt = F.avg_pool2d(xt, kw["kernel_size"], kw["stride"], kw["padding"], kw["ceil_mode"], cip, div)
            y = convkit.avg_pool2d(x, count_include_pad=cip, divisor_override=div, **kw)
            gy = rng.standard_normal(tuple(yt.shape))
            gx = convkit.avg_pool2d_backward(gy, x, count_include_pad=cip, divisor_override=div, **kw)
        else:
            p = data.draw(norm_types)
            yt = F.lp_pool2d(xt, p, kw["kernel_size"], kw["stride"], kw["ceil_mode"])
            y = convkit.lp_pool2d(x, p, **kw)
            gy = rng.standard_normal(tuple(yt.shape))
            gx = convkit.lp_pool2d_backward(gy, x, p, **kw)
        assert_close(y, yt.detach().numpy(), F64_RTOL, err_msg=family)
        yt.backward(_t(gy))
        _check_grads([gx], [xt], family + " backward")
        return
    case = data.draw(adaptive_cases(torch_ok=True), label="case")
    dtype = data.draw(dtypes) if family == "adaptive_max" else f64
    x = _pool_x(rng, case, dtype, data.draw(st.sampled_from(["normal", "ties", "nan"]))
                if family == "adaptive_max" else "normal")
    xt = _t(x, dtype == f64)
    if family == "adaptive_max":
        yt, it = F.adaptive_max_pool2d(xt, case["out"], return_indices=True)
        y, idx = convkit.adaptive_max_pool2d(x, case["output_size"], return_indices=True)
        assert_bitwise_equal(y, yt.detach().numpy(), "adaptive_max_pool2d vs torch")
        assert_bitwise_equal(idx, it.numpy(), "adaptive_max_pool2d indices vs torch")
        if dtype != f64:
            return
        gy = rng.standard_normal(tuple(yt.shape))
        yt.backward(_t(gy))
        _check_grads([convkit.adaptive_max_pool2d_backward(gy, x, idx)], [xt], "adaptive_max backward")
        return
    out = (1, 1) if family == "global" else case["out"]
    yt = F.adaptive_avg_pool2d(xt, out)
    y = convkit.global_avg_pool2d(x) if family == "global" else convkit.adaptive_avg_pool2d(x, case["output_size"])
    assert_close(y, yt.detach().numpy(), F64_RTOL, err_msg=family)
    gy = rng.standard_normal(tuple(yt.shape))
    yt.backward(_t(gy))
    gx = (convkit.global_avg_pool2d_backward(gy, x) if family == "global"
          else convkit.adaptive_avg_pool2d_backward(gy, x))
    _check_grads([gx], [xt], family + " backward")
