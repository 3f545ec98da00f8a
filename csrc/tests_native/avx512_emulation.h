// Test-only emulation of the AVX-512 intrinsics that convkit's *_avx512.cpp
// kernels use, for machines without AVX-512 (CMake option
// CONVKIT_EMULATE_AVX512, run by .ci/avx512_emulated). Force-included before
// those files (-include), it renames the 512-bit types and intrinsics to
// lane-by-lane C++ versions, so the kernels' 16-lane logic (tile sizes, masks,
// tails, permutes) runs and is checked by the test suite here. Not exercised:
// the AVX-512 instructions themselves and the compiler's AVX-512 code for the
// portable templates in those files (built as AVX2 code here; the per-lane
// arithmetic is the same). Semantics follow Intel's intrinsics guide: masked
// loads never touch disabled lanes, fmadd rounds once (std::fma), compares
// raise no FP exceptions on quiet NaNs.
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace convkit_emu {

struct m512 { float v[16]; };
struct m512d { double v[8]; };
struct m512i { int64_t q[8]; };  // epi32 lanes are its bytes read as int32_t[16]

inline void get32(const m512i& a, int32_t* d) { std::memcpy(d, a.q, 64); }
inline m512i from32(const int32_t* d) {
    m512i r;
    std::memcpy(r.q, d, 64);
    return r;
}

// Float vectors of N lanes of E.
template <class V, class E, int N>
struct Ops {
    static V set1(E x) {
        V r;
        for (int i = 0; i < N; ++i) r.v[i] = x;
        return r;
    }
    static V loadu(const E* p) {
        V r;
        std::memcpy(r.v, p, sizeof(r.v));
        return r;
    }
    static void storeu(E* p, const V& a) { std::memcpy(p, a.v, sizeof(a.v)); }
    static V maskz_loadu(unsigned k, const E* p) {
        V r;
        for (int i = 0; i < N; ++i) r.v[i] = (k >> i) & 1u ? p[i] : E(0);
        return r;
    }
    static void mask_storeu(E* p, unsigned k, const V& a) {
        for (int i = 0; i < N; ++i)
            if ((k >> i) & 1u) p[i] = a.v[i];
    }
    static V fmadd(const V& a, const V& b, const V& c) {
        V r;
        for (int i = 0; i < N; ++i) r.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
        return r;
    }
    static V add(const V& a, const V& b) {
        V r;
        for (int i = 0; i < N; ++i) r.v[i] = a.v[i] + b.v[i];
        return r;
    }
    static V div(const V& a, const V& b) {
        V r;
        for (int i = 0; i < N; ++i) r.v[i] = a.v[i] / b.v[i];
        return r;
    }
    static V mask_mov(const V& src, unsigned k, const V& a) {
        V r;
        for (int i = 0; i < N; ++i) r.v[i] = (k >> i) & 1u ? a.v[i] : src.v[i];
        return r;
    }
    static unsigned cmp_mask(const V& a, const V& b, int pred) {
        unsigned k = 0;
        for (int i = 0; i < N; ++i) {
            bool t;
            if (pred == _CMP_GT_OQ) t = std::isgreater(a.v[i], b.v[i]);  // false when either is NaN
            else if (pred == _CMP_UNORD_Q) t = std::isnan(a.v[i]) || std::isnan(b.v[i]);
            else std::abort();  // a predicate the kernels do not use
            k |= unsigned(t) << i;
        }
        return k;
    }
    // Lane i of the result: idx lane i selects a (bit N clear) or b, lane idx % N.
    static V permutex2var(const V& a, const int64_t* idx, const V& b) {
        V r;
        for (int i = 0; i < N; ++i) {
            const int64_t s = idx[i] & (2 * N - 1);
            r.v[i] = s < N ? a.v[s] : b.v[s - N];
        }
        return r;
    }
};
using F = Ops<m512, float, 16>;
using D = Ops<m512d, double, 8>;

inline m512 mm512_set1_ps(float x) { return F::set1(x); }
inline m512d mm512_set1_pd(double x) { return D::set1(x); }
inline m512 mm512_setzero_ps() { return F::set1(0.0f); }
inline m512d mm512_setzero_pd() { return D::set1(0.0); }
inline m512 mm512_loadu_ps(const void* p) { return F::loadu(static_cast<const float*>(p)); }
inline m512d mm512_loadu_pd(const void* p) { return D::loadu(static_cast<const double*>(p)); }
inline void mm512_storeu_ps(void* p, m512 a) { F::storeu(static_cast<float*>(p), a); }
inline void mm512_storeu_pd(void* p, m512d a) { D::storeu(static_cast<double*>(p), a); }
inline m512 mm512_maskz_loadu_ps(__mmask16 k, const void* p) { return F::maskz_loadu(k, static_cast<const float*>(p)); }
inline m512d mm512_maskz_loadu_pd(__mmask8 k, const void* p) { return D::maskz_loadu(k, static_cast<const double*>(p)); }
inline void mm512_mask_storeu_ps(void* p, __mmask16 k, m512 a) { F::mask_storeu(static_cast<float*>(p), k, a); }
inline void mm512_mask_storeu_pd(void* p, __mmask8 k, m512d a) { D::mask_storeu(static_cast<double*>(p), k, a); }
inline m512 mm512_fmadd_ps(m512 a, m512 b, m512 c) { return F::fmadd(a, b, c); }
inline m512d mm512_fmadd_pd(m512d a, m512d b, m512d c) { return D::fmadd(a, b, c); }
inline m512 mm512_add_ps(m512 a, m512 b) { return F::add(a, b); }
inline m512d mm512_add_pd(m512d a, m512d b) { return D::add(a, b); }
inline m512 mm512_div_ps(m512 a, m512 b) { return F::div(a, b); }
inline m512d mm512_div_pd(m512d a, m512d b) { return D::div(a, b); }
inline m512 mm512_mask_mov_ps(m512 src, __mmask16 k, m512 a) { return F::mask_mov(src, k, a); }
inline m512d mm512_mask_mov_pd(m512d src, __mmask8 k, m512d a) { return D::mask_mov(src, k, a); }
inline __mmask16 mm512_cmp_ps_mask(m512 a, m512 b, int pred) { return __mmask16(F::cmp_mask(a, b, pred)); }
inline __mmask8 mm512_cmp_pd_mask(m512d a, m512d b, int pred) { return __mmask8(D::cmp_mask(a, b, pred)); }
inline float mm512_reduce_add_ps(m512 a) {  // in lane order (the hardware: a tree); fma_peak only
    float s = 0.0f;
    for (float x : a.v) s += x;
    return s;
}

inline m512 mm512_permutex2var_ps(m512 a, m512i idx, m512 b) {
    int32_t i32[16];
    get32(idx, i32);
    int64_t i64[16];
    for (int i = 0; i < 16; ++i) i64[i] = i32[i];
    return F::permutex2var(a, i64, b);
}
inline m512d mm512_permutex2var_pd(m512d a, m512i idx, m512d b) { return D::permutex2var(a, idx.q, b); }

// Integer vectors.
inline m512i mm512_setzero_si512() { return m512i{}; }
inline m512i mm512_set1_epi64(int64_t x) {
    m512i r;
    for (auto& q : r.q) q = x;
    return r;
}
inline m512i mm512_set1_epi32(int32_t x) {
    int32_t d[16];
    for (auto& v : d) v = x;
    return from32(d);
}
inline m512i mm512_setr_epi64(int64_t a0, int64_t a1, int64_t a2, int64_t a3, int64_t a4, int64_t a5, int64_t a6,
                              int64_t a7) {
    return m512i{{a0, a1, a2, a3, a4, a5, a6, a7}};
}
inline m512i mm512_setr_epi32(int32_t a0, int32_t a1, int32_t a2, int32_t a3, int32_t a4, int32_t a5, int32_t a6,
                              int32_t a7, int32_t a8, int32_t a9, int32_t a10, int32_t a11, int32_t a12, int32_t a13,
                              int32_t a14, int32_t a15) {
    const int32_t d[16] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15};
    return from32(d);
}
inline m512i mm512_add_epi64(m512i a, m512i b) {
    m512i r;
    for (int i = 0; i < 8; ++i) r.q[i] = int64_t(uint64_t(a.q[i]) + uint64_t(b.q[i]));
    return r;
}
inline m512i mm512_mullo_epi64(m512i a, m512i b) {
    m512i r;
    for (int i = 0; i < 8; ++i) r.q[i] = int64_t(uint64_t(a.q[i]) * uint64_t(b.q[i]));
    return r;
}
inline m512i mm512_mask_mov_epi64(m512i src, __mmask8 k, m512i a) {
    m512i r;
    for (int i = 0; i < 8; ++i) r.q[i] = (k >> i) & 1u ? a.q[i] : src.q[i];
    return r;
}
inline m512i mm512_mask_mov_epi32(m512i src, __mmask16 k, m512i a) {
    int32_t s[16], v[16], r[16];
    get32(src, s);
    get32(a, v);
    for (int i = 0; i < 16; ++i) r[i] = (k >> i) & 1u ? v[i] : s[i];
    return from32(r);
}
inline void mm512_mask_storeu_epi64(void* p, __mmask8 k, m512i a) {
    auto* d = static_cast<int64_t*>(p);
    for (int i = 0; i < 8; ++i)
        if ((k >> i) & 1u) d[i] = a.q[i];
}
inline __m256i mm512_castsi512_si256(m512i a) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q)); }
inline __m256i mm512_extracti64x4_epi64(m512i a, int imm) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + (imm & 1) * 4));
}
inline m512i mm512_cvtepi32_epi64(__m256i a) {
    int32_t d[8];
    std::memcpy(d, &a, sizeof(d));
    m512i r;
    for (int i = 0; i < 8; ++i) r.q[i] = d[i];
    return r;
}

}  // namespace convkit_emu

