"""``convkit bench --device cuda``: the bench suite on the GPU.

The layers of :data:`convkit.bench.LAYERS` (or of ``--suite extra`` / ``all``)
run as CuPy arrays through convkit's CUDA kernels and, side by side, through PyTorch on CUDA (cuDNN), in
FP32 with TF32 off on both sides (``torch.backends.cuda.matmul.allow_tf32``
and ``torch.backends.cudnn.allow_tf32`` False; ``--dtype float16`` compares
FP16 storage instead, where torch may use tensor cores).

Timing: both implementations launch on one CUDA stream (a CuPy stream that
torch uses through ``torch.cuda.ExternalStream``). After a warm-up (which
also compiles the kernels and lets cuDNN pick its algorithms), each sample is
a pair of CUDA events around ``inner`` back-to-back calls (``inner`` sized so
that a sample lasts about a millisecond; small layers are thus timed as a
stream of calls, host overhead included when it exceeds the GPU time),
convkit and torch alternate which goes first, and medians are reported.
Each item is checked against torch (or, without torch on CUDA, against the
NumPy reference on one image). Conv items report GFLOP/s and % of the GPU's
FP32 peak (SMs x FP32 lanes per SM x 2 x clock, from the device attributes),
pooling items GB/s and % of a device-to-device copy measured in the same run.
Beside the time: the peak extra GPU memory of one call (CuPy memory pool
through a memory hook; ``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import copy as _copy
import dataclasses
import datetime
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from . import bench

# FP32 lanes (CUDA cores) per SM by compute capability.
FP32_LANES_PER_SM = {
    (6, 0): 64, (6, 1): 128, (6, 2): 128, (7, 0): 64, (7, 2): 64, (7, 5): 64,
    (8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128, (9, 0): 128,
    (10, 0): 128, (10, 3): 128, (11, 0): 128, (12, 0): 128, (12, 1): 128,
}

FULL_BATCH_SCALE = 4  # full GPU suite: 4x the CPU suite's full batch; --quick: the CPU full batch
CHECK_TOLERANCE = {"float32": 1e-3, "float16": 1e-2}


class CudaUnavailable(RuntimeError):
    """CuPy or a usable GPU is missing (one-line message)."""


def gpu_batch(layer: bench.Layer, quick: bool) -> int:
    return layer.batch if quick else layer.batch * FULL_BATCH_SCALE


def require_cuda():
    """cupy, or CudaUnavailable with a one-line reason."""
    try:
        import cupy
    except Exception as e:  # ImportError, or a CuPy that fails to load its CUDA libraries
        raise CudaUnavailable(f"--device cuda needs CuPy (pip install 'convkit[cuda]'); importing it failed: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CudaUnavailable(f"--device cuda found no usable CUDA GPU ({msg})") from None
    if count < 1:
        raise CudaUnavailable("--device cuda found no CUDA GPU (cupy.cuda.runtime.getDeviceCount() == 0)")
    return cupy


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------

class GpuCase(bench.Case):
    """:class:`convkit.bench.Case` with CuPy inputs of ``dtype`` on the
    current device (drawn from CuPy's generator, so inputs differ from the
    CPU suite's) and torch tensors sharing their memory (DLPack)."""

    def __init__(self, layer: bench.Layer, pass_: str, batch: int, dtype="float32", seed: int = 0):
        import cupy

        import convkit

        if pass_ not in bench.PASSES:
            raise ValueError(f"pass must be one of {bench.PASSES}, got {pass_!r}")
        self.layer, self.pass_, self.batch = layer, pass_, batch
        self._ck = convkit
        self.dtype = np.dtype(dtype)
        rng = cupy.random.default_rng(seed)
        self._build(lambda shape: rng.standard_normal(shape, dtype=np.float32).astype(self.dtype, copy=False))

    def _scaled(self, a, factor: float):
        return (a * factor).astype(self.dtype, copy=False)

    def _to_torch(self, a, copy: bool):
        torch = bench._torch()
        t = torch.from_dlpack(a)
        return t.clone() if copy else t

    def host_copy(self) -> bench.Case:
        """The same case with NumPy arrays (float16 widened to float32), for the reference."""
        host = _copy.copy(self)
        wide = np.float32 if self.dtype == np.float16 else self.dtype
        for name in ("x", "w", "b", "grad_out"):
            a = getattr(self, name)
            setattr(host, name, None if a is None else a.get().astype(wide))
        host.indices = None if self.indices is None else self.indices.get()
        return host


def to_host(result):
    """CuPy arrays / torch tensors (possibly nested in tuples) as NumPy arrays."""
    if result is None:
        return None
    if isinstance(result, (tuple, list)):
        return [to_host(r) for r in result]
    if hasattr(result, "detach"):
        return result.detach().cpu().numpy()
    if hasattr(result, "get") and type(result).__module__.split(".")[0] == "cupy":
        return result.get()
    return np.asarray(result)


# --------------------------------------------------------------------------
# Timing and memory
# --------------------------------------------------------------------------

def time_cuda_interleaved(fns: Dict[str, Callable[[], object]], stream, *, warmup: int, min_repeat: int,
                          max_repeat: int, budget_s: float, sample_ms: float = 1.0,
                          max_inner: int = 64) -> Tuple[Dict[str, List[float]], Dict[str, int]]:
    """Seconds per call of each implementation, from CUDA events on
    ``stream`` around ``inner`` back-to-back calls per sample (``inner`` per
    implementation, sized from one timed call to last ~``sample_ms``).
    Rounds alternate the order (A B, B A, ...) and synchronise at their end;
    stops after ``max_repeat`` rounds, or after ``min_repeat`` once
    ``budget_s`` seconds have passed. Returns (times, inner)."""
    import cupy

    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    stream.synchronize()
    inner: Dict[str, int] = {}
    for n in names:
        e0, e1 = cupy.cuda.Event(), cupy.cuda.Event()
        e0.record(stream)
        fns[n]()
        e1.record(stream)
        e1.synchronize()
        ms = cupy.cuda.get_elapsed_time(e0, e1)
        inner[n] = int(min(max_inner, max(1, math.ceil(sample_ms / max(ms, 1e-3)))))
    times: Dict[str, List[float]] = {n: [] for n in names}
    start = time.perf_counter()
    for i in range(max_repeat):
        marks = []
        for n in (names if i % 2 == 0 else names[::-1]):
            e0, e1 = cupy.cuda.Event(), cupy.cuda.Event()
            e0.record(stream)
            for _ in range(inner[n]):
                fns[n]()
            e1.record(stream)
            marks.append((n, e0, e1))
        marks[-1][2].synchronize()
        for n, e0, e1 in marks:
            times[n].append(cupy.cuda.get_elapsed_time(e0, e1) / 1e3 / inner[n])
        if i + 1 >= min_repeat and time.perf_counter() - start > budget_s:
            break
    return times, inner


def _peak_hook_class():
    import cupy

    class PeakMemoryHook(cupy.cuda.MemoryHook):
        """Bytes handed out by CuPy's memory pool while active, and their peak."""
        name = "convkit_bench_peak"

        def __init__(self):
            self.current = self.peak = 0

        def malloc_postprocess(self, **kw):
            if kw.get("mem_ptr"):
                self.current += kw["mem_size"]
                self.peak = max(self.peak, self.current)

        def free_postprocess(self, **kw):
            self.current -= kw["mem_size"]

    return PeakMemoryHook


def peak_memory_cupy(fn: Callable[[], object], stream) -> int:
    """Peak extra bytes CuPy's pool hands out during one call of ``fn``
    (temporaries and outputs; the inputs already exist)."""
    hook = _peak_hook_class()()
    with hook:
        result = fn()
        stream.synchronize()
    del result
    return int(hook.peak)


def peak_memory_torch(fn: Callable[[], object]) -> int:
    import torch
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del result
    return int(max(peak, 0))


# --------------------------------------------------------------------------
# The device: peak FLOP/s, copy bandwidth, description
# --------------------------------------------------------------------------

def _attribute(cupy, name: str, device: int) -> Optional[int]:
    rt = cupy.cuda.runtime
    code = getattr(rt, name, None)
    if code is None:
        return None
    try:
        return int(rt.deviceGetAttribute(code, device))
    except Exception:
        return None


def _version(v: Optional[int]) -> Optional[str]:
    return None if not v else f"{v // 1000}.{(v % 1000) // 10}"


def _nvidia_smi_driver() -> Optional[str]:
    try:
        p = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        return p.stdout.strip().splitlines()[0] if p.returncode == 0 and p.stdout.strip() else None
    except Exception:
        return None


def describe_device(cupy, device: int) -> dict:
    """Name, compute capability, SMs, clocks, memory, versions, and the FP32
    peak with the formula used."""
    rt = cupy.cuda.runtime
    props = {}
    try:
        props = rt.getDeviceProperties(device)
    except Exception:
        pass
    name = props.get("name", b"unknown GPU")
    name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    major, minor = props.get("major"), props.get("minor", 0)
    try:
        cc_text = cupy.cuda.Device(device).compute_capability  # e.g. "90"
        major, minor = int(cc_text[:-1]), int(cc_text[-1])
    except Exception:
        pass
    sms = _attribute(cupy, "cudaDevAttrMultiProcessorCount", device) or props.get("multiProcessorCount")
    clock_khz = _attribute(cupy, "cudaDevAttrClockRate", device) or props.get("clockRate")
    mem_clock_khz = _attribute(cupy, "cudaDevAttrMemoryClockRate", device) or props.get("memoryClockRate")
    bus_bits = _attribute(cupy, "cudaDevAttrGlobalMemoryBusWidth", device) or props.get("memoryBusWidth")
    cc = (int(major), int(minor)) if major is not None else None
    lanes = FP32_LANES_PER_SM.get(cc) if cc else None
    lanes_note = "table"
    if lanes is None:
        lanes = 128 if cc and cc[0] >= 8 else 64
        lanes_note = "assumed (compute capability not in the table)"
    peak = None
    peak_method = "unknown (SM count or clock not reported)"
    if sms and clock_khz:
        ghz = clock_khz / 1e6
        peak = sms * lanes * 2 * ghz  # GFLOP/s
        peak_method = (f"{sms} SMs x {lanes} FP32 lanes/SM ({lanes_note}) x 2 (FMA) x {ghz:.3f} GHz "
                       f"(cudaDevAttrClockRate)")
    theoretical_bw = None
    if mem_clock_khz and bus_bits:
        theoretical_bw = 2 * mem_clock_khz * 1e3 * bus_bits / 8 / 1e9
    try:
        nvrtc = ".".join(str(v) for v in cupy.cuda.nvrtc.getVersion())
    except Exception:
        nvrtc = None
    total_mem = props.get("totalGlobalMem")
    return {
        "gpu": name, "device_index": device,
        "compute_capability": None if cc is None else f"{cc[0]}.{cc[1]}",
        "sm_count": sms, "fp32_lanes_per_sm": lanes, "clock_ghz": None if not clock_khz else clock_khz / 1e6,
        "memory_gib": None if not total_mem else total_mem / 2 ** 30,
        "memory_bus_bits": bus_bits, "memory_clock_ghz": None if not mem_clock_khz else mem_clock_khz / 1e6,
        "theoretical_memory_gbps": theoretical_bw,
        "peak_gflops": peak, "peak_method": peak_method,
        "driver": _nvidia_smi_driver(),
        "driver_cuda_version": _version(_safe(rt.driverGetVersion)),
        "runtime_cuda_version": _version(_safe(rt.runtimeGetVersion)),
        "nvrtc_version": nvrtc,
        "host_cpu": bench.cpu_model(), "platform": platform.platform(),
    }


def _safe(fn):
    try:
        return fn()
    except Exception:
        return None


def measure_copy_gbps(cupy, stream, mib: int = 1024) -> Tuple[float, str, dict]:
    """Device-to-device copy bandwidth (bytes read + written per second):
    best of 10 cudaMemcpyAsync of ``mib`` MiB and best of 10 CuPy elementwise
    copies of the same buffer, timed with CUDA events; the higher is the
    reference for pooling's "% of copy"."""
    n = mib * 2 ** 20
    src = cupy.empty(n // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    src.fill(1.0)
    rt = cupy.cuda.runtime

    def best(op):
        op()
        stream.synchronize()
        ms = math.inf
        for _ in range(10):
            e0, e1 = cupy.cuda.Event(), cupy.cuda.Event()
            e0.record(stream)
            op()
            e1.record(stream)
            e1.synchronize()
            ms = min(ms, cupy.cuda.get_elapsed_time(e0, e1))
        return 2 * n / (ms / 1e3) / 1e9

    memcpy = best(lambda: rt.memcpyAsync(dst.data.ptr, src.data.ptr, n, rt.memcpyDeviceToDevice, stream.ptr))
    kernel = best(lambda: cupy.copyto(dst, src))
    del src, dst
    cupy.get_default_memory_pool().free_all_blocks()
    which = "cudaMemcpyAsync D2D" if memcpy >= kernel else "CuPy elementwise copy"
    method = (f"best of cudaMemcpyAsync D2D ({memcpy:.0f}) and CuPy copy kernel ({kernel:.0f}), "
              f"{mib} MiB, read+write bytes: {which}")
    return max(memcpy, kernel), method, {"memcpy_gbps": memcpy, "kernel_copy_gbps": kernel}


# --------------------------------------------------------------------------
# torch set-up
# --------------------------------------------------------------------------

def setup_torch(args) -> Tuple[Optional[object], Optional[str], dict]:
    """(torch or None, a note when not usable, the precision settings read back)."""
    if args.no_torch:
        return None, "not timed (--no-torch)", {}
    torch = bench._torch()
    if torch is None:
        return None, "not installed", {}
    if not torch.cuda.is_available():
        return None, f"{torch.__version__} has no CUDA device (CPU build?)", {}
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for obj, attr in ((getattr(torch.backends.cudnn, "conv", None), "fp32_precision"),
                      (torch.backends.cuda.matmul, "fp32_precision")):
        if obj is not None and hasattr(obj, attr):
            try:
                setattr(obj, attr, "ieee")
            except Exception:
                pass
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    settings = {
        "torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "torch.backends.cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "torch.backends.cudnn.benchmark": torch.backends.cudnn.benchmark,
        "torch.backends.cudnn.enabled": torch.backends.cudnn.enabled,
    }
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        settings["torch.backends.cudnn.conv.fp32_precision"] = conv.fp32_precision
    if args.dtype == "float32" and (settings["torch.backends.cudnn.allow_tf32"]
                                    or settings["torch.backends.cuda.matmul.allow_tf32"]):
        return None, "TF32 could not be switched off", settings
    return torch, None, settings


def torch_stream(torch, stream):
    """Context manager that makes torch launch on the CuPy stream ``stream``."""
    return torch.cuda.stream(torch.cuda.ExternalStream(stream.ptr))


def precision_label(dtype: str) -> str:
    if dtype == "float32":
        return "FP32 (TF32 off)"
    return "FP16 (convkit: FP16 storage, FP32 accumulation on CUDA cores; torch: cuDNN's FP16 path, may use tensor cores)"


# --------------------------------------------------------------------------
# One item
# --------------------------------------------------------------------------

def _reference_check(case: GpuCase) -> float:
    """Relative error of convkit against the NumPy reference on the first image."""
    sub = GpuCase(case.layer, case.pass_, 1, case.dtype, seed=1)
    got = to_host(sub.convkit_fn()())
    expected = sub.host_copy().reference_fn()()
    return bench.relative_error(got, expected)


def run_item(layer: bench.Layer, pass_: str, args, *, torch, stream, peak: Optional[float],
             copy: Optional[float]) -> dict:
    import cupy

    batch = gpu_batch(layer, args.quick)
    rec: dict = {
        "layer": layer.name, "network": layer.network, "kind": layer.kind, "pass": pass_,
        "batch": batch, "geometry": layer.describe(), "dtype": args.dtype,
        "params": {k: v for k, v in dataclasses.asdict(layer).items() if k not in ("name", "batch", "quick_batch")},
    }
    try:
        case = GpuCase(layer, pass_, batch, args.dtype)
        rec["out_shape"] = list(case.out_shape)
        rec["flops"] = case.flops
        rec["bytes"] = case.nbytes
        fns = {"convkit": case.convkit_fn()}
        if torch is not None:
            fns["torch"] = case.torch_fn()
    except NotImplementedError as e:
        rec["error"] = None
        rec["skipped"] = str(e)
        return rec
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {e}"
        return rec

    if args.repeat:
        min_rep = max_rep = args.repeat
    elif args.quick:
        min_rep, max_rep = 5, 30
    else:
        min_rep, max_rep = 10, 100
    try:
        times, inner = time_cuda_interleaved(
            fns, stream, warmup=2 if args.quick else 3, min_repeat=min_rep, max_repeat=max_rep,
            budget_s=0.15 if args.quick else 0.6, sample_ms=0.5 if args.quick else 1.0)
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {e}"
        return rec

    rec["inner_calls"] = inner
    rec["convkit"] = bench._stats(times["convkit"])
    bench._add_rates(rec["convkit"], case, peak, copy)
    if "torch" in times:
        rec["torch"] = bench._stats(times["torch"])
        bench._add_rates(rec["torch"], case, peak, copy)
        rec["speedup_vs_torch"] = rec["torch"]["median_ms"] / rec["convkit"]["median_ms"]
        ck_t, th_t = times["convkit"], times["torch"]
        even = [th_t[i] / ck_t[i] for i in range(0, len(ck_t), 2)]
        odd = [th_t[i] / ck_t[i] for i in range(1, len(ck_t), 2)]
        if even and odd:
            a, b = statistics.median(even), statistics.median(odd)
            rec["order_check"] = {"speedup_convkit_first": a, "speedup_torch_first": b,
                                  "relative_difference": a / b - 1}
    try:
        rec["convkit"]["peak_memory_bytes"] = peak_memory_cupy(fns["convkit"], stream)
        if "torch" in fns:
            rec["torch"]["peak_memory_bytes"] = peak_memory_torch(fns["torch"])
    except Exception as e:
        rec["memory_error"] = f"{type(e).__name__}: {e}"

    tol = CHECK_TOLERANCE.get(args.dtype, 1e-3)
    try:
        if "torch" in fns:
            got = to_host(fns["convkit"]())
            expected = to_host(fns["torch"]())
            rec["check_against"] = "torch"
            err = bench.relative_error(got, expected)
        elif not args.no_reference:
            rec["check_against"] = "reference (first image)"
            err = _reference_check(case)
        else:
            err = None
        if err is not None:
            rec["max_relative_error"] = err
            rec["check"] = "ok" if err <= tol else "BAD"
    except Exception as e:
        rec["error"] = f"check failed: {type(e).__name__}: {e}"
    del case, fns
    cupy.get_default_memory_pool().free_all_blocks()
    return rec


# --------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------

def header_lines(mode: str, date: str, machine: dict, versions: dict, torch_note: Optional[str],
                 dtype: str, settings: dict) -> List[str]:
    cc = machine.get("compute_capability")
    peak = machine.get("peak_gflops")
    lines = [
        f"convkit bench ({mode}, cuda, {dtype})  {date}",
        f"GPU: {machine['gpu']} (compute capability {cc}, {machine.get('sm_count')} SMs, "
        f"{_num(machine.get('memory_gib'), '.0f')} GiB) | driver {machine.get('driver') or '?'} "
        f"(CUDA {machine.get('driver_cuda_version') or '?'}) | runtime {machine.get('runtime_cuda_version') or '?'} "
        f"| NVRTC {machine.get('nvrtc_version') or '?'}",
        f"precision: {precision_label(dtype)}"
        + (f" | cudnn.benchmark {'on' if settings.get('torch.backends.cudnn.benchmark') else 'off'}"
           if settings else ""),
        f"FP32 peak: {_num(None if peak is None else peak / 1e3, '.1f')} TFLOP/s [{machine['peak_method']}]",
        f"device copy: {_num(machine.get('copy_gbps'), '.0f')} GB/s [{machine.get('copy_method')}]"
        + (f" | theoretical memory bandwidth {machine['theoretical_memory_gbps']:.0f} GB/s"
           if machine.get("theoretical_memory_gbps") else ""),
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v)
        + (f" | torch {torch_note}" if torch_note else ""),
        "time: CUDA events on one stream, convkit and torch interleaved, medians; rate: GFLOP/s (conv; bwd = "
        "grad_x + grad_w, 2x fwd FLOPs) or GB/s read+written (pooling); eff: % of FP32 peak or of the copy "
        "bandwidth; vs torch: time torch / time convkit; MiB: peak extra GPU memory of one call",
    ]
    return lines


def _num(v, spec):
    return "?" if v is None else format(v, spec)


def _list(layers) -> int:
    for layer in layers:
        print(f"{layer.name:36s} {layer.kind:4s} N={gpu_batch(layer, False):<5d} "
              f"(quick {gpu_batch(layer, True):<4d}) {layer.describe()}")
    return 0


def run(args) -> int:
    layers = bench.SUITES[getattr(args, "suite", "main")]
    if args.list:
        return _list(layers)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("convkit bench: --plot needs matplotlib, which is not installed "
                  "(pip install matplotlib, or pip install 'convkit[bench]')", file=sys.stderr)
            return 2
    items = bench._selected(args.filter, layers)
    if not items:
        print(f"convkit bench: no item matches --filter {args.filter}; see --list", file=sys.stderr)
        return 2
    try:
        cupy = require_cuda()
        import convkit.cuda
        if not convkit.cuda.available():
            raise CudaUnavailable("--device cuda: convkit.cuda.available() is False")
    except CudaUnavailable as e:
        print(f"convkit bench: {e}", file=sys.stderr)
        return 2

    device = cupy.cuda.runtime.getDevice()
    torch, torch_note, settings = setup_torch(args)
    machine = describe_device(cupy, device)
    stream = cupy.cuda.Stream(non_blocking=True)
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    info = bench.convkit_info() if _has_native() else {"version": _convkit_version()}
    versions = {
        "convkit": info.get("version"), "cupy": cupy.__version__, "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "torch_cuda": None if torch is None else torch.version.cuda,
        "cudnn": None if torch is None else torch.backends.cudnn.version(),
        "python": platform.python_version(),
    }
    mode = "quick" if args.quick else "full"
    torch_ctx = torch_stream(torch, stream) if torch is not None else _null()
    results = []
    with stream, torch_ctx:
        copy, copy_method, copy_detail = measure_copy_gbps(cupy, stream)
        machine.update({"copy_gbps": copy, "copy_method": copy_method, **copy_detail})
        peak = machine.get("peak_gflops")
        header = header_lines(mode, date, machine, versions, torch_note, args.dtype, settings)
        print("\n".join(header))
        sys.stdout.flush()
        progress = bench.Progress(len(items), enabled=None if not args.no_progress else False)
        t_start = time.perf_counter()
        for i, (layer, pass_) in enumerate(items):
            progress.update(i, f"{layer.name}:{pass_}")
            results.append(run_item(layer, pass_, args, torch=torch, stream=stream, peak=peak, copy=copy))
        progress.update(len(items), "done")
        progress.close()
        elapsed = time.perf_counter() - t_start

    print()
    shown = [r for r in results if not r.get("skipped")]
    print(bench.format_table(shown, memory=True))
    for r in results:
        if r.get("skipped"):
            print(f"skipped {r['layer']}:{r['pass']}: {r['skipped']}")
        if r.get("error"):
            print(f"error in {r['layer']}:{r['pass']}: {r['error']}")
        if r.get("memory_error"):
            print(f"memory measurement failed in {r['layer']}:{r['pass']}: {r['memory_error']}")
    summary = bench.summarize(results)
    print()
    text = bench.format_summary(summary)
    if text:
        print(text)
    print(f"{len(results)} items in {elapsed:.1f} s")

    if args.json:
        doc = {
            "schema": 1, "tool": "convkit bench", "device": "cuda", "date": date, "mode": mode,
            "suite": getattr(args, "suite", "main"),
            "dtype": args.dtype, "precision": precision_label(args.dtype), "torch_settings": settings,
            "machine": machine, "versions": versions, "convkit_info": info,
            "options": {k: v for k, v in vars(args).items() if k != "func"},
            "elapsed_s": elapsed, "summary": summary, "results": results,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
            f.write("\n")
        print(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"# convkit bench ({mode}, cuda, {args.dtype}), {machine['gpu']}, {date[:10]}\n\n")
            f.write("\n".join(f"- {line}" for line in header[1:]) + "\n")
            f.write(f"- {len(results)} items in {elapsed:.0f} s\n")
            f.write("\n" + bench.format_table(shown, markdown=True, memory=True) + "\n\n")
            f.write("\n".join(f"- {line}" for line in text.splitlines()) + "\n")
            cmd = "convkit bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
            if cmd:
                f.write(f"\nCommand: `{cmd}`\n")
        print(f"wrote {args.markdown}")
    if args.plot:
        bench.write_plot(args.plot, results, f"convkit {versions['convkit']} vs torch {versions['torch']} "
                         f"(cuDNN), {machine['gpu']}, {precision_label(args.dtype)[:16]}, {mode}")
        print(f"wrote {args.plot}")
    return 1 if summary["errors"] or summary["bad_checks"] else 0


def _has_native() -> bool:
    try:
        from convkit import _C  # noqa: F401
        return True
    except Exception:
        return False


def _convkit_version() -> str:
    import convkit
    return getattr(convkit, "__version__", "unknown")


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
