"""Pooling ops (max, avg, lp, adaptive avg/max, global avg) forward and
backward: the native CPU backend against the NumPy reference, plus
independent brute-force definitions for indices, ties and NaN handling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convkit
import convkit.reference as ref
from helpers import (
    F32_RTOL,
    F64_RTOL,
    adaptive_out_hw,
    as_pair,
    assert_bitwise_equal,
    assert_close,
    batched_shape,
    pool_has_empty_window,
    pool_out_hw,
)

HYP = settings(max_examples=40, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# n: batch (None = unbatched), c, h, w, kw: pool keyword arguments
MAX_CASES = {
    "k2": dict(n=2, c=3, h=6, w=6, kw=dict(kernel_size=2)),
    "k3s2": dict(n=2, c=2, h=7, w=8, kw=dict(kernel_size=3, stride=2)),
    "k3s2p1": dict(n=1, c=3, h=7, w=6, kw=dict(kernel_size=3, stride=2, padding=1)),
    "rect": dict(n=2, c=2, h=7, w=6, kw=dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1))),
    "dilation2": dict(n=1, c=2, h=8, w=9, kw=dict(kernel_size=3, stride=1, padding=1, dilation=2)),
    "dilation_pair_ceil": dict(n=2, c=2, h=9, w=8, kw=dict(kernel_size=(2, 3), stride=(3, 2), dilation=(2, 1),
                                                         ceil_mode=True)),
    "ceil_k2s2": dict(n=1, c=2, h=5, w=7, kw=dict(kernel_size=2, stride=2, ceil_mode=True)),
    "ceil_drop_last": dict(n=1, c=2, h=5, w=5, kw=dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),
    "ceil_k3s2p1": dict(n=2, c=1, h=6, w=6, kw=dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    "ceil_k5s2p2": dict(n=1, c=2, h=8, w=8, kw=dict(kernel_size=5, stride=2, padding=2, ceil_mode=True)),
    "ceil_k3s3": dict(n=1, c=1, h=7, w=8, kw=dict(kernel_size=3, stride=3, ceil_mode=True)),
    "k1": dict(n=1, c=2, h=4, w=5, kw=dict(kernel_size=1)),
    "k1s2": dict(n=1, c=2, h=5, w=5, kw=dict(kernel_size=1, stride=2)),
    "whole_plane": dict(n=2, c=3, h=4, w=5, kw=dict(kernel_size=(4, 5))),
    "pad_half": dict(n=1, c=2, h=5, w=6, kw=dict(kernel_size=4, stride=1, padding=2)),
    "stride_list": dict(n=1, c=2, h=6, w=7, kw=dict(kernel_size=[2, 3], stride=[1, 2], padding=[1, 0])),
    "unbatched": dict(n=None, c=3, h=6, w=5, kw=dict(kernel_size=3, stride=2, padding=1)),
    "batch0": dict(n=0, c=3, h=6, w=5, kw=dict(kernel_size=2)),
    "one_pixel": dict(n=1, c=1, h=1, w=1, kw=dict(kernel_size=1)),
}

AVG_CASES = {
    "k2": dict(n=2, c=3, h=6, w=6, kw=dict(kernel_size=2)),
    "k3s2p1": dict(n=1, c=2, h=7, w=6, kw=dict(kernel_size=3, stride=2, padding=1)),
    "k3s2p1_nopad": dict(n=1, c=2, h=7, w=6, kw=dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    "rect": dict(n=2, c=2, h=7, w=5, kw=dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1))),
    "ceil_p0": dict(n=1, c=2, h=5, w=7, kw=dict(kernel_size=2, stride=2, ceil_mode=True)),
    "ceil_pad_include": dict(n=1, c=2, h=6, w=6, kw=dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    "ceil_pad_exclude": dict(n=1, c=2, h=6, w=6, kw=dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                                         count_include_pad=False)),
    "ceil_drop_last": dict(n=2, c=1, h=5, w=5, kw=dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),
    "divisor3": dict(n=1, c=2, h=6, w=6, kw=dict(kernel_size=2, divisor_override=3)),
    "divisor_ceil_pad": dict(n=1, c=2, h=7, w=6, kw=dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                                         divisor_override=5)),
    "divisor_negative": dict(n=1, c=1, h=4, w=4, kw=dict(kernel_size=2, divisor_override=-2)),
    "k1s2": dict(n=1, c=2, h=5, w=5, kw=dict(kernel_size=1, stride=2)),
    "whole_plane": dict(n=2, c=2, h=3, w=4, kw=dict(kernel_size=(3, 4))),
    "pad_half": dict(n=1, c=2, h=5, w=6, kw=dict(kernel_size=4, stride=3, padding=2, count_include_pad=False)),
    "unbatched": dict(n=None, c=2, h=5, w=6, kw=dict(kernel_size=3, stride=2, padding=1)),
    "batch0": dict(n=0, c=2, h=5, w=6, kw=dict(kernel_size=2)),
}

LP_CASES = {
    "p2_k2": dict(n=2, c=2, h=6, w=6, norm=2.0, kw=dict(kernel_size=2)),
    "p1_k3s2": dict(n=1, c=2, h=7, w=7, norm=1.0, kw=dict(kernel_size=3, stride=2)),
    "p3_rect": dict(n=1, c=2, h=7, w=6, norm=3.0, kw=dict(kernel_size=(3, 2), stride=(1, 2))),
    "p1.5_ceil": dict(n=2, c=1, h=7, w=5, norm=1.5, kw=dict(kernel_size=2, stride=2, ceil_mode=True)),
    "p2_ceil_k3s2": dict(n=1, c=2, h=6, w=8, norm=2, kw=dict(kernel_size=3, stride=2, ceil_mode=True)),
    "p4_int_norm": dict(n=1, c=1, h=4, w=4, norm=4, kw=dict(kernel_size=2, stride=1)),
    "unbatched": dict(n=None, c=2, h=5, w=5, norm=2.0, kw=dict(kernel_size=2)),
    "batch0": dict(n=0, c=2, h=5, w=5, norm=2.0, kw=dict(kernel_size=2)),
}

ADAPTIVE_CASES = {
    "divisible": dict(n=2, c=2, h=8, w=6, out=(4, 3)),
    "non_divisible": dict(n=2, c=3, h=7, w=5, out=(3, 2)),
    "int_size": dict(n=1, c=2, h=10, w=7, out=3),
    "upsample": dict(n=1, c=2, h=3, w=4, out=(5, 7)),
    "identity": dict(n=1, c=2, h=5, w=4, out=(5, 4)),
    "to_1x1": dict(n=2, c=2, h=5, w=6, out=1),
    "none_entry": dict(n=1, c=2, h=6, w=5, out=(None, 2)),
    "mixed": dict(n=1, c=1, h=10, w=3, out=(4, 3)),
    "unbatched": dict(n=None, c=2, h=7, w=7, out=(3, 5)),
    "batch0": dict(n=0, c=2, h=7, w=7, out=(3, 5)),
}


def _x(rng, case, dtype=np.float64, positive=False, ties=False):
    shape = batched_shape(case["n"], case["c"], case["h"], case["w"])
    if ties:
        return rng.integers(0, 3, size=shape).astype(dtype)
    a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.1
    return a.astype(dtype)


def _gy(rng, case, oh, ow, dtype=np.float64):
    return rng.standard_normal(batched_shape(case["n"], case["c"], oh, ow)).astype(dtype)


def _pool_hw(case):
    kw = case["kw"]
    return pool_out_hw(case["h"], case["w"], kw["kernel_size"], kw.get("stride"), kw.get("padding", 0),
                       kw.get("dilation", 1), kw.get("ceil_mode", False))


def _poison_heap(nbytes):
    blocks = [np.full(max(1, nbytes // 8), np.nan) for _ in range(4)]
    del blocks


# --------------------------------------------------------------------------- #
# brute-force max pooling (independent of convkit.reference)
# --------------------------------------------------------------------------- #


def brute_max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """PyTorch's CPU rule: scan window in row-major order, take v if v > best
    or v is NaN; returns (y, flat indices)."""
    kh, kw = as_pair(kernel_size)
    sh, sw = as_pair(kernel_size if stride is None else stride)
    ph, pw = as_pair(padding)
    dh, dw = as_pair(dilation)
    h, w = x.shape[-2:]
    oh, ow = pool_out_hw(h, w, kernel_size, stride, padding, dilation, ceil_mode)
    planes = x.reshape(-1, h, w)
    y = np.empty((planes.shape[0], oh, ow), dtype=x.dtype)
    idx = np.empty((planes.shape[0], oh, ow), dtype=np.int64)
    for p in range(planes.shape[0]):
        for i in range(oh):
            for j in range(ow):
                # PyTorch starts from the first tap at or after row/column 0
                # (even when that tap lies past the input: a window of padding
                # only gives -inf and that tap's flat offset).
                ih0 = i * sh - ph
                while ih0 < 0:
                    ih0 += dh
                iw0 = j * sw - pw
                while iw0 < 0:
                    iw0 += dw
                best, bi = -np.inf, ih0 * w + iw0
                for r in range(kh):
                    ih = i * sh - ph + r * dh
                    if not 0 <= ih < h:
                        continue
                    for s in range(kw):
                        iw = j * sw - pw + s * dw
                        if not 0 <= iw < w:
                            continue
                        v = planes[p, ih, iw]
                        if v > best or np.isnan(v):
                            best, bi = v, ih * w + iw
                y[p, i, j] = best
                idx[p, i, j] = bi
    return y.reshape(x.shape[:-2] + (oh, ow)), idx.reshape(x.shape[:-2] + (oh, ow))


def brute_adaptive_max(x, output_size):
    h, w = x.shape[-2:]
    oh, ow = adaptive_out_hw(h, w, output_size)
    planes = x.reshape(-1, h, w)
    y = np.empty((planes.shape[0], oh, ow), dtype=x.dtype)
    idx = np.empty((planes.shape[0], oh, ow), dtype=np.int64)
    for p in range(planes.shape[0]):
        for i in range(oh):
            h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
            for j in range(ow):
                w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
                best, bi = None, -1
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        v = planes[p, ih, iw]
                        if best is None or v > best or np.isnan(v):
                            best, bi = v, ih * w + iw
                y[p, i, j] = best
                idx[p, i, j] = bi
    return y.reshape(x.shape[:-2] + (oh, ow)), idx.reshape(x.shape[:-2] + (oh, ow))


def brute_avg_pool(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                   divisor_override=None):
    """PyTorch's CPU avg_pool2d divisor rules."""
    kh, kw = as_pair(kernel_size)
    sh, sw = as_pair(kernel_size if stride is None else stride)
    ph, pw = as_pair(padding)
    h, w = x.shape[-2:]
    oh, ow = pool_out_hw(h, w, kernel_size, stride, padding, 1, ceil_mode)
    planes = x.reshape(-1, h, w)
    y = np.empty((planes.shape[0], oh, ow), dtype=np.float64)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh - ph, j * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            pool_size = (he - hs) * (we - ws)
            hs0, ws0, he0, we0 = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            if divisor_override is not None:
                div = divisor_override
            elif count_include_pad:
                div = pool_size
            else:
                div = (he0 - hs0) * (we0 - ws0)
            y[:, i, j] = planes[:, hs0:he0, ws0:we0].sum(axis=(1, 2)) / div
    return y.reshape(x.shape[:-2] + (oh, ow))


