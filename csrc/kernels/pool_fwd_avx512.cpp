// pool_impl.h row kernels built with the avx512 flags (see CMakeLists.txt),
// plus hand-written AVX-512 interior rows for output strides 1 and 2: the
// running max / sum of 16 (float) or 8 (double) outputs stays in registers
// over all taps, stride-2 lanes are de-interleaved with vpermt2, and row tails
// use masked loads/stores (never reading past the last tap). Taps are visited
// in the same order with the same operations as the portable loops, so the
// results are bit for bit the same. (Float average forward rows, plane means
// and 2x2/s2 max rows run the AVX2 kernels on AVX-512 machines instead: see
// IsaFns in pool2d.cpp.)
#include <immintrin.h>

#include <cstdint>

namespace convkit {
namespace poolk {
namespace {
// Register-accumulating gather rows for avg_bwd_s1_plane (declared before
// pool_impl.h, which picks it up through CONVKIT_POOL_S1_ROWS).
template <typename T>
void avg_bwd_s1_rows_avx512(int64_t in_h, int64_t in_w, int64_t kw, int64_t pw, int64_t L, const int64_t* ha,
                            const int64_t* hb, const T* D, T* gxp);
}  // namespace
}  // namespace poolk
}  // namespace convkit
#define CONVKIT_POOL_S1_ROWS avg_bwd_s1_rows_avx512

#include "pool_impl.h"
#include "pool_isa.h"

namespace convkit {
namespace poolk {
namespace {

struct F32 {
    using T = float;
    using V = __m512;
    using M = __mmask16;
    static constexpr int W = 16;
    static M tail(int64_t k) { return k >= 16 ? M(0xFFFF) : M((1u << k) - 1u); }
    // Lanes q[i*sw], i < nv, sw in {1, 2}.
    static V load(const T* q, int64_t sw, int64_t nv) {
        if (sw == 1) return _mm512_maskz_loadu_ps(tail(nv), q);
        const int64_t cnt = 2 * nv - 1;
        const V lo = _mm512_maskz_loadu_ps(tail(cnt), q);
        const V hi = _mm512_maskz_loadu_ps(tail(cnt > 16 ? cnt - 16 : 0), q + 16);
        const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        return _mm512_permutex2var_ps(lo, ev, hi);
    }
    static M take(V v, V m) {
        return _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    }
    static V blend(M t, V m, V v) { return _mm512_mask_mov_ps(m, t, v); }
    static void store(T* y, int64_t nv, V v) { _mm512_mask_storeu_ps(y, tail(nv), v); }
    static V zero() { return _mm512_setzero_ps(); }
    static V add(V a, V b) { return _mm512_add_ps(a, b); }
    static V div(V a, T d) { return _mm512_div_ps(a, _mm512_set1_ps(d)); }
    // Offsets: int32 lanes.
    using O = __m512i;
    static O ozero() { return _mm512_setzero_si512(); }
    static O oset(int64_t t) { return _mm512_set1_epi32(static_cast<int32_t>(t)); }
    static O oblend(M t, O m, int64_t toff) { return _mm512_mask_mov_epi32(m, t, oset(toff)); }
    static void store_idx(int64_t* idx, int64_t nv, int64_t b, int64_t sw, O mo) {
        const __m512i iota = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
        const __m512i step = _mm512_mullo_epi64(iota, _mm512_set1_epi64(sw));
        const __m512i lo = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(mo)),
                                            _mm512_add_epi64(_mm512_set1_epi64(b), step));
        const __m512i hi = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(mo, 1)),
                                            _mm512_add_epi64(_mm512_set1_epi64(b + 8 * sw), step));
        const __mmask16 m = tail(nv);
        _mm512_mask_storeu_epi64(idx, static_cast<__mmask8>(m & 0xFF), lo);
        _mm512_mask_storeu_epi64(idx + 8, static_cast<__mmask8>(m >> 8), hi);
    }
};

