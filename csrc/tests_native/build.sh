#!/bin/sh
# Build the native conv test harness by hand (CMake does not build it).
# Usage: csrc/tests_native/build.sh [OUT] [extra flags, e.g. -fsanitize=address,undefined -g]
set -e
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/conv_test}
[ $# -gt 0 ] && shift
CXX=${CXX:-g++}
FLAGS="-O2 -std=c++17 -fopenmp -Icsrc -DCONVKIT_HAVE_AVX2=1 -DCONVKIT_HAVE_AVX512=1 $*"
TMP=$(mktemp -d)
$CXX $FLAGS -mavx2 -mfma -c csrc/kernels/gemm_6x16_avx2.cpp -o "$TMP/avx2.o"
$CXX $FLAGS -mavx512f -mavx512vl -mavx512bw -mavx512dq -mavx2 -mfma \
    -c csrc/kernels/gemm_8x32_avx512.cpp -o "$TMP/avx512.o"
$CXX $FLAGS csrc/tests_native/conv_test.cpp csrc/conv2d.cpp csrc/gemm.cpp \
    csrc/kernels/gemm_4x8_generic.cpp csrc/parallel.cpp csrc/cpu_features.cpp \
    "$TMP/avx2.o" "$TMP/avx512.o" -o "$OUT"
rm -rf "$TMP"
echo "built $OUT"