# --------------------------------------------------------------------------- #
# max_pool2d
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("name", list(MAX_CASES))
def test_max_pool2d_matches_reference(rng, isa, name, ties):
    case = MAX_CASES[name]
    x = _x(rng, case, ties=ties)
    oh, ow = _pool_hw(case)
    ey, ei = ref.max_pool2d(x, return_indices=True, **case["kw"])
    assert ey.shape == batched_shape(case["n"], case["c"], oh, ow)
    for _ in range(2):
        _poison_heap(ey.nbytes)
        y, idx = convkit.max_pool2d(x, return_indices=True, backend="cpu", **case["kw"])
        assert y.dtype == np.float64 and idx.dtype == np.int64
        assert_bitwise_equal(y, ey)
        assert_bitwise_equal(idx, ei)
    y_only = convkit.max_pool2d(x, backend="cpu", **case["kw"])
    assert isinstance(y_only, np.ndarray)
    assert_bitwise_equal(y_only, ey)
    gy = _gy(rng, case, oh, ow)
    egx = ref.max_pool2d_backward(gy, x, ei, **case["kw"])
    _poison_heap(x.nbytes)
    gx = convkit.max_pool2d_backward(gy, x, idx, backend="cpu", **case["kw"])
    assert_close(gx, egx, F64_RTOL, dtype=np.float64)


@pytest.mark.parametrize("name", ["k3s2p1", "dilation_pair_ceil", "ceil_drop_last", "pad_half", "unbatched",
                                  "whole_plane"])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_max_pool2d_matches_brute_force(rng, name, ties):
    case = MAX_CASES[name]
    x = _x(rng, case, ties=ties)
    by, bi = brute_max_pool(x, **case["kw"])
    for mod, kw in ((convkit, dict(backend="cpu")), (ref, {})):
        y, idx = mod.max_pool2d(x, return_indices=True, **case["kw"], **kw)
        assert_bitwise_equal(y, by)
        assert_bitwise_equal(idx, bi)


def test_max_pool2d_ties_first_max_wins():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 0, 1] = 5.0  # two maxima in the first window
    for mod, kw in ((convkit, {}), (ref, {})):
        y, idx = mod.max_pool2d(x, 2, return_indices=True, **kw)
        assert idx[0, 0, 0, 0] == 1  # (0, 1) precedes (1, 1) in row-major order
        assert idx[0, 0, 0, 1] == 2 and idx[0, 0, 1, 0] == 8 and idx[0, 0, 1, 1] == 10  # all-zero windows
        assert y[0, 0, 0, 0] == 5.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool2d_nan_propagates(rng, isa, dtype):
    x = rng.standard_normal((2, 2, 7, 7)).astype(dtype)
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 3, 3] = np.nan
    x[0, 1, 3, 4] = np.nan  # two NaNs in one window: the last one wins
    x[1, 0, 6, 6] = np.nan
    x[1, 1, 0, 0] = np.inf
    x[1, 1, 0, 1] = -np.inf
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    by, bi = brute_max_pool(x, **kw)
    for mod in (convkit, ref):
        y, idx = mod.max_pool2d(x, return_indices=True, **kw)
        assert y.dtype == dtype
        assert np.array_equal(np.isnan(y), np.isnan(by))
        assert_bitwise_equal(y, by)
        assert_bitwise_equal(idx, bi)
    y, idx = convkit.max_pool2d(x, return_indices=True, **kw)
    # every window containing a NaN gives NaN
    assert np.isnan(y[0, 0, :2, :2]).all()
    assert np.isnan(y[1, 0, -1, -1])


def test_max_pool2d_all_nan_and_all_neg_inf():
    x = np.full((1, 1, 4, 4), -np.inf)
    y, idx = convkit.max_pool2d(x, 2, return_indices=True)
    assert (y == -np.inf).all()
    # every index must lie inside its own window
    for i in range(2):
        for j in range(2):
            r, c = divmod(int(idx[0, 0, i, j]), 4)
            assert 2 * i <= r < 2 * i + 2 and 2 * j <= c < 2 * j + 2
    x = np.full((1, 1, 4, 4), np.nan)
    y, idx = convkit.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y).all()
    assert_bitwise_equal(idx, brute_max_pool(x, 2)[1])


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("shape,kw", [
    ((2, 1, 1, 4), dict(kernel_size=2, stride=1, padding=(1, 0), dilation=2, ceil_mode=True)),
    ((1, 2, 7, 1), dict(kernel_size=(3, 2), stride=(3, 1), padding=(1, 1), dilation=(2, 2))),
    ((1, 1, 1, 1), dict(kernel_size=(1, 2), stride=1, padding=(0, 1), dilation=(1, 2))),
], ids=["rows", "cols", "single_pixel"])
def test_max_pool2d_window_of_padding_only(rng, backend, shape, kw):
    """With dilation and padding a window can hold only padding: PyTorch gives
    -inf and the flat offset of the first tap at or after 0. The backward
    must accept the indices its own forward produced (such windows pass no
    gradient to any input)."""
    x = rng.standard_normal(shape)
    assert pool_has_empty_window(shape[2], shape[3], **kw)
    by, bi = brute_max_pool(x, **kw)
    y, idx = convkit.max_pool2d(x, return_indices=True, backend=backend, **kw)
    assert_bitwise_equal(y, by)
    assert_bitwise_equal(idx, bi)
    gy = rng.standard_normal(y.shape)
    gx = convkit.max_pool2d_backward(gy, x, idx, backend=backend, **kw)
    assert gx.shape == x.shape
    # only windows that saw an input element route gradient
    expected = np.zeros(x.shape)
    flat_e = expected.reshape(-1, shape[2] * shape[3])
    for p_, (g_row, i_row, y_row) in enumerate(zip(gy.reshape(flat_e.shape[0], -1), idx.reshape(flat_e.shape[0], -1),
                                                   y.reshape(flat_e.shape[0], -1))):
        for g_, i_, y_ in zip(g_row, i_row, y_row):
            if y_ != -np.inf:
                flat_e[p_, i_] += g_
    assert_close(gx, expected)


def test_max_pool2d_backward_accumulates_overlaps():
    """Overlapping windows that pick the same input add their gradients."""
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0
    y, idx = convkit.max_pool2d(x, 2, stride=1, return_indices=True)
    assert (idx == 4).all()
    gy = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    gx = convkit.max_pool2d_backward(gy, x, idx, 2, stride=1)
    expected = np.zeros((1, 1, 3, 3))
    expected[0, 0, 1, 1] = 10.0
    assert_bitwise_equal(gx, expected)


@pytest.mark.parametrize("name", ["k3s2p1", "ceil_k3s2p1", "unbatched"])
def test_max_pool2d_float32(rng, isa, name):
    case = MAX_CASES[name]
    x = _x(rng, case, np.float32)
    y, idx = convkit.max_pool2d(x, return_indices=True, **case["kw"])
    ey, ei = ref.max_pool2d(x.astype(np.float64), return_indices=True, **case["kw"])
    assert y.dtype == np.float32
    assert_bitwise_equal(y.astype(np.float64), ey)
    assert_bitwise_equal(idx, ei)
    gy = _gy(rng, case, *_pool_hw(case), dtype=np.float32)
    gx = convkit.max_pool2d_backward(gy, x, idx, **case["kw"])
    assert gx.dtype == np.float32
    assert_close(gx, ref.max_pool2d_backward(gy.astype(np.float64), x.astype(np.float64), ei, **case["kw"]),
                 F32_RTOL)