// Some of these names are macros in GCC's headers: undefined first.
#undef __m512
#define __m512 ::convkit_emu::m512
#undef __m512d
#define __m512d ::convkit_emu::m512d
#undef __m512i
#define __m512i ::convkit_emu::m512i
#undef _mm512_set1_ps
#define _mm512_set1_ps ::convkit_emu::mm512_set1_ps
#undef _mm512_set1_pd
#define _mm512_set1_pd ::convkit_emu::mm512_set1_pd
#undef _mm512_setzero_ps
#define _mm512_setzero_ps ::convkit_emu::mm512_setzero_ps
#undef _mm512_setzero_pd
#define _mm512_setzero_pd ::convkit_emu::mm512_setzero_pd
#undef _mm512_loadu_ps
#define _mm512_loadu_ps ::convkit_emu::mm512_loadu_ps
#undef _mm512_loadu_pd
#define _mm512_loadu_pd ::convkit_emu::mm512_loadu_pd
#undef _mm512_storeu_ps
#define _mm512_storeu_ps ::convkit_emu::mm512_storeu_ps
#undef _mm512_storeu_pd
#define _mm512_storeu_pd ::convkit_emu::mm512_storeu_pd
#undef _mm512_maskz_loadu_ps
#define _mm512_maskz_loadu_ps ::convkit_emu::mm512_maskz_loadu_ps
#undef _mm512_maskz_loadu_pd
#define _mm512_maskz_loadu_pd ::convkit_emu::mm512_maskz_loadu_pd
#undef _mm512_mask_storeu_ps
#define _mm512_mask_storeu_ps ::convkit_emu::mm512_mask_storeu_ps
#undef _mm512_mask_storeu_pd
#define _mm512_mask_storeu_pd ::convkit_emu::mm512_mask_storeu_pd
#undef _mm512_fmadd_ps
#define _mm512_fmadd_ps ::convkit_emu::mm512_fmadd_ps
#undef _mm512_fmadd_pd
#define _mm512_fmadd_pd ::convkit_emu::mm512_fmadd_pd
#undef _mm512_add_ps
#define _mm512_add_ps ::convkit_emu::mm512_add_ps
#undef _mm512_add_pd
#define _mm512_add_pd ::convkit_emu::mm512_add_pd
#undef _mm512_div_ps
#define _mm512_div_ps ::convkit_emu::mm512_div_ps
#undef _mm512_div_pd
#define _mm512_div_pd ::convkit_emu::mm512_div_pd
#undef _mm512_mask_mov_ps
#define _mm512_mask_mov_ps ::convkit_emu::mm512_mask_mov_ps
#undef _mm512_mask_mov_pd
#define _mm512_mask_mov_pd ::convkit_emu::mm512_mask_mov_pd
#undef _mm512_cmp_ps_mask
#define _mm512_cmp_ps_mask ::convkit_emu::mm512_cmp_ps_mask
#undef _mm512_cmp_pd_mask
#define _mm512_cmp_pd_mask ::convkit_emu::mm512_cmp_pd_mask
#undef _mm512_reduce_add_ps
#define _mm512_reduce_add_ps ::convkit_emu::mm512_reduce_add_ps
#undef _mm512_permutex2var_ps
#define _mm512_permutex2var_ps ::convkit_emu::mm512_permutex2var_ps
#undef _mm512_permutex2var_pd
#define _mm512_permutex2var_pd ::convkit_emu::mm512_permutex2var_pd
#undef _mm512_setzero_si512
#define _mm512_setzero_si512 ::convkit_emu::mm512_setzero_si512
#undef _mm512_set1_epi64
#define _mm512_set1_epi64 ::convkit_emu::mm512_set1_epi64
#undef _mm512_set1_epi32
#define _mm512_set1_epi32 ::convkit_emu::mm512_set1_epi32
#undef _mm512_setr_epi64
#define _mm512_setr_epi64 ::convkit_emu::mm512_setr_epi64
#undef _mm512_setr_epi32
#define _mm512_setr_epi32 ::convkit_emu::mm512_setr_epi32
#undef _mm512_add_epi64
#define _mm512_add_epi64 ::convkit_emu::mm512_add_epi64
#undef _mm512_mullo_epi64
#define _mm512_mullo_epi64 ::convkit_emu::mm512_mullo_epi64
#undef _mm512_mask_mov_epi64
#define _mm512_mask_mov_epi64 ::convkit_emu::mm512_mask_mov_epi64
#undef _mm512_mask_mov_epi32
#define _mm512_mask_mov_epi32 ::convkit_emu::mm512_mask_mov_epi32
#undef _mm512_mask_storeu_epi64
#define _mm512_mask_storeu_epi64 ::convkit_emu::mm512_mask_storeu_epi64
#undef _mm512_castsi512_si256
#define _mm512_castsi512_si256 ::convkit_emu::mm512_castsi512_si256
#undef _mm512_extracti64x4_epi64
#define _mm512_extracti64x4_epi64 ::convkit_emu::mm512_extracti64x4_epi64
#undef _mm512_cvtepi32_epi64
#define _mm512_cvtepi32_epi64 ::convkit_emu::mm512_cvtepi32_epi64
