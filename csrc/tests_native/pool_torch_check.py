"""Cross-check the native pool kernels against PyTorch (CPU) through ctypes,
and time a few layers.

    python csrc/tests_native/pool_torch_check.py          # correctness
    python csrc/tests_native/pool_torch_check.py --bench  # GB/s vs torch / NumPy

Builds csrc/tests_native/pool_capi.cpp + the kernels into a temporary .so
with the flags CMake uses (-O3 -fno-math-errno, ISA files with their -m flags).
Not part of the package or the pytest suite.
"""
import ctypes
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def build():
    d = tempfile.mkdtemp()
    so = os.path.join(d, "libpool.so")
    base = ["g++", "-O3", "-fno-math-errno", "-std=c++17", "-fopenmp", "-fPIC", "-I", os.path.join(ROOT, "csrc"),
            "-DCONVKIT_HAVE_AVX2=1", "-DCONVKIT_HAVE_AVX512=1"]
    k = os.path.join(ROOT, "csrc", "kernels")
    objs = []
    for name, flags in (("pool_fwd_avx2.cpp", ["-mavx2", "-mfma"]),
                        ("pool_fwd_avx512.cpp", ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2",
                                                 "-mfma"])):
        o = os.path.join(d, name + ".o")
        subprocess.check_call(base + flags + ["-c", os.path.join(k, name), "-o", o])
        objs.append(o)
    srcs = [os.path.join(ROOT, "csrc", f) for f in ("pool2d.cpp", "parallel.cpp", "cpu_features.cpp")]
    srcs.append(os.path.join(ROOT, "csrc", "tests_native", "pool_capi.cpp"))
    subprocess.check_call(base + ["-shared"] + srcs + objs + ["-o", so])
    return ctypes.CDLL(so)


LIB = build()
P = ctypes.c_void_p


def ptr(a):
    return a.ctypes.data_as(P)


def geo(a):
    return np.ascontiguousarray(np.array(a, dtype=np.int64))


def sfx(dt):
    return "f32" if dt == np.float32 else "f64"


def call(name, dt, *args):
    f = getattr(LIB, name + "_" + sfx(dt))
    conv = []
    for a in args:
        if isinstance(a, np.ndarray):
            conv.append(ptr(a))
        elif isinstance(a, float):
            conv.append(ctypes.c_double(a))
        else:
            conv.append(ctypes.c_int64(a))
    f.restype = ctypes.c_int64
    return f(*conv)


def pool_geo(x, y, k, s, p, d):
    n, c, h, w = x.shape
    return geo([n * c, h, w, y.shape[2], y.shape[3], k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1]])


def bitwise(a, b):
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        return False
    an, bn = np.isnan(a), np.isnan(b)
    return bool(np.array_equal(an, bn) and np.array_equal(a[~an].view(np.uint8), b[~bn].view(np.uint8)))


FAILS = []


def check(ok, what):
    if not ok:
        FAILS.append(what)
        if len(FAILS) < 20:
            print("FAIL", what)


def rand_x(rng, shape, dt, specials):
    mode = rng.integers(0, 2)
    x = rng.integers(-3, 4, size=shape).astype(dt) if mode == 0 else rng.uniform(-2, 2, size=shape).astype(dt)
    if specials:
        m = rng.random(shape)
        x[m < 0.02] = np.nan
        x[(m > 0.02) & (m < 0.04)] = -np.inf
    return x


def out_len(i, k, s, p, d, ceil):
    num = i + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)
    if num < 0:
        return 0
    o = num // s + 1
    if ceil and (o - 1) * s >= i + p:
        o -= 1
    return o


