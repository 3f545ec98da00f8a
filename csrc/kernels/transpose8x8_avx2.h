// Transposes on 256-bit registers, shared by the AVX2 and AVX-512 files:
// 8x8 float blocks (whole or in part) for the direct convolution's channel
// stores and gathers, and the GEMM's panel transposes of any row count, float
// and double. Internal linkage: every including file keeps its own copy.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace convkit {
namespace {

// r[i] <- lane i of every r[l] (an 8x8 transpose in registers).
inline void transpose8_regs(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// d[i*ds + l] = s[l*ss + i] for i, l < 8.
inline void transpose8x8_f32(const float* s, int64_t ss, float* d, int64_t ds) {
    __m256 r[8];
    for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps(s + l * ss);
    transpose8_regs(r);
    for (int i = 0; i < 8; ++i) _mm256_storeu_ps(d + i * ds, r[i]);
}

// The first n (< 8) lanes of v to d.
inline void store_lanes_f32(float* d, __m256 v, int64_t n) {
    __m128 part = _mm256_castps256_ps128(v);
    if (n >= 4) {
        _mm_storeu_ps(d, part);
        part = _mm256_extractf128_ps(v, 1);
        d += 4;
        n -= 4;
    }
    if (n >= 2) {
        _mm_storel_pi(reinterpret_cast<__m64*>(d), part);
        part = _mm_movehl_ps(part, part);
        d += 2;
        n -= 2;
    }
    if (n == 1) _mm_store_ss(d, part);
}

// A part of it: d[i*ds + l] = s[l*ss + i] for i < cols, l < lanes, where
// source rows l >= rows read as zeros (every source row read is 8 wide).
inline void transpose8x8_f32_part(const float* s, int64_t ss, int64_t rows, float* d, int64_t ds, int64_t cols,
                                  int64_t lanes) {
    __m256 r[8];
    for (int l = 0; l < 8; ++l) r[l] = l < rows ? _mm256_loadu_ps(s + l * ss) : _mm256_setzero_ps();
    transpose8_regs(r);
    for (int i = 0; i < cols; ++i) {
        if (lanes == 8)
            _mm256_storeu_ps(d + i * ds, r[i]);
        else
            store_lanes_f32(d + i * ds, r[i], lanes);
    }
}

// GEMM panel transpose: dst[l*rows + j] = src[j*ld + l] for j < rows, l < kb.
inline void panel_transpose_f32(const float* src, int64_t ld, int64_t rows, int64_t kb, float* dst) {
    const int64_t rows8 = rows / 8 * 8;
    int64_t l = 0;
    for (; l + 8 <= kb; l += 8) {
        for (int64_t j = 0; j < rows8; j += 8)
            transpose8x8_f32(src + j * ld + l, ld, dst + l * rows + j, rows);
        const int64_t rest = rows - rows8;
        if (rest > 0) transpose8x8_f32_part(src + rows8 * ld + l, ld, rest, dst + l * rows + rows8, rows, 8, rest);
    }
    for (; l < kb; ++l)
        for (int64_t j = 0; j < rows; ++j) dst[l * rows + j] = src[j * ld + l];
}

// The same for double, in 4x4 blocks (a last block of fewer rows zero-filled
// in registers and stored in part).
inline void panel_transpose_f64(const double* src, int64_t ld, int64_t rows, int64_t kb, double* dst) {
    int64_t l = 0;
    for (; l + 4 <= kb; l += 4) {
        for (int64_t j = 0; j < rows; j += 4) {
            const int64_t n = rows - j < 4 ? rows - j : 4;
            const double* s = src + j * ld + l;
            const __m256d zero = _mm256_setzero_pd();
            const __m256d r0 = _mm256_loadu_pd(s);
            const __m256d r1 = n > 1 ? _mm256_loadu_pd(s + ld) : zero;
            const __m256d r2 = n > 2 ? _mm256_loadu_pd(s + 2 * ld) : zero;
            const __m256d r3 = n > 3 ? _mm256_loadu_pd(s + 3 * ld) : zero;
            const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
            const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
            const __m256d out[4] = {_mm256_permute2f128_pd(t0, t2, 0x20), _mm256_permute2f128_pd(t1, t3, 0x20),
                                    _mm256_permute2f128_pd(t0, t2, 0x31), _mm256_permute2f128_pd(t1, t3, 0x31)};
            double* d = dst + l * rows + j;
            for (int i = 0; i < 4; ++i) {
                if (n == 4) {
                    _mm256_storeu_pd(d + i * rows, out[i]);
                    continue;
                }
                const __m128d lo = _mm256_castpd256_pd128(out[i]);
                if (n >= 2) _mm_storeu_pd(d + i * rows, lo);
                if (n == 3) _mm_store_sd(d + i * rows + 2, _mm256_extractf128_pd(out[i], 1));
                if (n == 1) _mm_store_sd(d + i * rows, lo);
            }
        }
    }
    for (; l < kb; ++l)
        for (int64_t j = 0; j < rows; ++j) dst[l * rows + j] = src[j * ld + l];
}

}  // namespace
}  // namespace convkit
