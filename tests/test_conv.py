"""conv2d / conv_transpose2d forward and backward: the native CPU backend
against the NumPy reference (convkit.reference), float64 to ~1e-10 and
float32 to float32 accuracy, over hand-picked and hypothesis-generated
geometries."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convkit
import convkit.reference as ref
from helpers import (
    F32_RTOL,
    F64_RTOL,
    as_pair,
    assert_bitwise_equal,
    assert_close,
    batched_shape,
    conv_out_hw,
    conv_padding,
    conv_transpose_out_hw,
)

HYP = settings(max_examples=40, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# --------------------------------------------------------------------------- #
# case tables
# --------------------------------------------------------------------------- #
# n: batch (None = unbatched), c: in channels, h, w, k: out channels,
# kernel: (kh, kw), kw: keyword arguments of conv2d.

CONV_CASES = {
    "basic3x3": dict(n=2, c=3, h=7, w=6, k=4, kernel=(3, 3), kw={}),
    "stride2_pad1": dict(n=2, c=3, h=8, w=9, k=4, kernel=(3, 3), kw=dict(stride=2, padding=1)),
    "stride_pair_pad_pair": dict(n=1, c=2, h=9, w=8, k=3, kernel=(3, 2), kw=dict(stride=(2, 3), padding=(1, 0))),
    "dilation2": dict(n=2, c=2, h=8, w=8, k=3, kernel=(3, 3), kw=dict(dilation=2, padding=2)),
    "dilation_pair": dict(n=1, c=2, h=7, w=11, k=2, kernel=(2, 3), kw=dict(dilation=(1, 3), stride=(1, 2))),
    "groups2_k_ne_c": dict(n=2, c=4, h=6, w=6, k=6, kernel=(3, 3), kw=dict(groups=2, padding=1)),
    "groups3_k1_c2": dict(n=1, c=6, h=5, w=6, k=3, kernel=(2, 2), kw=dict(groups=3)),
    "depthwise": dict(n=2, c=4, h=6, w=7, k=4, kernel=(3, 3), kw=dict(groups=4, padding=1)),
    "depthwise_multiplier": dict(n=1, c=3, h=6, w=5, k=6, kernel=(3, 3), kw=dict(groups=3, stride=2, padding=1)),
    "asym_padding": dict(n=2, c=2, h=5, w=6, k=3, kernel=(3, 3), kw=dict(padding=((1, 2), (0, 3)))),
    "asym_padding_stride": dict(n=1, c=2, h=6, w=5, k=2, kernel=(2, 3), kw=dict(padding=((0, 0), (2, 1)), stride=2)),
    "valid": dict(n=2, c=2, h=6, w=5, k=3, kernel=(3, 2), kw=dict(padding="valid")),
    "same_odd": dict(n=2, c=3, h=6, w=5, k=2, kernel=(3, 3), kw=dict(padding="same")),
    "same_even": dict(n=1, c=2, h=6, w=7, k=3, kernel=(2, 4), kw=dict(padding="same")),
    "same_dilated_even": dict(n=1, c=2, h=7, w=6, k=2, kernel=(2, 3), kw=dict(padding="same", dilation=2)),
    "same_groups_even": dict(n=2, c=4, h=5, w=6, k=4, kernel=(4, 4), kw=dict(padding="same", dilation=(2, 1), groups=2)),
    "full": dict(n=1, c=2, h=4, w=5, k=2, kernel=(3, 2), kw=dict(padding="full", dilation=(1, 2))),
    "one_by_one": dict(n=2, c=5, h=4, w=3, k=3, kernel=(1, 1), kw={}),
    "one_by_one_stride2": dict(n=1, c=3, h=5, w=6, k=4, kernel=(1, 1), kw=dict(stride=2)),
    "kernel_bigger_than_input": dict(n=2, c=2, h=2, w=3, k=3, kernel=(5, 4), kw=dict(padding=(2, 1))),
    "unbatched": dict(n=None, c=3, h=6, w=5, k=2, kernel=(3, 3), kw=dict(padding=1)),
    "unbatched_groups": dict(n=None, c=4, h=5, w=5, k=2, kernel=(2, 2), kw=dict(groups=2, stride=2)),
    "batch0": dict(n=0, c=3, h=5, w=5, k=2, kernel=(3, 3), kw=dict(padding=1)),
    "tiny": dict(n=1, c=1, h=1, w=1, k=1, kernel=(1, 1), kw={}),
    "wide_channels": dict(n=1, c=16, h=9, w=9, k=8, kernel=(3, 3), kw=dict(groups=4, stride=2, dilation=2, padding=3)),
    "row_kernel": dict(n=2, c=2, h=3, w=9, k=2, kernel=(1, 5), kw=dict(padding=(0, 2))),
    "stride_bigger_than_kernel": dict(n=1, c=2, h=9, w=10, k=3, kernel=(2, 2), kw=dict(stride=(4, 3))),
    "list_args": dict(n=1, c=2, h=7, w=7, k=2, kernel=(3, 3), kw=dict(stride=[1, 2], padding=[1, 2], dilation=[2, 1])),
}

# Transposed convolution: c: input channels, k: output channels; weight is
# (c, k // groups, kh, kw).
CONVT_CASES = {
    "basic": dict(n=2, c=3, h=4, w=5, k=2, kernel=(3, 3), kw={}),
    "stride2": dict(n=2, c=2, h=4, w=3, k=3, kernel=(3, 3), kw=dict(stride=2)),
    "stride2_pad1_outpad1": dict(n=1, c=2, h=4, w=4, k=2, kernel=(3, 3), kw=dict(stride=2, padding=1, output_padding=1)),
    "stride_pair_outpad_pair": dict(n=2, c=2, h=3, w=4, k=3, kernel=(3, 2),
                                    kw=dict(stride=(3, 2), padding=(1, 0), output_padding=(2, 1))),
    "dilation2": dict(n=1, c=2, h=4, w=5, k=2, kernel=(3, 3), kw=dict(dilation=2, padding=1)),
    "dilation_outpad": dict(n=1, c=2, h=3, w=3, k=2, kernel=(2, 2), kw=dict(dilation=2, output_padding=1)),
    "groups2": dict(n=2, c=4, h=3, w=4, k=6, kernel=(3, 3), kw=dict(groups=2, stride=2, padding=1)),
    "depthwise": dict(n=1, c=4, h=4, w=4, k=4, kernel=(3, 3), kw=dict(groups=4, stride=2)),
    "groups_mixed": dict(n=2, c=4, h=3, w=3, k=2, kernel=(2, 3),
                         kw=dict(groups=2, stride=2, output_padding=1, dilation=(2, 1))),
    "one_by_one": dict(n=2, c=3, h=3, w=4, k=2, kernel=(1, 1), kw={}),
    "one_by_one_stride": dict(n=1, c=3, h=3, w=2, k=2, kernel=(1, 1), kw=dict(stride=3, output_padding=2)),
    "unbatched": dict(n=None, c=2, h=3, w=4, k=3, kernel=(3, 3), kw=dict(stride=2, padding=1, output_padding=1)),
    "batch0": dict(n=0, c=2, h=3, w=3, k=2, kernel=(3, 3), kw=dict(stride=2)),
    "big_padding": dict(n=1, c=2, h=3, w=3, k=2, kernel=(4, 4), kw=dict(stride=2, padding=3)),
    "wide_kernel_stride": dict(n=2, c=2, h=3, w=3, k=2, kernel=(2, 5), kw=dict(stride=(1, 3), padding=(0, 2))),
    "list_args": dict(n=1, c=2, h=3, w=3, k=2, kernel=(3, 2), kw=dict(stride=[2, 1], padding=[1, 0])),
}


def conv_inputs(rng, case, dtype=np.float64):
    kh, kw = case["kernel"]
    groups = case["kw"].get("groups", 1)
    x = rng.standard_normal(batched_shape(case["n"], case["c"], case["h"], case["w"])).astype(dtype)
    w = rng.standard_normal((case["k"], case["c"] // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(case["k"]).astype(dtype)
    kwa = case["kw"]
    oh, ow = conv_out_hw(case["h"], case["w"], (kh, kw), kwa.get("stride", 1), kwa.get("padding", 0),
                         kwa.get("dilation", 1))
    gy = rng.standard_normal(batched_shape(case["n"], case["k"], oh, ow)).astype(dtype)
    return x, w, b, gy


def convt_inputs(rng, case, dtype=np.float64):
    kh, kw = case["kernel"]
    groups = case["kw"].get("groups", 1)
    x = rng.standard_normal(batched_shape(case["n"], case["c"], case["h"], case["w"])).astype(dtype)
    w = rng.standard_normal((case["c"], case["k"] // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(case["k"]).astype(dtype)
    kwa = case["kw"]
    oh, ow = conv_transpose_out_hw(case["h"], case["w"], (kh, kw), kwa.get("stride", 1), kwa.get("padding", 0),
                                   kwa.get("output_padding", 0), kwa.get("dilation", 1))
    gy = rng.standard_normal(batched_shape(case["n"], case["k"], oh, ow)).astype(dtype)
    return x, w, b, gy


def _poison_heap(nbytes):
    """Leave NaN-filled freed blocks of about ``nbytes`` behind so that an
    output allocated with np.empty is likely to reuse one: any element the
    kernel forgets to write then shows up as NaN."""
    blocks = [np.full(max(1, nbytes // 8), np.nan) for _ in range(4)]
    del blocks


# --------------------------------------------------------------------------- #
# conv2d
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv2d_forward_matches_reference(rng, isa, name, with_bias):
    case = CONV_CASES[name]
    x, w, b, _ = conv_inputs(rng, case)
    bias = b if with_bias else None
    expected = ref.conv2d(x, w, bias, **case["kw"])
    kh, kw = case["kernel"]
    oh, ow = conv_out_hw(case["h"], case["w"], (kh, kw), case["kw"].get("stride", 1),
                         case["kw"].get("padding", 0), case["kw"].get("dilation", 1))
    assert expected.shape == batched_shape(case["n"], case["k"], oh, ow)
    for _ in range(2):  # twice: outputs come from fresh, possibly dirty, memory
        _poison_heap(expected.nbytes)
        got = convkit.conv2d(x, w, bias, backend="cpu", **case["kw"])
        assert not np.isnan(got).any()
        assert_close(got, expected, F64_RTOL, dtype=np.float64)


@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv2d_backward_matches_reference(rng, isa, name):
    case = CONV_CASES[name]
    x, w, _, gy = conv_inputs(rng, case)
    expected = ref.conv2d_backward(gy, x, w, **case["kw"])
    assert expected[0].shape == x.shape and expected[1].shape == w.shape and expected[2].shape == (case["k"],)
    for _ in range(2):
        _poison_heap(x.nbytes)
        got = convkit.conv2d_backward(gy, x, w, backend="cpu", **case["kw"])
        assert isinstance(got, tuple) and len(got) == 3
        for g, e, what in zip(got, expected, ("grad_x", "grad_w", "grad_bias")):
            assert not np.isnan(g).any(), what
            assert_close(g, e, F64_RTOL, dtype=np.float64, err_msg=what)


@pytest.mark.parametrize("mask", list(itertools.product([False, True], repeat=3)),
                         ids=lambda m: "".join("1" if v else "0" for v in m))
@pytest.mark.parametrize("op", ["conv2d_backward", "conv_transpose2d_backward"])
def test_backward_output_mask(rng, op, mask):
    if op == "conv2d_backward":
        case = CONV_CASES["groups2_k_ne_c"]
        x, w, _, gy = conv_inputs(rng, case)
    else:
        case = CONVT_CASES["groups_mixed"]
        x, w, _, gy = convt_inputs(rng, case)
    full = getattr(ref, op)(gy, x, w, **case["kw"])
    for backend in ("cpu", "reference"):
        got = getattr(convkit, op)(gy, x, w, output_mask=mask, backend=backend, **case["kw"])
        assert isinstance(got, tuple) and len(got) == 3
        for wanted, g, e in zip(mask, got, full):
            if wanted:
                assert_close(g, e, F64_RTOL, dtype=np.float64)
            else:
                assert g is None, f"{op}(output_mask={mask}, backend={backend}) returned an unrequested gradient"


@pytest.mark.parametrize("name", ["basic3x3", "groups2_k_ne_c", "same_even", "asym_padding", "unbatched", "batch0"])
def test_conv2d_float32(rng, isa, name):
    case = CONV_CASES[name]
    x, w, b, gy = conv_inputs(rng, case, np.float32)
    up = lambda a: a.astype(np.float64)  # noqa: E731
    got = convkit.conv2d(x, w, b, **case["kw"])
    assert got.dtype == np.float32
    assert_close(got, ref.conv2d(up(x), up(w), up(b), **case["kw"]), F32_RTOL)
    got_b = convkit.conv2d_backward(gy, x, w, **case["kw"])
    exp_b = ref.conv2d_backward(up(gy), up(x), up(w), **case["kw"])
    for g, e in zip(got_b, exp_b):
        assert g.dtype == np.float32
        assert_close(g, e, F32_RTOL)


@pytest.mark.parametrize("name", list(CONV_CASES)[:6])
def test_conv2d_backends_agree(rng, name):
    """backend=None means the CPU kernels; backend='reference' is convkit.reference."""
    case = CONV_CASES[name]
    x, w, b, gy = conv_inputs(rng, case)
    assert_bitwise_equal(convkit.conv2d(x, w, b, **case["kw"]), convkit.conv2d(x, w, b, backend="cpu", **case["kw"]))
    assert_bitwise_equal(convkit.conv2d(x, w, b, backend="reference", **case["kw"]), ref.conv2d(x, w, b, **case["kw"]))
    for a, e in zip(convkit.conv2d_backward(gy, x, w, backend="reference", **case["kw"]),
                    ref.conv2d_backward(gy, x, w, **case["kw"])):
        assert_bitwise_equal(a, e)


def test_conv2d_padding_spellings_agree(rng):
    """'same'/'full'/'valid', ints, pairs and ((t, b), (l, r)) describing one
    padding give one result."""
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((2, 3, 3, 4))
    same = convkit.conv2d(x, w, padding="same")
    assert same.shape == (2, 2, 7, 6)
    assert_close(same, convkit.conv2d(x, w, padding=((1, 1), (1, 2))))
    full = convkit.conv2d(x, w, padding="full")
    assert_close(full, convkit.conv2d(x, w, padding=(2, 3)))
    assert_close(convkit.conv2d(x, w, padding="valid"), convkit.conv2d(x, w))
    assert_close(convkit.conv2d(x, w, padding=((2, 2), (3, 3))), full)
    w2 = rng.standard_normal((2, 3, 3, 3))
    assert_close(convkit.conv2d(x, w2, padding=1), convkit.conv2d(x, w2, padding=(1, 1)))
    assert_close(convkit.conv2d(x, w2, padding=1, stride=(2, 2)), convkit.conv2d(x, w2, padding=[1, 1], stride=2))


def test_conv2d_matches_naive_loop(rng):
    """An independent direct-loop definition (not convkit.reference)."""
    n, c, h, wd, k, groups = 2, 4, 6, 5, 6, 2
    kh, kw = 3, 2
    sh, sw, dh, dw = 2, 1, 1, 2
    (pt, pb), (pl, pr) = (1, 2), (2, 0)
    x = rng.standard_normal((n, c, h, wd))
    w = rng.standard_normal((k, c // groups, kh, kw))
    b = rng.standard_normal(k)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, k, oh, ow))
    cg, kg = c // groups, k // groups
    for ni in range(n):
        for ko in range(k):
            gi = ko // kg
            for i in range(oh):
                for j in range(ow):
                    acc = b[ko]
                    for ci in range(cg):
                        for r in range(kh):
                            for s in range(kw):
                                acc += w[ko, ci, r, s] * xp[ni, gi * cg + ci, i * sh + r * dh, j * sw + s * dw]
                    y[ni, ko, i, j] = acc
    kwargs = dict(stride=(sh, sw), padding=((pt, pb), (pl, pr)), dilation=(dh, dw), groups=groups)
    assert_close(convkit.conv2d(x, w, b, **kwargs), y)
    assert_close(ref.conv2d(x, w, b, **kwargs), y)


# --------------------------------------------------------------------------- #
# conv_transpose2d
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("name", list(CONVT_CASES))
def test_conv_transpose2d_forward_matches_reference(rng, isa, name, with_bias):
    case = CONVT_CASES[name]
    x, w, b, gy = convt_inputs(rng, case)
    bias = b if with_bias else None
    expected = ref.conv_transpose2d(x, w, bias, **case["kw"])
    assert expected.shape == gy.shape
    for _ in range(2):
        _poison_heap(expected.nbytes)
        got = convkit.conv_transpose2d(x, w, bias, backend="cpu", **case["kw"])
        assert not np.isnan(got).any()
        assert_close(got, expected, F64_RTOL, dtype=np.float64)


@pytest.mark.parametrize("name", list(CONVT_CASES))
def test_conv_transpose2d_backward_matches_reference(rng, isa, name):
    case = CONVT_CASES[name]
    x, w, _, gy = convt_inputs(rng, case)
    expected = ref.conv_transpose2d_backward(gy, x, w, **case["kw"])
    assert expected[0].shape == x.shape and expected[1].shape == w.shape and expected[2].shape == (case["k"],)
    for _ in range(2):
        _poison_heap(x.nbytes)
        got = convkit.conv_transpose2d_backward(gy, x, w, backend="cpu", **case["kw"])
        assert isinstance(got, tuple) and len(got) == 3
        for g, e, what in zip(got, expected, ("grad_x", "grad_w", "grad_bias")):
            assert not np.isnan(g).any(), what
            assert_close(g, e, F64_RTOL, dtype=np.float64, err_msg=what)


@pytest.mark.parametrize("name", ["basic", "groups_mixed", "stride_pair_outpad_pair", "unbatched"])
def test_conv_transpose2d_float32(rng, isa, name):
    case = CONVT_CASES[name]
    x, w, b, gy = convt_inputs(rng, case, np.float32)
    up = lambda a: a.astype(np.float64)  # noqa: E731
    got = convkit.conv_transpose2d(x, w, b, **case["kw"])
    assert got.dtype == np.float32
    assert_close(got, ref.conv_transpose2d(up(x), up(w), up(b), **case["kw"]), F32_RTOL)
    for g, e in zip(convkit.conv_transpose2d_backward(gy, x, w, **case["kw"]),
                    ref.conv_transpose2d_backward(up(gy), up(x), up(w), **case["kw"])):
        assert g.dtype == np.float32
        assert_close(g, e, F32_RTOL)


@pytest.mark.parametrize("name", ["basic", "stride2_pad1_outpad1", "groups_mixed", "dilation_outpad", "unbatched"])
def test_conv_transpose2d_is_adjoint_of_conv2d(rng, name):
    """<conv_transpose2d(y, w), x> == <y, conv2d(x, w)> with matching geometry,
    and the transposed conv's grad_x is conv2d of grad_out."""
    case = CONVT_CASES[name]
    y, w, _, gx = convt_inputs(rng, case)
    kw = case["kw"]
    out = convkit.conv_transpose2d(y, w, **kw)
    fwd_kw = dict(stride=kw.get("stride", 1), dilation=kw.get("dilation", 1), groups=kw.get("groups", 1))
    ph, pw = as_pair(kw.get("padding", 0))
    oph, opw = as_pair(kw.get("output_padding", 0))
    fwd_kw["padding"] = ((ph, ph - oph), (pw, pw - opw)) if min(ph - oph, pw - opw) >= 0 else None
    if fwd_kw["padding"] is None:
        pytest.skip("output_padding larger than padding has no plain conv2d equivalent")
    conv = convkit.conv2d(gx, w, **fwd_kw)
    assert conv.shape == y.shape
    lhs = float(np.sum(out * gx))
    rhs = float(np.sum(y * conv))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))
    gx_got, _, _ = convkit.conv_transpose2d_backward(gx, y, w, **kw)
    assert_close(gx_got, conv)


