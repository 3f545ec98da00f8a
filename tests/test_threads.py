"""Thread count: results are bitwise identical for 1, 2 and 3 threads on
every op and backward (shapes large enough for the kernels to split work),
get_num_threads round-trips, and the setting applies from other Python
threads too."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import convkit
from helpers import OP_NAMES, OPS, assert_bitwise_equal


@pytest.mark.parametrize("n", [1, 2, 3, 5, 1])
def test_get_num_threads_round_trips(n, restore_threads):
    convkit.set_num_threads(n)
    assert convkit.get_num_threads() == n
    assert isinstance(convkit.get_num_threads(), int)


def test_info_reports_threads(restore_threads):
    if not hasattr(convkit, "info"):
        pytest.skip("convkit.info() not available")
    convkit.set_num_threads(3)
    info = convkit.info()
    if "num_threads" in info:
        assert info["num_threads"] == 3


@pytest.mark.parametrize("name", OP_NAMES)
def test_results_independent_of_thread_count(name, isa, restore_threads):
    make, call = OPS[name]
    arrays = make(np.random.default_rng(abs(hash(name)) % 2**32), np.float32, True)
    results = {}
    for n in (1, 2, 3):
        convkit.set_num_threads(n)
        assert convkit.get_num_threads() == n
        results[n] = call(convkit, arrays, backend="cpu")
    for n in (2, 3):
        assert len(results[n]) == len(results[1])
        for a, b in zip(results[n], results[1]):
            assert_bitwise_equal(a, b, f"{name}: {n} threads vs 1")


@pytest.mark.parametrize("name", ["conv2d", "conv2d_backward", "max_pool2d", "avg_pool2d_backward"])
def test_results_independent_of_thread_count_float64(name, restore_threads):
    make, call = OPS[name]
    arrays = make(np.random.default_rng(7), np.float64, True)
    convkit.set_num_threads(1)
    one = call(convkit, arrays)
    convkit.set_num_threads(3)
    three = call(convkit, arrays)
    for a, b in zip(one, three):
        assert_bitwise_equal(a, b, name)


def test_set_num_threads_applies_to_other_python_threads(restore_threads):
    """The kernels read convkit's own setting, not the caller's OpenMP ICV."""
    make, call = OPS["conv2d"]
    arrays = make(np.random.default_rng(3), np.float32, True)
    convkit.set_num_threads(1)
    expected = call(convkit, arrays)[0]
    seen = {}

    def worker():
        seen["threads"] = convkit.get_num_threads()
        seen["y"] = call(convkit, arrays)[0]

    convkit.set_num_threads(3)
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["threads"] == 3
    assert_bitwise_equal(seen["y"], expected)


def test_concurrent_calls_from_python_threads(restore_threads):
    """Calls release the GIL; concurrent calls must not interfere."""
    convkit.set_num_threads(2)
    rng = np.random.default_rng(11)
    jobs = []
    for name in ("conv2d", "conv2d_backward", "max_pool2d", "avg_pool2d", "conv_transpose2d",
                 "adaptive_max_pool2d_backward"):
        make, call = OPS[name]
        arrays = make(rng, np.float32, False)
        jobs.append((name, call, arrays, call(convkit, arrays)))
    errors = []

    def worker(name, call, arrays, expected):
        try:
            for _ in range(20):
                for a, b in zip(call(convkit, arrays), expected):
                    assert_bitwise_equal(a, b, name)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append((name, e))

    threads = [threading.Thread(target=worker, args=job) for job in jobs * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_many_threads_more_than_work(restore_threads):
    """More threads than cores or than work items still gives the same bits."""
    for name in ("conv2d", "conv2d_backward", "max_pool2d_backward", "lp_pool2d_backward"):
        make, call = OPS[name]
        arrays = make(np.random.default_rng(21), np.float32, False)
        convkit.set_num_threads(1)
        one = call(convkit, arrays)
        convkit.set_num_threads(7)
        many = call(convkit, arrays)
        for a, b in zip(one, many):
            assert_bitwise_equal(a, b, name)


def _run(code, **env_extra):
    import os
    import subprocess
    import sys
    import tempfile

    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(convkit.__file__)))
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tempfile.gettempdir())


def test_omp_num_threads_sets_default():
    proc = _run("import convkit; print(convkit.get_num_threads())", OMP_NUM_THREADS="3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3"


def test_isa_selection():
    if not (hasattr(convkit, "info") and hasattr(convkit, "set_isa")):
        pytest.skip("convkit.info()/set_isa() not available")
    supported = convkit.info()["supported_isas"]
    assert "generic" in supported
    for name in supported:
        proc = _run("import convkit; print(convkit.info()['isa'])", CONVKIT_ISA=name)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == name
    original = convkit.info()["isa"]
    with pytest.raises((ValueError, TypeError)):
        convkit.set_isa("sse9000")
    assert convkit.info()["isa"] == original
