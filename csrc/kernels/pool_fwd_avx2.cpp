// pool_impl.h row kernels built with the avx2 flags (see CMakeLists.txt).
#include <immintrin.h>

#include <algorithm>
#include <limits>
#include <type_traits>

#include "pool_impl.h"
#include "pool_isa.h"

namespace convkit {
namespace poolk {
namespace {

// Float lanes of 8 (ymm) or 4 (xmm) outputs for max_row_avx2, with their
// window offsets in int32 lanes of the same width.
struct Ymm {
    using V = __m256;
    using O = __m256i;
    static constexpr int64_t W = 8;
    // q[i*SW], i < 8, SW in {1, 2}; never reads past q[7*SW].
    template <int SW>
    static V load(const float* q) {
        if (SW == 1) return _mm256_loadu_ps(q);
        // [q0 q2 q8 q10 | q4 q6 q12 q14] from q[0..7], q[7..14], then 64-bit lanes 0 2 1 3
        const __m256 t = _mm256_shuffle_ps(_mm256_loadu_ps(q), _mm256_loadu_ps(q + 7), 0xD8);
        return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), 0xD8));
    }
    static V take(V v, V m) {  // v > m, or v is NaN: PyTorch's update rule
        return _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    static V blend(V m, V v, V t) { return _mm256_blendv_ps(m, v, t); }
    static O oblend(O m, int32_t off, V t) {
        return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(m), _mm256_castsi256_ps(_mm256_set1_epi32(off)), t));
    }
    static O ozero() { return _mm256_setzero_si256(); }
    static V zero() { return _mm256_setzero_ps(); }
    static V add(V a, V b) { return _mm256_add_ps(a, b); }
    static V div(V a, float d) { return _mm256_div_ps(a, _mm256_set1_ps(d)); }
    static void store(float* y, V v) { _mm256_storeu_ps(y, v); }
    static void store_idx(int64_t* idx, int64_t b, int64_t sw, O mo) {
        const __m256i step = _mm256_mul_epi32(_mm256_setr_epi64x(0, 1, 2, 3), _mm256_set1_epi64x(sw));
        const __m256i lo = _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(mo)),
                                            _mm256_add_epi64(_mm256_set1_epi64x(b), step));
        const __m256i hi = _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(mo, 1)),
                                            _mm256_add_epi64(_mm256_set1_epi64x(b + 4 * sw), step));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx), lo);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + 4), hi);
    }
};

struct Xmm {
    using V = __m128;
    using O = __m128i;
    static constexpr int64_t W = 4;
    template <int SW>
    static V load(const float* q) {
        if (SW == 1) return _mm_loadu_ps(q);
        return _mm_shuffle_ps(_mm_loadu_ps(q), _mm_loadu_ps(q + 3), 0xD8);  // q0 q2 q4 q6
    }
    static V take(V v, V m) { return _mm_or_ps(_mm_cmpgt_ps(v, m), _mm_cmpunord_ps(v, v)); }
    static V blend(V m, V v, V t) { return _mm_blendv_ps(m, v, t); }
    static O oblend(O m, int32_t off, V t) {
        return _mm_castps_si128(_mm_blendv_ps(_mm_castsi128_ps(m), _mm_castsi128_ps(_mm_set1_epi32(off)), t));
    }
    static O ozero() { return _mm_setzero_si128(); }
    static V zero() { return _mm_setzero_ps(); }
    static V add(V a, V b) { return _mm_add_ps(a, b); }
    static V div(V a, float d) { return _mm_div_ps(a, _mm_set1_ps(d)); }
    static void store(float* y, V v) { _mm_storeu_ps(y, v); }
    static void store_idx(int64_t* idx, int64_t b, int64_t sw, O mo) {
        const __m256i step = _mm256_mul_epi32(_mm256_setr_epi64x(0, 1, 2, 3), _mm256_set1_epi64x(sw));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx),
                            _mm256_add_epi64(_mm256_cvtepi32_epi64(mo), _mm256_add_epi64(_mm256_set1_epi64x(b), step)));
    }
};