# --------------------------------------------------------------------------- #
# avg_pool2d
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", list(AVG_CASES))
def test_avg_pool2d_matches_reference(rng, isa, name):
    case = AVG_CASES[name]
    x = _x(rng, case)
    expected = ref.avg_pool2d(x, **case["kw"])
    oh, ow = _pool_hw(case)
    assert expected.shape == batched_shape(case["n"], case["c"], oh, ow)
    for _ in range(2):
        _poison_heap(expected.nbytes)
        got = convkit.avg_pool2d(x, backend="cpu", **case["kw"])
        assert_close(got, expected, F64_RTOL, dtype=np.float64)
    gy = _gy(rng, case, oh, ow)
    egx = ref.avg_pool2d_backward(gy, x, **case["kw"])
    for _ in range(2):
        _poison_heap(x.nbytes)
        assert_close(convkit.avg_pool2d_backward(gy, x, backend="cpu", **case["kw"]), egx, F64_RTOL,
                     dtype=np.float64)


@pytest.mark.parametrize("name", ["k3s2p1", "k3s2p1_nopad", "ceil_p0", "ceil_pad_include", "ceil_pad_exclude",
                                  "ceil_drop_last", "divisor_ceil_pad", "pad_half", "unbatched"])
def test_avg_pool2d_matches_brute_force(rng, name):
    case = AVG_CASES[name]
    x = _x(rng, case)
    expected = brute_avg_pool(x, **case["kw"])
    assert_close(convkit.avg_pool2d(x, **case["kw"]), expected)
    assert_close(ref.avg_pool2d(x, **case["kw"]), expected)


@pytest.mark.parametrize("name", ["k3s2p1", "ceil_pad_exclude", "divisor3", "unbatched"])
def test_avg_pool2d_float32(rng, isa, name):
    case = AVG_CASES[name]
    x = _x(rng, case, np.float32)
    y = convkit.avg_pool2d(x, **case["kw"])
    assert y.dtype == np.float32
    assert_close(y, ref.avg_pool2d(x.astype(np.float64), **case["kw"]), F32_RTOL)
    gy = _gy(rng, case, *_pool_hw(case), dtype=np.float32)
    gx = convkit.avg_pool2d_backward(gy, x, **case["kw"])
    assert gx.dtype == np.float32
    assert_close(gx, ref.avg_pool2d_backward(gy.astype(np.float64), x.astype(np.float64), **case["kw"]), F32_RTOL)


# --------------------------------------------------------------------------- #
# lp_pool2d
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", list(LP_CASES))
def test_lp_pool2d_matches_reference(rng, isa, name):
    case = LP_CASES[name]
    x = _x(rng, case, positive=True)
    expected = ref.lp_pool2d(x, case["norm"], **case["kw"])
    oh, ow = _pool_hw(case)
    assert expected.shape == batched_shape(case["n"], case["c"], oh, ow)
    _poison_heap(expected.nbytes)
    assert_close(convkit.lp_pool2d(x, case["norm"], backend="cpu", **case["kw"]), expected, F64_RTOL,
                 dtype=np.float64)
    gy = _gy(rng, case, oh, ow)
    _poison_heap(x.nbytes)
    assert_close(convkit.lp_pool2d_backward(gy, x, case["norm"], backend="cpu", **case["kw"]),
                 ref.lp_pool2d_backward(gy, x, case["norm"], **case["kw"]), F64_RTOL, dtype=np.float64)


def test_lp_pool2d_definition(rng):
    """No ceil mode: y = (sum over the window of x**p) ** (1/p)."""
    x = np.abs(rng.standard_normal((2, 2, 6, 6))) + 0.1
    for p in (1.0, 2.0, 3.0, 1.5):
        y = convkit.lp_pool2d(x, p, 3, stride=1)
        windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))
        assert_close(y, (windows ** p).sum(axis=(-2, -1)) ** (1 / p))


@pytest.mark.parametrize("name", ["p2_k2", "p1.5_ceil", "p3_rect"])
def test_lp_pool2d_float32(rng, isa, name):
    case = LP_CASES[name]
    x = _x(rng, case, np.float32, positive=True)
    y = convkit.lp_pool2d(x, case["norm"], **case["kw"])
    assert y.dtype == np.float32
    assert_close(y, ref.lp_pool2d(x.astype(np.float64), case["norm"], **case["kw"]), F32_RTOL)
    gy = _gy(rng, case, *_pool_hw(case), dtype=np.float32)
    gx = convkit.lp_pool2d_backward(gy, x, case["norm"], **case["kw"])
    assert gx.dtype == np.float32
    assert_close(gx, ref.lp_pool2d_backward(gy.astype(np.float64), x.astype(np.float64), case["norm"],
                                            **case["kw"]), 1e-3)


# lp_pool2d's kernels replay torch's formula (csrc/pool2d.cpp): x.pow(p) by
# torch's special exponents, window sums row-major from 0, one division by the
# clamped count, then sign(A) * relu(abs(A)) * kh*kw and pow(1/p); the
# backward chains autograd's steps and adds each window's delta into its
# inputs in (oh, ow) order. _lp_replay does the same in NumPy, in the input's
# dtype (independently of convkit), so the kernels' fast paths (exponent
# kinds, scratch bands of x.pow(p), plane blocks of narrow outputs, the avg
# backward paths) must match it bit for bit. NaN bits are the compiler's
# choice (the sign of a NaN is not kept by its rewrites), so NaNs only have
# to be NaN.

def _lp_pow(b, e):
    one = b.dtype.type(1)
    special = {0.0: lambda: np.ones_like(b), 1.0: lambda: b.copy(), 2.0: lambda: b * b, 3.0: lambda: b * b * b,
               0.5: lambda: np.sqrt(b), -0.5: lambda: one / np.sqrt(b), -1.0: lambda: one / b,
               -2.0: lambda: one / (b * b)}
    if e in special:
        return special[e]()

    def libm_pow(v):  # math.pow is the C library's pow, as std::pow
        try:
            return math.pow(v, e)
        except ValueError:
            return math.nan
    return np.array([libm_pow(float(v)) for v in b.ravel()], dtype=np.float64).reshape(b.shape).astype(b.dtype)


def _lp_replay(x, p, kernel_size, stride=None, ceil_mode=False, gy=None):
    kh, kw = as_pair(kernel_size)
    sh, sw = as_pair(kernel_size if stride is None else stride)
    n, c, h, w = x.shape
    oh, ow = pool_out_hw(h, w, (kh, kw), (sh, sw), 0, 1, ceil_mode)
    dt = x.dtype.type
    kk = dt(kh * kw)
    with np.errstate(all="ignore"):
        # zeros past the input: + 0 changes no bits of a sum that starts at +0
        xp = np.zeros((n, c, max(h, (oh - 1) * sh + kh), max(w, (ow - 1) * sw + kw)), x.dtype)
        xp[..., :h, :w] = _lp_pow(x, p)
        a = np.zeros((n, c, oh, ow), x.dtype)
        for r in range(kh):
            for q in range(kw):
                a = a + xp[..., r:r + (oh - 1) * sh + 1:sh, q:q + (ow - 1) * sw + 1:sw]
        rows = np.minimum(np.arange(oh) * sh + kh, h) - np.arange(oh) * sh
        cols = np.minimum(np.arange(ow) * sw + kw, w) - np.arange(ow) * sw
        count = (rows[:, None] * cols[None, :]).astype(x.dtype)
        a = a / count
        s = (a > 0).astype(x.dtype) - (a < 0).astype(x.dtype)
        r_ = np.abs(a)
        r_ = np.where(r_ <= 0, dt(0), r_)
        b = (s * r_) * kk
        if gy is None:
            return _lp_pow(b, 1.0 / p)
        gb = gy * (dt(1.0 / p) * _lp_pow(b, 1.0 / p - 1.0))
        ga = np.where(r_ <= 0, dt(0), (gb * kk) * s) * s
        delta = ga / count
        gx = np.zeros(xp.shape, x.dtype)
        for i in range(oh):
            for j in range(ow):
                gx[..., i * sh:i * sh + kh, j * sw:j * sw + kw] += delta[..., i, j, None, None]
        return gx[..., :h, :w] * (dt(p) * _lp_pow(x, p - 1.0))


def _assert_same_bits_or_nan(a, b, err_msg=""):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, err_msg
    u = np.uint32 if a.dtype == np.float32 else np.uint64
    ok = (a.view(u) == b.view(u)) | (np.isnan(a) & np.isnan(b))
    assert ok.all(), f"{err_msg}: {(~ok).sum()} of {ok.size} differ, first at {np.argwhere(~ok)[0]}"


