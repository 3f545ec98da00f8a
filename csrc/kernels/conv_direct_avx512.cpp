// Direct-convolution tiles, AVX-512: 16 channels per vector; up to 24 pixels x
// 1 vector or 14 pixels x 2 vectors of accumulators (see conv_direct_impl.h).
#include <immintrin.h>

#include <utility>

#include "conv_direct_impl.h"
#include "gemm.h"

namespace convkit {
namespace {
struct V512 {
    using reg = __m512;
    static constexpr int lanes = 16, max_pw1 = 24, max_pw2 = 14;
    // No per-pixel tiles: 14 base pointers would not stay in registers.
    static constexpr int max_px2 = 0;
    static constexpr int lane_acc = 24;
    static reg load(const float* p) { return _mm512_loadu_ps(p); }
    static reg zero() { return _mm512_setzero_ps(); }
    static reg set1(float v) { return _mm512_set1_ps(v); }
    static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
    static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
};
}  // namespace

// Pointwise tiles: 12 output channels x 32 pixels (24 accumulators).
const DirectConvKernel direct_conv_avx512 = {16, 24, 14, 0, &dconv::tile_for<V512>, &dconv::store_channels,
                                             &dconv::gather_channels, 12, 32, &dconv::pointwise_tile<V512, 12, 2>,
                                             V512::lane_acc,
                                             &dconv::lane_tile_for<V512>};

}  // namespace convkit