struct F64 {
    using T = double;
    using V = __m512d;
    using M = __mmask8;
    static constexpr int W = 8;
    static M tail(int64_t k) { return k >= 8 ? M(0xFF) : M((1u << k) - 1u); }
    static V load(const T* q, int64_t sw, int64_t nv) {
        if (sw == 1) return _mm512_maskz_loadu_pd(tail(nv), q);
        const int64_t cnt = 2 * nv - 1;
        const V lo = _mm512_maskz_loadu_pd(tail(cnt), q);
        const V hi = _mm512_maskz_loadu_pd(tail(cnt > 8 ? cnt - 8 : 0), q + 8);
        const __m512i ev = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
        return _mm512_permutex2var_pd(lo, ev, hi);
    }
    static M take(V v, V m) {
        return _mm512_cmp_pd_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q);
    }
    static V blend(M t, V m, V v) { return _mm512_mask_mov_pd(m, t, v); }
    static void store(T* y, int64_t nv, V v) { _mm512_mask_storeu_pd(y, tail(nv), v); }
    static V zero() { return _mm512_setzero_pd(); }
    static V add(V a, V b) { return _mm512_add_pd(a, b); }
    static V div(V a, T d) { return _mm512_div_pd(a, _mm512_set1_pd(d)); }
    using O = __m512i;
    static O ozero() { return _mm512_setzero_si512(); }
    static O oset(int64_t t) { return _mm512_set1_epi64(t); }
    static O oblend(M t, O m, int64_t toff) { return _mm512_mask_mov_epi64(m, t, oset(toff)); }
    static void store_idx(int64_t* idx, int64_t nv, int64_t b, int64_t sw, O mo) {
        const __m512i iota = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
        const __m512i v = _mm512_add_epi64(mo, _mm512_add_epi64(_mm512_set1_epi64(b),
                                                                _mm512_mullo_epi64(iota, _mm512_set1_epi64(sw))));
        _mm512_mask_storeu_epi64(idx, tail(nv), v);
    }
};

template <typename S>
void max_row_avx512(const typename S::T* p, int64_t n, int64_t sw, int64_t nrows, int64_t rstep, int64_t kw,
                    int64_t dw, typename S::T* y, int64_t* idx, int64_t base) {
    for (int64_t o0 = 0; o0 < n; o0 += S::W) {
        const int64_t nv = n - o0 < S::W ? n - o0 : S::W;
        const typename S::T* q0 = p + o0 * sw;
        typename S::V mv = S::load(q0, sw, nv);
        typename S::O mo = S::ozero();
        for (int64_t r = 0; r < nrows; ++r) {
            for (int64_t c = (r == 0 ? 1 : 0); c < kw; ++c) {
                const int64_t toff = r * rstep + c * dw;
                const typename S::V v = S::load(q0 + toff, sw, nv);
                const typename S::M t = S::take(v, mv);
                mv = S::blend(t, mv, v);
                if (idx) mo = S::oblend(t, mo, toff);
            }
        }
        S::store(y + o0, nv, mv);
        if (idx) S::store_idx(idx + o0, nv, base + o0 * sw, sw, mo);
    }
}

template <typename S>
void avg_row_avx512(const typename S::T* p, int64_t n, int64_t sw, int64_t nrows, int64_t in_w, int64_t kw,
                    typename S::T div, typename S::T* y) {
    for (int64_t o0 = 0; o0 < n; o0 += S::W) {
        const int64_t nv = n - o0 < S::W ? n - o0 : S::W;
        const typename S::T* q0 = p + o0 * sw;
        typename S::V s = S::zero();
        for (int64_t r = 0; r < nrows; ++r)
            for (int64_t c = 0; c < kw; ++c) s = S::add(s, S::load(q0 + r * in_w + c, sw, nv));
        S::store(y + o0, nv, S::div(s, div));
    }
}

// Sums of V columns stay in one register over all (oh, c) taps, in the
// portable loop's order; row tails use masked loads/stores. Loads may cover
// up to V - 1 elements past the last needed delta: D's right padding (rz
// includes 16) keeps them inside D.
template <typename S>
void s1_rows(int64_t in_h, int64_t in_w, int64_t kw, int64_t pw, int64_t L, const int64_t* ha, const int64_t* hb,
             const typename S::T* D, typename S::T* gxp) {
    for (int64_t ih = 0; ih < in_h; ++ih) {
        typename S::T* row = gxp + ih * in_w;
        for (int64_t i0 = 0; i0 < in_w; i0 += S::W) {
            const int64_t nv = in_w - i0 < S::W ? in_w - i0 : S::W;
            typename S::V acc = S::zero();
            for (int64_t oh = ha[ih]; oh < hb[ih]; ++oh) {
                const typename S::T* src = D + oh * L + kw + pw + i0;
                for (int64_t c = kw - 1; c >= 0; --c) acc = S::add(acc, S::load(src - c, 1, S::W));
            }
            S::store(row + i0, nv, acc);
        }
    }
}

template <>
void avg_bwd_s1_rows_avx512<float>(int64_t in_h, int64_t in_w, int64_t kw, int64_t pw, int64_t L,
                                   const int64_t* ha, const int64_t* hb, const float* D, float* gxp) {
    s1_rows<F32>(in_h, in_w, kw, pw, L, ha, hb, D, gxp);
}
template <>
void avg_bwd_s1_rows_avx512<double>(int64_t in_h, int64_t in_w, int64_t kw, int64_t pw, int64_t L,
                                    const int64_t* ha, const int64_t* hb, const double* D, double* gxp) {
    s1_rows<F64>(in_h, in_w, kw, pw, L, ha, hb, D, gxp);
}

