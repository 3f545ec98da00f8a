// AVX2+FMA GEMM micro-kernels: float 6x16, double 6x8 (12 ymm accumulators).
#include <immintrin.h>

#include <cstdint>

#include "gemm.h"
#include "transpose8x8_avx2.h"

namespace convkit {

const int gemm_avx2_f32_mr = 6, gemm_avx2_f32_nr = 16;
const int gemm_avx2_f64_mr = 6, gemm_avx2_f64_nr = 8;

namespace {
// Where A(i, k) is: a[k*6 + i] (a packed panel), a[i*lda + k] (rows of a
// row-major matrix read in place) or a[k*lda + i] (columns of one read in
// place); the same FMAs in the same order in every case.
enum class ALayout { packed, rows, cols };
template <ALayout L>
inline __attribute__((always_inline)) void ukr_f32(int64_t kc, const float* a, int64_t lda, const float* b,
                                                   float* c, int64_t ldc, int accumulate, const float* init) {
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    if (accumulate) {
        c00 = _mm256_loadu_ps(c + 0 * ldc); c01 = _mm256_loadu_ps(c + 0 * ldc + 8);
        c10 = _mm256_loadu_ps(c + 1 * ldc); c11 = _mm256_loadu_ps(c + 1 * ldc + 8);
        c20 = _mm256_loadu_ps(c + 2 * ldc); c21 = _mm256_loadu_ps(c + 2 * ldc + 8);
        c30 = _mm256_loadu_ps(c + 3 * ldc); c31 = _mm256_loadu_ps(c + 3 * ldc + 8);
        c40 = _mm256_loadu_ps(c + 4 * ldc); c41 = _mm256_loadu_ps(c + 4 * ldc + 8);
        c50 = _mm256_loadu_ps(c + 5 * ldc); c51 = _mm256_loadu_ps(c + 5 * ldc + 8);
    } else if (init) {
        c00 = c01 = _mm256_broadcast_ss(init + 0); c10 = c11 = _mm256_broadcast_ss(init + 1);
        c20 = c21 = _mm256_broadcast_ss(init + 2); c30 = c31 = _mm256_broadcast_ss(init + 3);
        c40 = c41 = _mm256_broadcast_ss(init + 4); c50 = c51 = _mm256_broadcast_ss(init + 5);
    } else {
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
    }
    constexpr bool rows = L == ALayout::rows;
    const float* a0 = a;
    const float* a1 = a + (rows ? lda : 1);
    const float* a2 = a + (rows ? 2 * lda : 2);
    const float* a3 = a + (rows ? 3 * lda : 3);
    const float* a4 = a + (rows ? 4 * lda : 4);
    const float* a5 = a + (rows ? 5 * lda : 5);
    const int64_t step = L == ALayout::packed ? 6 : rows ? 1 : lda;
    for (int64_t k = 0; k < kc; ++k) {
        const __m256 b0 = _mm256_loadu_ps(b);
        const __m256 b1 = _mm256_loadu_ps(b + 8);
        const int64_t o = k * step;
        __m256 av;
        av = _mm256_broadcast_ss(a0 + o); c00 = _mm256_fmadd_ps(av, b0, c00); c01 = _mm256_fmadd_ps(av, b1, c01);
        av = _mm256_broadcast_ss(a1 + o); c10 = _mm256_fmadd_ps(av, b0, c10); c11 = _mm256_fmadd_ps(av, b1, c11);
        av = _mm256_broadcast_ss(a2 + o); c20 = _mm256_fmadd_ps(av, b0, c20); c21 = _mm256_fmadd_ps(av, b1, c21);
        av = _mm256_broadcast_ss(a3 + o); c30 = _mm256_fmadd_ps(av, b0, c30); c31 = _mm256_fmadd_ps(av, b1, c31);
        av = _mm256_broadcast_ss(a4 + o); c40 = _mm256_fmadd_ps(av, b0, c40); c41 = _mm256_fmadd_ps(av, b1, c41);
        av = _mm256_broadcast_ss(a5 + o); c50 = _mm256_fmadd_ps(av, b0, c50); c51 = _mm256_fmadd_ps(av, b1, c51);
        b += 16;
    }
    _mm256_storeu_ps(c + 0 * ldc, c00); _mm256_storeu_ps(c + 0 * ldc + 8, c01);
    _mm256_storeu_ps(c + 1 * ldc, c10); _mm256_storeu_ps(c + 1 * ldc + 8, c11);
    _mm256_storeu_ps(c + 2 * ldc, c20); _mm256_storeu_ps(c + 2 * ldc + 8, c21);
    _mm256_storeu_ps(c + 3 * ldc, c30); _mm256_storeu_ps(c + 3 * ldc + 8, c31);
    _mm256_storeu_ps(c + 4 * ldc, c40); _mm256_storeu_ps(c + 4 * ldc + 8, c41);
    _mm256_storeu_ps(c + 5 * ldc, c50); _mm256_storeu_ps(c + 5 * ldc + 8, c51);
}
}  // namespace

void gemm_ukr_avx2_f32(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int accumulate,
                       const float* init) {
    ukr_f32<ALayout::packed>(kc, a, 0, b, c, ldc, accumulate, init);
}

void gemm_ukr_rows_avx2_f32(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                            int accumulate, const float* init) {
    ukr_f32<ALayout::rows>(kc, a, lda, b, c, ldc, accumulate, init);
}

void gemm_ukr_cols_avx2_f32(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                            int accumulate, const float* init) {
    ukr_f32<ALayout::cols>(kc, a, lda, b, c, ldc, accumulate, init);
}

void gemm_ukr_avx2_f64(int64_t kc, const double* a, const double* b, double* c, int64_t ldc,
                       int accumulate, const double* init) {
    __m256d c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    if (accumulate) {
        c00 = _mm256_loadu_pd(c + 0 * ldc); c01 = _mm256_loadu_pd(c + 0 * ldc + 4);
        c10 = _mm256_loadu_pd(c + 1 * ldc); c11 = _mm256_loadu_pd(c + 1 * ldc + 4);
        c20 = _mm256_loadu_pd(c + 2 * ldc); c21 = _mm256_loadu_pd(c + 2 * ldc + 4);
        c30 = _mm256_loadu_pd(c + 3 * ldc); c31 = _mm256_loadu_pd(c + 3 * ldc + 4);
        c40 = _mm256_loadu_pd(c + 4 * ldc); c41 = _mm256_loadu_pd(c + 4 * ldc + 4);
        c50 = _mm256_loadu_pd(c + 5 * ldc); c51 = _mm256_loadu_pd(c + 5 * ldc + 4);
    } else if (init) {
        c00 = c01 = _mm256_broadcast_sd(init + 0); c10 = c11 = _mm256_broadcast_sd(init + 1);
        c20 = c21 = _mm256_broadcast_sd(init + 2); c30 = c31 = _mm256_broadcast_sd(init + 3);
        c40 = c41 = _mm256_broadcast_sd(init + 4); c50 = c51 = _mm256_broadcast_sd(init + 5);
    } else {
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_pd();
    }
    for (int64_t k = 0; k < kc; ++k) {
        const __m256d b0 = _mm256_loadu_pd(b);
        const __m256d b1 = _mm256_loadu_pd(b + 4);
        __m256d av;
        av = _mm256_broadcast_sd(a + 0); c00 = _mm256_fmadd_pd(av, b0, c00); c01 = _mm256_fmadd_pd(av, b1, c01);
        av = _mm256_broadcast_sd(a + 1); c10 = _mm256_fmadd_pd(av, b0, c10); c11 = _mm256_fmadd_pd(av, b1, c11);
        av = _mm256_broadcast_sd(a + 2); c20 = _mm256_fmadd_pd(av, b0, c20); c21 = _mm256_fmadd_pd(av, b1, c21);
        av = _mm256_broadcast_sd(a + 3); c30 = _mm256_fmadd_pd(av, b0, c30); c31 = _mm256_fmadd_pd(av, b1, c31);
        av = _mm256_broadcast_sd(a + 4); c40 = _mm256_fmadd_pd(av, b0, c40); c41 = _mm256_fmadd_pd(av, b1, c41);
        av = _mm256_broadcast_sd(a + 5); c50 = _mm256_fmadd_pd(av, b0, c50); c51 = _mm256_fmadd_pd(av, b1, c51);
        a += 6;
        b += 8;
    }
    _mm256_storeu_pd(c + 0 * ldc, c00); _mm256_storeu_pd(c + 0 * ldc + 4, c01);
    _mm256_storeu_pd(c + 1 * ldc, c10); _mm256_storeu_pd(c + 1 * ldc + 4, c11);
    _mm256_storeu_pd(c + 2 * ldc, c20); _mm256_storeu_pd(c + 2 * ldc + 4, c21);
    _mm256_storeu_pd(c + 3 * ldc, c30); _mm256_storeu_pd(c + 3 * ldc + 4, c31);
    _mm256_storeu_pd(c + 4 * ldc, c40); _mm256_storeu_pd(c + 4 * ldc + 4, c41);
    _mm256_storeu_pd(c + 5 * ldc, c50); _mm256_storeu_pd(c + 5 * ldc + 4, c51);
}

void panel_transpose_avx2_f32(const float* src, int64_t ld, int64_t rows, int64_t kb, float* dst) {
    panel_transpose_f32(src, ld, rows, kb, dst);
}
void panel_transpose_avx2_f64(const double* src, int64_t ld, int64_t rows, int64_t kb, double* dst) {
    panel_transpose_f64(src, ld, rows, kb, dst);
}

void split_row_avx2_f32(const float* row, int64_t nb, int64_t panel_stride, float* dst) {
    split_row_impl<float, 16>(row, nb, panel_stride, dst);
}
void split_row_avx2_f64(const double* row, int64_t nb, int64_t panel_stride, double* dst) {
    split_row_impl<double, 8>(row, nb, panel_stride, dst);
}

}  // namespace convkit