// NV vectors of W outputs (from outputs at[j]) of max_row_interior's row: the
// running maxima (and tap offsets) stay in registers over all taps, visited
// in the portable loop's order with its update rule: the same bits. NV
// independent vectors hide the latency of each one's compare-blend chain.
template <class S, int SW, int NV>
inline void max_vectors(const float* p, const int64_t* at, int64_t nrows, int64_t rstep, int64_t kw, int64_t dw,
                        float* y, int64_t* idx, int64_t base) {
    typename S::V mv[NV];
    typename S::O mo[NV];
    for (int j = 0; j < NV; ++j) {
        mv[j] = S::template load<SW>(p + at[j] * SW);
        mo[j] = S::ozero();
    }
    for (int64_t r = 0; r < nrows; ++r)
        for (int64_t c = (r == 0 ? 1 : 0); c < kw; ++c) {
            const int64_t toff = r * rstep + c * dw;
            for (int j = 0; j < NV; ++j) {
                const typename S::V v = S::template load<SW>(p + at[j] * SW + toff);
                const typename S::V t = S::take(v, mv[j]);
                mv[j] = S::blend(mv[j], v, t);
                if (idx) mo[j] = S::oblend(mo[j], static_cast<int32_t>(toff), t);
            }
        }
    for (int j = 0; j < NV; ++j) {
        S::store(y + at[j], mv[j]);
        if (idx) S::store_idx(idx + at[j], base + at[j] * SW, SW, mo[j]);
    }
}

// The same for avg_row_interior: 0 + the taps in row-major order, then one
// division (each sum a chain of dependent adds: NV of them in flight).
template <class S, int SW, int NV>
inline void avg_vectors(const float* p, const int64_t* at, int64_t nrows, int64_t in_w, int64_t kw, float div,
                        float* y) {
    typename S::V s[NV];
    for (int j = 0; j < NV; ++j) s[j] = S::zero();
    for (int64_t r = 0; r < nrows; ++r)
        for (int64_t c = 0; c < kw; ++c)
            for (int j = 0; j < NV; ++j) s[j] = S::add(s[j], S::template load<SW>(p + at[j] * SW + r * in_w + c));
    for (int j = 0; j < NV; ++j) S::store(y + at[j], S::div(s[j], div));
}

// A row of n >= 4 interior outputs in groups of up to 4 vectors at outputs
// at[0..NV) (NV independent chains); a row's last vector overlaps the one
// before (rewriting outputs with the same values) instead of a scalar tail.
// Rows of 4-7 outputs use xmm vectors. vec(S{}, NV{}, at) computes a group.
// Rows of 14 or 7 outputs (the MNIST pools) and 33 (Inception's 3x3/1
// average) ran 3-5x slower through the per-tap chunk loops.
template <class Vec>
void row_of_vectors(int64_t n, Vec vec) {
    if (n < Ymm::W) {
        const int64_t at[2] = {0, n - Xmm::W};
        if (n > Xmm::W)
            vec(Xmm{}, std::integral_constant<int, 2>{}, at);
        else
            vec(Xmm{}, std::integral_constant<int, 1>{}, at);
        return;
    }
    for (int64_t o = 0; o < n; o += 4 * Ymm::W) {
        int64_t at[4];
        const int64_t k = std::min<int64_t>(4, (n - o + Ymm::W - 1) / Ymm::W);
        for (int64_t j = 0; j < k; ++j) at[j] = std::min(o + j * Ymm::W, n - Ymm::W);
        switch (k) {
            case 4: vec(Ymm{}, std::integral_constant<int, 4>{}, at); break;
            case 3: vec(Ymm{}, std::integral_constant<int, 3>{}, at); break;
            case 2: vec(Ymm{}, std::integral_constant<int, 2>{}, at); break;
            default: vec(Ymm{}, std::integral_constant<int, 1>{}, at); break;
        }
    }
}

