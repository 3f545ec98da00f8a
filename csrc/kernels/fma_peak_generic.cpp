// Portable multiply-add chains (SSE2 on x86-64 without FMA): the peak of the
// generic path, not of the machine. 12 chains of 4 lanes plus the 2 constants
// fit the 16 xmm registers.
#include "../peak.h"

namespace convkit::kernels {

int64_t fma_loop_generic(int64_t iterations, float* sink) {
    float acc[12][4];
    for (int i = 0; i < 12; ++i)
        for (int l = 0; l < 4; ++l) acc[i][l] = 0.001f * (i + l);
    const float a = 0.999999f, b = 1e-7f;
    for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; ++i)
#pragma GCC unroll 4
            for (int l = 0; l < 4; ++l) acc[i][l] = acc[i][l] * a + b;
    }
    for (int i = 0; i < 12; ++i) sink[i] += acc[i][0] + acc[i][1] + acc[i][2] + acc[i][3];
    return iterations * 12 * 4 * 2;
}

}  // namespace convkit::kernels
