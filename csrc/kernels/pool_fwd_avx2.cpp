// pool_impl.h row kernels built with the avx2 flags (see CMakeLists.txt).
#include <immintrin.h>

#include "pool_impl.h"
#include "pool_isa.h"

namespace convkit {
namespace poolk {

void max_fwd_rows_avx2_f32(const PoolGeometry& g, const float* x, float* y, int64_t* i, int64_t r0, int64_t r1) {
    max_fwd_rows<float>(g, x, y, i, r0, r1);
}
void max_fwd_rows_avx2_f64(const PoolGeometry& g, const double* x, double* y, int64_t* i, int64_t r0,
                           int64_t r1) {
    max_fwd_rows<double>(g, x, y, i, r0, r1);
}
void avg_fwd_rows_avx2_f32(const PoolGeometry& g, bool cip, int64_t dov, const float* x, float* y, int64_t r0,
                           int64_t r1) {
    avg_fwd_rows<float>(g, cip, dov, x, y, r0, r1);
}
void avg_fwd_rows_avx2_f64(const PoolGeometry& g, bool cip, int64_t dov, const double* x, double* y, int64_t r0,
                           int64_t r1) {
    avg_fwd_rows<double>(g, cip, dov, x, y, r0, r1);
}

void avg_bwd_scatter_plane_avx2_f32(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, int64_t kw,
                                   int64_t sw, int64_t pw, const int64_t* hlo, const int64_t* hhi, const int64_t* ca,
                                   const int64_t* cb, const float* div, const float* gyp, float* gxp, float* d) {
    avg_bwd_scatter_plane<float>(in_h, in_w, out_h, out_w, kw, sw, pw, hlo, hhi, ca, cb, div, gyp, gxp, d);
}
void avg_bwd_s1_plane_avx2_f32(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, int64_t kw, int64_t pw,
                              int64_t rz, const int64_t* ha, const int64_t* hb, const float* div, const float* gyp,
                              float* gxp, float* D) {
    avg_bwd_s1_plane<float>(in_h, in_w, out_h, out_w, kw, pw, rz, ha, hb, div, gyp, gxp, D);
}
void avg_bwd_disjoint_rows_avx2_f32(int64_t in_w, int64_t out_w, int64_t ih0, int64_t ih1, const int64_t* oh_of,
                                   const int32_t* col, const float* div, const float* gyp, float* gxp, float* d) {
    avg_bwd_disjoint_rows<float>(in_w, out_w, ih0, ih1, oh_of, col, div, gyp, gxp, d);
}
void avg_bwd_scatter_plane_avx2_f64(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, int64_t kw,
                                   int64_t sw, int64_t pw, const int64_t* hlo, const int64_t* hhi, const int64_t* ca,
                                   const int64_t* cb, const double* div, const double* gyp, double* gxp, double* d) {
    avg_bwd_scatter_plane<double>(in_h, in_w, out_h, out_w, kw, sw, pw, hlo, hhi, ca, cb, div, gyp, gxp, d);
}
void avg_bwd_s1_plane_avx2_f64(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, int64_t kw, int64_t pw,
                              int64_t rz, const int64_t* ha, const int64_t* hb, const double* div, const double* gyp,
                              double* gxp, double* D) {
    avg_bwd_s1_plane<double>(in_h, in_w, out_h, out_w, kw, pw, rz, ha, hb, div, gyp, gxp, D);
}
void avg_bwd_disjoint_rows_avx2_f64(int64_t in_w, int64_t out_w, int64_t ih0, int64_t ih1, const int64_t* oh_of,
                                   const int32_t* col, const double* div, const double* gyp, double* gxp, double* d) {
    avg_bwd_disjoint_rows<double>(in_w, out_w, ih0, ih1, oh_of, col, div, gyp, gxp, d);
}

// plane_means<float> with intrinsics (the compiler's version of the tail and
// the pairwise combination cost ~3x the streaming loads on 7x7 planes). Same
// bits: element i goes into double lane i % 8 (lanes 0-3 in lo, 4-7 in hi),
// the tail is a masked load whose +0.0 fill leaves every lane unchanged (a
// lane that starts at +0.0 is never -0.0), and the lanes are combined as
// ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)).
void plane_means_avx2_f32(const float* x, int64_t plane, int64_t p0, int64_t p1, float* y) {
    const float n = static_cast<float>(plane);
    const int64_t full = plane / 8 * 8, rem = plane - full;
    const __m128i lane = _mm_setr_epi32(0, 1, 2, 3);
    const __m128i mask_lo = _mm_cmpgt_epi32(_mm_set1_epi32(int(rem)), lane);
    const __m128i mask_hi = _mm_cmpgt_epi32(_mm_set1_epi32(int(rem) - 4), lane);
    auto sum = [&](const float* xp) {
        // Ask for the lines a few planes ahead: one core's streaming loads
        // alone reached ~70% of what the hardware prefetcher gives a plain sum.
        for (int64_t o = 0; o < plane; o += 16) _mm_prefetch(reinterpret_cast<const char*>(xp + 1024 + o), _MM_HINT_T0);
        __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
        for (int64_t i = 0; i < full; i += 8) {
            lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm_loadu_ps(xp + i)));
            hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm_loadu_ps(xp + i + 4)));
        }
        if (rem > 0) {
            lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm_maskload_ps(xp + full, mask_lo)));
            hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm_maskload_ps(xp + full + 4, mask_hi)));
        }
        // [a0+a1, a4+a5, a2+a3, a6+a7] -> [(a0+a1)+(a2+a3), (a4+a5)+(a6+a7)]
        const __m256d pairs = _mm256_hadd_pd(lo, hi);
        return _mm_add_pd(_mm256_castpd256_pd128(pairs), _mm256_extractf128_pd(pairs, 1));
    };
    // Two planes per step: their sums and divisions overlap.
    int64_t p = p0;
    for (; p + 2 <= p1; p += 2) {
        const __m128d a = sum(x + p * plane), b = sum(x + (p + 1) * plane);
        const __m128d s = _mm_add_pd(_mm_unpacklo_pd(a, b), _mm_unpackhi_pd(a, b));
        const __m128 q = _mm_div_ps(_mm_cvtpd_ps(s), _mm_set1_ps(n));
        y[p] = _mm_cvtss_f32(q);
        y[p + 1] = _mm_cvtss_f32(_mm_shuffle_ps(q, q, 1));
    }
    if (p < p1) {
        const __m128d a = sum(x + p * plane);
        y[p] = static_cast<float>(_mm_cvtsd_f64(a) + _mm_cvtsd_f64(_mm_unpackhi_pd(a, a))) / n;
    }
}
void plane_means_avx2_f64(const double* x, int64_t plane, int64_t p0, int64_t p1, double* y) {
    plane_means<double>(x, plane, p0, p1, y);
}

}  // namespace poolk
}  // namespace convkit
