#!/bin/sh
# Build the native conv test harness by hand (CMake does not build it).
# Usage: csrc/tests_native/build.sh [OUT] [extra flags, e.g. -fsanitize=address,undefined -g]
set -e
cd "$(dirname "$0")/../.."
OUT=/tmp/conv_test
case "${1:-}" in
    -*|"") ;;
    *) OUT=$1; shift ;;
esac
CXX=${CXX:-g++}
FLAGS="-O3 -fno-math-errno -std=c++17 -fopenmp -Icsrc -DCONVKIT_HAVE_AVX2=1 -DCONVKIT_HAVE_AVX512=1 $*"
TMP=$(mktemp -d)
for f in csrc/kernels/gemm_*_avx2.cpp csrc/kernels/dwconv_avx2.cpp csrc/kernels/conv_direct_avx2.cpp; do
    $CXX $FLAGS -mavx2 -mfma -c "$f" -o "$TMP/$(basename "$f" .cpp).o"
done
for f in csrc/kernels/gemm_*_avx512.cpp csrc/kernels/dwconv_avx512.cpp csrc/kernels/conv_direct_avx512.cpp; do
    $CXX $FLAGS -mavx512f -mavx512vl -mavx512bw -mavx512dq -mavx2 -mfma -c "$f" -o "$TMP/$(basename "$f" .cpp).o"
done
$CXX $FLAGS csrc/tests_native/conv_test.cpp csrc/conv2d.cpp csrc/conv2d_depthwise.cpp csrc/gemm.cpp \
    csrc/kernels/gemm_*_generic.cpp csrc/kernels/dwconv_generic.cpp csrc/parallel.cpp csrc/cpu_features.cpp \
    "$TMP"/*.o -o "$OUT"
rm -rf "$TMP"
echo "built $OUT"