def correctness(iters=150):
    rng = np.random.default_rng(0)
    for it in range(iters):
        dt = np.float32 if it % 2 == 0 else np.float64
        tdt = torch.float32 if dt == np.float32 else torch.float64
        n, c = int(rng.integers(1, 3)), int(rng.integers(1, 4))
        h, w = int(rng.integers(1, 20)), int(rng.integers(1, 30))
        k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        p = (int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1)))
        d = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        ceil = bool(rng.integers(0, 2))
        if h + 2 * p[0] < d[0] * (k[0] - 1) + 1 or w + 2 * p[1] < d[1] * (k[1] - 1) + 1:
            continue
        # ---- max
        x = rand_x(rng, (n, c, h, w), dt, True)
        xt = torch.from_numpy(x).requires_grad_()
        yt, it_ = F.max_pool2d(xt, k, s, p, d, ceil_mode=ceil, return_indices=True)
        g = pool_geo(x, yt, k, s, p, d)
        y = np.empty(yt.shape, dt)
        ind = np.empty(yt.shape, np.int64)
        call("max_fwd", dt, g, x, y, ind)
        check(bitwise(y, yt.detach().numpy()) and np.array_equal(ind, it_.numpy()),
              f"max fwd {x.shape} k{k} s{s} p{p} d{d} ceil{ceil}")
        # empty windows (all taps outside): torch's own backward is undefined there
        if not np.isneginf(y).any():
            gy = rng.standard_normal(yt.shape).astype(dt)
            yt.backward(torch.from_numpy(gy))
            gx = np.empty_like(x)
            bad = call("max_bwd", dt, g, gy, ind, gx)
            check(bad == -1 and bitwise(gx, xt.grad.numpy()), f"max bwd {x.shape} k{k} s{s} p{p} d{d} bad={bad}")
        # ---- avg
        cip = bool(rng.integers(0, 2))
        dov = int(rng.integers(1, 7)) if rng.integers(0, 3) == 0 else 0
        x = rand_x(rng, (n, c, h, w), dt, False)
        xt = torch.from_numpy(x).requires_grad_()
        yt = F.avg_pool2d(xt, k, s, p, ceil_mode=ceil, count_include_pad=cip, divisor_override=dov or None)
        g = pool_geo(x, yt, k, s, p, (1, 1))
        y = np.empty(yt.shape, dt)
        call("avg_fwd", dt, g, int(cip), dov, x, y)
        check(bitwise(y, yt.detach().numpy()), f"avg fwd {x.shape} k{k} s{s} p{p} ceil{ceil} cip{cip} dov{dov}")
        gy = rng.standard_normal(yt.shape).astype(dt)
        yt.backward(torch.from_numpy(gy))
        gx = np.empty_like(x)
        call("avg_bwd", dt, g, int(cip), dov, gy, gx)
        check(bitwise(gx, xt.grad.numpy()), f"avg bwd {x.shape} k{k} s{s} p{p} ceil{ceil} cip{cip} dov{dov}")
        # ---- lp (pad 0)
        if h >= k[0] and w >= k[1]:
            pn = float(rng.choice([1.0, 2.0, 3.0, 1.5, 4.0]))
            x = rand_x(rng, (n, c, h, w), dt, False)
            if pn not in (1.0, 2.0, 3.0, 4.0):
                x = np.abs(x) + dt(0.25)
            if rng.integers(0, 3) == 0:
                x[..., :2, :2] = 0  # windows with A == 0
            xt = torch.from_numpy(x).requires_grad_()
            yt = F.lp_pool2d(xt, pn, k, s, ceil_mode=ceil)
            g = pool_geo(x, yt, k, s, (0, 0), (1, 1))
            y = np.empty(yt.shape, dt)
            call("lp_fwd", dt, g, pn, x, y)
            gy = rng.standard_normal(yt.shape).astype(dt)
            yt.backward(torch.from_numpy(gy))
            gx = np.empty_like(x)
            call("lp_bwd", dt, g, pn, gy, x, gx)
            rt = 1e-5 if dt == np.float32 else 1e-12
            yr, gr = yt.detach().numpy(), xt.grad.numpy()
            # torch's sqrt/pow are not always correctly rounded (1 ulp off
            # seen for float64 sqrt); only p == 1 is compared bit for bit.
            exact = pn == 1.0
            ok_f = bitwise(y, yr) if exact else np.allclose(y, yr, rtol=rt, atol=rt, equal_nan=True)
            ok_b = (bitwise(gx, gr) if exact else np.allclose(gx, gr, rtol=rt * 10, atol=rt * 10, equal_nan=True))
            check(ok_f, f"lp fwd p={pn} {x.shape} k{k} s{s} ceil{ceil} maxdiff={np.nanmax(np.abs(y - yr))}")
            check(ok_b, f"lp bwd p={pn} {x.shape} k{k} s{s} ceil{ceil} maxdiff={np.nanmax(np.abs(gx - gr))}")
        # ---- adaptive
        oh, ow = int(rng.integers(1, 25)), int(rng.integers(1, 25))
        if rng.integers(0, 4) == 0:
            oh = ow = 1
        for name, specials in (("aavg", False), ("amax", True)):
            x = rand_x(rng, (n, c, h, w), dt, specials)
            xt = torch.from_numpy(x).requires_grad_()
            g = geo([n * c, h, w, oh, ow])
            gy = rng.standard_normal((n, c, oh, ow)).astype(dt)
            y = np.empty((n, c, oh, ow), dt)
            gx = np.empty_like(x)
            if name == "aavg":
                yt = F.adaptive_avg_pool2d(xt, (oh, ow))
                call("aavg_fwd", dt, g, x, y)
                yt.backward(torch.from_numpy(gy))
                call("aavg_bwd", dt, g, gy, gx)
                if oh == ow == 1:  # torch: mean(); its cascade sum order is not reproduced
                    rt = 1e-6 if dt == np.float32 else 1e-14
                    check(np.allclose(y, yt.detach().numpy(), rtol=rt, atol=rt), f"aavg fwd {x.shape}->1x1")
                else:
                    check(bitwise(y, yt.detach().numpy()), f"aavg fwd {x.shape}->{oh}x{ow}")
                check(bitwise(gx, xt.grad.numpy()), f"aavg bwd {x.shape}->{oh}x{ow}")
            else:
                yt, it_ = F.adaptive_max_pool2d(xt, (oh, ow), return_indices=True)
                ind = np.empty((n, c, oh, ow), np.int64)
                call("amax_fwd", dt, g, x, y, ind)
                check(bitwise(y, yt.detach().numpy()) and np.array_equal(ind, it_.numpy()),
                      f"amax fwd {x.shape}->{oh}x{ow}")
                yt.backward(torch.from_numpy(gy))
                bad = call("amax_bwd", dt, g, gy, ind, gx)
                check(bad == -1 and bitwise(gx, xt.grad.numpy()), f"amax bwd {x.shape}->{oh}x{ow}")
    print("torch cross-check:", "OK" if not FAILS else f"{len(FAILS)} failures")


