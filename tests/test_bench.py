"""`convkit bench` command line: the CPU FMA-peak probe, the --device cuda
pre-flight errors, and the GPU suite end to end on a stand-in CuPy whose
kernels run through the CPU emulation of the .cu sources (no GPU needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from convkit import bench

ROOT = Path(__file__).resolve().parents[1]
EMULATE = ROOT / "csrc" / "tests_native" / "cuda_emulate"


def _run(code_or_args, *, code=False, timeout=600, env=None):
    cmd = [sys.executable, "-c", code_or_args] if code else [sys.executable, "-m", "convkit", *code_or_args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT.parent),
                          env={**os.environ, **(env or {})})


def _gpu_available():
    try:
        import convkit.cuda
        return convkit.cuda.available()
    except Exception:
        return False


# --------------------------------------------------------------------------- #
# FMA peak probe
# --------------------------------------------------------------------------- #

def test_fma_probe_takes_the_best_of_several_repeats():
    values = iter([50.0, 60.0, 117.0, 230.0, 120.0, 229.0] + [100.0] * 20)
    calls = []

    def fake(iterations):
        calls.append(iterations)
        time.sleep(0.002)
        return next(values)

    probe = bench.fma_probe(fake, repeat_s=0.01, budget_s=0.05, min_repeats=3, max_repeats=10)
    assert probe["gflops"] == 230.0                  # not the first (descheduled) reading
    assert len(probe["samples"]) >= 3 and probe["samples"][0] == 117.0   # two calibration calls first
    assert calls[0] == calls[1] and all(c == probe["iterations"] for c in calls[2:])
    assert probe["seconds"] < 1.0


def test_fma_probe_without_an_iterations_argument():
    probe = bench.fma_probe(lambda: 42.0, repeat_s=0.001, budget_s=0.01)
    assert probe["gflops"] == 42.0


def test_native_peak_probe_is_short_and_stable():
    native = pytest.importorskip("convkit._C")
    if not hasattr(native, "measure_peak_gflops"):
        pytest.skip("convkit._C has no measure_peak_gflops")
    details = {}
    t0 = time.perf_counter()
    peak, method = bench.measure_peak_gflops(bench._get_threads(), details)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.5, elapsed              # budget 1.2 s (+ one repeat, calibration); loose for loaded CI
    assert peak == max(details["samples"]) > 0
    assert len(details["samples"]) >= 3 and "best of" in method


# --------------------------------------------------------------------------- #
# --device cuda pre-flight
# --------------------------------------------------------------------------- #

def test_cuda_bench_without_cupy_is_one_clear_line():
    p = _run("import sys; sys.modules['cupy'] = None\n"
             "from convkit import bench; sys.exit(bench.main(['--device', 'cuda', '--quick']))", code=True)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convkit bench: --device cuda needs CuPy"), p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_cuda_bench_without_gpu_is_one_clear_line():
    pytest.importorskip("cupy")
    if _gpu_available():
        pytest.skip("this machine has a GPU")
    p = _run(["bench", "--device", "cuda", "--quick", "--no-progress"])
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convkit bench: --device cuda found no"), p.stderr


def test_float16_needs_cuda():
    p = _run(["bench", "--dtype", "float16", "--quick"])
    assert p.returncode == 2 and "needs --device cuda" in p.stderr


def test_cuda_list_needs_no_gpu():
    p = _run(["bench", "--device", "cuda", "--list"])
    assert p.returncode == 0 and "resnet50.layer1.3x3" in p.stdout


def test_extra_suite_lists_its_own_layers():
    main = {layer.name for layer in bench.LAYERS}
    extra = [layer.name for layer in bench.EXTRA_LAYERS]
    assert extra and len(set(extra)) == len(extra) and not main & set(extra)
    p = _run(["bench", "--suite", "extra", "--list"])
    assert p.returncode == 0
    listed = [line.split()[0] for line in p.stdout.splitlines() if line.strip()]
    assert listed == extra
    assert bench.layer_by_name(extra[0]) is bench.EXTRA_LAYERS[0]


def test_extra_suite_items_run_and_check(tmp_path):
    # Two small extra items end to end (torch off, the NumPy reference on):
    # each is timed, checked against the reference and written to the JSON.
    out = tmp_path / "extra.json"
    p = _run(["bench", "--suite", "extra", "--quick", "--no-torch", "--no-progress", "--filter",
              "googlenet.3a.5x5:fwd,inception3.avgpool5x5.s3:bwd", "--json", str(out)])
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert doc["suite"] == "extra" and doc["mode"] == "quick"
    rows = {(r["layer"], r["pass"]): r for r in doc["results"]}
    assert set(rows) == {("googlenet.3a.5x5", "fwd"), ("inception3.avgpool5x5.s3", "bwd")}
    assert all(r["convkit"]["median_ms"] > 0 and r["check"] == "ok" for r in rows.values())


def test_table_memory_columns():
    rec = {"layer": "l", "pass": "fwd", "batch": 1, "geometry": "g", "kind": "conv",
           "convkit": {"median_ms": 1.0, "gflops": 1.0, "pct_peak": 1.0, "peak_memory_bytes": 3 * 2 ** 20},
           "torch": {"median_ms": 2.0, "peak_memory_bytes": 2 ** 21}, "speedup_vs_torch": 2.0, "check": "ok"}
    cpu = bench.table_rows([rec])
    assert cpu[0][9:11] == ["numpy ms", "vs numpy"]
    gpu = bench.table_rows([rec], memory=True)
    assert gpu[0][9:11] == ["convkit MiB", "torch MiB"] and gpu[1][9:11] == ["3.0", "2.0"]


# --------------------------------------------------------------------------- #
# The GPU suite on a stand-in CuPy (CPU emulation of the kernels)
# --------------------------------------------------------------------------- #

_FAKE_RUN = textwrap.dedent("""
    import contextlib, sys
    sys.path.insert(0, {emulate!r})
    import fake_cupy
    fake_cupy.install()
    import torch
    from convkit import bench, bench_cuda
    if {with_torch!r}:
        # torch runs on the CPU here; only its CUDA plumbing is stubbed.
        bench_cuda.setup_torch = lambda args: (torch, None, {{"torch.backends.cudnn.allow_tf32": False}})
        bench_cuda.peak_memory_torch = lambda fn: 0
        bench_cuda.torch_stream = lambda t, s: contextlib.nullcontext()
    bench_cuda.gpu_batch = lambda layer, quick: 2
    sys.exit(bench.main({argv!r}))
