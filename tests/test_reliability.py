"""Reliability of the native CPU kernels beyond correctness on nice inputs:

* memory: many calls of every op (forward and backward, and the error paths)
  do not grow the resident set (in a fresh interpreter);
* thread safety: concurrent calls from 8 Python threads on shared read-only
  inputs give the bits of sequential calls and leave the inputs untouched,
  also while another thread keeps changing ``convkit.set_num_threads``;
* reproducibility: repeated calls (with a dirtied heap) and fresh processes
  give identical bits (thread counts 1/2/3 in one process: test_threads.py);
* special values: NaN and +-inf propagate through conv and every pool mode as
  in torch (positions of NaN/+inf/-inf, and max-pool indices);
* denormals: inputs full of subnormal numbers do not make conv/pool more than
  20x slower than normal inputs (the ratios are printed; ``-s`` shows them).

The RSS and timing tests are deselected by .ci/sanitize (ASan's quarantine and
instrumentation distort both).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np
import pytest

import convkit
from helpers import OP_NAMES, OPS, assert_bitwise_equal, assert_close

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def _run_child(code, timeout=120, **env_extra):
    """Run ``code`` in a fresh interpreter that imports the same convkit."""
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(convkit.__file__)))
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent, TESTS_DIR, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=tempfile.gettempdir())
    assert proc.returncode == 0, f"child failed (rc={proc.returncode})\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _snapshot(arrays):
    return {k: v.tobytes() for k, v in arrays.items()}


# --------------------------------------------------------------------------- #
# (a) memory: no growth of the resident set
# --------------------------------------------------------------------------- #

RSS_CALLS = 10_000          # calls of every op after the warm-up
RSS_WARMUP = 300
RSS_BOUND_MB = 20.0

_RSS_CHILD = """
import json, os, time
import numpy as np
import convkit
from helpers import OPS, OP_NAMES

PAGE = os.sysconf("SC_PAGE_SIZE")

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20

convkit.set_num_threads({threads})
rng = np.random.default_rng(0)
jobs = []
for name in OP_NAMES:
    make, call = OPS[name]
    jobs.append((name, call, make(rng, np.float32, False)))
# Native error paths: an index outside its window (the kernel reports it, the
# binding throws) and a geometry refused before any kernel runs.
x = rng.standard_normal((2, 3, 6, 4)).astype(np.float32)
y, bad_idx = convkit.max_pool2d(x, 2, return_indices=True)
bad_idx = bad_idx.copy(); bad_idx[1, 2, 0, 0] = 10**12
gy = np.ones(y.shape, np.float32)

def errors():
    try:
        convkit.max_pool2d_backward(gy, x, bad_idx, 2)
    except ValueError:
        pass
    try:
        convkit.conv2d(x, np.ones((3, 3, 9, 9), np.float32))
    except ValueError:
        pass

def round_():
    for name, call, arrays in jobs:
        call(convkit, arrays)
    errors()

for _ in range({warmup}):
    round_()
base = rss_mb()
t0 = time.perf_counter()
samples = []
for i in range({calls}):
    round_()
    if i % 1000 == 999:
        samples.append(round(rss_mb() - base, 2))
print(json.dumps(dict(base_mb=round(base, 1), growth_mb=samples, final_growth_mb=round(rss_mb() - base, 2),
                      seconds=round(time.perf_counter() - t0, 1), ops=len(jobs), calls={calls})))
