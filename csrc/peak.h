// Register-only FMA loop that measures the machine's FP32 peak for the SIMD
// path in use (convkit bench reports each layer as a percentage of it).
#pragma once
#include <cstdint>

namespace convkit {
// Runs `iterations` rounds of independent FMA chains (as many as the path's
// registers hold without spilling) on every thread and
// returns the FP32 GFLOP/s achieved (2 flops per lane per FMA).
double measure_fma_peak_gflops(int64_t iterations);

namespace kernels {
// Each returns the number of flops it performed; `sink` defeats dead-code elimination.
int64_t fma_loop_generic(int64_t iterations, float* sink);
int64_t fma_loop_avx2(int64_t iterations, float* sink);
int64_t fma_loop_avx512(int64_t iterations, float* sink);
}  // namespace kernels
}  // namespace convkit
