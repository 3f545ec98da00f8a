// 16 independent 16-wide FMA chains: enough to cover FMA latency on 2 ports.
#include <immintrin.h>

#include "../peak.h"

namespace convkit::kernels {

int64_t fma_loop_avx512(int64_t iterations, float* sink) {
    __m512 acc[16];
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
    for (int i = 0; i < 16; ++i) sink[i] += _mm512_reduce_add_ps(acc[i]);
    return iterations * 16 * 16 * 2;
}

}  // namespace convkit::kernels
