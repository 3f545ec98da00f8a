#!/bin/sh
# Build the libFuzzer target csrc/tests_native/fuzz_entry.cpp with ASan+UBSan
# and every ISA path (like CMake does). Needs clang with libFuzzer (Debian:
# apt-get install clang); OpenMP comes from gcc's libgomp, as in the package.
# Usage: csrc/tests_native/fuzz_build.sh [OUT] [extra flags]   (default OUT=/tmp/convkit_fuzz)
# Run:   mkdir -p /tmp/fuzz_corpus && ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=2048 \
#            /tmp/convkit_fuzz /tmp/fuzz_corpus -max_total_time=120 -timeout=20 -rss_limit_mb=4096 -max_len=256
set -e
cd "$(dirname "$0")/../.."
OUT=/tmp/convkit_fuzz
case "${1:-}" in
    -*|"") ;;
    *) OUT=$1; shift ;;
esac
CXX=${CXX:-clang++}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# gcc's omp.h alone (its other headers, e.g. the intrinsics, are not for clang)
mkdir "$T/inc" && ln -s "$(gcc -print-file-name=include)/omp.h" "$T/inc/omp.h"
FLAGS="-O1 -g -std=c++17 -fopenmp=libgomp -I$T/inc -Icsrc -DCONVKIT_HAVE_AVX2=1 -DCONVKIT_HAVE_AVX512=1
       -DCONVKIT_POOL_SERIAL_WORK=0 -fno-omit-frame-pointer -fsanitize=address,undefined
       -fno-sanitize-recover=undefined $*"
for f in csrc/kernels/*_avx2.cpp; do
    case $f in *fma_peak*) continue ;; esac
    $CXX $FLAGS -fsanitize=fuzzer-no-link -mavx2 -mfma -c "$f" -o "$T/$(basename "$f" .cpp).o"
done
for f in csrc/kernels/*_avx512.cpp; do
    case $f in *fma_peak*) continue ;; esac
    $CXX $FLAGS -fsanitize=fuzzer-no-link -mavx512f -mavx512vl -mavx512bw -mavx512dq -mavx2 -mfma \
        -c "$f" -o "$T/$(basename "$f" .cpp).o"
done
GENERIC=$(ls csrc/kernels/*_generic.cpp | grep -v fma_peak)
$CXX $FLAGS -fsanitize=fuzzer csrc/tests_native/fuzz_entry.cpp csrc/geometry.cpp csrc/conv2d.cpp \
    csrc/conv2d_depthwise.cpp csrc/gemm.cpp csrc/pool2d.cpp csrc/parallel.cpp csrc/cpu_features.cpp \
    $GENERIC "$T"/*.o -o "$OUT"
echo "built $OUT"
