#!/usr/bin/env bash
# One-call GPU check of convkit's CUDA backend, for a machine with an NVIDIA GPU
# (no network needed: its Python must already have numpy, torch (CUDA build),
# CuPy, pybind11, scikit-build-core, cmake/ninja and pytest).
#
#   bash bench/gpu_check.sh [--quick]        # from the repository root; OUT=folder for the results
#
# Steps (each logged with its exit status and duration; a failing step does not
# stop the next ones; the script exits non-zero if any step failed):
#   env        nvidia-smi, Python and package versions
#   build      pip install --no-build-isolation --no-deps .  (if it fails, later
#              steps run from the source tree: the CUDA path needs no C++ extension;
#              GPU_CHECK_SKIP_BUILD=1 skips it, e.g. for a rerun on the same machine)
#   resources  registers/spills/smem per kernel (NVRTC, and nvcc if present), sm_80 + sm_90
#   pytest     pytest -m cuda tests/test_cuda.py, then the other cuda-marked tests and
#              tests/test_interop.py (junit XML for each)
#   bench      convkit bench --device cuda --quick (float32), then without --quick:
#              the full float32 suite and a quick float16 run; with --quick only the
#              quick float32 run, written to $OUT/gpu-bench.json
# Everything lands in $OUT (default ./gpu-check-out): log.txt, summary.txt, *.json,
# *.md, junit-*.xml, nvidia-smi.txt, resources-*.txt. The whole run stays within
# GPU_CHECK_BUDGET_S seconds (default 470): each step's timeout is cut to what is left,
# and a step that does not fit is recorded as skipped.
set -u

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $arg (use --quick)" >&2; exit 2 ;;
    esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$REPO/gpu-check-out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/log.txt"
SUMMARY="$OUT/summary.txt"
BUDGET="${GPU_CHECK_BUDGET_S:-470}"
START=$(date +%s)
PY="${PYTHON:-$(command -v python3 || command -v python)}"
FAILED=0
: > "$SUMMARY"
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
export PYTHONUNBUFFERED=1

