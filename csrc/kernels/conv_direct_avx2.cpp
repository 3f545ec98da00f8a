// Direct-convolution tiles, AVX2+FMA: 8 channels per vector; up to 12 pixels x
// 1 vector or 6 pixels x 2 vectors of accumulators (see conv_direct_impl.h).
// Per-pixel tiles (6 x 2: 12 accumulators, 6 base pointers in general
// registers) keep narrow planes on full tiles: on Zen 3 a 6-pixel tile ran
// ~1.25x the FMA rate of the 5- and 4-pixel row tiles of 14- and 7-wide rows.
#include <immintrin.h>

#include <utility>

#include "conv_direct_impl.h"
#include "gemm.h"

namespace convkit {
namespace {
struct V256 {
    using reg = __m256;
    static constexpr int lane_acc = 12;
    static constexpr int lanes = 8, max_pw1 = 12, max_pw2 = 6, max_px2 = 6;
    static reg load(const float* p) { return _mm256_loadu_ps(p); }
    static reg zero() { return _mm256_setzero_ps(); }
    static reg set1(float v) { return _mm256_set1_ps(v); }
    static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
    static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
};
}  // namespace

// Pointwise tiles: 6 output channels x 16 pixels (12 accumulators).
const DirectConvKernel direct_conv_avx2 = {8,  12, 6, 6, &dconv::tile_for<V256>, &dconv::store_channels,
                                           &dconv::gather_channels, 6, 16, &dconv::pointwise_tile<V256, 6, 2>,
                                           V256::lane_acc,
                                           &dconv::lane_tile_for<V256>};

}  // namespace convkit
