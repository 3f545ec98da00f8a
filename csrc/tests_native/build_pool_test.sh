#!/bin/sh
# Build the native pool harness with all ISA paths (like CMake does).
# Usage: csrc/tests_native/build_pool_test.sh [output] [extra flags, e.g. -fsanitize=address,undefined]
set -e
cd "$(dirname "$0")/../.."
OUT=${1:-/tmp/pool_test}
shift || true
FLAGS="-O2 -g -std=c++17 -fopenmp -Icsrc -DCONVKIT_HAVE_AVX2=1 -DCONVKIT_HAVE_AVX512=1 -DCONVKIT_POOL_SERIAL_WORK=0 $*"
T=$(mktemp -d)
g++ $FLAGS -c csrc/kernels/pool_fwd_avx2.cpp -mavx2 -mfma -o $T/a2.o
g++ $FLAGS -c csrc/kernels/pool_fwd_avx512.cpp -mavx512f -mavx512vl -mavx512bw -mavx512dq -mavx2 -mfma -o $T/a5.o
g++ $FLAGS csrc/tests_native/pool_test.cpp csrc/pool2d.cpp csrc/parallel.cpp csrc/cpu_features.cpp $T/a2.o $T/a5.o -o "$OUT"
rm -rf $T