log() { echo "[gpu_check $(date +%H:%M:%S) +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

# step NAME LIMIT_S MIN_S CMD...: run CMD (output to the log and to $OUT/NAME.txt) with a
# timeout of min(LIMIT_S, time left); skip it when less than MIN_S seconds are left.
step() {
    local name="$1" limit="$2" min="$3"; shift 3
    local left=$(( BUDGET - ($(date +%s) - START) ))
    if (( left < min )); then
        log "SKIP $name: ${left}s left of the ${BUDGET}s budget (needs ${min}s)"
        echo "$name: skipped (budget)" >> "$SUMMARY"
        return 0
    fi
    (( limit > left )) && limit=$left
    log "BEGIN $name (timeout ${limit}s): $*"
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.txt" >> "$LOG"
    local rc=${PIPESTATUS[0]}
    local dt=$(( $(date +%s) - t0 ))
    if (( rc == 124 || rc == 137 )); then
        log "END $name: TIMEOUT after ${dt}s (rc $rc)"
    else
        log "END $name: rc $rc in ${dt}s"
    fi
    echo "$name: rc $rc, ${dt}s" >> "$SUMMARY"
    (( rc != 0 )) && FAILED=1
    return 0
}

cd "$REPO"
log "repository $REPO, OUT $OUT, python $PY, quick=$QUICK, budget ${BUDGET}s"

# ---------------------------------------------------------------- env ---
step nvidia-smi 30 5 nvidia-smi
ENV_PROBE="$(mktemp /tmp/convkit_env_probe.XXXXXX)"
cat > "$ENV_PROBE" <<'EOF'
import importlib, sys
print("python", sys.version.replace("\n", " "))
for name in ("numpy", "cupy", "torch", "pybind11", "scikit_build_core", "pytest", "cmake", "ninja"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"))
    except Exception as e:
        print(name, "MISSING:", type(e).__name__, e)
try:
    import cupy
    print("cupy devices", cupy.cuda.runtime.getDeviceCount(), "runtime", cupy.cuda.runtime.runtimeGetVersion(),
          "driver", cupy.cuda.runtime.driverGetVersion(), "nvrtc", cupy.cuda.nvrtc.getVersion())
except Exception as e:
    print("cupy device query failed:", type(e).__name__, e)
try:
    import torch
    print("torch cuda", torch.version.cuda, "available", torch.cuda.is_available(),
          "cudnn", torch.backends.cudnn.version())
    if torch.cuda.is_available():
        print("torch device", torch.cuda.get_device_name(0))
except Exception as e:
    print("torch query failed:", type(e).__name__, e)
EOF
step env 60 5 bash -c "
    echo \"git: \$(git rev-parse HEAD 2>/dev/null || echo 'no git metadata')\"
    git status --short 2>/dev/null | head -50
    uname -a; nproc; free -g 2>/dev/null | head -2
    command -v cmake >/dev/null && cmake --version | head -1
    command -v nvcc >/dev/null && nvcc --version | tail -2
    '$PY' '$ENV_PROBE'"

# -------------------------------------------------------------- build ---
if [[ "${GPU_CHECK_SKIP_BUILD:-0}" == 1 ]]; then
    log "SKIP build (GPU_CHECK_SKIP_BUILD=1): using whatever convkit is installed"
    echo "build: skipped (GPU_CHECK_SKIP_BUILD=1)" >> "$SUMMARY"
else
    step build 300 60 "$PY" -m pip install --no-build-isolation --no-deps .
fi
if (cd /tmp && "$PY" -c "import convkit, convkit.cuda, convkit.bench_cuda; from convkit import _C" >/dev/null 2>&1); then
    log "using the installed convkit: $(cd /tmp && "$PY" -c 'import convkit; print(convkit.__file__)')"
    CK=(convkit)
    command -v convkit >/dev/null || CK=("$PY" -m convkit)
    RUNDIR=/tmp
else
    log "WARNING: no working installed convkit (build failed?): running from the source tree (PYTHONPATH=$REPO); CPU kernels unavailable"
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    CK=("$PY" -m convkit)
    RUNDIR="$REPO"
    echo "build: installed package unusable, source tree used" >> "$SUMMARY"
    FAILED=1
fi

# ---------------------------------------------------------- resources ---
step resources-nvrtc 90 20 bash -c "cd '$RUNDIR' && '$PY' -m convkit.cuda.report_resources --allow-spills --json '$OUT/resources-nvrtc.json'"
if command -v nvcc >/dev/null; then
    step resources-nvcc 90 30 bash -c "cd '$RUNDIR' && '$PY' -m convkit.cuda.report_resources --compiler nvcc --allow-spills --json '$OUT/resources-nvcc.json'"
fi

# ------------------------------------------------------------- pytest ---
# From the repository root, without the current directory on sys.path (PYTHONSAFEPATH,
# Python >= 3.11), so that the tests import the installed package (see README).
export PYTHONSAFEPATH=1
step pytest-cuda 240 60 "$PY" -m pytest -m cuda -q -rs tests/test_cuda.py --junitxml="$OUT/junit-cuda.xml" -p no:cacheprovider
step pytest-cuda-rest 120 30 "$PY" -m pytest -q -rs tests/test_interop.py tests/test_torch_adapter.py \
    -k "cuda or interop" --junitxml="$OUT/junit-cuda-rest.xml" -p no:cacheprovider

# -------------------------------------------------------------- bench ---
if (( QUICK )); then
    step bench-quick 240 45 bash -c "cd '$RUNDIR' && ${CK[*]} bench --device cuda --quick --no-progress \
        --json '$OUT/gpu-bench.json' --markdown '$OUT/gpu-bench.md'"
else
    step bench-quick 180 45 bash -c "cd '$RUNDIR' && ${CK[*]} bench --device cuda --quick --no-progress \
        --json '$OUT/gpu-bench-quick.json' --markdown '$OUT/gpu-bench-quick.md'"
    step bench-full 240 120 bash -c "cd '$RUNDIR' && ${CK[*]} bench --device cuda --no-progress \
        --json '$OUT/gpu-bench.json' --markdown '$OUT/gpu-bench.md'"
    step bench-quick-fp16 120 45 bash -c "cd '$RUNDIR' && ${CK[*]} bench --device cuda --quick --dtype float16 \
        --no-progress --json '$OUT/gpu-bench-fp16-quick.json' --markdown '$OUT/gpu-bench-fp16-quick.md'"
fi

log "done in $(( $(date +%s) - START ))s; summary:"
tee -a "$LOG" < "$SUMMARY"
if (( FAILED )); then
    log "RESULT: some step failed (see above and $LOG)"
    exit 1
fi
log "RESULT: all steps passed"
exit 0
