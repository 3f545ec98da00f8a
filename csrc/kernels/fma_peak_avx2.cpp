// 12 independent 8-wide FMA chains: enough to cover FMA latency (4-5 cycles)
// on 2 ports, and with the 2 constants they fit the 16 ymm registers (16
// chains spilled one accumulator and measured ~57% of the real peak on Zen 3).
#include <immintrin.h>

#include "../peak.h"

namespace convkit::kernels {

int64_t fma_loop_avx2(int64_t iterations, float* sink) {
    __m256 acc[12];
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    }
    for (int i = 0; i < 12; ++i) sink[i] += _mm256_cvtss_f32(acc[i]);
    return iterations * 12 * 8 * 2;
}

}  // namespace convkit::kernels