template <int SW>
void max_row_avx2(const float* p, int64_t n, int64_t nrows, int64_t rstep, int64_t kw, int64_t dw, float* y,
                  int64_t* idx, int64_t base) {
    row_of_vectors(n, [&](auto s, auto nv, const int64_t* at) {
        max_vectors<decltype(s), SW, decltype(nv)::value>(p, at, nrows, rstep, kw, dw, y, idx, base);
    });
}

template <int SW>
void avg_row_avx2(const float* p, int64_t n, int64_t nrows, int64_t in_w, int64_t kw, float div, float* y) {
    row_of_vectors(n, [&](auto s, auto nv, const int64_t* at) {
        avg_vectors<decltype(s), SW, decltype(nv)::value>(p, at, nrows, in_w, kw, div, y);
    });
}

struct Avx2Fast : NoFast {
    using NoFast::avg_row;
    using NoFast::max_row;
    static bool avg_row(const float* p, int64_t n, int64_t sw, int64_t nrows, int64_t in_w, int64_t kw, float div,
                        float* y) {
        if (n < Xmm::W || (sw != 1 && sw != 2)) return false;
        if (sw == 1)
            avg_row_avx2<1>(p, n, nrows, in_w, kw, div, y);
        else
            avg_row_avx2<2>(p, n, nrows, in_w, kw, div, y);
        return true;
    }
    static bool max_row(const float* p, int64_t n, int64_t sw, int64_t nrows, int64_t rstep, int64_t kw,
                        int64_t dw, float* y, int64_t* idx, int64_t base) {
        if (n < Xmm::W || (sw != 1 && sw != 2)) return false;
        if (sw == 1)
            max_row_avx2<1>(p, n, nrows, rstep, kw, dw, y, idx, base);
        else
            max_row_avx2<2>(p, n, nrows, rstep, kw, dw, y, idx, base);
        return true;
    }
};

}  // namespace

void max_fwd_rows_avx2_f32(const PoolGeometry& g, const float* x, float* y, int64_t* i, int64_t r0, int64_t r1) {
    max_fwd_rows<float, Avx2Fast>(g, x, y, i, r0, r1);
}
void max_fwd_rows_avx2_f64(const PoolGeometry& g, const double* x, double* y, int64_t* i, int64_t r0,
                           int64_t r1) {
    max_fwd_rows<double>(g, x, y, i, r0, r1);
}
void avg_fwd_rows_avx2_f32(const PoolGeometry& g, bool cip, int64_t dov, const float* x, float* y, int64_t r0,
                           int64_t r1) {
    avg_fwd_rows<float, Avx2Fast>(g, cip, dov, x, y, r0, r1);
}
void avg_fwd_rows_avx2_f64(const PoolGeometry& g, bool cip, int64_t dov, const double* x, double* y, int64_t r0,
                           int64_t r1) {
    avg_fwd_rows<double>(g, cip, dov, x, y, r0, r1);
}