"""


def test_rss_does_not_grow(record_property):
    """Every op forward and backward (and two error paths) 10 000 times each
    in a fresh interpreter: the resident set grows by less than 20 MB after a
    warm-up. Sampled every 1000 rounds so a leak shows as a steady rise."""
    proc = _run_child(_RSS_CHILD.format(threads=2, warmup=RSS_WARMUP, calls=RSS_CALLS), timeout=300)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nRSS: base {res['base_mb']} MB, growth per 1000 rounds {res['growth_mb']} MB, "
          f"{res['ops']} ops x {res['calls']} calls in {res['seconds']} s")
    record_property("rss", res)
    assert res["ops"] == len(OP_NAMES)
    assert res["final_growth_mb"] < RSS_BOUND_MB, res
    assert max(res["growth_mb"]) < RSS_BOUND_MB, res


# --------------------------------------------------------------------------- #
# (b) thread safety
# --------------------------------------------------------------------------- #

N_PY_THREADS = 8


def _all_jobs(dtype, big, seed):
    rng = np.random.default_rng(seed)
    jobs = []
    for name in OP_NAMES:
        make, call = OPS[name]
        arrays = make(rng, dtype, big)
        jobs.append((name, call, arrays))
    return jobs


def _run_threads(target, n):
    errors = []

    def wrapped(i):
        try:
            target(i)
        except BaseException as e:  # reported below, with the thread's index
            errors.append((i, repr(e)[:2000]))

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_concurrent_calls_match_sequential(dtype, restore_threads):
    """8 Python threads call every op (shapes large enough for OpenMP to split
    the work) on the same input arrays, each in its own order: every result is
    bitwise the sequential one and no input is modified."""
    convkit.set_num_threads(2)
    jobs = _all_jobs(dtype, True, 1234)
    expected = {name: call(convkit, arrays) for name, call, arrays in jobs}
    before = {name: _snapshot(arrays) for name, _, arrays in jobs}

    def worker(i):
        order = jobs[i % len(jobs):] + jobs[:i % len(jobs)]
        for _ in range(2):
            for name, call, arrays in order:
                got = call(convkit, arrays)
                assert len(got) == len(expected[name]), name
                for a, b in zip(got, expected[name]):
                    assert_bitwise_equal(a, b, f"{name} in thread {i}")

    errors = _run_threads(worker, N_PY_THREADS)
    assert not errors, errors
    for name, _, arrays in jobs:
        assert _snapshot(arrays) == before[name], f"{name} modified its inputs"


def test_calls_while_num_threads_changes(restore_threads):
    """One thread keeps switching set_num_threads between 1, 2 and 3 while
    8 others call every op: nothing crashes and every result is bitwise the
    sequential one (results do not depend on the thread count)."""
    convkit.set_num_threads(1)
    jobs = _all_jobs(np.float32, True, 99)
    expected = {name: call(convkit, arrays) for name, call, arrays in jobs}
    stop = threading.Event()
    flips = [0]

    def flipper():
        k = 0
        while not stop.is_set():
            convkit.set_num_threads(1 + k % 3)
            k += 1
            flips[0] = k
            time.sleep(0.0005)

    ft = threading.Thread(target=flipper)
    ft.start()
    try:
        def worker(i):
            for name, call, arrays in jobs[i:] + jobs[:i]:
                for _ in range(2):
                    for a, b in zip(call(convkit, arrays), expected[name]):
                        assert_bitwise_equal(a, b, f"{name} in thread {i} while the thread count changes")

        errors = _run_threads(worker, N_PY_THREADS)
    finally:
        stop.set()
        ft.join()
    assert not errors, errors
    assert flips[0] > 3, "the flipping thread did not run"
    assert convkit.get_num_threads() in (1, 2, 3)


# --------------------------------------------------------------------------- #
# (c) reproducibility across repeated runs
# --------------------------------------------------------------------------- #


def _dirty_heap(nbytes):
    """Leave freed, NaN-filled memory around so the next allocations of the
    op (outputs, scratch) are likely to reuse it: a kernel that leaves any
    output element unwritten then shows different bits on the next call."""
    junk = [np.full(max(1, nbytes // 8), np.nan) for _ in range(4)]
    junk += [np.full(max(1, nbytes // 32), -np.inf, dtype=np.float32) for _ in range(4)]
    del junk


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", OP_NAMES)
def test_repeated_calls_identical(name, dtype, restore_threads):
    make, call = OPS[name]
    arrays = make(np.random.default_rng(5), dtype, True)
    nbytes = max(a.nbytes for a in arrays.values()) * 4
    first = call(convkit, arrays)
    for threads in (2, 1, 3, 2):
        convkit.set_num_threads(threads)
        _dirty_heap(nbytes)
        again = call(convkit, arrays)
        for a, b in zip(again, first):
            assert_bitwise_equal(a, b, f"{name}: repeated call ({threads} threads, dirty heap)")


_HASH_CHILD = """
import hashlib, json
import numpy as np
import convkit
from helpers import OPS, OP_NAMES