""")


def _fake_bench(tmp_path, with_torch, filters):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not available for the CUDA emulation harness")
    pytest.importorskip("torch")
    out = tmp_path / "gpu.json"
    argv = ["--device", "cuda", "--quick", "--repeat", "2", "--no-progress", "--json", str(out),
            "--filter", filters] + ([] if with_torch else ["--no-torch"])
    p = _run(_FAKE_RUN.format(emulate=str(EMULATE), with_torch=with_torch, argv=argv), code=True,
             env={"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout, json.loads(out.read_text())


def test_cuda_bench_end_to_end_on_emulated_kernels(tmp_path):
    stdout, doc = _fake_bench(tmp_path, True, "mnist.conv1,vgg16.maxpool2x2:bwd,globalavg:fwd")
    assert "FP32 (TF32 off)" in stdout and "FP32 peak: 66.9 TFLOP/s [132 SMs x 128 FP32 lanes/SM" in stdout
    assert "convkit MiB" in stdout and "torch MiB" in stdout
    assert doc["device"] == "cuda" and doc["precision"] == "FP32 (TF32 off)" and doc["dtype"] == "float32"
    m = doc["machine"]
    assert m["gpu"].startswith("Fake GPU") and m["compute_capability"] == "9.0"
    assert m["peak_gflops"] == pytest.approx(132 * 128 * 2 * 1.98) and m["copy_gbps"] > 0
    for key in ("driver_cuda_version", "runtime_cuda_version", "nvrtc_version"):
        assert m[key]
    assert doc["versions"]["cupy"] and doc["versions"]["torch"]
    got = {(r["layer"], r["pass"]) for r in doc["results"]}
    assert got == {("mnist.conv1", "fwd"), ("mnist.conv1", "bwd"), ("vgg16.maxpool2x2", "bwd"),
                   ("resnet50.globalavg", "fwd")}
    for r in doc["results"]:
        assert not r.get("error"), r
        assert r["check"] == "ok" and r["check_against"] == "torch", r
        assert r["convkit"]["peak_memory_bytes"] > 0 and "torch" in r and r["speedup_vs_torch"] > 0
        assert r["convkit"]["repeats"] == 2 and r["inner_calls"]["convkit"] >= 1
    assert doc["summary"]["errors"] == 0 and doc["summary"]["bad_checks"] == 0


def test_cuda_bench_reference_check_without_torch(tmp_path):
    _, doc = _fake_bench(tmp_path, False, "vgg16.maxpool2x2:fwd,mnist.conv2:fwd")
    for r in doc["results"]:
        assert not r.get("error"), r
        assert r["check"] == "ok" and r["check_against"] == "reference (first image)", r
        assert "torch" not in r
