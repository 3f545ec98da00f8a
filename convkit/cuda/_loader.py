"""Kernel sources, NVRTC compilation and the per-(source, dtype, options, device) module cache.

The ``.cu`` files next to this module are self-contained except for
``#include "common.cuh"``, which is pasted in textually (so NVRTC needs no
include path and the text CuPy hashes for its on-disk cache is the whole
program). The scalar type is chosen with ``-DSCALAR_KIND=`` (0 float16,
1 float32, 2 float64).
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from pathlib import Path

import numpy as np

_DIR = Path(__file__).resolve().parent

SOURCES = ("pool2d.cu", "conv2d.cu")
SCALAR_KINDS = {"float16": 0, "float32": 1, "float64": 2}
BASE_OPTIONS = ("--std=c++17",)

_INCLUDE = re.compile(r'^\s*#include\s+"common\.cuh"\s*$', re.M)
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(')


def read_source(name: str) -> str:
    """The full program text of one .cu file (common.cuh pasted in)."""
    text = (_DIR / name).read_text()
    common = (_DIR / "common.cuh").read_text()
    return _INCLUDE.sub(lambda _: common, text)


@functools.lru_cache(maxsize=None)
def _source_and_digest(name: str):
    """read_source once per process (the installed files do not change), with
    its SHA-1: kernel launches must not re-read and re-hash the files."""
    src = read_source(name)
    return src, hashlib.sha1(src.encode()).hexdigest()


def kernel_names(name: str):
    return _KERNEL.findall((_DIR / name).read_text())


def dtype_name(dtype) -> str:
    dt = np.dtype(dtype)
    if dt.name not in SCALAR_KINDS:
        raise TypeError(f"convkit.cuda: dtype {dt} is not supported; accepted dtypes are float16, float32 and float64")
    return dt.name


def options_for(dtype) -> tuple:
    return BASE_OPTIONS + (f"-DSCALAR_KIND={SCALAR_KINDS[dtype_name(dtype)]}",)


# ------------------------------------------------------------ run time ---

_lock = threading.Lock()
_modules = {}
_kernels = {}


def _device_id() -> int:
    import cupy
    return cupy.cuda.runtime.getDevice()


def get_module(name: str, dtype):
    """cupy.RawModule for source ``name`` and ``dtype`` on the current device,
    compiled on first use and cached per (source text, dtype, options, device)."""
    import cupy

    src, digest = _source_and_digest(name)
    opts = options_for(dtype)
    key = (name, digest, dtype_name(dtype), opts, _device_id())
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                mod = cupy.RawModule(code=src, options=opts)
                _modules[key] = mod
    return mod


def get_kernel(name: str, kernel: str, dtype):
    """The kernel ``kernel`` of source ``name`` for ``dtype`` on the current
    device (a dictionary look-up after the first call)."""
    key = (name, kernel, np.dtype(dtype).name, _device_id())
    fn = _kernels.get(key)
    if fn is None:
        fn = get_module(name, dtype).get_function(kernel)
        _kernels[key] = fn
    return fn


# ------------------------------------------------- offline compilation ---

def compile_source(name: str, dtype, arch: str = "sm_90", extra_options=()):
    """Compile one source with NVRTC for ``arch`` (sm_XX -> cubin, compute_XX
    -> PTX) without needing a GPU or a driver. Returns (ok, log, binary)."""
    from cupy_backends.cuda.libs import nvrtc

    src = read_source(name)
    opts = list(options_for(dtype)) + [f"-arch={arch}"] + list(extra_options)
    prog = nvrtc.createProgram(src, name, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, opts)
        except nvrtc.NVRTCError:
            return False, nvrtc.getProgramLog(prog), b""
        log = nvrtc.getProgramLog(prog)
        binary = nvrtc.getCUBIN(prog) if arch.startswith("sm_") else nvrtc.getPTX(prog)
        if isinstance(binary, str):
            binary = binary.encode()
        return True, log, binary
    finally:
        nvrtc.destroyProgram(prog)
