"""Parity with torch.nn.functional: forward, backward (through torch
autograd) and max-pool indices, in float64 (relative error <= 1e-9) and
float32. Both convkit backends (native CPU and the NumPy reference) are
checked, so the reference is itself validated against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import convkit
from helpers import (
    as_pair,
    assert_bitwise_equal,
    assert_close,
    batched_shape,
    conv_padding,
    pool_has_empty_window,
)
from test_conv import CONV_CASES, CONVT_CASES, conv_inputs, convt_inputs
from test_pool import ADAPTIVE_CASES, AVG_CASES, LP_CASES, MAX_CASES

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = [pytest.mark.torch,
              pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")]

BACKENDS = ["cpu", "reference"]
F64 = 1e-9
F32 = 1e-4


def T(a, grad=False):
    t = torch.from_numpy(np.ascontiguousarray(a).copy())
    if grad:
        t.requires_grad_(True)
    return t


def N(t):
    return t.detach().numpy()


def _torch_conv2d(x, w, b, stride=1, padding=0, dilation=1, groups=1):
    """torch has no ((t, b), (l, r)) or 'full' padding: pad explicitly."""
    if isinstance(padding, str) and padding in ("same", "valid"):
        return F.conv2d(x, w, b, stride, padding, dilation, groups)
    (pt, pb), (pl, pr) = conv_padding(padding, tuple(w.shape[-2:]), dilation)
    if pt == pb and pl == pr:
        return F.conv2d(x, w, b, stride, (pt, pl), dilation, groups)
    return F.conv2d(F.pad(x, (pl, pr, pt, pb)), w, b, stride, 0, dilation, groups)


EXTRA_CONV = {
    "same_even_3x4_dil": dict(n=2, c=2, h=6, w=7, k=3, kernel=(3, 4), kw=dict(padding="same", dilation=(2, 3))),
    "same_even_2x2": dict(n=1, c=3, h=5, w=5, k=2, kernel=(2, 2), kw=dict(padding="same")),
    "same_even_4x1_groups": dict(n=1, c=4, h=6, w=3, k=8, kernel=(4, 1), kw=dict(padding="same", groups=4)),
}
ALL_CONV = {**CONV_CASES, **EXTRA_CONV}

EXTRA_CONVT = {
    "outpad_via_dilation": dict(n=1, c=2, h=3, w=4, k=2, kernel=(3, 3),
                                kw=dict(stride=1, dilation=3, output_padding=2, padding=1)),
    "groups3_outpad": dict(n=2, c=3, h=3, w=2, k=6, kernel=(2, 3),
                           kw=dict(stride=(2, 3), output_padding=(1, 2), groups=3, dilation=(1, 2), padding=(1, 1))),
}
ALL_CONVT = {**CONVT_CASES, **EXTRA_CONVT}


# --------------------------------------------------------------------------- #
# convolution
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(ALL_CONV))
def test_conv2d_torch(rng, name, backend):
    case = ALL_CONV[name]
    x, w, b, gy = conv_inputs(rng, case)
    xt, wt, bt = T(x, True), T(w, True), T(b, True)
    yt = _torch_conv2d(xt, wt, bt, **case["kw"])
    yt.backward(T(gy))
    y = convkit.conv2d(x, w, b, backend=backend, **case["kw"])
    assert_close(y, N(yt), F64, dtype=np.float64)
    gx, gw, gb = convkit.conv2d_backward(gy, x, w, backend=backend, **case["kw"])
    assert_close(gx, N(xt.grad), F64, dtype=np.float64)
    assert_close(gw, N(wt.grad), F64, dtype=np.float64)
    assert_close(gb, N(bt.grad), F64, dtype=np.float64)


@pytest.mark.parametrize("name", ["basic3x3", "groups2_k_ne_c", "depthwise", "same_even", "asym_padding",
                                  "dilation_pair", "unbatched", "same_even_3x4_dil"])
def test_conv2d_torch_float32(rng, name):
    case = ALL_CONV[name]
    x, w, b, gy = conv_inputs(rng, case, np.float32)
    xt, wt, bt = T(x, True), T(w, True), T(b, True)
    yt = _torch_conv2d(xt, wt, bt, **case["kw"])
    yt.backward(T(gy))
    y = convkit.conv2d(x, w, b, **case["kw"])
    assert_close(y, N(yt), F32, dtype=np.float32)
    for g, t in zip(convkit.conv2d_backward(gy, x, w, **case["kw"]), (xt, wt, bt)):
        assert_close(g, N(t.grad), F32, dtype=np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(ALL_CONVT))
def test_conv_transpose2d_torch(rng, name, backend):
    case = ALL_CONVT[name]
    x, w, b, gy = convt_inputs(rng, case)
    kw = case["kw"]
    xt, wt, bt = T(x, True), T(w, True), T(b, True)
    yt = F.conv_transpose2d(xt, wt, bt, kw.get("stride", 1), kw.get("padding", 0), kw.get("output_padding", 0),
                            kw.get("groups", 1), kw.get("dilation", 1))
    assert tuple(yt.shape) == gy.shape
    yt.backward(T(gy))
    assert_close(convkit.conv_transpose2d(x, w, b, backend=backend, **kw), N(yt), F64, dtype=np.float64)
    gx, gw, gb = convkit.conv_transpose2d_backward(gy, x, w, backend=backend, **kw)
    assert_close(gx, N(xt.grad), F64, dtype=np.float64)
    assert_close(gw, N(wt.grad), F64, dtype=np.float64)
    assert_close(gb, N(bt.grad), F64, dtype=np.float64)


@pytest.mark.parametrize("name", ["stride2_pad1_outpad1", "groups_mixed", "outpad_via_dilation", "groups3_outpad"])
def test_conv_transpose2d_torch_float32(rng, name):
    case = ALL_CONVT[name]
    x, w, b, gy = convt_inputs(rng, case, np.float32)
    kw = case["kw"]
    xt, wt, bt = T(x, True), T(w, True), T(b, True)
    yt = F.conv_transpose2d(xt, wt, bt, kw.get("stride", 1), kw.get("padding", 0), kw.get("output_padding", 0),
                            kw.get("groups", 1), kw.get("dilation", 1))
    yt.backward(T(gy))
    assert_close(convkit.conv_transpose2d(x, w, b, **kw), N(yt), F32, dtype=np.float32)
    for g, t in zip(convkit.conv_transpose2d_backward(gy, x, w, **kw), (xt, wt, bt)):
        assert_close(g, N(t.grad), F32, dtype=np.float32)


# --------------------------------------------------------------------------- #
# pooling
# --------------------------------------------------------------------------- #


def _pool_x(rng, case, dtype=np.float64, ties=False, positive=False):
    shape = batched_shape(case["n"], case["c"], case["h"], case["w"])
    if ties:
        return rng.integers(0, 3, size=shape).astype(dtype)
    a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.1
    return a.astype(dtype)


def _torch_max(xt, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    return F.max_pool2d(xt, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("name", list(MAX_CASES))
def test_max_pool2d_torch(rng, name, ties, backend):
    case = MAX_CASES[name]
    x = _pool_x(rng, case, ties=ties)
    xt = T(x, True)
    yt, it = _torch_max(xt, **case["kw"])
    gy = rng.standard_normal(tuple(yt.shape))
    yt.backward(T(gy))
    y, idx = convkit.max_pool2d(x, return_indices=True, backend=backend, **case["kw"])
    assert_bitwise_equal(y, N(yt))
    assert_bitwise_equal(idx, N(it))
    assert_close(convkit.max_pool2d_backward(gy, x, idx, backend=backend, **case["kw"]), N(xt.grad), F64,
                 dtype=np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool2d_nan_torch(rng, dtype):
    x = rng.standard_normal((2, 3, 8, 7)).astype(dtype)
    mask = rng.random(x.shape) < 0.08
    x[mask] = np.nan
    x[0, 0, :2, :2] = np.nan  # a window of NaNs only
    for kw in (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), dict(kernel_size=2, dilation=2),
               dict(kernel_size=(2, 3), stride=1)):
        yt, it = _torch_max(T(x), **kw)
        for backend in BACKENDS:
            y, idx = convkit.max_pool2d(x, return_indices=True, backend=backend, **kw)
            assert_bitwise_equal(y, N(yt))
            assert_bitwise_equal(idx, N(it))
        yt, it = F.adaptive_max_pool2d(T(x), (3, 4), return_indices=True)
        for backend in BACKENDS:
            y, idx = convkit.adaptive_max_pool2d(x, (3, 4), return_indices=True, backend=backend)
            assert_bitwise_equal(y, N(yt))
            assert_bitwise_equal(idx, N(it))


@pytest.mark.parametrize("name", ["k3s2p1", "dilation_pair_ceil", "ceil_drop_last", "unbatched"])
def test_max_pool2d_torch_float32(rng, name):
    case = MAX_CASES[name]
    x = _pool_x(rng, case, np.float32)
    xt = T(x, True)
    yt, it = _torch_max(xt, **case["kw"])
    gy = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(T(gy))
    y, idx = convkit.max_pool2d(x, return_indices=True, **case["kw"])
    assert_bitwise_equal(y, N(yt))
    assert_bitwise_equal(idx, N(it))
    assert_close(convkit.max_pool2d_backward(gy, x, idx, **case["kw"]), N(xt.grad), F32, dtype=np.float32)


def _torch_avg(xt, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    return F.avg_pool2d(xt, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(AVG_CASES))
def test_avg_pool2d_torch(rng, name, backend):
    case = AVG_CASES[name]
    x = _pool_x(rng, case)
    xt = T(x, True)
    yt = _torch_avg(xt, **case["kw"])
    gy = rng.standard_normal(tuple(yt.shape))
    yt.backward(T(gy))
    assert_close(convkit.avg_pool2d(x, backend=backend, **case["kw"]), N(yt), F64, dtype=np.float64)
    assert_close(convkit.avg_pool2d_backward(gy, x, backend=backend, **case["kw"]), N(xt.grad), F64,
                 dtype=np.float64)


@pytest.mark.parametrize("name", ["k3s2p1_nopad", "ceil_pad_include", "divisor_ceil_pad"])
def test_avg_pool2d_torch_float32(rng, name):
    case = AVG_CASES[name]
    x = _pool_x(rng, case, np.float32)
    xt = T(x, True)
    yt = _torch_avg(xt, **case["kw"])
    gy = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(T(gy))
    assert_close(convkit.avg_pool2d(x, **case["kw"]), N(yt), F32, dtype=np.float32)
    assert_close(convkit.avg_pool2d_backward(gy, x, **case["kw"]), N(xt.grad), F32, dtype=np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(LP_CASES))
def test_lp_pool2d_torch(rng, name, backend):
    case = LP_CASES[name]
    x = _pool_x(rng, case, positive=True)
    kw = case["kw"]
    xt = T(x, True)
    yt = F.lp_pool2d(xt, case["norm"], kw["kernel_size"], kw.get("stride"), kw.get("ceil_mode", False))
    gy = rng.standard_normal(tuple(yt.shape))
    yt.backward(T(gy))
    assert_close(convkit.lp_pool2d(x, case["norm"], backend=backend, **kw), N(yt), F64, dtype=np.float64)
    assert_close(convkit.lp_pool2d_backward(gy, x, case["norm"], backend=backend, **kw), N(xt.grad), F64,
                 dtype=np.float64)


@pytest.mark.parametrize("norm", [1.0, 2.0, 3.0, 1.5])
def test_lp_pool2d_torch_float32(rng, norm):
    x = (np.abs(rng.standard_normal((2, 3, 7, 6))) + 0.1).astype(np.float32)
    kw = dict(kernel_size=(2, 3), stride=2, ceil_mode=True)
    xt = T(x, True)
    yt = F.lp_pool2d(xt, norm, **kw)
    gy = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(T(gy))
    assert_close(convkit.lp_pool2d(x, norm, **kw), N(yt), F32, dtype=np.float32)
    assert_close(convkit.lp_pool2d_backward(gy, x, norm, **kw), N(xt.grad), 1e-3, dtype=np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("name", list(ADAPTIVE_CASES))
def test_adaptive_pools_torch(rng, name, ties, backend):
    case = ADAPTIVE_CASES[name]
    x = _pool_x(rng, case, ties=ties)
    out = case["out"]
    xt = T(x, True)
    yt = F.adaptive_avg_pool2d(xt, out)
    gy = rng.standard_normal(tuple(yt.shape))
    yt.backward(T(gy))
    assert_close(convkit.adaptive_avg_pool2d(x, out, backend=backend), N(yt), F64, dtype=np.float64)
    assert_close(convkit.adaptive_avg_pool2d_backward(gy, x, backend=backend), N(xt.grad), F64, dtype=np.float64)
    xt = T(x, True)
    yt, it = F.adaptive_max_pool2d(xt, out, return_indices=True)
    yt.backward(T(gy))
    y, idx = convkit.adaptive_max_pool2d(x, out, return_indices=True, backend=backend)
    assert_bitwise_equal(y, N(yt))
    assert_bitwise_equal(idx, N(it))
    assert_close(convkit.adaptive_max_pool2d_backward(gy, x, idx, backend=backend), N(xt.grad), F64,
                 dtype=np.float64)


@pytest.mark.parametrize("name", ["non_divisible", "upsample", "mixed"])
def test_adaptive_pools_torch_float32(rng, name):
    case = ADAPTIVE_CASES[name]
    x = _pool_x(rng, case, np.float32)
    out = case["out"]
    xt = T(x, True)
    yt = F.adaptive_avg_pool2d(xt, out)
    gy = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(T(gy))
    assert_close(convkit.adaptive_avg_pool2d(x, out), N(yt), F32, dtype=np.float32)
    assert_close(convkit.adaptive_avg_pool2d_backward(gy, x), N(xt.grad), F32, dtype=np.float32)
    yt, it = F.adaptive_max_pool2d(T(x), out, return_indices=True)
    y, idx = convkit.adaptive_max_pool2d(x, out, return_indices=True)
    assert_bitwise_equal(y, N(yt))
    assert_bitwise_equal(idx, N(it))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_avg_pool2d_torch(rng, backend, dtype):
    x = rng.standard_normal((3, 4, 5, 7)).astype(dtype)
    xt = T(x, True)
    yt = F.adaptive_avg_pool2d(xt, 1)
    gy = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(T(gy))
    tol = F32 if dtype == np.float32 else F64
    assert_close(convkit.global_avg_pool2d(x, backend=backend), N(yt), tol, dtype=dtype)
    assert_close(convkit.global_avg_pool2d_backward(gy, x, backend=backend), N(xt.grad), tol, dtype=dtype)


# --------------------------------------------------------------------------- #
# randomised sweep over many argument combinations
# --------------------------------------------------------------------------- #


def _random_conv_case(r):
    groups = int(r.choice([1, 2, 3]))
    c, k = groups * int(r.integers(1, 3)), groups * int(r.integers(1, 3))
    kh, kw = int(r.integers(1, 5)), int(r.integers(1, 5))
    dil = (int(r.integers(1, 3)), int(r.integers(1, 3)))
    mode = r.choice(["int", "same", "valid", "sides", "full"])
    stride = 1 if mode == "same" else (int(r.integers(1, 4)), int(r.integers(1, 4)))
    padding = {"int": (int(r.integers(0, 3)), int(r.integers(0, 3))), "same": "same", "valid": "valid",
               "full": "full",
               "sides": ((int(r.integers(0, 3)), int(r.integers(0, 3))),
                         (int(r.integers(0, 3)), int(r.integers(0, 3))))}[str(mode)]
    (pt, pb), (pl, pr) = conv_padding(padding, (kh, kw), dil)
    h = max(1, dil[0] * (kh - 1) + 1 - pt - pb) + int(r.integers(0, 5))
    w = max(1, dil[1] * (kw - 1) + 1 - pl - pr) + int(r.integers(0, 5))
    return dict(n=int(r.integers(1, 3)), c=c, h=h, w=w, k=k, kernel=(kh, kw),
                kw=dict(stride=stride, padding=padding, dilation=dil, groups=groups))


@pytest.mark.parametrize("seed", range(12))
def test_conv2d_torch_random_sweep(seed):
    r = np.random.default_rng(1000 + seed)
    for _ in range(5):
        case = _random_conv_case(r)
        x, w, b, gy = conv_inputs(r, case)
        xt, wt, bt = T(x, True), T(w, True), T(b, True)
        yt = _torch_conv2d(xt, wt, bt, **case["kw"])
        yt.backward(T(gy))
        msg = repr(case)
        assert_close(convkit.conv2d(x, w, b, **case["kw"]), N(yt), F64, err_msg=msg)
        for g, t in zip(convkit.conv2d_backward(gy, x, w, **case["kw"]), (xt, wt, bt)):
            assert_close(g, N(t.grad), F64, err_msg=msg)


@pytest.mark.parametrize("seed", range(12))
def test_pools_torch_random_sweep(seed):
    r = np.random.default_rng(2000 + seed)
    for _ in range(5):
        kh, kw = int(r.integers(1, 5)), int(r.integers(1, 5))
        stride = None if r.random() < 0.3 else (int(r.integers(1, 4)), int(r.integers(1, 4)))
        pad = (int(r.integers(0, kh // 2 + 1)), int(r.integers(0, kw // 2 + 1)))
        dil = (int(r.integers(1, 3)), int(r.integers(1, 3)))
        ceil = bool(r.random() < 0.5)
        h = max(1, dil[0] * (kh - 1) + 1 - 2 * pad[0]) + int(r.integers(0, 6))
        w = max(1, dil[1] * (kw - 1) + 1 - 2 * pad[1]) + int(r.integers(0, 6))
        x = r.integers(0, 4, size=(2, 2, h, w)).astype(np.float64) if r.random() < 0.5 else \
            r.standard_normal((2, 2, h, w))
        msg = f"k={(kh, kw)} s={stride} p={pad} d={dil} ceil={ceil} hw={(h, w)}"
        xt = T(x, True)
        yt, it = F.max_pool2d(xt, (kh, kw), stride, pad, dil, ceil, return_indices=True)
        gy = r.standard_normal(tuple(yt.shape))
        # A window of padding only makes torch's own backward write through
        # its out-of-window index (heap corruption): never run it there.
        empty = pool_has_empty_window(h, w, (kh, kw), stride, pad, dil, ceil)
        if not empty:
            yt.backward(T(gy))
        y, idx = convkit.max_pool2d(x, (kh, kw), stride, pad, dil, ceil, return_indices=True)
        assert_bitwise_equal(y, N(yt), msg)
        assert_bitwise_equal(idx, N(it), msg)
        if not empty:
            assert_close(convkit.max_pool2d_backward(gy, x, idx, (kh, kw), stride, pad, dil, ceil), N(xt.grad),
                         F64, err_msg=msg)
        # avg pool: no dilation
        h2 = max(h, kh)
        w2 = max(w, kw)
        x2 = r.standard_normal((2, 2, h2, w2))
        for cip in (True, False):
            for div in (None, 2):
                xt = T(x2, True)
                yt = F.avg_pool2d(xt, (kh, kw), stride, pad, ceil, cip, div)
                gy = r.standard_normal(tuple(yt.shape))
                yt.backward(T(gy))
                m = msg + f" cip={cip} div={div}"
                assert_close(convkit.avg_pool2d(x2, (kh, kw), stride, pad, ceil, cip, div), N(yt), F64, err_msg=m)
                assert_close(convkit.avg_pool2d_backward(gy, x2, (kh, kw), stride, pad, ceil, cip, div), N(xt.grad),
                             F64, err_msg=m)
        # lp pool: no padding, positive input
        xp = np.abs(x2) + 0.1
        for norm in (1.0, 2.0, 3.0, 1.5):
            xt = T(xp, True)
            yt = F.lp_pool2d(xt, norm, (kh, kw), stride, ceil)
            gy = r.standard_normal(tuple(yt.shape))
            yt.backward(T(gy))
            m = msg + f" norm={norm}"
            assert_close(convkit.lp_pool2d(xp, norm, (kh, kw), stride, ceil), N(yt), F64, err_msg=m)
            assert_close(convkit.lp_pool2d_backward(gy, xp, norm, (kh, kw), stride, ceil), N(xt.grad), F64,
                         err_msg=m)


@pytest.mark.parametrize("seed", range(6))
def test_conv_transpose2d_torch_random_sweep(seed):
    r = np.random.default_rng(3000 + seed)
    for _ in range(5):
        groups = int(r.choice([1, 2]))
        c, k = groups * int(r.integers(1, 3)), groups * int(r.integers(1, 3))
        kh, kw = int(r.integers(1, 4)), int(r.integers(1, 4))
        s = (int(r.integers(1, 4)), int(r.integers(1, 4)))
        d = (int(r.integers(1, 3)), int(r.integers(1, 3)))
        op = (int(r.integers(0, max(s[0], d[0]))), int(r.integers(0, max(s[1], d[1]))))
        h, w = int(r.integers(1, 5)), int(r.integers(1, 5))
        p = [0, 0]
        for i, (n_, k_) in enumerate(((h, kh), (w, kw))):
            full = (n_ - 1) * s[i] + d[i] * (k_ - 1) + op[i] + 1
            p[i] = int(r.integers(0, max(1, (full - 1) // 2 + 1)))
        case = dict(n=int(r.integers(1, 3)), c=c, h=h, w=w, k=k, kernel=(kh, kw),
                    kw=dict(stride=s, padding=tuple(p), output_padding=op, groups=groups, dilation=d))
        x, wt_, b, gy = convt_inputs(r, case)
        xt, wt, bt = T(x, True), T(wt_, True), T(b, True)
        yt = F.conv_transpose2d(xt, wt, bt, s, tuple(p), op, groups, d)
        yt.backward(T(gy))
        msg = repr(case)
        assert_close(convkit.conv_transpose2d(x, wt_, b, **case["kw"]), N(yt), F64, err_msg=msg)
        for g, t in zip(convkit.conv_transpose2d_backward(gy, x, wt_, **case["kw"]), (xt, wt, bt)):
            assert_close(g, N(t.grad), F64, err_msg=msg)


def test_as_pair_helper_sanity():
    assert as_pair(3) == (3, 3) and as_pair((1, 2)) == (1, 2)


# Narrow outputs (averaged 8 planes side by side, or a window over the whole
# plane filled in backward) against torch in float32: the forward sums run in
# torch's order, so they must agree bit for bit.
@pytest.mark.parametrize("shape, kw", [
    ((4, 20, 7, 7), dict(kernel_size=7)),
    ((2, 12, 17, 17), dict(kernel_size=5, stride=3)),
    ((3, 9, 9, 8), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
])
def test_avg_pool2d_narrow_outputs_torch_float32(rng, shape, kw):
    x = rng.standard_normal(shape).astype(np.float32)
    xt = T(x, True)
    yt = F.avg_pool2d(xt, **kw)
    gy = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(T(gy))
    assert_bitwise_equal(convkit.avg_pool2d(x, **kw), N(yt))
    assert_close(convkit.avg_pool2d_backward(gy, x, **kw), N(xt.grad), F32, dtype=np.float32)