# --------------------------------------------------------------------------- #
# hypothesis
# --------------------------------------------------------------------------- #


@st.composite
def conv_geometries(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c = groups * draw(st.integers(1, 2))
    k = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    mode = draw(st.sampled_from(["int", "pair", "sides", "valid", "same", "full"]))
    if mode == "same":
        stride = 1
    else:
        stride = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    if mode == "int":
        padding = draw(st.integers(0, 2))
    elif mode == "pair":
        padding = draw(st.tuples(st.integers(0, 2), st.integers(0, 2)))
    elif mode == "sides":
        padding = tuple(draw(st.tuples(st.integers(0, 2), st.integers(0, 2))) for _ in range(2))
    else:
        padding = mode
    (pt, pb), (pl, pr) = conv_padding(padding, (kh, kw), (dh, dw))
    min_h = max(1, dh * (kh - 1) + 1 - pt - pb)
    min_w = max(1, dw * (kw - 1) + 1 - pl - pr)
    h = draw(st.integers(min_h, min_h + 4))
    w = draw(st.integers(min_w, min_w + 4))
    n = draw(st.sampled_from([None, 0, 1, 2]))
    dilation = (dh, dw) if dh != dw else dh
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return dict(n=n, c=c, h=h, w=w, k=k, kernel=(kh, kw), kw=kwargs), draw(st.integers(0, 2**32 - 1))


@HYP
@given(conv_geometries())
def test_conv2d_hypothesis(isa, case_seed):
    case, seed = case_seed
    rng = np.random.default_rng(seed)
    x, w, b, gy = conv_inputs(rng, case)
    assert_close(convkit.conv2d(x, w, b, **case["kw"]), ref.conv2d(x, w, b, **case["kw"]))
    for g, e in zip(convkit.conv2d_backward(gy, x, w, **case["kw"]), ref.conv2d_backward(gy, x, w, **case["kw"])):
        assert_close(g, e)


@st.composite
def convt_geometries(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    c = groups * draw(st.integers(1, 2))
    k = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    oph = draw(st.integers(0, max(sh, dh) - 1))
    opw = draw(st.integers(0, max(sw, dw) - 1))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if conv_transpose_out_hw(h, w, (kh, kw), (sh, sw), (ph, pw), (oph, opw), (dh, dw))[0] < 1:
        ph = 0
    if conv_transpose_out_hw(h, w, (kh, kw), (sh, sw), (ph, pw), (oph, opw), (dh, dw))[1] < 1:
        pw = 0
    n = draw(st.sampled_from([None, 0, 1, 2]))
    kwargs = dict(stride=(sh, sw), padding=(ph, pw), output_padding=(oph, opw), groups=groups, dilation=(dh, dw))
    return dict(n=n, c=c, h=h, w=w, k=k, kernel=(kh, kw), kw=kwargs), draw(st.integers(0, 2**32 - 1))


@HYP
@given(convt_geometries())
def test_conv_transpose2d_hypothesis(isa, case_seed):
    case, seed = case_seed
    rng = np.random.default_rng(seed)
    x, w, b, gy = convt_inputs(rng, case)
    out = convkit.conv_transpose2d(x, w, b, **case["kw"])
    assert out.shape == gy.shape
    assert_close(out, ref.conv_transpose2d(x, w, b, **case["kw"]))
    for g, e in zip(convkit.conv_transpose2d_backward(gy, x, w, **case["kw"]),
                    ref.conv_transpose2d_backward(gy, x, w, **case["kw"])):
        assert_close(g, e)


# --------------------------------------------------------------------------- #
# misc properties
# --------------------------------------------------------------------------- #


def test_conv2d_does_not_modify_inputs_and_accepts_readonly(rng):
    case = CONV_CASES["groups2_k_ne_c"]
    x, w, b, gy = conv_inputs(rng, case)
    copies = [a.copy() for a in (x, w, b, gy)]
    for a in (x, w, b, gy):
        a.flags.writeable = False
    y = convkit.conv2d(x, w, b, **case["kw"])
    grads = convkit.conv2d_backward(gy, x, w, **case["kw"])
    for a, c in zip((x, w, b, gy), copies):
        assert_bitwise_equal(a, c)
    assert y.flags.writeable and all(g.flags.writeable for g in grads)


def test_conv2d_zero_bias_equals_no_bias(rng):
    x = rng.standard_normal((2, 3, 5, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    assert_bitwise_equal(convkit.conv2d(x, w, np.zeros(4)) + 0.0, convkit.conv2d(x, w) + 0.0)
    b = rng.standard_normal(4)
    assert_close(convkit.conv2d(x, w, b), convkit.conv2d(x, w) + b[:, None, None])


def test_conv2d_outputs_are_fresh_arrays(rng):
    x = rng.standard_normal((1, 2, 4, 4))
    w = rng.standard_normal((2, 2, 1, 1))
    y1 = convkit.conv2d(x, w)
    y2 = convkit.conv2d(x, w)
    assert not np.shares_memory(y1, y2)
    assert not np.shares_memory(y1, x)
    y1[...] = 0
    assert_close(y2, ref.conv2d(x, w))


# --------------------------------------------------------------------------- #
# larger shapes: GEMM tiling edges and cache blocking of the native kernels
# --------------------------------------------------------------------------- #

LARGE_CASES = {
    "tile_edges": dict(n=3, c=17, h=13, w=11, k=33, kernel=(3, 3), kw=dict(padding=1)),
    "deep_reduction": dict(n=1, c=40, h=9, w=10, k=37, kernel=(3, 3), kw=dict(stride=2, padding=1)),
    "deep_1x1": dict(n=2, c=300, h=5, w=7, k=19, kernel=(1, 1), kw={}),
    # 1x1 strided and padded: B rows gathered straight from x, several kc blocks
    "deep_1x1_strided": dict(n=3, c=300, h=9, w=11, k=19, kernel=(1, 1), kw=dict(stride=2, padding=1)),
    "groups_large": dict(n=2, c=24, h=11, w=9, k=36, kernel=(3, 2), kw=dict(groups=3, dilation=(1, 2), padding="same")),
    "depthwise_large": dict(n=2, c=32, h=15, w=14, k=32, kernel=(5, 5), kw=dict(groups=32, padding=2, stride=(1, 2))),
    "wide_rows": dict(n=1, c=5, h=3, w=131, k=7, kernel=(3, 5), kw=dict(padding=((1, 1), (2, 2)))),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(LARGE_CASES))
def test_conv2d_large_shapes(rng, isa, name, dtype):
    case = LARGE_CASES[name]
    x, w, b, gy = conv_inputs(rng, case, dtype)
    up = lambda a: a.astype(np.float64)  # noqa: E731
    rtol = F64_RTOL if dtype == np.float64 else 1e-4
    assert_close(convkit.conv2d(x, w, b, **case["kw"]), ref.conv2d(up(x), up(w), up(b), **case["kw"]), rtol,
                 dtype=dtype)
    for g, e in zip(convkit.conv2d_backward(gy, x, w, **case["kw"]),
                    ref.conv2d_backward(up(gy), up(x), up(w), **case["kw"])):
        assert_close(g, e, rtol, dtype=dtype)
    # the same weights used as a transposed convolution (input gy, output like x)
    kwt = {k: v for k, v in case["kw"].items() if k in ("stride", "groups", "dilation")}
    if isinstance(case["kw"].get("padding", 0), int):
        kwt["padding"] = case["kw"].get("padding", 0)
        out = convkit.conv_transpose2d(gy, w, None, **kwt)
        assert_close(out, ref.conv_transpose2d(up(gy), up(w), None, **kwt), rtol, dtype=dtype)
        for g, e in zip(convkit.conv_transpose2d_backward(up(out).astype(dtype), gy, w, **kwt),
                        ref.conv_transpose2d_backward(up(out), up(gy), up(w), **kwt)):
            assert_close(g, e, rtol, dtype=dtype)


# The GEMM forward reads the weights in place (no packed copy) when a call has
# at most 1024 output pixels over the batch (float32, AVX2), and packs them
# otherwise; both run the same arithmetic. So an image convolved alone (49
# pixels: weights in place) gives the same bits as inside a batch of 32 (1568
# pixels: packed weights), with 3x3 and 1x1 kernels, reductions over several
# kc blocks and output channels that are not a multiple of the 6-row tile.
@pytest.mark.parametrize("k, c, kernel, padding", [(302, 70, 3, 1), (130, 520, 1, 0), (512, 512, 3, 1)])
def test_conv2d_batch_of_one_matches_its_batch(rng, isa, k, c, kernel, padding):
    x = rng.standard_normal((32, c, 7, 7)).astype(np.float32)
    w = rng.standard_normal((k, c, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    batch = convkit.conv2d(x, w, b, padding=padding)
    for n in (0, 5, 31):
        alone = convkit.conv2d(x[n:n + 1], w, b, padding=padding)
        assert_bitwise_equal(alone[0], batch[n], err_msg=f"image {n}")
    expected = ref.conv2d(x[5:6].astype(np.float64), w.astype(np.float64), b.astype(np.float64), padding=padding)
    assert_close(convkit.conv2d(x[5:6], w, b, padding=padding), expected, 1e-4, dtype=np.float32)


# The forward GEMM splits a call of small planes into column tiles and chunks
# of output rows by a cost model of the thread count (batch-2 1x1 at 7x7: two
# chunks of rows over all 98 columns on 2 threads, one on 1); the bits must not
# depend on it.
@pytest.mark.parametrize("n, c, k, kernel", [(2, 300, 130, 1), (1, 70, 300, 3), (3, 40, 260, 3)])
def test_conv2d_gemm_splits_bitwise_across_thread_counts(rng, isa, restore_threads, n, c, k, kernel):
    x = rng.standard_normal((n, c, 7, 7)).astype(np.float32)
    w = rng.standard_normal((k, c, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    pad = kernel // 2
    results = []
    for threads in (1, 2, 3):
        convkit.set_num_threads(threads)
        results.append(convkit.conv2d(x, w, b, padding=pad))
    for other in results[1:]:
        assert_bitwise_equal(results[0], other)
    expected = ref.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), padding=pad)
    assert_close(results[1], expected, 1e-4, dtype=np.float32)


# Backward data of a 1x1 layer runs the forward GEMM on W read by columns (no
# transposed copy): in place (float32, AVX2) up to 128 pixels over the batch,
# packed beyond. An image alone (49 pixels) must give the bits it gets inside
# a batch of 16 (784 pixels), over several kc blocks of output channels, row
# counts that are not a multiple of the 6-row tile, and groups.
@pytest.mark.parametrize("k, c, groups", [(302, 70, 1), (520, 130, 1), (260, 520, 2)])
def test_pointwise_backward_data_batch_of_one_matches_its_batch(rng, isa, k, c, groups):
    x = rng.standard_normal((16, c, 7, 7)).astype(np.float32)
    w = rng.standard_normal((k, c // groups, 1, 1)).astype(np.float32)
    gy = rng.standard_normal((16, k, 7, 7)).astype(np.float32)
    mask = (True, False, False)
    batch = convkit.conv2d_backward(gy, x, w, groups=groups, output_mask=mask)[0]
    for n in (0, 9, 15):
        alone = convkit.conv2d_backward(gy[n:n + 1], x[n:n + 1], w, groups=groups, output_mask=mask)[0]
        assert_bitwise_equal(alone[0], batch[n], err_msg=f"image {n}")
    up = lambda a: a.astype(np.float64)  # noqa: E731
    expected = ref.conv2d_backward(up(gy), up(x), up(w), groups=groups, output_mask=mask)[0]
    assert_close(batch, expected, 1e-4, dtype=np.float32)