struct Avx512Fast {
    static bool max_row(const float* p, int64_t n, int64_t sw, int64_t nrows, int64_t rstep, int64_t kw,
                        int64_t dw, float* y, int64_t* idx, int64_t base) {
        if (sw != 1 && sw != 2) return false;
        max_row_avx512<F32>(p, n, sw, nrows, rstep, kw, dw, y, idx, base);
        return true;
    }
    static bool max_row(const double* p, int64_t n, int64_t sw, int64_t nrows, int64_t rstep, int64_t kw,
                        int64_t dw, double* y, int64_t* idx, int64_t base) {
        if (sw != 1 && sw != 2) return false;
        max_row_avx512<F64>(p, n, sw, nrows, rstep, kw, dw, y, idx, base);
        return true;
    }
    static bool avg_row(const double* p, int64_t n, int64_t sw, int64_t nrows, int64_t in_w, int64_t kw,
                        double div, double* y) {
        if (sw != 1 && sw != 2) return false;
        avg_row_avx512<F64>(p, n, sw, nrows, in_w, kw, div, y);
        return true;
    }
};

}  // namespace

void max_fwd_rows_avx512_f32(const PoolGeometry& g, const float* x, float* y, int64_t* i, int64_t r0, int64_t r1) {
    max_fwd_rows<float, Avx512Fast>(g, x, y, i, r0, r1);
}
void max_fwd_rows_avx512_f64(const PoolGeometry& g, const double* x, double* y, int64_t* i, int64_t r0,
                             int64_t r1) {
    max_fwd_rows<double, Avx512Fast>(g, x, y, i, r0, r1);
}
void avg_fwd_rows_avx512_f64(const PoolGeometry& g, bool cip, int64_t dov, const double* x, double* y,
                             int64_t r0, int64_t r1) {
    avg_fwd_rows<double, Avx512Fast>(g, cip, dov, x, y, r0, r1);
}

void avg_bwd_scatter_plane_avx512_f32(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, int64_t kw,
                                   int64_t sw, int64_t pw, const int64_t* hlo, const int64_t* hhi, const int64_t* ca,
                                   const int64_t* cb, const float* div, const float* gyp, float* gxp, float* d) {
    avg_bwd_scatter_plane<float>(in_h, in_w, out_h, out_w, kw, sw, pw, hlo, hhi, ca, cb, div, gyp, gxp, d);
}
void avg_bwd_s1_plane_avx512_f32(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, int64_t kw, int64_t pw,
                              int64_t rz, const int64_t* ha, const int64_t* hb, const float* div, const float* gyp,
                              float* gxp, float* D) {
    avg_bwd_s1_plane<float>(in_h, in_w, out_h, out_w, kw, pw, rz, ha, hb, div, gyp, gxp, D);
}
void avg_bwd_disjoint_rows_avx512_f32(int64_t in_w, int64_t out_w, int64_t ih0, int64_t ih1, const int64_t* oh_of,
                                   const int32_t* col, const float* div, const float* gyp, float* gxp, float* d) {
    avg_bwd_disjoint_rows<float>(in_w, out_w, ih0, ih1, oh_of, col, div, gyp, gxp, d);
}
void avg_bwd_scatter_plane_avx512_f64(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, int64_t kw,
                                   int64_t sw, int64_t pw, const int64_t* hlo, const int64_t* hhi, const int64_t* ca,
                                   const int64_t* cb, const double* div, const double* gyp, double* gxp, double* d) {
    avg_bwd_scatter_plane<double>(in_h, in_w, out_h, out_w, kw, sw, pw, hlo, hhi, ca, cb, div, gyp, gxp, d);
}
void avg_bwd_s1_plane_avx512_f64(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, int64_t kw, int64_t pw,
                              int64_t rz, const int64_t* ha, const int64_t* hb, const double* div, const double* gyp,
                              double* gxp, double* D) {
    avg_bwd_s1_plane<double>(in_h, in_w, out_h, out_w, kw, pw, rz, ha, hb, div, gyp, gxp, D);
}
void avg_bwd_disjoint_rows_avx512_f64(int64_t in_w, int64_t out_w, int64_t ih0, int64_t ih1, const int64_t* oh_of,
                                   const int32_t* col, const double* div, const double* gyp, double* gxp, double* d) {
    avg_bwd_disjoint_rows<double>(in_w, out_w, ih0, ih1, oh_of, col, div, gyp, gxp, d);
}

void plane_means_avx512_f64(const double* x, int64_t plane, int64_t p0, int64_t p1, double* y) {
    plane_means<double>(x, plane, p0, p1, y);
}
void plane_maxes_avx512_f32(const float* x, int64_t plane, int64_t p0, int64_t p1, float* y, int64_t* idx) {
    plane_maxes_avx2_f32(x, plane, p0, p1, y, idx);  // 8 lanes suffice for 7x7 planes
}
void plane_maxes_avx512_f64(const double* x, int64_t plane, int64_t p0, int64_t p1, double* y, int64_t* idx) {
    plane_maxes<double>(x, plane, p0, p1, y, idx);
}

}  // namespace poolk
}  // namespace convkit