LP_FAST_GEOMS = [
    ((2, 3, 7, 7), dict(kernel_size=2)),
    ((16, 2, 7, 7), dict(kernel_size=2, ceil_mode=True)),  # narrow outputs: blocks of 8 planes
    ((3, 4, 14, 14), dict(kernel_size=3, stride=2, ceil_mode=True)),
    ((1, 2, 15, 13), dict(kernel_size=3, stride=1)),
    ((2, 2, 9, 10), dict(kernel_size=(3, 2), stride=(1, 2))),
    ((1, 1, 33, 300), dict(kernel_size=2, ceil_mode=True)),  # wide rows: several scratch bands
    ((1, 2, 40, 300), dict(kernel_size=3, stride=1)),  # bands of overlapping windows
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, kw", LP_FAST_GEOMS, ids=[f"{s}-{k}" for s, k in LP_FAST_GEOMS])
def test_lp_pool2d_replays_torch_formula_bitwise(rng, isa, shape, kw, dtype):
    norms = (2.0, 1.0, 3.0, 1.5, 0.5) if np.prod(shape) < 5000 else (2.0, 1.5)
    for p in norms:
        x = rng.standard_normal(shape).astype(dtype)
        x[..., ::4, 1::3] = 0.0  # windows with A == 0 (zero gradient) and 0 ** (p - 1)
        if p == 1.5:
            x[0, 0, 0, :] = np.abs(x[0, 0, 0, :])
        gy = rng.standard_normal(pool_out_hw(shape[2], shape[3], kw["kernel_size"], kw.get("stride"), 0, 1,
                                             kw.get("ceil_mode", False))).astype(dtype)
        gy = np.broadcast_to(gy, shape[:2] + gy.shape).copy() * rng.standard_normal(shape[:2] + (1, 1)).astype(dtype)
        msg = f"p={p} {shape} {kw}"
        with np.errstate(all="ignore"):
            _poison_heap(8 * x.size)
            _assert_same_bits_or_nan(convkit.lp_pool2d(x, p, **kw), _lp_replay(x, p, **kw), msg)
            _poison_heap(8 * x.size)
            _assert_same_bits_or_nan(convkit.lp_pool2d_backward(gy, x, p, **kw), _lp_replay(x, p, **kw, gy=gy),
                                     msg + " backward")


@pytest.mark.parametrize("shape, kw", [
    ((4, 8, 56, 56), dict(kernel_size=2)),
    ((1, 1, 300, 300), dict(kernel_size=3, stride=1)),  # few planes: bands of rows per thread
    ((32, 8, 7, 7), dict(kernel_size=2, ceil_mode=True)),
    ((4, 8, 29, 29), dict(kernel_size=3, stride=2, ceil_mode=True)),
])
def test_lp_pool2d_threads_bitwise(rng, restore_threads, shape, kw):
    x = np.abs(rng.standard_normal(shape)).astype(np.float32) + np.float32(0.01)
    x[0, 0, :3, :3] = 0.0
    y = convkit.lp_pool2d(x, 2.0, **kw)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    results = {}
    for threads in (1, 2, 3):
        convkit.set_num_threads(threads)
        for p in (2.0, 3.0):
            _poison_heap(8 * x.size)
            yt = convkit.lp_pool2d(x, p, **kw)
            _poison_heap(8 * x.size)
            results.setdefault(p, []).append((yt, convkit.lp_pool2d_backward(gy, x, p, **kw)))
    for p, runs in results.items():
        for yt, gt in runs[1:]:
            assert_bitwise_equal(yt, runs[0][0], f"p={p}")
            assert_bitwise_equal(gt, runs[0][1], f"p={p} backward")
        assert_close(runs[0][0], ref.lp_pool2d(x.astype(np.float64), p, **kw), F32_RTOL)


@pytest.mark.torch
@pytest.mark.parametrize("shape, kw", LP_FAST_GEOMS[:5], ids=[f"{s}-{k}" for s, k in LP_FAST_GEOMS[:5]])
def test_lp_pool2d_fast_paths_match_torch(rng, shape, kw):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.abs(rng.standard_normal(shape)) + 0.05
    for p in (2.0, 1.0, 3.0, 1.5):
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        yt = F.lp_pool2d(xt, p, kw["kernel_size"], kw.get("stride"), kw.get("ceil_mode", False))
        gy = rng.standard_normal(tuple(yt.shape))
        (gxt,) = torch.autograd.grad(yt, [xt], torch.from_numpy(gy))
        assert_close(convkit.lp_pool2d(x, p, **kw), yt.detach().numpy(), F64_RTOL)
        assert_close(convkit.lp_pool2d_backward(gy, x, p, **kw), gxt.numpy(), F64_RTOL)


# --------------------------------------------------------------------------- #
# adaptive and global pools
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("name", list(ADAPTIVE_CASES))
def test_adaptive_pools_match_reference(rng, isa, name, ties):
    case = ADAPTIVE_CASES[name]
    x = _x(rng, case, ties=ties)
    oh, ow = adaptive_out_hw(case["h"], case["w"], case["out"])
    gy = _gy(rng, case, oh, ow)
    # average
    e = ref.adaptive_avg_pool2d(x, case["out"])
    assert e.shape == batched_shape(case["n"], case["c"], oh, ow)
    _poison_heap(e.nbytes)
    assert_close(convkit.adaptive_avg_pool2d(x, case["out"], backend="cpu"), e, dtype=np.float64)
    _poison_heap(x.nbytes)
    assert_close(convkit.adaptive_avg_pool2d_backward(gy, x, backend="cpu"),
                 ref.adaptive_avg_pool2d_backward(gy, x), dtype=np.float64)
    # max
    ey, ei = ref.adaptive_max_pool2d(x, case["out"], return_indices=True)
    by, bi = brute_adaptive_max(x, case["out"])
    assert_bitwise_equal(ey, by)
    assert_bitwise_equal(ei, bi)
    _poison_heap(ey.nbytes)
    y, idx = convkit.adaptive_max_pool2d(x, case["out"], return_indices=True, backend="cpu")
    assert_bitwise_equal(y, by)
    assert_bitwise_equal(idx, bi)
    assert_bitwise_equal(convkit.adaptive_max_pool2d(x, case["out"], backend="cpu"), by)
    _poison_heap(x.nbytes)
    assert_close(convkit.adaptive_max_pool2d_backward(gy, x, idx, backend="cpu"),
                 ref.adaptive_max_pool2d_backward(gy, x, ei), dtype=np.float64)


def test_adaptive_avg_pool2d_definition(rng):
    x = rng.standard_normal((2, 3, 7, 5))
    y = convkit.adaptive_avg_pool2d(x, (3, 2))
    expected = np.empty((2, 3, 3, 2))
    for i in range(3):
        h0, h1 = (i * 7) // 3, -((-(i + 1) * 7) // 3)
        for j in range(2):
            w0, w1 = (j * 5) // 2, -((-(j + 1) * 5) // 2)
            expected[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    assert_close(y, expected)


def test_adaptive_max_pool2d_nan(rng):
    x = rng.standard_normal((1, 2, 7, 5))
    x[0, 0, 2, 1] = np.nan
    x[0, 1, 6, 4] = np.nan
    x[0, 1, 5, 4] = np.nan
    by, bi = brute_adaptive_max(x, (3, 2))
    for mod in (convkit, ref):
        y, idx = mod.adaptive_max_pool2d(x, (3, 2), return_indices=True)
        assert_bitwise_equal(y, by)
        assert_bitwise_equal(idx, bi)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (3, 1, 1), (0, 2, 3, 3), (1, 4, 7, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_avg_pool2d(rng, isa, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    y = convkit.global_avg_pool2d(x)
    assert y.dtype == dtype
    assert y.shape == shape[:-2] + (1, 1)
    rtol = F32_RTOL if dtype == np.float32 else F64_RTOL
    assert_close(y, x.astype(np.float64).mean(axis=(-2, -1), keepdims=True), rtol)
    assert_close(ref.global_avg_pool2d(x.astype(np.float64)), x.astype(np.float64).mean(axis=(-2, -1),
                                                                                          keepdims=True))
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = convkit.global_avg_pool2d_backward(gy, x)
    assert gx.dtype == dtype and gx.shape == x.shape
    expected = np.broadcast_to(gy.astype(np.float64) / (shape[-1] * shape[-2]), x.shape)
    assert_close(gx, expected, rtol)
    assert_close(gx, convkit.adaptive_avg_pool2d_backward(gy, x), rtol)


def _documented_plane_means(x):
    """global_avg_pool2d's documented float32 arithmetic: element i of a plane
    into double accumulator i % 8, in order; the eight combined pairwise,
    rounded to float32, divided by the plane size in float32."""
    plane = x.shape[-1] * x.shape[-2]
    flat = x.reshape(-1, plane).astype(np.float64)
    acc = np.zeros((flat.shape[0], 8))
    for i in range(0, plane, 8):
        chunk = flat[:, i:i + 8]
        acc[:, :chunk.shape[1]] += chunk
    s = ((acc[:, 0] + acc[:, 1]) + (acc[:, 2] + acc[:, 3])) + ((acc[:, 4] + acc[:, 5]) + (acc[:, 6] + acc[:, 7]))
    return (s.astype(np.float32) / np.float32(plane)).reshape(x.shape[:-2] + (1, 1))


@pytest.mark.parametrize("hw", [(1, 1), (1, 7), (3, 3), (2, 4), (3, 5), (7, 7), (8, 8), (5, 13)])
def test_global_avg_pool2d_float32_bits(rng, isa, hw):
    # Every tail length 0..7, odd and even plane counts, signed zeros and
    # huge/tiny magnitudes (where the order of the sum shows), inf and NaN.
    x = (rng.standard_normal((3, 7) + hw) * 10.0 ** rng.integers(-30, 30, (3, 7) + hw)).astype(np.float32)
    x[0, 0] = -0.0
    x[1, 2].flat[-1] = np.inf
    x[2, 3].flat[0] = np.nan
    assert_bitwise_equal(convkit.global_avg_pool2d(x), _documented_plane_means(x))


@pytest.mark.parametrize("name", ["non_divisible", "upsample", "unbatched"])
def test_adaptive_float32(rng, isa, name):
    case = ADAPTIVE_CASES[name]
    x = _x(rng, case, np.float32)
    x64 = x.astype(np.float64)
    oh, ow = adaptive_out_hw(case["h"], case["w"], case["out"])
    gy = _gy(rng, case, oh, ow, np.float32)
    y = convkit.adaptive_avg_pool2d(x, case["out"])
    assert y.dtype == np.float32
    assert_close(y, ref.adaptive_avg_pool2d(x64, case["out"]), F32_RTOL)
    gx = convkit.adaptive_avg_pool2d_backward(gy, x)
    assert gx.dtype == np.float32
    assert_close(gx, ref.adaptive_avg_pool2d_backward(gy.astype(np.float64), x64), F32_RTOL)
    y, idx = convkit.adaptive_max_pool2d(x, case["out"], return_indices=True)
    ey, ei = ref.adaptive_max_pool2d(x64, case["out"], return_indices=True)
    assert y.dtype == np.float32 and idx.dtype == np.int64
    assert_bitwise_equal(y.astype(np.float64), ey)
    assert_bitwise_equal(idx, ei)
    gx = convkit.adaptive_max_pool2d_backward(gy, x, idx)
    assert gx.dtype == np.float32
    assert_close(gx, ref.adaptive_max_pool2d_backward(gy.astype(np.float64), x64, ei), F32_RTOL)


def test_pool_backends_agree(rng):
    x = rng.standard_normal((2, 3, 7, 6))
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    a = convkit.max_pool2d(x, return_indices=True, **kw)
    b = convkit.max_pool2d(x, return_indices=True, backend="cpu", **kw)
    for u, v in zip(a, b):
        assert_bitwise_equal(u, v)
    for u, v in zip(convkit.max_pool2d(x, return_indices=True, backend="reference", **kw),
                    ref.max_pool2d(x, return_indices=True, **kw)):
        assert_bitwise_equal(u, v)
    assert_bitwise_equal(convkit.avg_pool2d(x, backend="reference", **kw), ref.avg_pool2d(x, **kw))
    assert_bitwise_equal(convkit.adaptive_avg_pool2d(x, 3, backend="reference"), ref.adaptive_avg_pool2d(x, 3))
    assert_bitwise_equal(convkit.global_avg_pool2d(x, backend="reference"), ref.global_avg_pool2d(x))


def test_pool_stride_none_means_window(rng):
    x = rng.standard_normal((1, 2, 6, 9))
    assert_bitwise_equal(convkit.max_pool2d(x, (2, 3)), convkit.max_pool2d(x, (2, 3), stride=(2, 3)))
    assert_bitwise_equal(convkit.avg_pool2d(x, (2, 3)), convkit.avg_pool2d(x, (2, 3), stride=(2, 3)))
    xp = np.abs(x) + 0.1
    assert_bitwise_equal(convkit.lp_pool2d(xp, 2, (2, 3)), convkit.lp_pool2d(xp, 2, (2, 3), stride=(2, 3)))


# --------------------------------------------------------------------------- #
# hypothesis
# --------------------------------------------------------------------------- #


@st.composite
def pool_geometries(draw, with_dilation=True, with_padding=True):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    ph = draw(st.integers(0, kh // 2)) if with_padding else 0
    pw = draw(st.integers(0, kw // 2)) if with_padding else 0
    dh, dw = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if with_dilation else (1, 1)
    ceil_mode = draw(st.booleans())
    min_h = max(1, dh * (kh - 1) + 1 - 2 * ph)
    min_w = max(1, dw * (kw - 1) + 1 - 2 * pw)
    h = draw(st.integers(min_h, min_h + 5))
    w = draw(st.integers(min_w, min_w + 5))
    n = draw(st.sampled_from([None, 0, 1, 2]))
    c = draw(st.integers(1, 3))
    kwargs = dict(kernel_size=(kh, kw), stride=stride, padding=(ph, pw), ceil_mode=ceil_mode)
    if with_dilation:
        kwargs["dilation"] = (dh, dw)
    return dict(n=n, c=c, h=h, w=w, kw=kwargs), draw(st.integers(0, 2**32 - 1)), draw(st.booleans())


@HYP
@given(pool_geometries())
def test_max_pool2d_hypothesis(isa, case_seed_ties):
    case, seed, ties = case_seed_ties
    rng = np.random.default_rng(seed)
    x = _x(rng, case, ties=ties)
    by, bi = brute_max_pool(x, **case["kw"])
    y, idx = convkit.max_pool2d(x, return_indices=True, **case["kw"])
    assert_bitwise_equal(y, by)
    assert_bitwise_equal(idx, bi)
    if pool_has_empty_window(case["h"], case["w"], **case["kw"]):
        return  # covered by test_max_pool2d_window_of_padding_only
    gy = _gy(rng, case, *y.shape[-2:])
    assert_close(convkit.max_pool2d_backward(gy, x, idx, **case["kw"]),
                 ref.max_pool2d_backward(gy, x, idx, **case["kw"]))


@HYP
@given(pool_geometries(with_dilation=False), st.booleans(), st.sampled_from([None, 1, 3, 7]))
def test_avg_pool2d_hypothesis(isa, case_seed_ties, count_include_pad, divisor_override):
    case, seed, _ = case_seed_ties
    rng = np.random.default_rng(seed)
    kw = dict(case["kw"], count_include_pad=count_include_pad, divisor_override=divisor_override)
    x = _x(rng, case)
    expected = brute_avg_pool(x, **kw)
    assert_close(convkit.avg_pool2d(x, **kw), expected)
    assert_close(ref.avg_pool2d(x, **kw), expected)
    gy = _gy(rng, case, *expected.shape[-2:])
    assert_close(convkit.avg_pool2d_backward(gy, x, **kw), ref.avg_pool2d_backward(gy, x, **kw))


@HYP
@given(pool_geometries(with_dilation=False, with_padding=False), st.sampled_from([1.0, 2.0, 3.0, 1.5]))
def test_lp_pool2d_hypothesis(isa, case_seed_ties, norm):
    case, seed, _ = case_seed_ties
    rng = np.random.default_rng(seed)
    kw = {k: v for k, v in case["kw"].items() if k != "padding"}
    x = _x(rng, case, positive=True)
    y = convkit.lp_pool2d(x, norm, **kw)
    assert_close(y, ref.lp_pool2d(x, norm, **kw))
    gy = _gy(rng, case, *y.shape[-2:])
    assert_close(convkit.lp_pool2d_backward(gy, x, norm, **kw), ref.lp_pool2d_backward(gy, x, norm, **kw))


@HYP
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**32 - 1),
       st.booleans())
def test_adaptive_hypothesis(isa, h, w, oh, ow, seed, ties):
    rng = np.random.default_rng(seed)
    case = dict(n=2, c=2, h=h, w=w)
    x = _x(rng, case, ties=ties)
    by, bi = brute_adaptive_max(x, (oh, ow))
    y, idx = convkit.adaptive_max_pool2d(x, (oh, ow), return_indices=True)
    assert_bitwise_equal(y, by)
    assert_bitwise_equal(idx, bi)
    gy = _gy(rng, case, oh, ow)
    assert_close(convkit.adaptive_max_pool2d_backward(gy, x, idx), ref.adaptive_max_pool2d_backward(gy, x, idx))
    assert_close(convkit.adaptive_avg_pool2d(x, (oh, ow)), ref.adaptive_avg_pool2d(x, (oh, ow)))
    assert_close(convkit.adaptive_avg_pool2d_backward(gy, x), ref.adaptive_avg_pool2d_backward(gy, x))


# --------------------------------------------------------------------------- #
# widths around the SIMD row kernels' vector lengths
# --------------------------------------------------------------------------- #

ROW_CONFIGS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(1, 4), stride=(1, 3), padding=(0, 2), ceil_mode=True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cfg", range(len(ROW_CONFIGS)))
def test_pools_simd_row_widths(rng, isa, cfg, dtype):
    kw = ROW_CONFIGS[cfg]
    for w in (1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 64, 65, 70):
        kh, kwid = as_pair(kw["kernel_size"])
        if w + 2 * as_pair(kw.get("padding", 0))[1] < kwid:
            continue
        x = rng.standard_normal((2, 3, 5, w)).astype(dtype)
        x[0, 1, 2, w // 2] = np.nan
        x64 = x.astype(np.float64)
        msg = f"w={w} {kw}"
        y, idx = convkit.max_pool2d(x, return_indices=True, **kw)
        ey, ei = ref.max_pool2d(x64, return_indices=True, **kw)
        assert_bitwise_equal(y.astype(np.float64), ey, msg)
        assert_bitwise_equal(idx, ei, msg)
        gy = rng.standard_normal(y.shape).astype(dtype)
        rtol = F64_RTOL if dtype == np.float64 else F32_RTOL
        assert_close(convkit.max_pool2d_backward(gy, x, idx, **kw),
                     ref.max_pool2d_backward(gy.astype(np.float64), x64, ei, **kw), rtol, err_msg=msg)
        avg_kw = {k: v for k, v in kw.items() if k != "dilation"}
        for cip in (True, False):
            assert_close(convkit.avg_pool2d(x, count_include_pad=cip, **avg_kw),
                         ref.avg_pool2d(x64, count_include_pad=cip, **avg_kw), rtol, dtype=dtype, err_msg=msg)
            assert_close(convkit.avg_pool2d_backward(gy, x, count_include_pad=cip, **avg_kw),
                         ref.avg_pool2d_backward(gy.astype(np.float64), x64, count_include_pad=cip, **avg_kw),
                         rtol, dtype=dtype, err_msg=msg)
        lp_kw = {k: v for k, v in avg_kw.items() if k != "padding"}
        xp = np.abs(x) + 0.1
        xp[np.isnan(xp)] = 1.0
        for norm in (2.0, 1.5) if w >= kwid else ():
            assert_close(convkit.lp_pool2d(xp, norm, **lp_kw), ref.lp_pool2d(xp.astype(np.float64), norm, **lp_kw),
                         rtol, dtype=dtype, err_msg=msg)
        ya, ia = convkit.adaptive_max_pool2d(x, (3, max(1, w // 3)), return_indices=True)
        eya, eia = ref.adaptive_max_pool2d(x64, (3, max(1, w // 3)), return_indices=True)
        assert_bitwise_equal(ya.astype(np.float64), eya, msg)
        assert_bitwise_equal(ia, eia, msg)
        assert_close(convkit.adaptive_avg_pool2d(x, (3, max(1, w // 3))),
                     ref.adaptive_avg_pool2d(x64, (3, max(1, w // 3))), rtol, dtype=dtype, err_msg=msg)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1),
                                dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)], ids=["k2", "k3s1", "k3s2"])
def test_max_pool2d_signed_zeros_first_wins(rng, isa, kw, dtype):
    """-0.0 == 0.0, so the first of them in the window wins, sign included
    (a SIMD max that returns its second operand on ties gets this wrong)."""
    x = rng.choice(np.array([-0.0, 0.0], dtype=dtype), size=(2, 3, 6, 37))
    by, bi = brute_max_pool(x, **kw)
    y, idx = convkit.max_pool2d(x, return_indices=True, **kw)
    assert_bitwise_equal(idx, bi)
    assert_bitwise_equal(y, by)
    assert_bitwise_equal(convkit.max_pool2d(x, **kw), by)
    ya, ia = convkit.adaptive_max_pool2d(x, (4, 11), return_indices=True)
    eya, eia = brute_adaptive_max(x, (4, 11))
    assert_bitwise_equal(ia, eia)
    assert_bitwise_equal(ya, eya)


def test_max_pool2d_huge_window_and_padding_is_fast():
    """A legal window of 2^40 rows with padding 2^39 (found by the native fuzz
    target: the first in-input tap was found by stepping over 2^39 padding
    rows). Every window covers all 7 rows, so the result is the column
    windows' maximum over the rows; forward and backward finish at once."""
    x = np.random.default_rng(3).standard_normal((1, 2, 7, 11))
    k, p, s = (2**40, 4), (2**39, 2), (4, 2)
    y, idx = convkit.max_pool2d(x, k, stride=s, padding=p, return_indices=True)
    cols = convkit.reference.max_pool2d(x, (1, 4), stride=(1, 2), padding=(0, 2)).max(axis=2, keepdims=True)
    assert y.shape == (1, 2, 2, 6)
    np.testing.assert_array_equal(y[:, :, :1], cols)
    np.testing.assert_array_equal(y[:, :, 1:], cols)
    gx = convkit.max_pool2d_backward(np.ones_like(y), x, idx, k, stride=s, padding=p)
    assert gx.sum() == y.size
    y_t, _ = convkit.max_pool2d(x.transpose(0, 1, 3, 2).copy(), k[::-1], stride=s[::-1], padding=p[::-1],
                                return_indices=True)
    np.testing.assert_array_equal(y_t, y.transpose(0, 1, 3, 2))


# Outputs narrower than a vector (a 7x7 window over a 7x7 plane, 5x5/3 over
# 17x17) are averaged 8 planes side by side; each plane's sum keeps its order,
# so the bits equal those of the row kernels, which a call of fewer than 8
# planes runs. Plane counts that leave a partial block of planes.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, kw", [
    ((2, 13, 7, 7), dict(kernel_size=7)),
    ((3, 5, 17, 17), dict(kernel_size=5, stride=3)),
    ((2, 9, 9, 8), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ((1, 11, 6, 6), dict(kernel_size=4, stride=3, padding=2, divisor_override=5)),
])
def test_avg_pool2d_narrow_outputs_match_row_kernels(rng, isa, shape, kw, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    y = convkit.avg_pool2d(x, **kw)
    assert y.shape[-1] < 8
    for n in range(shape[0]):
        assert_bitwise_equal(y[n:n + 1, :3], convkit.avg_pool2d(x[n:n + 1, :3], **kw))
        assert_bitwise_equal(y[n:n + 1, -2:], convkit.avg_pool2d(x[n:n + 1, -2:], **kw))
    rtol = F32_RTOL if dtype == np.float32 else 1e-12
    assert_close(y, ref.avg_pool2d(x.astype(np.float64), **kw), rtol)
    # Backward (one window over the whole plane: the plane is filled).
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = convkit.avg_pool2d_backward(gy, x, **kw)
    assert_close(gx, ref.avg_pool2d_backward(gy.astype(np.float64), x.astype(np.float64), **kw), rtol)


# Whole 2x2 windows at stride 2 (float32, AVX2) write every input once,
# selected from its window's gradient: the same bits as the general path (the
# generic ISA), zeros for an odd last row and column, -0.0 and NaN gradients
# passed as the general path passes them, rows whose last 1-3 windows are
# rewritten by an overlapping quad (rows under 4 windows take the general
# path), and an index outside its window rejected.
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 5, 15, 29), (3, 2, 7, 9), (1, 1, 2, 2), (2, 3, 6, 14),
                                   (1, 2, 3, 7), (4, 8, 14, 14), (2, 8, 28, 28), (1, 3, 9, 40)])
def test_max_pool2d_backward_2x2_matches_general_path(rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    y, idx = convkit.max_pool2d(x, 2, return_indices=True)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gy.flat[::7] = -0.0
    gy.flat[3::11] = np.nan
    got = convkit.max_pool2d_backward(gy, x, idx, 2)
    original = convkit.info()["isa"]
    convkit.set_isa("generic")
    try:
        general = convkit.max_pool2d_backward(gy, x, idx, 2)
    finally:
        convkit.set_isa(original)
    assert_bitwise_equal(got, general)
    finite = np.nan_to_num(gy.astype(np.float64))
    assert_close(np.nan_to_num(got.astype(np.float64)),
                 ref.max_pool2d_backward(finite, x.astype(np.float64), idx, 2), 1e-12)
    # An index inside the plane but outside its window (the last window's
    # corner given to the first), one past the plane, a negative one, and a
    # valid one plus 2^32 (same low 32 bits); the error names the first bad
    # position in the call even when a later row also holds one.
    plane_out = y.shape[2] * y.shape[3]
    last = (y.shape[0] * y.shape[1] - 1, y.shape[2] - 1, y.shape[3] - 1)
    planes = idx.reshape(-1, *y.shape[2:])
    for value in (idx[0, 0, 0, 0], shape[2] * shape[3], -1, int(planes[last]) + (1 << 32)):
        bad = idx.copy()
        bad.reshape(-1, *y.shape[2:])[last] = value
        if value == planes[last]:
            continue
        with pytest.raises(ValueError, match=rf"max_pool2d_backward: indices\[{idx.size - 1}\]"):
            convkit.max_pool2d_backward(gy, x, bad, 2)
        if plane_out > 1:
            bad.reshape(-1, *y.shape[2:])[last[0], 0, 1] = planes[last[0], 0, 0]
            first = last[0] * plane_out + 1
            with pytest.raises(ValueError, match=rf"max_pool2d_backward: indices\[{first}\]"):
                convkit.max_pool2d_backward(gy, x, bad, 2)


# Backward of narrow overlapping outputs (AlexNet's adaptive 13x13 -> 6x6,
# Inception's 5x5/3 over 17x17) gathers 8 planes side by side; each input's
# sum keeps its order, so the bits equal those of calls of fewer than 8 planes
# (per-plane gather or scatter). Plane counts leave a partial block.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op, shape, kw", [
    ("adaptive", (2, 13, 13, 13), dict(output_size=6)),
    ("adaptive", (3, 5, 11, 9), dict(output_size=(4, 5))),
    ("avg", (3, 5, 17, 17), dict(kernel_size=5, stride=3)),
    ("avg", (2, 9, 10, 11), dict(kernel_size=4, stride=2, padding=1, count_include_pad=False)),
])
def test_pool_backward_narrow_outputs_match_small_calls(rng, isa, op, shape, kw, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    if op == "adaptive":
        fwd = lambda a: convkit.adaptive_avg_pool2d(a, **kw)  # noqa: E731
        bwd = lambda g, a: convkit.adaptive_avg_pool2d_backward(g, a)  # noqa: E731
        expected = lambda g, a: ref.adaptive_avg_pool2d_backward(g, a)  # noqa: E731
    else:
        fwd = lambda a: convkit.avg_pool2d(a, **kw)  # noqa: E731
        bwd = lambda g, a: convkit.avg_pool2d_backward(g, a, **kw)  # noqa: E731
        expected = lambda g, a: ref.avg_pool2d_backward(g, a, **kw)  # noqa: E731
    gy = rng.standard_normal(fwd(x).shape).astype(dtype)
    assert gy.shape[-1] < 8
    gx = bwd(gy, x)
    y = fwd(x)  # the forward of narrow outputs also runs 8 planes side by side
    for n in range(shape[0]):
        for sl in (slice(0, 3), slice(shape[1] - 2, shape[1])):
            assert_bitwise_equal(gx[n:n + 1, sl], bwd(gy[n:n + 1, sl], x[n:n + 1, sl]))
            assert_bitwise_equal(y[n:n + 1, sl], fwd(x[n:n + 1, sl]))
    rtol = F32_RTOL if dtype == np.float32 else 1e-12
    assert_close(gx, expected(gy.astype(np.float64), x.astype(np.float64)), rtol)


# Overlapping max-pool windows (dilation 1): the backward interleaves the
# scatters of 4 planes; each plane's sums keep their order, so the bits equal
# those of calls of 1-3 planes (one plane at a time). Windows of padding only
# and bad indices send a block back to the per-plane path.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, kw", [
    ((2, 5, 9, 11), dict(kernel_size=3, stride=1, padding=1)),
    ((3, 3, 12, 10), dict(kernel_size=3, stride=2, padding=1)),
    ((1, 6, 7, 9), dict(kernel_size=(2, 4), stride=(1, 3), padding=(1, 2), ceil_mode=True)),
])
def test_max_pool2d_backward_overlapping_planes_match_single(rng, shape, kw, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    x[..., ::3, ::2] = 1.0  # ties: neighbouring windows share their maximum
    y, idx = convkit.max_pool2d(x, return_indices=True, **kw)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = convkit.max_pool2d_backward(gy, x, idx, **kw)
    for n in range(shape[0]):
        for c in range(shape[1]):
            sl = (slice(n, n + 1), slice(c, c + 1))
            assert_bitwise_equal(gx[sl], convkit.max_pool2d_backward(gy[sl], x[sl], idx[sl], **kw))
    assert_close(gx, ref.max_pool2d_backward(gy.astype(np.float64), x.astype(np.float64), idx, **kw),
                 F32_RTOL if dtype == np.float32 else 1e-12)
    bad = idx.copy()
    bad[0, 1, -1, -1] = -1
    with pytest.raises(ValueError, match="max_pool2d_backward"):
        convkit.max_pool2d_backward(gy, x, bad, **kw)


def _generic_isa(fn):
    """fn() with the portable kernels (the per-output scatter)."""
    original = convkit.info()["isa"]
    convkit.set_isa("generic")
    try:
        return fn()
    finally:
        convkit.set_isa(original)


def _error_text(fn):
    try:
        fn()
    except ValueError as e:
        return str(e)
    return None


# Overlapping max-pool windows at column stride 1, float32 (AVX2): dilated
# windows and windows of up to 4 taps over rows of 24+ columns gather each
# input's gradient (the vector compares of a row against the outputs around
# it); larger windows (3x3 on) check the indices 8 at a time (row by row, or
# in spans across rows shorter than 32 outputs), then scatter. Both give the
# bits of the per-output scatter (the generic ISA) for any thread count:
# ties make neighbours share their maximum, -0.0 gradients keep +0 sums.
# Shapes leave partial vectors, bands of rows split over threads (few
# planes) and planes outside blocks of 4. A bad index anywhere (first or
# last column, past the plane, negative, 2^32 + a valid index, another
# window's input) is reported at the position the scatter reports.
@pytest.mark.parametrize("shape, kw", [
    ((2, 5, 28, 28), dict(kernel_size=3, stride=1, padding=1)),
    ((1, 2, 40, 30), dict(kernel_size=3, stride=1, padding=1)),
    ((2, 5, 28, 28), dict(kernel_size=2, stride=1, padding=1)),  # gathered
    ((1, 2, 40, 30), dict(kernel_size=(1, 3), stride=1, padding=(0, 1))),  # few planes: bands of rows
    ((1, 3, 33, 57), dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 1), ceil_mode=True)),
    ((2, 3, 20, 26), dict(kernel_size=3, stride=1, padding=1, dilation=2)),
    ((1, 2, 19, 13), dict(kernel_size=(3, 2), stride=(3, 1), padding=(1, 1), dilation=(2, 3))),
    ((1, 3, 9, 7), dict(kernel_size=3, stride=1, dilation=(1, 2))),
    ((2, 6, 20, 20), dict(kernel_size=5, stride=1, padding=2)),  # checked ahead, then scattered
    ((1, 4, 12, 40), dict(kernel_size=3, stride=1, padding=1)),  # rows of 32+: checked row by row
    ((1, 4, 3000, 24), dict(kernel_size=3, stride=1, padding=1)),  # > 2^16 outputs: tables per span
    ((1, 9, 13, 17), dict(kernel_size=7, stride=1, padding=3)),
    ((1, 5, 11, 12), dict(kernel_size=(1, 5), stride=1, padding=(0, 2))),
])
def test_max_pool2d_backward_stride1_fast_paths_match_scatter(rng, shape, kw):
    x = np.round(rng.standard_normal(shape) * 2).astype(np.float32)  # many ties
    y, idx = convkit.max_pool2d(x, return_indices=True, **kw)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gy.flat[::5] = -0.0
    expected = _generic_isa(lambda: convkit.max_pool2d_backward(gy, x, idx, **kw))
    threads = convkit.get_num_threads()
    try:
        for t in (1, 2, 3):
            convkit.set_num_threads(t)
            assert_bitwise_equal(convkit.max_pool2d_backward(gy, x, idx, **kw), expected)
    finally:
        convkit.set_num_threads(threads)
    assert_close(expected, ref.max_pool2d_backward(gy.astype(np.float64), x.astype(np.float64), idx, **kw),
                 F32_RTOL)
    plane = shape[2] * shape[3]
    oh, ow = y.shape[2], y.shape[3]
    for pos in [(0, 0, 0, 0), (0, shape[1] - 1, oh - 1, ow - 1), (shape[0] - 1, 1, oh // 2, ow - 1),
                (0, shape[1] - 1, oh - 1, 0)]:
        for value in (plane, -1, (1 << 32) + int(idx[pos]), int(idx[pos[:2] + (oh - 1 - pos[2], ow - 1 - pos[3])])):
            if value == idx[pos]:
                continue
            bad = idx.copy()
            bad[pos] = value
            want = _error_text(lambda: _generic_isa(lambda: convkit.max_pool2d_backward(gy, x, bad, **kw)))
            if want is None:  # another window's input that also lies in this one
                continue
            assert _error_text(lambda: convkit.max_pool2d_backward(gy, x, bad, **kw)) == want


# Max-pool forward rows at output stride 1 or 2 (float32, AVX2): the running
# maximum of 8 (or, for rows of 4-7 outputs, 4) outputs stays in registers
# over the taps, and a row's last vector overlaps the one before. Same values
# and indices as the portable loops, with ties, -0.0, NaN and -inf in the
# windows; rows of 4, 5, 7, 8, 13 and 14 outputs.
@pytest.mark.parametrize("shape, kw", [
    ((2, 3, 28, 28), dict(kernel_size=2)),
    ((3, 2, 14, 14), dict(kernel_size=2)),
    ((1, 3, 9, 10), dict(kernel_size=2)),
    ((1, 2, 11, 16), dict(kernel_size=(2, 3), stride=(1, 2))),
    ((2, 2, 12, 17), dict(kernel_size=3, stride=1, padding=1)),
    ((1, 2, 27, 29), dict(kernel_size=3, stride=2, padding=1, return_indices=True)),
    ((1, 3, 15, 19), dict(kernel_size=3, stride=2, dilation=2, ceil_mode=True)),
    ((2, 1, 10, 6), dict(kernel_size=2, stride=1)),
])
def test_max_pool2d_forward_vector_rows_match_portable(rng, shape, kw):
    kw = dict(kw)
    kw.pop("return_indices", None)
    x = np.round(rng.standard_normal(shape) * 2).astype(np.float32)
    x.flat[::13] = -0.0
    x.flat[5::37] = np.nan
    x.flat[7::41] = -np.inf
    got = convkit.max_pool2d(x, return_indices=True, **kw)
    got_values = convkit.max_pool2d(x, **kw)
    want = _generic_isa(lambda: convkit.max_pool2d(x, return_indices=True, **kw))
    assert_bitwise_equal(got[0], want[0])
    assert_bitwise_equal(got[1], want[1])
    assert_bitwise_equal(got_values, want[0])
    ref_y, ref_idx = ref.max_pool2d(x.astype(np.float64), return_indices=True, **kw)
    np.testing.assert_array_equal(got[1], ref_idx)
    np.testing.assert_array_equal(got[0].astype(np.float64), ref_y)


# Adaptive max pooling to 1x1 scans each plane in 8 lanes and combines them:
# the value and index of PyTorch's row-major scan (the first maximum, +0 and
# -0 equal; the last NaN; -inf at index 0 for a plane of -inf), checked
# against the reference's scan, with and without indices, for planes of
# 1, 9, 15, 49 and 930 elements (partial lane steps).
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fill", ["random", "ties", "nan", "ninf", "signed_zeros"])
@pytest.mark.parametrize("shape", [(2, 5, 7, 7), (1, 3, 1, 1), (3, 2, 3, 5), (2, 3, 9, 1), (1, 2, 30, 31)])
def test_adaptive_max_pool2d_global_matches_scan(rng, shape, fill, dtype):
    x = np.round(rng.standard_normal(shape) * 2)
    if fill == "nan":
        x.flat[rng.integers(0, x.size, max(1, x.size // 10))] = np.nan
    elif fill == "ninf":
        x[:] = -np.inf
        x.flat[::7] = np.nan if shape[0] == 2 else -np.inf
    elif fill == "signed_zeros":
        x[:] = 0.0
        x.flat[::3] = -0.0
    x = x.astype(dtype)
    y, idx = convkit.adaptive_max_pool2d(x, 1, return_indices=True)
    ref_y, ref_idx = ref.adaptive_max_pool2d(x.astype(np.float64), 1, return_indices=True)
    np.testing.assert_array_equal(idx, ref_idx)
    flat = x.reshape(shape[0], shape[1], -1)
    picked = np.take_along_axis(flat, idx.reshape(shape[0], shape[1], 1), axis=2).reshape(y.shape)
    assert_bitwise_equal(y, picked)  # the winner's own bits (-0.0 vs +0.0, NaN)
    np.testing.assert_array_equal(y.astype(np.float64), ref_y)
    assert_bitwise_equal(convkit.adaptive_max_pool2d(x, 1), y)


# Average-pool forward rows at output stride 1 or 2 (float32, AVX2): up to 4
# vectors of sums in registers (0 + the taps in row-major order, then one
# division), the row's last vector overlapping; the same bits as the
# portable loops, for rows of 4-7, 8, 26, 33 and 40 outputs, with padding
# (edge windows through the scalar path), both divisor rules and an override.
@pytest.mark.parametrize("shape, kw", [
    ((2, 3, 35, 35), dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    ((1, 2, 28, 28), dict(kernel_size=3, stride=1, padding=1)),
    ((2, 2, 14, 14), dict(kernel_size=2)),
    ((1, 3, 11, 9), dict(kernel_size=2, stride=1)),
    ((1, 2, 17, 81), dict(kernel_size=(3, 2), stride=(2, 2), padding=(1, 0), ceil_mode=True)),
    ((1, 2, 10, 12), dict(kernel_size=3, stride=1, divisor_override=7)),
])
def test_avg_pool2d_forward_vector_rows_match_portable(rng, shape, kw):
    x = rng.standard_normal(shape).astype(np.float32)
    x.flat[::17] = -0.0
    got = convkit.avg_pool2d(x, **kw)
    assert_bitwise_equal(got, _generic_isa(lambda: convkit.avg_pool2d(x, **kw)))
    assert_close(got, ref.avg_pool2d(x.astype(np.float64), **kw), F32_RTOL)


# The geometry memo keys bools apart from ints (True == 1 and hash alike):
# a pool call with ceil_mode=True is memoised on the plain key path, and a
# later call with an invalid ceil_mode still raises.
def test_geometry_memo_keys_bools_apart():
    from convkit import _params as P
    assert P._plain_key(("f", (4, 4), True)) != P._plain_key(("f", (4, 4), 1))
    assert P._plain_key(("f", (4, 4), False)) != P._plain_key(("f", (4, 4), 0))
    assert P._plain_key(("f", (4, 4), 0)) == ("f", (4, 4), 0)
    x = np.arange(50, dtype=np.float32).reshape(1, 1, 5, 10)
    for _ in range(2):
        assert convkit.max_pool2d(x, 2, ceil_mode=True).shape == (1, 1, 3, 5)
        assert convkit.max_pool2d(x, 2, ceil_mode=False).shape == (1, 1, 2, 5)
        with pytest.raises((TypeError, ValueError), match="ceil_mode"):
            convkit.max_pool2d(x, 2, ceil_mode="yes")


# Adaptive max backward to 1x1: a run of planes zeroed at once, then each
# plane's gradient at its index (any index in the plane is in its window);
# an index outside the plane raises, whichever plane holds it.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 5, 7, 7), (3, 4, 1, 1), (1, 9, 3, 5)])
def test_adaptive_max_pool2d_backward_global(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    _, idx = convkit.adaptive_max_pool2d(x, 1, return_indices=True)
    gy = rng.standard_normal(idx.shape).astype(dtype)
    gy.flat[::3] = -0.0
    gx = convkit.adaptive_max_pool2d_backward(gy, x, idx)
    expected = np.zeros(shape)
    n, c = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    expected.reshape(shape[0], shape[1], -1)[n, c, idx[:, :, 0, 0]] = 0.0 + gy[:, :, 0, 0]
    assert_bitwise_equal(gx, expected.astype(dtype))
    assert_close(gx, ref.adaptive_max_pool2d_backward(gy.astype(np.float64), x.astype(np.float64), idx), 1e-12)
    for value in (-1, shape[2] * shape[3]):
        bad = idx.copy()
        bad[-1, -1, 0, 0] = value
        with pytest.raises(ValueError, match="adaptive_max_pool2d_backward"):
            convkit.adaptive_max_pool2d_backward(gy, x, bad)


# Average-pool backward of 2x2 windows at stride 2: each gradient written to
# its window's two columns side by side (an odd last column and row get 0),
# the bits of 0 + gy / 4 (divisor_override 3: gy / 3).
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, override", [((2, 3, 28, 28), None), ((1, 4, 7, 9), None), ((3, 2, 14, 15), 3)])
def test_avg_pool2d_backward_2x2_pairs(rng, shape, override, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    gy = rng.standard_normal((shape[0], shape[1], shape[2] // 2, shape[3] // 2)).astype(dtype)
    gy.flat[::5] = -0.0
    gx = convkit.avg_pool2d_backward(gy, x, 2, divisor_override=override)
    expected = np.zeros(shape, dtype)
    share = dtype(0) + gy / dtype(override or 4)
    oh, ow = gy.shape[2], gy.shape[3]
    expected[:, :, :2 * oh, :2 * ow] = np.repeat(np.repeat(share, 2, axis=2), 2, axis=3)
    assert_bitwise_equal(gx, expected)


def _avg_backward_in_scatter_order(gy, x_shape, k, s, p, ceil_mode, count_include_pad):
    """avg_pool2d backward as torch defines it: gx = 0, then every output in
    (oh, ow) order adds gy / divisor to each input of its clamped window (one
    rounding per addition, so the bits of that order)."""
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    H, W = x_shape[2:]
    gx = np.zeros(x_shape, gy.dtype)
    for oh in range(gy.shape[2]):
        h0 = oh * sh - ph
        h1 = min(h0 + kh, H + ph)
        hs, he = max(h0, 0), min(h1, H)
        for ow in range(gy.shape[3]):
            w0 = ow * sw - pw
            w1 = min(w0 + kw, W + pw)
            ws, we = max(w0, 0), min(w1, W)
            if hs >= he or ws >= we:
                continue
            div = (h1 - h0) * (w1 - w0) if count_include_pad else (he - hs) * (we - ws)
            share = gy[:, :, oh, ow] / gy.dtype.type(div)
            gx[:, :, hs:he, ws:we] += share[:, :, None, None]
    return gx


# Average-pool backward of windows that overlap along the row at stride >= 2:
# each output row's shares are laid out once in ceil(kw / sw) slot rows and
# added to its window's input rows slot by slot, a row's first window
# assigning (up to 4 slots; wider ones keep the tap-major scatter). Rows no
# window reaches (kernel_h < stride_h) must come out as zeros. Bitwise against the scatter-order definition,
# for both ISAs and 1-3 threads; -0.0 gradients included.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, k, s, p, ceil_mode, cip", [
    ((2, 4, 12, 21), (3, 3), (2, 2), (1, 1), False, True),
    ((1, 6, 11, 17), (3, 3), (2, 2), (1, 1), True, False),
    ((2, 5, 17, 29), (5, 5), (3, 3), (0, 0), False, True),
    ((1, 4, 9, 21), (2, 7), (1, 2), (0, 3), True, False),   # 4 slots
    ((1, 4, 9, 23), (3, 9), (2, 2), (1, 4), False, True),   # 5 slots: the tap-major scatter
    ((3, 2, 10, 10), (4, 3), (3, 2), (2, 1), True, True),
    ((2, 3, 12, 19), (2, 3), (3, 2), (0, 1), False, True),   # rows no window reaches: zeros
    ((2, 3, 13, 20), (1, 5), (4, 2), (0, 2), True, False),
    ((1, 2, 4, 4), (2, 2), (1, 2**40), (0, 0), False, True),  # one window per row, a huge stride
])
def test_avg_pool2d_backward_overlapping_rows_match_scatter_order(rng, isa, shape, k, s, p, ceil_mode, cip, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil_mode, count_include_pad=cip)
    gy = rng.standard_normal(convkit.avg_pool2d(x, **kw).shape).astype(dtype)
    gy.flat[::7] = -0.0
    expected = _avg_backward_in_scatter_order(gy, shape, k, s, p, ceil_mode, cip)
    for threads in (1, 2, 3):
        convkit.set_num_threads(threads)
        try:
            assert_bitwise_equal(convkit.avg_pool2d_backward(gy, x, **kw), expected)
        finally:
            convkit.set_num_threads(2)