int64_t max_bwd_2x2_rows_avx2_f32(const float* gy, const int64_t* idx, float* gx, int64_t in_h, int64_t in_w,
                                  int64_t out_w, int64_t oh0, int64_t oh1, int64_t out_h) {
    // Four windows at a time. nd = (top-left input + in_w + 1) - index is
    // in_w + 1, in_w, 1 or 0 for an index at the window's top-left, top-right,
    // bottom-left or bottom-right input: its low 32 bits, each copied to the
    // two lanes of the window's pair of columns, compared with (in_w + 1, in_w)
    // mask the top row's pair and with (1, 0) the bottom row's. An index
    // outside its window matches nothing there (the matches are counted) or
    // leaves high bits in nd (OR-ed together): both are checked once at the
    // end, and only then are the rows searched for the first bad index.
    // ~17 instructions per 4 windows (the 64-bit compares and blends before:
    // ~24, plus per-row checks): 1.5x faster on the MNIST pools' rows.
    const int32_t w = static_cast<int32_t>(in_w);
    const __m256i top = _mm256_setr_epi32(w + 1, w, w + 1, w, w + 1, w, w + 1, w);
    const __m256i bottom = _mm256_setr_epi32(1, 0, 1, 0, 1, 0, 1, 0);
    const __m256i four_windows = _mm256_set1_epi64x(8), columns = _mm256_setr_epi64x(0, 2, 4, 6);
    const __m256i pairs = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    const __m128 zero = _mm_setzero_ps();
    __m256i high = _mm256_setzero_si256(), unmatched = _mm256_setzero_si256();
    const int64_t quads = out_w / 4, last = out_w % 4 != 0 ? out_w - 4 : -1;
    auto quad = [&](const float* gr, const int64_t* ir, float* row0, float* row1, __m256i corner) {
        const __m256i nd = _mm256_sub_epi64(corner, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ir)));
        high = _mm256_or_si256(high, nd);
        const __m256i low = _mm256_shuffle_epi32(nd, 0xA0);  // low halves, each twice
        const __m256i m0 = _mm256_cmpeq_epi32(low, top), m1 = _mm256_cmpeq_epi32(low, bottom);
        unmatched = _mm256_add_epi32(unmatched, _mm256_or_si256(m0, m1));  // -1 per match
        const __m256 g8 = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_add_ps(zero, _mm_loadu_ps(gr))), pairs);
        _mm256_storeu_ps(row0, _mm256_and_ps(g8, _mm256_castsi256_ps(m0)));
        _mm256_storeu_ps(row1, _mm256_and_ps(g8, _mm256_castsi256_ps(m1)));
    };
    const int64_t quads_per_row = quads + (last >= 0 ? 1 : 0);
    const int64_t flush_rows = std::max<int64_t>(1, (int64_t(1) << 30) / quads_per_row);
    int64_t matched = 0, rows_counted = 0;
    // Per row: the corners step by two input rows; the last quad's sit
    // 2 * last columns to the right of the row's first.
    __m256i corner_row = _mm256_add_epi64(_mm256_set1_epi64x(2 * oh0 * in_w + in_w + 1), columns);
    const __m256i next_row = _mm256_set1_epi64x(2 * in_w), to_last = _mm256_set1_epi64x(2 * last);
    const bool odd_column = in_w > 2 * out_w;
    const float* gr = gy + oh0 * out_w;
    const int64_t* ir = idx + oh0 * out_w;
    float* row0 = gx + 2 * oh0 * in_w;
    for (int64_t oh = oh0; oh < oh1; ++oh, gr += out_w, ir += out_w, row0 += 2 * in_w) {
        float* row1 = row0 + in_w;
        __m256i corner = corner_row;
        for (int64_t q = 0; q < quads; ++q) {
            quad(gr + 4 * q, ir + 4 * q, row0 + 8 * q, row1 + 8 * q, corner);
            corner = _mm256_add_epi64(corner, four_windows);
        }
        // The last 1-3 windows: a quad that overlaps the one before
        // (assignments: rewriting a window gives the same values).
        if (last >= 0)
            quad(gr + last, ir + last, row0 + 2 * last, row1 + 2 * last, _mm256_add_epi64(corner_row, to_last));
        corner_row = _mm256_add_epi64(corner_row, next_row);
        if (odd_column) row0[in_w - 1] = row1[in_w - 1] = 0.0f;
        // A lane gains at most one per quad: flushed before it could overflow.
        if (++rows_counted == flush_rows || oh + 1 == oh1) {
            rows_counted = 0;
            alignas(32) int32_t lanes[8];
            _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), unmatched);
            for (int32_t c : lanes) matched -= c;
            unmatched = _mm256_setzero_si256();
        }
    }
    if (oh1 == out_h && in_h > 2 * out_h)
        for (int64_t i = 0; i < in_w; ++i) gx[(in_h - 1) * in_w + i] = 0.0f;
    const __m256i high_halves = _mm256_and_si256(high, _mm256_set1_epi64x(int64_t(0xFFFFFFFF00000000ull)));
    if (_mm256_testz_si256(high_halves, high_halves) && matched == 4 * quads_per_row * (oh1 - oh0)) return -1;
    for (int64_t oh = oh0; oh < oh1; ++oh)
        for (int64_t o = 0; o < out_w; ++o) {
            const int64_t d = idx[oh * out_w + o] - 2 * (oh * in_w + o);
            if (!(d == 0 || d == 1 || d == in_w || d == in_w + 1)) return oh * out_w + o;
        }
    return -1;  // not reached: a short count or high bits come from some index
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
void plane_maxes_avx2_f32(const float* x, int64_t plane, int64_t p0, int64_t p1, float* y, int64_t* idx) {
    // plane_maxes with intrinsics (the compiler keeps that loop scalar); the
    // lanes combine in registers and the winner is read back from the plane
    // (its own bits: -0.0 or +0.0, the NaN's payload).
    if (plane >= (int64_t(1) << 31)) return plane_maxes<float>(x, plane, p0, p1, y, idx);
    const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    auto hmin = [](__m256i v) {
        __m128i m = _mm_min_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        m = _mm_min_epi32(m, _mm_shuffle_epi32(m, 0x4E));
        return _mm_cvtsi128_si32(_mm_min_epi32(m, _mm_shuffle_epi32(m, 0xB1)));
    };
    for (int64_t p = p0; p < p1; ++p) {
        const float* xp = x + p * plane;
        __m256 m = ninf;
        __m256i mi = _mm256_set1_epi32(-1);  // nothing taken
        auto step = [&](__m256 v, int64_t at) {
            const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            m = _mm256_blendv_ps(m, v, take);
            mi = _mm256_castps_si256(_mm256_blendv_ps(
                _mm256_castsi256_ps(mi),
                _mm256_castsi256_ps(_mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(at)), lane)), take));
        };
        int64_t i = 0;
        for (; i + 8 <= plane; i += 8) step(_mm256_loadu_ps(xp + i), i);
        if (i < plane) {  // the tail padded with -inf (never taken)
            const __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(plane - i)), lane);
            step(_mm256_blendv_ps(ninf, _mm256_maskload_ps(xp + i, live), _mm256_castsi256_ps(live)), i);
        }
        int32_t best;
        const int nan_lanes = _mm256_movemask_ps(_mm256_cmp_ps(m, m, _CMP_UNORD_Q));
        if (nan_lanes) {  // the last NaN: the largest index among NaN lanes
            alignas(32) int32_t at[8];
            _mm256_store_si256(reinterpret_cast<__m256i*>(at), mi);
            best = -1;
            for (int j = 0; j < 8; ++j)
                if ((nan_lanes >> j) & 1) best = std::max(best, at[j]);
        } else {  // the first of the lanes equal to the largest value
            __m256 mx = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
            mx = _mm256_max_ps(mx, _mm256_shuffle_ps(mx, mx, 0x4E));
            mx = _mm256_max_ps(mx, _mm256_shuffle_ps(mx, mx, 0xB1));
            const __m256 eq = _mm256_cmp_ps(m, mx, _CMP_EQ_OQ);
            best = hmin(_mm256_castps_si256(
                _mm256_blendv_ps(_mm256_castsi256_ps(_mm256_set1_epi32(INT32_MAX)), _mm256_castsi256_ps(mi), eq)));
        }
        if (best < 0) {  // a plane of -inf: PyTorch's initial value and index
            y[p] = -std::numeric_limits<float>::infinity();
            if (idx) idx[p] = 0;
        } else {
            y[p] = xp[best];
            if (idx) idx[p] = best;
        }
    }
}
void plane_maxes_avx2_f64(const double* x, int64_t plane, int64_t p0, int64_t p1, double* y, int64_t* idx) {
    plane_maxes<double>(x, plane, p0, p1, y, idx);
}

}  // namespace poolk
}  // namespace convkit
