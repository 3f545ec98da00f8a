"""Registers, spills and shared memory of every CUDA kernel, per architecture and dtype.

    python -m convkit.cuda.report_resources                  # sm_80 and sm_90, all dtypes, NVRTC
    python -m convkit.cuda.report_resources --arch sm_90 --dtype float32 --compiler nvcc
    python -m convkit.cuda.report_resources --json resources.json

Compiles each ``.cu`` source exactly as the run-time loader does (common.cuh
pasted in, ``-DSCALAR_KIND``), with ptxas in verbose mode: through NVRTC
(``--ptxas-options=-v``, the compiler CuPy uses at run time; the default) or
through ``nvcc -cubin -Xptxas -v``. No GPU is needed. Prints one row per
kernel: registers per thread, spill stores/loads and stack frame (bytes),
static shared memory, barriers, and the occupancy those allow for the
kernel's launch block (256 threads) on that architecture. Exits 1 if a
source fails to compile or a kernel spills (``--allow-spills`` to exit 0).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

from . import _loader

BLOCK_THREADS = 256  # every kernel is launched with 256 threads (convkit/cuda/_ops.py)

# Per-SM limits used for the occupancy column.
_ARCH_LIMITS = {
    # arch: (registers per SM, max threads per SM, max blocks per SM, shared memory per SM usable by blocks)
    "sm_80": (65536, 2048, 32, 164 * 1024),
    "sm_86": (65536, 1536, 16, 100 * 1024),
    "sm_89": (65536, 1536, 24, 100 * 1024),
    "sm_90": (65536, 2048, 32, 228 * 1024),
}

_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_PROPS = re.compile(r"Function properties for (\w+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_BARRIERS = re.compile(r"used (\d+) barriers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(log: str) -> Dict[str, dict]:
    """{kernel: {"registers", "spill_stores", "spill_loads", "stack", "smem", "barriers"}}
    from a ``ptxas -v`` log (entry functions only)."""
    out: Dict[str, dict] = {}
    current: Optional[str] = None   # entry function being compiled
    props_for: Optional[str] = None  # function whose properties the next frame line gives
    for line in log.splitlines():
        m = _ENTRY.search(line)
        if m:
            current = m.group(1)
            out[current] = {"registers": None, "spill_stores": 0, "spill_loads": 0, "stack": 0,
                            "smem": 0, "barriers": 0}
            continue
        m = _PROPS.search(line)
        if m:
            props_for = m.group(1)
            continue
        m = _FRAME.search(line)
        if m and props_for is not None and props_for in out:
            rec = out[props_for]
            rec["stack"], rec["spill_stores"], rec["spill_loads"] = (int(v) for v in m.groups())
            continue
        m = _USED.search(line)
        if m and current is not None:
            rec = out[current]
            rec["registers"] = int(m.group(1))
            b, sm = _BARRIERS.search(line), _SMEM.search(line)
            rec["barriers"] = int(b.group(1)) if b else 0
            rec["smem"] = int(sm.group(1)) if sm else 0
    return out


def occupancy(arch: str, registers: Optional[int], smem: int, threads: int = BLOCK_THREADS) -> Optional[dict]:
    """Blocks per SM and the fraction of the SM's threads they keep resident
    (register allocation in 256-register units per warp), or None for an
    architecture without a table entry."""
    if arch not in _ARCH_LIMITS or registers is None:
        return None
    regs_sm, threads_sm, blocks_sm, smem_sm = _ARCH_LIMITS[arch]
    warps = -(-threads // 32)
    regs_per_warp = -(-max(registers, 1) * 32 // 256) * 256
    by_regs = (regs_sm // regs_per_warp) // warps
    by_threads = threads_sm // (warps * 32)
    by_smem = smem_sm // (smem + 1024) if smem else blocks_sm  # 1 KiB reserved per block (sm_80+)
    blocks = max(0, min(by_regs, by_threads, by_smem, blocks_sm))
    limit = min((by_regs, "registers"), (by_threads, "threads"), (by_smem, "shared memory"),
                (blocks_sm, "blocks"), key=lambda t: t[0])[1]
    return {"blocks_per_sm": blocks, "occupancy": blocks * warps * 32 / threads_sm, "limited_by": limit}


def _compile_nvrtc(src: str, dtype: str, arch: str):
    ok, log, _ = _loader.compile_source(src, dtype, arch, ["--ptxas-options=-v"])
    return ok, log


def _compile_nvcc(src: str, dtype: str, arch: str, nvcc: str):
    text = _loader.read_source(src)
    opts = [o for o in _loader.options_for(dtype) if not o.startswith("--std")]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, src)
        with open(path, "w") as f:
            f.write(text)
        cmd = [nvcc, "-std=c++17", "-cubin", f"-arch={arch}", "-Xptxas", "-v", *opts, path,
               "-o", os.path.join(tmp, "out.cubin")]
        p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode == 0, p.stdout + p.stderr


def collect(archs: List[str], dtypes: List[str], compiler: str = "nvrtc") -> dict:
    """{"compiler", "rows": [...], "failures": [...]}; one row per (arch, dtype, source, kernel)."""
    nvcc = None
    if compiler == "nvcc":
        nvcc = shutil.which("nvcc")
        if nvcc is None:
            raise RuntimeError("nvcc is not on PATH (use --compiler nvrtc)")
    rows, failures = [], []
    for arch in archs:
        for dtype in dtypes:
            for src in _loader.SOURCES:
                if compiler == "nvcc":
                    ok, log = _compile_nvcc(src, dtype, arch, nvcc)
                else:
                    ok, log = _compile_nvrtc(src, dtype, arch)
                if not ok:
                    failures.append({"arch": arch, "dtype": dtype, "source": src, "log": log})
                    continue
                found = parse_ptxas_log(log)
                for kernel in _loader.kernel_names(src):
                    rec = found.get(kernel)
                    if rec is None:
                        failures.append({"arch": arch, "dtype": dtype, "source": src,
                                         "log": f"kernel {kernel} missing from the ptxas report"})
                        continue
                    row = {"arch": arch, "dtype": dtype, "source": src, "kernel": kernel, **rec}
                    occ = occupancy(arch, rec["registers"], rec["smem"])
                    if occ:
                        row.update(occ)
                    rows.append(row)
    return {"compiler": compiler, "block_threads": BLOCK_THREADS, "rows": rows, "failures": failures}


def format_table(report: dict) -> str:
    head = ["arch", "dtype", "kernel", "regs", "spill st", "spill ld", "stack", "smem", "bar",
            "blocks/SM", "occupancy"]
    lines = [head]
    for r in report["rows"]:
        occ = r.get("occupancy")
        lines.append([r["arch"], r["dtype"], r["kernel"], str(r["registers"]), str(r["spill_stores"]),
                      str(r["spill_loads"]), str(r["stack"]), str(r["smem"]), str(r["barriers"]),
                      "-" if occ is None else str(r["blocks_per_sm"]),
                      "-" if occ is None else f"{100 * occ:.0f}% ({r['limited_by']})"])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    right = {3, 4, 5, 6, 7, 8, 9}
    out = []
    for j, row in enumerate(lines):
        out.append("  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                             for i, c in enumerate(row)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m convkit.cuda.report_resources",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", nargs="+", default=["sm_80", "sm_90"], help="architectures (default sm_80 sm_90)")
    p.add_argument("--dtype", nargs="+", default=list(_loader.SCALAR_KINDS), choices=list(_loader.SCALAR_KINDS))
    p.add_argument("--compiler", choices=("nvrtc", "nvcc"), default="nvrtc",
                   help="NVRTC (what CuPy uses at run time; default) or nvcc")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--allow-spills", action="store_true", help="exit 0 even if a kernel spills")
    args = p.parse_args(argv)
    try:
        report = collect(args.arch, args.dtype, args.compiler)
    except Exception as e:  # no NVRTC / nvcc
        print(f"report_resources: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(f"convkit CUDA kernels: registers per thread, spills and stack (bytes per thread), static shared "
          f"memory (bytes per block), barriers; occupancy for {BLOCK_THREADS}-thread blocks "
          f"[compiler: {args.compiler}]")
    print(format_table(report))
    spills = [r for r in report["rows"] if r["spill_stores"] or r["spill_loads"]]
    for f in report["failures"]:
        print(f"FAILED {f['arch']} {f['dtype']} {f['source']}:\n{f['log']}", file=sys.stderr)
    if spills:
        print("spilling: " + ", ".join(f"{r['kernel']} ({r['arch']}, {r['dtype']})" for r in spills))
    else:
        print("no kernel spills")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    if report["failures"]:
        return 1
    return 1 if spills and not args.allow_spills else 0


if __name__ == "__main__":
    sys.exit(main())