out = {}
for dtype in (np.float32, np.float64):
    rng = np.random.default_rng(2024)
    for name in OP_NAMES:
        make, call = OPS[name]
        arrays = make(rng, dtype, True)
        h = hashlib.sha256()
        for a in call(convkit, arrays):
            h.update(np.ascontiguousarray(a).tobytes())
        out[f"{name}-{np.dtype(dtype).name}"] = h.hexdigest()
print(json.dumps(out))
"""


def test_reproducible_across_processes():
    """Fresh interpreters (OMP_NUM_THREADS 1, 2 and 3) hash every op's outputs
    for the same seeded inputs: all hashes agree."""
    runs = {}
    for n in ("1", "3", "2"):
        proc = _run_child(_HASH_CHILD, OMP_NUM_THREADS=n)
        runs[n] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(runs["1"]) == 2 * len(OP_NAMES)
    for n in ("2", "3"):
        diff = sorted(k for k in runs["1"] if runs[n].get(k) != runs["1"][k])
        assert not diff, f"outputs differ between a 1-thread and a {n}-thread process: {diff}"


# --------------------------------------------------------------------------- #
# (d) special values against torch
# --------------------------------------------------------------------------- #


def _with_specials(rng, shape, dtype, frac=0.04, kinds=(np.nan, np.inf, -np.inf)):
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    n = max(len(kinds), int(frac * flat.size))
    pos = rng.choice(flat.size, size=n, replace=False)
    for i, p in enumerate(pos):
        flat[p] = kinds[i % len(kinds)]
    return x


def _assert_same_specials(actual, expected, dtype, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    for name, fn in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        a, e = fn(actual), fn(expected)
        if not np.array_equal(a, e):
            where = np.argwhere(a != e)[:5].tolist()
            raise AssertionError(f"{what}: {name} positions differ from torch at {where} "
                                 f"(convkit {actual[tuple(where[0])]} vs torch {expected[tuple(where[0])]}); "
                                 f"{int(a.sum())} vs {int(e.sum())} {name}")
    finite = np.isfinite(expected)
    rtol = 1e-9 if dtype == np.float64 else 1e-4
    assert_close(np.where(finite, actual, 0), np.where(finite, expected, 0), rtol=rtol, err_msg=what)


def _torch():
    return pytest.importorskip("torch")


DT = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])

SPECIAL_CONV = {
    "3x3_pad1": dict(c=4, k=6, kernel=(3, 3), kw=dict(padding=1)),
    "3x3_stride2_dil2": dict(c=4, k=5, kernel=(3, 3), kw=dict(stride=2, dilation=2)),
    "groups2": dict(c=4, k=6, kernel=(3, 2), kw=dict(padding=(1, 0), groups=2)),
    "depthwise3x3": dict(c=6, k=6, kernel=(3, 3), kw=dict(padding=1, groups=6)),
    "depthwise3x3_s2": dict(c=6, k=6, kernel=(3, 3), kw=dict(stride=2, padding=1, groups=6)),
    "1x1": dict(c=8, k=8, kernel=(1, 1), kw={}),
}


@pytest.mark.torch
@DT
@pytest.mark.parametrize("where", ["input", "weight"])
@pytest.mark.parametrize("case", sorted(SPECIAL_CONV))
def test_conv2d_special_values_like_torch(rng, isa, case, where, dtype):
    """NaN/+inf/-inf in the input (any padding) or in the weight (padding 0,
    where every tap meets real input: with zero padding, 0*inf at the border
    is NaN in an im2col formulation but skipped by a direct one, and neither
    is wrong) end up in the same output positions as in torch."""
    torch = _torch()
    c = SPECIAL_CONV[case]
    kw = dict(c["kw"])
    if where == "weight":
        kw.pop("padding", None)
    shape_x = (2, c["c"], 11, 10)
    groups = kw.get("groups", 1)
    shape_w = (c["k"], c["c"] // groups) + c["kernel"]
    if where == "input":
        x = _with_specials(rng, shape_x, dtype)
        w = rng.standard_normal(shape_w).astype(dtype)
    else:
        x = rng.standard_normal(shape_x).astype(dtype)
        w = _with_specials(rng, shape_w, dtype, frac=0.02)
    b = rng.standard_normal(c["k"]).astype(dtype)
    got = convkit.conv2d(x, w, b, **kw)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), **kw).numpy()
    assert np.isnan(want).any() and not np.isnan(want).all(), "test input should give some, not all, NaN"
    _assert_same_specials(got, want, dtype, f"conv2d {case} specials in {where}")


@pytest.mark.torch
@DT
def test_conv_transpose2d_special_values_like_torch(rng, isa, dtype):
    torch = _torch()
    x = _with_specials(rng, (2, 4, 6, 5), dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    kw = dict(stride=2, padding=1, output_padding=1, groups=2)
    got = convkit.conv_transpose2d(x, w, **kw)
    want = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), **kw).numpy()
    _assert_same_specials(got, want, dtype, "conv_transpose2d specials in input")


POOL_SPECIAL_X = (2, 3, 11, 9)

SPECIAL_POOLS = {
    "max_3s2p1_ceil": ("max", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    "max_2x2": ("max", dict(kernel_size=2)),
    "max_dil2": ("max", dict(kernel_size=(3, 2), stride=1, padding=1, dilation=2)),
    "avg_3s2p1_incl": ("avg", dict(kernel_size=3, stride=2, padding=1, count_include_pad=True)),
    "avg_3s2p1_excl_ceil": ("avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                        count_include_pad=False)),
    "avg_2x2_divisor": ("avg", dict(kernel_size=2, divisor_override=3)),
    "lp_p2": ("lp", dict(norm_type=2.0, kernel_size=2)),
    "lp_p1_ceil": ("lp", dict(norm_type=1.0, kernel_size=3, stride=2, ceil_mode=True)),
    "lp_p3": ("lp", dict(norm_type=3.0, kernel_size=(2, 3))),
    "adaptive_avg_4x3": ("adaptive_avg", dict(output_size=(4, 3))),
    "adaptive_avg_7x5": ("adaptive_avg", dict(output_size=(7, 5))),
    "adaptive_max_4x3": ("adaptive_max", dict(output_size=(4, 3))),
    "adaptive_max_7x5": ("adaptive_max", dict(output_size=(7, 5))),
    "global_avg": ("global_avg", {}),
}


def _pool_both(torch, mode, kw, x):
    F = torch.nn.functional
    t = torch.from_numpy(x)
    if mode == "max":
        y, i = convkit.max_pool2d(x, return_indices=True, **kw)
        ty, ti = F.max_pool2d(t, return_indices=True, **kw)
        return (y, i), (ty.numpy(), ti.numpy())
    if mode == "adaptive_max":
        y, i = convkit.adaptive_max_pool2d(x, kw["output_size"], return_indices=True)
        ty, ti = F.adaptive_max_pool2d(t, kw["output_size"], return_indices=True)
        return (y, i), (ty.numpy(), ti.numpy())
    if mode == "avg":
        return (convkit.avg_pool2d(x, **kw),), (F.avg_pool2d(t, **kw).numpy(),)
    if mode == "lp":
        return (convkit.lp_pool2d(x, **kw),), (F.lp_pool2d(t, **kw).numpy(),)
    if mode == "adaptive_avg":
        return ((convkit.adaptive_avg_pool2d(x, kw["output_size"]),),
                (F.adaptive_avg_pool2d(t, kw["output_size"]).numpy(),))
    assert mode == "global_avg"
    return (convkit.global_avg_pool2d(x),), (F.adaptive_avg_pool2d(t, 1).numpy(),)


@pytest.mark.torch
@DT
@pytest.mark.parametrize("kinds", ["nan_inf", "inf_only", "all_nan_plane"])
@pytest.mark.parametrize("case", sorted(SPECIAL_POOLS))
def test_pool_special_values_like_torch(rng, isa, case, kinds, dtype):
    """Every pool mode: NaN/+inf/-inf land where torch puts them; for max
    pools the indices match too (a NaN wins; torch keeps the last NaN)."""
    torch = _torch()
    mode, kw = SPECIAL_POOLS[case]
    if kinds == "nan_inf":
        x = _with_specials(rng, POOL_SPECIAL_X, dtype, frac=0.05)
    elif kinds == "inf_only":
        x = _with_specials(rng, POOL_SPECIAL_X, dtype, frac=0.08, kinds=(np.inf, -np.inf))
    else:
        x = _with_specials(rng, POOL_SPECIAL_X, dtype, frac=0.02)
        x[1, 2] = np.nan
        x[0, 1] = -np.inf
    got, want = _pool_both(torch, mode, kw, x)
    _assert_same_specials(got[0], want[0], dtype, f"{case} ({kinds})")
    if len(got) == 2:
        np.testing.assert_array_equal(got[1], want[1], err_msg=f"{case} ({kinds}): indices differ from torch")


@pytest.mark.torch
@DT
@pytest.mark.parametrize("mode", ["max", "avg", "adaptive_avg", "adaptive_max"])
def test_pool_backward_special_gradients_like_torch(rng, mode, dtype):
    """NaN/inf in grad_output are routed (max) or spread (avg) as in torch."""
    torch = _torch()
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    t = torch.from_numpy(x).requires_grad_(True)
    F = torch.nn.functional
    if mode == "max":
        ty, ti = F.max_pool2d(t, 3, stride=2, padding=1, return_indices=True)
    elif mode == "avg":
        ty = F.avg_pool2d(t, 3, stride=2, padding=1, count_include_pad=False)
    elif mode == "adaptive_avg":
        ty = F.adaptive_avg_pool2d(t, (4, 3))
    else:
        ty, ti = F.adaptive_max_pool2d(t, (4, 3), return_indices=True)
    gy = _with_specials(rng, tuple(ty.shape), dtype, frac=0.08)
    ty.backward(torch.from_numpy(gy))
    want = t.grad.numpy()
    if mode == "max":
        got = convkit.max_pool2d_backward(gy, x, ti.numpy(), 3, stride=2, padding=1)
    elif mode == "avg":
        got = convkit.avg_pool2d_backward(gy, x, 3, stride=2, padding=1, count_include_pad=False)
    elif mode == "adaptive_avg":
        got = convkit.adaptive_avg_pool2d_backward(gy, x)
    else:
        got = convkit.adaptive_max_pool2d_backward(gy, x, ti.numpy())
    _assert_same_specials(got, want, dtype, f"{mode}_pool2d_backward specials in grad_output")


# --------------------------------------------------------------------------- #
# (e) denormals
# --------------------------------------------------------------------------- #

DENORMAL_MAX_RATIO = 20.0


def _median_seconds(fn, reps=7):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _denormal_cases():
    tiny = np.finfo(np.float32).smallest_subnormal
    rng = np.random.default_rng(17)

    def filled(shape, subnormal):
        a = rng.standard_normal(shape).astype(np.float32)
        if subnormal:
            # subnormal magnitudes in [1, 2**20) * smallest_subnormal, signs kept
            a = (np.sign(a) * (1 + np.floor(np.abs(a) * 2**18)) * tiny).astype(np.float32)
            assert np.all(np.abs(a) < np.finfo(np.float32).tiny) and np.all(a != 0)
        return a

    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    return {
        "conv2d": lambda sub: (lambda x=filled((4, 32, 32, 32), sub): convkit.conv2d(x, w, padding=1)),
        "conv2d_backward": lambda sub: (lambda x=filled((4, 32, 32, 32), sub), gy=filled((4, 32, 32, 32), sub):
                                        convkit.conv2d_backward(gy, x, w, padding=1)),
        "avg_pool2d": lambda sub: (lambda x=filled((8, 64, 64, 64), sub): convkit.avg_pool2d(x, 3, 1, 1)),
        "max_pool2d": lambda sub: (lambda x=filled((8, 64, 64, 64), sub): convkit.max_pool2d(x, 3, 1, 1)),
    }


def test_denormal_slowdown_bounded(record_property, restore_threads):
    """float32 inputs made only of subnormal numbers (products and sums then
    stay subnormal: the slow path on x86 without flush-to-zero) run less than
    20x slower than normal inputs. Loose bound; the ratios are recorded."""
    convkit.set_num_threads(1)
    ratios = {}
    for name, make in _denormal_cases().items():
        normal = _median_seconds(make(False))
        sub = _median_seconds(make(True))
        ratios[name] = dict(normal_ms=round(normal * 1e3, 2), denormal_ms=round(sub * 1e3, 2),
                            ratio=round(sub / normal, 2))
    print("\ndenormal/normal time ratios:", json.dumps(ratios))
    record_property("denormal_ratios", ratios)
    slow = {k: v for k, v in ratios.items() if v["ratio"] >= DENORMAL_MAX_RATIO}
    assert not slow, f"subnormal inputs more than {DENORMAL_MAX_RATIO}x slower: {slow}"
