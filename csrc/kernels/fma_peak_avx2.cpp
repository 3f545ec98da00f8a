// 16 independent 8-wide FMA chains: enough to cover FMA latency on 2 ports.
#include <immintrin.h>

#include "../peak.h"

namespace convkit::kernels {

int64_t fma_loop_avx2(int64_t iterations, float* sink) {
    __m256 acc[16];
    for (int i = 0; i < 16; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    }
    for (int i = 0; i < 16; ++i) sink[i] += _mm256_cvtss_f32(acc[i]);
    return iterations * 16 * 8 * 2;
}

}  // namespace convkit::kernels
