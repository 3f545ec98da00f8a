"""CUDA backend tests.

(a) not marked cuda: every kernel source compiles with NVRTC for sm_80 and
    sm_90 in every dtype (needs CuPy + NVRTC, no GPU); the kernels, built as
    C++ by the CPU emulation harness (csrc/tests_native/cuda_emulate), match
    convkit.reference through the backend's own launch code (needs g++).
(b) marked cuda (skipped without a GPU): every op and backward on CuPy arrays
    vs convkit.reference in float64/float32/float16, indices equal to the
    reference, bitwise determinism, and PyTorch CUDA when available.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from convkit import _params as P
from convkit import reference as R

ROOT = Path(__file__).resolve().parents[1]


def _cuda_pkg():
    mod = importlib.import_module("convkit.cuda")
    if not hasattr(mod, "compile_all"):
        pytest.skip("convkit.cuda resolves to a namespace package (stale editable install); "
                    "re-run `pip install -e .` so the new subpackage is picked up")
    return mod


def _cuda_available():
    try:
        return bool(_cuda_pkg().available())
    except BaseException:  # pytest.skip inside _cuda_pkg, ImportError, ...
        return False


# --------------------------------------------------------------------------- #
# shared cases
# --------------------------------------------------------------------------- #

# (x_shape, w_shape, stride, padding, dilation, groups)
CONV_CASES = [
    ((2, 3, 9, 8), (5, 3, 3, 3), 1, 1, 1, 1),
    ((2, 6, 9, 8), (20, 3, 3, 2), (2, 1), ((1, 2), (0, 1)), (1, 2), 2),
    ((1, 20, 7, 7), (18, 20, 1, 1), 1, 0, 1, 1),
    ((2, 17, 10, 9), (70, 17, 3, 3), 2, 1, 1, 1),          # >1 tile in M, odd K depth
    ((2, 8, 11, 10), (8, 1, 3, 3), 1, 1, 1, 8),            # depthwise
    ((1, 4, 12, 12), (8, 1, 5, 5), 2, 2, 2, 4),            # channel multiplier 2, dilated
    ((3, 32, 6, 5), (32, 16, 2, 3), (1, 2), ((0, 1), (2, 0)), 1, 2),
    ((1, 18, 5, 6), (36, 18, 3, 3), 1, "same", 2, 1),
    ((0, 4, 5, 5), (6, 4, 3, 3), 1, 0, 1, 1),              # empty batch
]

# (x_shape, kernel, stride, padding, dilation, ceil_mode)
POOL_CASES = [
    ((2, 3, 11, 10), 3, 2, 1, 1, False),
    ((2, 3, 11, 10), 3, 2, 1, 1, True),
    ((1, 2, 9, 13), (3, 2), (2, 1), (1, 0), (2, 1), False),
    ((1, 2, 10, 10), 2, 2, 0, 1, True),
    ((2, 2, 12, 11), 5, 3, 2, 2, True),
    ((1, 3, 7, 6), (2, 4), (3, 1), (1, 2), 1, True),
    ((1, 1, 4, 4), 4, 1, 2, 1, False),
]

ADAPTIVE_SIZES = [(3, 4), (5, 7), (11, 10), (1, 1), (4, 13), (2, 1)]
LP_CASES = [(2.0, 3, 2, True), (3.0, (2, 3), (1, 2), False), (1.5, 2, 2, True), (0.5, 3, 1, False)]


def _conv_geometry(x_shape, w_shape, stride, padding, dilation, groups):
    return P.conv2d_geometry("conv2d", x_shape, w_shape, (w_shape[0],), stride, padding, dilation, groups)


def _data(rng, shape, dtype, nan=False):
    a = rng.standard_normal(shape)
    if nan and a.size > 5:
        a.reshape(-1)[[1, a.size // 2]] = np.nan
    return a.astype(dtype)


def _ties(rng, shape, dtype):
    """Values with many exact ties (first-max rule) and a NaN."""
    a = rng.integers(-3, 4, size=shape).astype(np.float64)
    if a.size > 7:
        a.reshape(-1)[7] = np.nan
    return a.astype(dtype)


# --------------------------------------------------------------------------- #
# (a) compile without a GPU
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_compile_all(arch):
    pytest.importorskip("cupy", reason="CuPy is not installed (pip install cupy-cuda12x)")
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc")
    try:
        nvrtc.getVersion()
    except Exception as e:  # library missing
        pytest.skip(f"NVRTC is not loadable ({e}); pip install nvidia-cuda-nvrtc-cu12")
    cuda = _cuda_pkg()
    report = cuda.compile_all(arch=arch)
    failures = {(src, dt): (r["log"], r["missing"]) for src, e in report["sources"].items()
                for dt, r in e["dtypes"].items() if not r["ok"]}
    assert not failures, failures
    assert report["ok"]
    for src, e in report["sources"].items():
        assert set(e["dtypes"]) == {"float16", "float32", "float64"}
        assert e["kernels"], src
        for r in e["dtypes"].values():
            assert "error" not in r["log"].lower() and "warning" not in r["log"].lower(), r["log"]


# --------------------------------------------------------------------------- #
# (a') CPU emulation of the kernels through the backend's launch code
# --------------------------------------------------------------------------- #

@pytest.fixture(scope="module")
def emu():
    if shutil.which("g++") is None:
        pytest.skip("g++ is not available for the CUDA emulation harness")
    sys.path.insert(0, str(ROOT / "csrc" / "tests_native" / "cuda_emulate"))
    try:
        emulator = importlib.import_module("emulator")
    finally:
        sys.path.pop(0)
    return emulator.EmulatedRuntime()


@pytest.fixture
def ops():
    from convkit.cuda import _ops
    yield _ops
    _ops.force_path = None
    _ops.force_splits = None


EMU_CONV = [CONV_CASES[i] for i in (1, 3, 4, 5, 6, 8)]


@pytest.mark.parametrize("case", EMU_CONV, ids=[str(i) for i in range(len(EMU_CONV))])
@pytest.mark.parametrize("path", ["gemm", "direct"])
def test_emulated_conv(emu, ops, case, path, rng):
    x_shape, w_shape, stride, padding, dilation, groups = case
    g = _conv_geometry(*case)
    x, w, b = _data(rng, x_shape, np.float64), _data(rng, w_shape, np.float64), _data(rng, (w_shape[0],), np.float64)
    gy = _data(rng, g.y_shape, np.float64)
    ops.force_path = path
    ops.force_splits = 3
    y = ops.conv2d_forward(emu, g, x, w, b)
    np.testing.assert_allclose(y, R.conv2d(x, w, b, stride, padding, dilation, groups), rtol=1e-12, atol=1e-12)
    gx, gw, gb = R.conv2d_backward(gy, x, w, stride, padding, dilation, groups)
    np.testing.assert_allclose(ops.conv2d_backward_data(emu, g, gy, w), gx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ops.conv2d_backward_weight(emu, g, gy, x), gw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ops.conv2d_backward_bias(emu, g, gy), gb, rtol=1e-12, atol=1e-12)


def test_emulated_conv_float32_deterministic(emu, ops, rng):
    case = CONV_CASES[3]
    g = _conv_geometry(*case)
    x, w = _data(rng, case[0], np.float32), _data(rng, case[1], np.float32)
    gy = _data(rng, g.y_shape, np.float32)
    a = [ops.conv2d_forward(emu, g, x, w), ops.conv2d_backward_data(emu, g, gy, w),
         ops.conv2d_backward_weight(emu, g, gy, x)]
    b = [ops.conv2d_forward(emu, g, x, w), ops.conv2d_backward_data(emu, g, gy, w),
         ops.conv2d_backward_weight(emu, g, gy, x)]
    for u, v in zip(a, b):
        assert u.tobytes() == v.tobytes()
    x64, w64, gy64 = x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64)
    np.testing.assert_allclose(a[0], R.conv2d(x64, w64, None, *case[2:]), rtol=1e-4, atol=1e-4)
    gx, gw, _ = R.conv2d_backward(gy64, x64, w64, *case[2:])
    np.testing.assert_allclose(a[1], gx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a[2], gw, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("case", POOL_CASES, ids=[str(i) for i in range(len(POOL_CASES))])
def test_emulated_pools(emu, ops, case, rng):
    x_shape, k, s, p, d, ceil = case
    x = _ties(rng, x_shape, np.float64)
    g = P.pool2d_geometry("max_pool2d", x_shape, k, s, p, d, ceil)
    y, idx = ops.max_pool2d_forward(emu, g, x, True)
    ry, ridx = R.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    gy = _data(rng, g.y_shape, np.float64)
    np.testing.assert_allclose(ops.max_pool2d_backward(emu, g, gy, idx),
                               R.max_pool2d_backward(gy, x, ridx, k, s, p, d, ceil), rtol=1e-14, atol=1e-14)
    bad = idx.copy()
    bad.reshape(-1)[-1] = -1
    with pytest.raises(ValueError, match="max_pool2d_backward"):
        ops.max_pool2d_backward(emu, g, gy, bad)
    if d == 1:
        x = _data(rng, x_shape, np.float64)
        ga = P.pool2d_geometry("avg_pool2d", x_shape, k, s, p, 1, ceil)
        gy = _data(rng, ga.y_shape, np.float64)
        for cip in (True, False):
            for dov in (0, 5, -3):
                np.testing.assert_allclose(ops.avg_pool2d_forward(emu, ga, x, cip, dov),
                                           R.avg_pool2d(x, k, s, p, ceil, cip, dov or None), rtol=1e-13, atol=1e-14)
                np.testing.assert_allclose(ops.avg_pool2d_backward(emu, ga, gy, cip, dov),
                                           R.avg_pool2d_backward(gy, x, k, s, p, ceil, cip, dov or None),
                                           rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("case", LP_CASES)
def test_emulated_lp(emu, ops, case, rng):
    norm, k, s, ceil = case
    x = np.abs(_data(rng, (2, 3, 9, 10), np.float64)) + 0.1
    x[0, 0, :3, :3] = 0.0   # zero windows: zero gradient rule
    _, g = P.lp_pool2d_geometry("lp_pool2d", x.shape, norm, k, s, ceil)
    gy = _data(rng, g.y_shape, np.float64)
    np.testing.assert_allclose(ops.lp_pool2d_forward(emu, g, x, norm), R.lp_pool2d(x, norm, k, s, ceil),
                               rtol=1e-13, atol=1e-14)
    with np.errstate(all="ignore"):
        ref = R.lp_pool2d_backward(gy, x, norm, k, s, ceil)
    np.testing.assert_allclose(ops.lp_pool2d_backward(emu, g, gy, x, norm), ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("size", ADAPTIVE_SIZES)
def test_emulated_adaptive(emu, ops, size, rng):
    x = _ties(rng, (2, 3, 11, 10), np.float64)
    g = P.adaptive_pool2d_geometry("adaptive_avg_pool2d", x.shape, size)
    gy = _data(rng, g.y_shape, np.float64)
    xa = _data(rng, x.shape, np.float64)
    np.testing.assert_allclose(ops.adaptive_avg_pool2d_forward(emu, g, xa), R.adaptive_avg_pool2d(xa, size),
                               rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(ops.adaptive_avg_pool2d_backward(emu, g, gy), R.adaptive_avg_pool2d_backward(gy, xa),
                               rtol=1e-13, atol=1e-14)
    y, idx = ops.adaptive_max_pool2d_forward(emu, g, x, True)
    ry, ridx = R.adaptive_max_pool2d(x, size, True)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_allclose(ops.adaptive_max_pool2d_backward(emu, g, gy, idx),
                               R.adaptive_max_pool2d_backward(gy, x, ridx), rtol=1e-14, atol=1e-14)
    bad = idx.copy()
    bad.reshape(-1)[0] = x.shape[2] * x.shape[3]
    with pytest.raises(ValueError, match="adaptive_max_pool2d_backward"):
        ops.adaptive_max_pool2d_backward(emu, g, gy, bad)


# --------------------------------------------------------------------------- #
# (b) on a GPU
# --------------------------------------------------------------------------- #

needs_gpu = pytest.mark.skipif(not _cuda_available(), reason="needs CuPy and a CUDA device "
                               "(convkit.cuda.available() is False)")

DTYPES = [np.float64, np.float32, np.float16]


def _tol(dtype, depth=1):
    dt = np.dtype(dtype)
    if dt == np.float64:
        return dict(rtol=1e-10, atol=1e-10)
    if dt == np.float32:
        return dict(rtol=1e-4, atol=1e-5 * max(depth, 1) ** 0.5 * 10)
    return dict(rtol=1e-2, atol=2e-3 * max(depth, 1) ** 0.5 * 4)


def _gpu(a):
    import cupy
    return cupy.ascontiguousarray(cupy.asarray(a))


def _host(a):
    return a.get().astype(np.float64) if a.dtype != np.int64 else a.get()


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", [None, "gemm", "direct"])
@pytest.mark.cuda
@needs_gpu
def test_cuda_conv(case, dtype, path, rng):
    from convkit.cuda import _ops
    cuda = _cuda_pkg()
    x_shape, w_shape, stride, padding, dilation, groups = case
    g = _conv_geometry(*case)
    x, w, b = _data(rng, x_shape, dtype), _data(rng, w_shape, dtype), _data(rng, (w_shape[0],), dtype)
    gy = _data(rng, g.y_shape, dtype)
    x64, w64, b64, gy64 = (a.astype(np.float64) for a in (x, w, b, gy))
    depth = (x_shape[1] // groups) * w_shape[2] * w_shape[3]
    _ops.force_path = path
    try:
        runs = []
        for _ in range(2):
            runs.append([_host(cuda.conv2d_forward(g, _gpu(x), _gpu(w), _gpu(b))),
                         _host(cuda.conv2d_backward_data(g, _gpu(gy), _gpu(w))),
                         _host(cuda.conv2d_backward_weight(g, _gpu(gy), _gpu(x))),
                         _host(cuda.conv2d_backward_bias(g, _gpu(gy)))])
    finally:
        _ops.force_path = None
    for u, v in zip(*runs):
        assert u.tobytes() == v.tobytes(), "not bitwise deterministic"
    y, gx, gw, gb = runs[0]
    np.testing.assert_allclose(y, R.conv2d(x64, w64, b64, stride, padding, dilation, groups), **_tol(dtype, depth))
    rgx, rgw, rgb = R.conv2d_backward(gy64, x64, w64, stride, padding, dilation, groups)
    np.testing.assert_allclose(gx, rgx, **_tol(dtype, w_shape[0] // groups * w_shape[2] * w_shape[3]))
    np.testing.assert_allclose(gw, rgw, **_tol(dtype, g.batch * g.out_h * g.out_w))
    np.testing.assert_allclose(gb, rgb, **_tol(dtype, g.batch * g.out_h * g.out_w))


@pytest.mark.parametrize("case", POOL_CASES, ids=[str(i) for i in range(len(POOL_CASES))])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.cuda
@needs_gpu
def test_cuda_pools(case, dtype, rng):
    cuda = _cuda_pkg()
    x_shape, k, s, p, d, ceil = case
    x = _ties(rng, x_shape, dtype)
    x64 = x.astype(np.float64)
    g = P.pool2d_geometry("max_pool2d", x_shape, k, s, p, d, ceil)
    y, idx = cuda.max_pool2d_forward(g, _gpu(x), True)
    ry, ridx = R.max_pool2d(x64, k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(_host(y), ry)
    np.testing.assert_array_equal(idx.get(), ridx)
    y2, none = cuda.max_pool2d_forward(g, _gpu(x), False)
    assert none is None and y2.get().tobytes() == y.get().tobytes()
    gy = _data(rng, g.y_shape, dtype)
    gx = cuda.max_pool2d_backward(g, _gpu(gy), idx)
    assert gx.get().tobytes() == cuda.max_pool2d_backward(g, _gpu(gy), idx).get().tobytes()
    np.testing.assert_allclose(_host(gx), R.max_pool2d_backward(gy.astype(np.float64), x64, ridx, k, s, p, d, ceil),
                               **_tol(dtype, 4))
    bad = idx.copy()
    bad.reshape(-1)[-1] = -1
    with pytest.raises(ValueError, match="max_pool2d_backward"):
        cuda.max_pool2d_backward(g, _gpu(gy), bad)
    if d != 1:
        return
    x = _data(rng, x_shape, dtype)
    x64 = x.astype(np.float64)
    ga = P.pool2d_geometry("avg_pool2d", x_shape, k, s, p, 1, ceil)
    gy = _data(rng, ga.y_shape, dtype)
    for cip in (True, False):
        for dov in (0, 5, -3):
            ya = cuda.avg_pool2d_forward(ga, _gpu(x), cip, dov)
            np.testing.assert_allclose(_host(ya), R.avg_pool2d(x64, k, s, p, ceil, cip, dov or None), **_tol(dtype))
            gxa = cuda.avg_pool2d_backward(ga, _gpu(gy), cip, dov)
            np.testing.assert_allclose(_host(gxa), R.avg_pool2d_backward(gy.astype(np.float64), x64, k, s, p, ceil,
                                                                         cip, dov or None), **_tol(dtype))


@pytest.mark.parametrize("case", LP_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.cuda
@needs_gpu
def test_cuda_lp(case, dtype, rng):
    cuda = _cuda_pkg()
    norm, k, s, ceil = case
    x = (np.abs(_data(rng, (2, 3, 9, 10), np.float64)) + 0.1).astype(dtype)
    x64 = x.astype(np.float64)
    _, g = P.lp_pool2d_geometry("lp_pool2d", x.shape, norm, k, s, ceil)
    gy = _data(rng, g.y_shape, dtype)
    np.testing.assert_allclose(_host(cuda.lp_pool2d_forward(g, _gpu(x), norm)), R.lp_pool2d(x64, norm, k, s, ceil),
                               **_tol(dtype, 4))
    np.testing.assert_allclose(_host(cuda.lp_pool2d_backward(g, _gpu(gy), _gpu(x), norm)),
                               R.lp_pool2d_backward(gy.astype(np.float64), x64, norm, k, s, ceil), **_tol(dtype, 16))


@pytest.mark.parametrize("size", ADAPTIVE_SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.cuda
@needs_gpu
def test_cuda_adaptive(size, dtype, rng):
    cuda = _cuda_pkg()
    x = _ties(rng, (2, 3, 11, 10), dtype)
    x64 = x.astype(np.float64)
    g = P.adaptive_pool2d_geometry("adaptive_avg_pool2d", x.shape, size)
    gy = _data(rng, g.y_shape, dtype)
    gy64 = gy.astype(np.float64)
    xa = _data(rng, x.shape, dtype)
    np.testing.assert_allclose(_host(cuda.adaptive_avg_pool2d_forward(g, _gpu(xa))),
                               R.adaptive_avg_pool2d(xa.astype(np.float64), size), **_tol(dtype, 16))
    np.testing.assert_allclose(_host(cuda.adaptive_avg_pool2d_backward(g, _gpu(gy))),
                               R.adaptive_avg_pool2d_backward(gy64, xa.astype(np.float64)), **_tol(dtype, 4))
    y, idx = cuda.adaptive_max_pool2d_forward(g, _gpu(x), True)
    ry, ridx = R.adaptive_max_pool2d(x64, size, True)
    np.testing.assert_array_equal(_host(y), ry)
    np.testing.assert_array_equal(idx.get(), ridx)
    np.testing.assert_allclose(_host(cuda.adaptive_max_pool2d_backward(g, _gpu(gy), idx)),
                               R.adaptive_max_pool2d_backward(gy64, x64, ridx), **_tol(dtype, 4))
    bad = idx.copy()
    bad.reshape(-1)[0] = x.shape[2] * x.shape[3]
    with pytest.raises(ValueError, match="adaptive_max_pool2d_backward"):
        cuda.adaptive_max_pool2d_backward(g, _gpu(gy), bad)


@pytest.mark.parametrize("case", CONV_CASES[:8], ids=[str(i) for i in range(8)])
@pytest.mark.cuda
@needs_gpu
def test_cuda_conv_vs_torch(case, rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    cuda = _cuda_pkg()
    x_shape, w_shape, stride, padding, dilation, groups = case
    g = _conv_geometry(*case)
    x, w, b = (_data(rng, s_, np.float32) for s_ in (x_shape, w_shape, (w_shape[0],)))
    prev = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # FP32 vs FP32
    try:
        tx = torch.tensor(x, device="cuda", requires_grad=True)
        tw = torch.tensor(w, device="cuda", requires_grad=True)
        tb = torch.tensor(b, device="cuda", requires_grad=True)
        pad = padding if not isinstance(padding, tuple) or not isinstance(padding[0], tuple) else None
        if pad is None:  # asymmetric padding: pad explicitly
            (pt, pb), (pl, pr) = padding
            ty = torch.nn.functional.conv2d(torch.nn.functional.pad(tx, (pl, pr, pt, pb)), tw, tb, stride, 0,
                                            dilation, groups)
        else:
            ty = torch.nn.functional.conv2d(tx, tw, tb, stride, pad, dilation, groups)
        gy = torch.randn_like(ty)
        ty.backward(gy)
    finally:
        torch.backends.cudnn.allow_tf32 = prev
    gy_np = gy.cpu().numpy()
    tol = dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cuda.conv2d_forward(g, _gpu(x), _gpu(w), _gpu(b)).get(), ty.detach().cpu().numpy(), **tol)
    np.testing.assert_allclose(cuda.conv2d_backward_data(g, _gpu(gy_np), _gpu(w)).get(), tx.grad.cpu().numpy(), **tol)
    np.testing.assert_allclose(cuda.conv2d_backward_weight(g, _gpu(gy_np), _gpu(x)).get(), tw.grad.cpu().numpy(),
                               rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(cuda.conv2d_backward_bias(g, _gpu(gy_np)).get(), tb.grad.cpu().numpy(), rtol=1e-4,
                               atol=1e-3)


@pytest.mark.parametrize("case", POOL_CASES, ids=[str(i) for i in range(len(POOL_CASES))])
@pytest.mark.cuda
@needs_gpu
def test_cuda_max_pool_vs_torch(case, rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    cuda = _cuda_pkg()
    x_shape, k, s, p, d, ceil = case
    x = _data(rng, x_shape, np.float32)   # no ties: torch CUDA's tie rule is not specified
    g = P.pool2d_geometry("max_pool2d", x_shape, k, s, p, d, ceil)
    ty, ti = torch.nn.functional.max_pool2d(torch.tensor(x, device="cuda"), k, s, p, d, ceil, True)
    y, idx = cuda.max_pool2d_forward(g, _gpu(x), True)
    np.testing.assert_array_equal(y.get(), ty.cpu().numpy())
    np.testing.assert_array_equal(idx.get(), ti.cpu().numpy())


# --------------------------------------------------------------------------- #
# (a'') without a GPU: resource report, argument checks of the backend
# --------------------------------------------------------------------------- #

def test_resource_report_parses_every_kernel():
    pytest.importorskip("cupy", reason="CuPy is not installed (pip install cupy-cuda12x)")
    from convkit.cuda import _loader, report_resources
    report = report_resources.collect(["sm_90"], ["float32", "float16"])
    assert not report["failures"], report["failures"]
    names = {n for src in _loader.SOURCES for n in _loader.kernel_names(src)}
    for dt in ("float32", "float16"):
        rows = {r["kernel"]: r for r in report["rows"] if r["dtype"] == dt}
        assert set(rows) == names
        for r in rows.values():
            assert r["registers"] and 0 < r["registers"] <= 255, r
            assert r["spill_stores"] == 0 and r["spill_loads"] == 0, f"{r['kernel']} spills in {dt}: {r}"
            assert r["smem"] <= 48 * 1024, r   # static shared memory only; more needs the opt-in attribute
        assert rows["conv2d_forward_gemm"]["smem"] > 0 and rows["conv2d_forward_gemm"]["barriers"] == 1


def test_backend_rejects_host_and_misshapen_arrays():
    pytest.importorskip("cupy", reason="CuPy is not installed (pip install cupy-cuda12x)")
    cuda = _cuda_pkg()
    g = _conv_geometry(*CONV_CASES[0])
    x = np.zeros(g.x_shape, np.float32)
    w = np.zeros(g.w_shape, np.float32)
    with pytest.raises(TypeError, match="conv2d_forward: x must be a CuPy array"):
        cuda.conv2d_forward(g, x, w)
    gp = P.pool2d_geometry("max_pool2d", (1, 1, 4, 4), 2)
    with pytest.raises(TypeError, match="max_pool2d_backward: grad_y must be a CuPy array"):
        cuda.max_pool2d_backward(gp, np.zeros(gp.y_shape, np.float32), np.zeros(gp.y_shape, np.int64))
