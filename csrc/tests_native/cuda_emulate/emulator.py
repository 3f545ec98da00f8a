"""Runs convkit/cuda/_ops.py on NumPy arrays through a CPU build of the .cu
kernels (emulate.h), for checking the kernels' index arithmetic without a GPU.

build(dtype) compiles the kernel sources as C++ with g++ (one shared library
per scalar kind, cached by source hash under a temp directory) and generates a
C wrapper per kernel; EmulatedRuntime implements the runtime interface of
_ops (empty/full/launch/scalar/cap_grid). The grid is capped (default 3x2x2
blocks) so that the grid-stride loops of every kernel are exercised.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from convkit.cuda import _loader

HERE = Path(__file__).resolve().parent
_SIG = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(([^)]*)\)', re.S)
_KIND = {"float32": 1, "float64": 2}
_libs = {}


def _params(text):
    out = []
    for p in text.split(","):
        p = " ".join(p.replace("__restrict__", "").split())
        m = re.match(r"(.*?)(\w+)$", p)
        out.append((m.group(1).strip(), m.group(2)))
    return out


def _ctype(t):
    if "*" in t:
        return ctypes.c_void_p
    return {"i64": ctypes.c_int64, "int": ctypes.c_int32, "double": ctypes.c_double}[t.replace("const ", "")]


def build(dtype):
    name = np.dtype(dtype).name
    if name in _libs:
        return _libs[name]
    kind = _KIND[name]
    parts = ['#include "emulate.h"', f"#define SCALAR_KIND {kind}"]
    wrappers, sigs = [], {}
    for src in _loader.SOURCES:
        text = _loader.read_source(src)
        parts.append(f"namespace k_{src.split('.')[0]} {{\n{text}\n}}")
        for kname, ptext in _SIG.findall(text):
            params = _params(ptext)
            sigs[kname] = [_ctype(t) for t, _ in params]
            decl = ", ".join(f"{t} {n}" for t, n in params)
            call = ", ".join(n for _, n in params)
            ns = f"k_{src.split('.')[0]}"
            wrappers.append(f'extern "C" void emu_{kname}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, {decl}) '
                            f'{{ emu_launch({ns}::{kname}, emu_dim3{{gx, gy, gz}}, bx, {call}); }}')
    code = "\n".join(parts + wrappers).replace('extern "C" __global__', "__global__")
    # typedefs inside the namespaces need i64 for the wrapper signatures
    code = code.replace('#include "emulate.h"', '#include "emulate.h"\ntypedef long long i64;\n'
                        'typedef ' + ("float" if kind == 1 else "double") + ' scalar_t;\ntypedef '
                        + ("float" if kind == 1 else "double") + ' acc_t;', 1)
    digest = hashlib.sha1(code.encode() + (HERE / "emulate.h").read_bytes()).hexdigest()[:16]
    out_dir = Path(tempfile.gettempdir()) / "convkit_cuda_emulate"
    out_dir.mkdir(exist_ok=True)
    lib = out_dir / f"emu_{name}_{digest}.so"
    if not lib.exists():
        cpp = out_dir / f"emu_{name}_{digest}.cpp"
        cpp.write_text(code)
        tmp = out_dir / f"emu_{name}_{digest}.{os.getpid()}.so"
        subprocess.run(["g++", "-std=c++17", "-O1", "-fPIC", "-shared", "-pthread", "-fno-fast-math",
                        "-ffp-contract=off", "-I", str(HERE), str(cpp), "-o", str(tmp)], check=True)
        os.replace(tmp, lib)
    handle = ctypes.CDLL(str(lib))
    for kname, types in sigs.items():
        f = getattr(handle, f"emu_{kname}")
        f.argtypes = [ctypes.c_uint] * 4 + types
        f.restype = None
    _libs[name] = handle
    return handle


class EmulatedRuntime:
    def __init__(self, max_grid=(3, 2, 2)):
        self.max_grid = max_grid

    def empty(self, shape, dtype):
        # NaN-filled so that an output element a kernel forgets to write shows up.
        dt = np.dtype(dtype)
        if dt.kind == "f":
            return np.full(shape, np.nan, dtype=dt)
        return np.full(shape, -7, dtype=dt)

    def full(self, shape, value, dtype):
        return np.full(shape, value, dtype=dtype)

    def launch(self, source, kernel, dtype, grid, block, args):
        lib = build(dtype)
        cargs = [a.ctypes.data if isinstance(a, np.ndarray) else a.item() for a in args]
        getattr(lib, f"emu_{kernel}")(*[int(v) for v in grid], int(block[0]), *cargs)

    def scalar(self, array, i):
        return int(array[int(i)])

    def cap_grid(self, grid):
        return tuple(max(1, min(g, m)) for g, m in zip(grid, self.max_grid))