def best(f, reps=7):
    f()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        t.append(time.perf_counter() - t0)
    return min(t)


def bench():
    torch.set_num_threads(os.cpu_count())
    LIB.set_threads(os.cpu_count())
    rows = []
    cases = [
        ("max 3x3/2 p1", (8, 64, 112, 112), (3, 3), (2, 2), (1, 1), "max"),
        ("max 2x2/2", (8, 128, 56, 56), (2, 2), (2, 2), (0, 0), "max"),
        ("avg 2x2/2", (8, 128, 56, 56), (2, 2), (2, 2), (0, 0), "avg"),
        ("avg 3x3/1 p1", (8, 64, 56, 56), (3, 3), (1, 1), (1, 1), "avg"),
    ]
    from numpy.lib.stride_tricks import sliding_window_view
    for label, shape, k, s, p, kind in cases:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        xt = torch.from_numpy(x)
        if kind == "max":
            yt, itd = F.max_pool2d(xt, k, s, p, return_indices=True)
        else:
            yt = F.avg_pool2d(xt, k, s, p)
        g = pool_geo(x, yt, k, s, p, (1, 1))
        y = np.empty(yt.shape, np.float32)
        ind = np.empty(yt.shape, np.int64)
        gy = np.random.default_rng(1).standard_normal(yt.shape).astype(np.float32)
        gx = np.empty_like(x)
        if kind == "max":
            fw = lambda: call("max_fwd", np.float32, g, x, y, ind)
            fw()
            bw = lambda: call("max_bwd", np.float32, g, gy, ind, gx)
            tf = lambda: F.max_pool2d(xt, k, s, p, return_indices=True)
            gyt, indt = torch.from_numpy(gy), torch.from_numpy(ind)
            tb = lambda: torch.ops.aten.max_pool2d_with_indices_backward(gyt, xt, k, s, p, (1, 1), False, indt)
            fbytes = x.nbytes + y.nbytes + ind.nbytes
            bbytes = gy.nbytes + ind.nbytes + gx.nbytes
        else:
            fw = lambda: call("avg_fwd", np.float32, g, 1, 0, x, y)
            bw = lambda: call("avg_bwd", np.float32, g, 1, 0, gy, gx)
            tf = lambda: F.avg_pool2d(xt, k, s, p)
            gyt = torch.from_numpy(gy)
            tb = lambda: torch.ops.aten.avg_pool2d_backward(gyt, xt, k, s, p, False, True, None)
            fbytes = x.nbytes + y.nbytes
            bbytes = gy.nbytes + gx.nbytes

        def npref():
            xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])),
                        constant_values=(-np.inf if kind == "max" else 0))
            v = sliding_window_view(xp, k, axis=(2, 3))[:, :, ::s[0], ::s[1]]
            return v.max(axis=(-2, -1)) if kind == "max" else v.mean(axis=(-2, -1))

        t_ck, t_t, t_np = best(fw), best(tf), best(npref, 3)
        t_ckb, t_tb = best(bw), best(tb)
        print(f"{label:14s} {str(shape):18s} fwd: convkit {fbytes / t_ck / 1e9:6.2f} GB/s ({t_ck * 1e3:7.2f} ms)"
              f"  torch {fbytes / t_t / 1e9:6.2f} GB/s ({t_t * 1e3:7.2f} ms)  numpy {t_np * 1e3:8.2f} ms | "
              f"bwd: convkit {bbytes / t_ckb / 1e9:6.2f} GB/s ({t_ckb * 1e3:6.2f} ms) torch {bbytes / t_tb / 1e9:6.2f} GB/s"
              f" ({t_tb * 1e3:6.2f} ms)")


if __name__ == "__main__":
    if "--bench" in sys.argv:
        bench()
    else:
        for isa in (0, 1, 2):
            if LIB.set_isa(isa) != 0:
                continue
            for nt in (1, 3):
                LIB.set_threads(nt)
                correctness(int(os.environ.get("ITERS", "120")))
        sys.exit(1 if FAILS else 0)
