// AVX-512 GEMM micro-kernels: float 8x32, double 8x16 (16 zmm accumulators).
#include <immintrin.h>

#include <cstdint>

#include "gemm.h"
#include "transpose8x8_avx2.h"

namespace convkit {

const int gemm_avx512_f32_mr = 8, gemm_avx512_f32_nr = 32;
const int gemm_avx512_f64_mr = 8, gemm_avx512_f64_nr = 16;

#define CK_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

void gemm_ukr_avx512_f32(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                         int accumulate, const float* init) {
#define DECL(i) __m512 c##i##0, c##i##1;
    CK_ROWS(DECL)
#undef DECL
    if (accumulate) {
#define LOAD(i) c##i##0 = _mm512_loadu_ps(c + i * ldc); c##i##1 = _mm512_loadu_ps(c + i * ldc + 16);
        CK_ROWS(LOAD)
#undef LOAD
    } else if (init) {
#define INIT(i) c##i##0 = c##i##1 = _mm512_set1_ps(init[i]);
        CK_ROWS(INIT)
#undef INIT
    } else {
#define ZERO(i) c##i##0 = _mm512_setzero_ps(); c##i##1 = _mm512_setzero_ps();
        CK_ROWS(ZERO)
#undef ZERO
    }
    for (int64_t k = 0; k < kc; ++k) {
        const __m512 b0 = _mm512_loadu_ps(b);
        const __m512 b1 = _mm512_loadu_ps(b + 16);
#define STEP(i) { const __m512 av = _mm512_set1_ps(a[i]); \
        c##i##0 = _mm512_fmadd_ps(av, b0, c##i##0); c##i##1 = _mm512_fmadd_ps(av, b1, c##i##1); }
        CK_ROWS(STEP)
#undef STEP
        a += 8;
        b += 32;
    }
#define STORE(i) _mm512_storeu_ps(c + i * ldc, c##i##0); _mm512_storeu_ps(c + i * ldc + 16, c##i##1);
    CK_ROWS(STORE)
#undef STORE
}

void gemm_ukr_avx512_f64(int64_t kc, const double* a, const double* b, double* c, int64_t ldc,
                         int accumulate, const double* init) {
#define DECL(i) __m512d c##i##0, c##i##1;
    CK_ROWS(DECL)
#undef DECL
    if (accumulate) {
#define LOAD(i) c##i##0 = _mm512_loadu_pd(c + i * ldc); c##i##1 = _mm512_loadu_pd(c + i * ldc + 8);
        CK_ROWS(LOAD)
#undef LOAD
    } else if (init) {
#define INIT(i) c##i##0 = c##i##1 = _mm512_set1_pd(init[i]);
        CK_ROWS(INIT)
#undef INIT
    } else {
#define ZERO(i) c##i##0 = _mm512_setzero_pd(); c##i##1 = _mm512_setzero_pd();
        CK_ROWS(ZERO)
#undef ZERO
    }
    for (int64_t k = 0; k < kc; ++k) {
        const __m512d b0 = _mm512_loadu_pd(b);
        const __m512d b1 = _mm512_loadu_pd(b + 8);
#define STEP(i) { const __m512d av = _mm512_set1_pd(a[i]); \
        c##i##0 = _mm512_fmadd_pd(av, b0, c##i##0); c##i##1 = _mm512_fmadd_pd(av, b1, c##i##1); }
        CK_ROWS(STEP)
#undef STEP
        a += 8;
        b += 16;
    }
#define STORE(i) _mm512_storeu_pd(c + i * ldc, c##i##0); _mm512_storeu_pd(c + i * ldc + 8, c##i##1);
    CK_ROWS(STORE)
#undef STORE
}

#undef CK_ROWS

namespace {
// 8x8 float and 4x4 double transposes on 256-bit registers; rows % 8 (4) == 0
// takes the vector path, anything else the scalar loop.
inline void transpose_f32(const float* src, int64_t ld, int64_t rows, int64_t kb, float* dst) {
    int64_t l = 0;
    if (rows % 8 == 0) {
        for (; l + 8 <= kb; l += 8) {
            for (int64_t j = 0; j < rows; j += 8) {
                transpose8x8_f32(src + j * ld + l, ld, dst + l * rows + j, rows);
            }
        }
    }
    for (; l < kb; ++l)
        for (int64_t j = 0; j < rows; ++j) dst[l * rows + j] = src[j * ld + l];
}

inline void transpose_f64(const double* src, int64_t ld, int64_t rows, int64_t kb, double* dst) {
    int64_t l = 0;
    if (rows % 4 == 0) {
        for (; l + 4 <= kb; l += 4) {
            for (int64_t j = 0; j < rows; j += 4) {
                const double* s = src + j * ld + l;
                const __m256d r0 = _mm256_loadu_pd(s), r1 = _mm256_loadu_pd(s + ld);
                const __m256d r2 = _mm256_loadu_pd(s + 2 * ld), r3 = _mm256_loadu_pd(s + 3 * ld);
                const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
                const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
                double* d = dst + l * rows + j;
                _mm256_storeu_pd(d + 0 * rows, _mm256_permute2f128_pd(t0, t2, 0x20));
                _mm256_storeu_pd(d + 1 * rows, _mm256_permute2f128_pd(t1, t3, 0x20));
                _mm256_storeu_pd(d + 2 * rows, _mm256_permute2f128_pd(t0, t2, 0x31));
                _mm256_storeu_pd(d + 3 * rows, _mm256_permute2f128_pd(t1, t3, 0x31));
            }
        }
    }
    for (; l < kb; ++l)
        for (int64_t j = 0; j < rows; ++j) dst[l * rows + j] = src[j * ld + l];
}
}  // namespace

void panel_transpose_avx512_f32(const float* src, int64_t ld, int64_t rows, int64_t kb, float* dst) {
    transpose_f32(src, ld, rows, kb, dst);
}
void panel_transpose_avx512_f64(const double* src, int64_t ld, int64_t rows, int64_t kb, double* dst) {
    transpose_f64(src, ld, rows, kb, dst);
}

void split_row_avx512_f32(const float* row, int64_t nb, int64_t panel_stride, float* dst) {
    split_row_impl<float, 32>(row, nb, panel_stride, dst);
}
void split_row_avx512_f64(const double* row, int64_t nb, int64_t panel_stride, double* dst) {
    split_row_impl<double, 16>(row, nb, panel_stride, dst);
}

}  // namespace convkit
