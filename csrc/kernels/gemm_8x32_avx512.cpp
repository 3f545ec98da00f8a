// AVX-512 GEMM micro-kernels: float 8x32, double 8x16 (16 zmm accumulators).
#include <immintrin.h>

#include <cstdint>

#include "gemm.h"
#include "transpose8x8_avx2.h"

namespace convkit {

const int gemm_avx512_f32_mr = 8, gemm_avx512_f32_nr = 32;
const int gemm_avx512_f64_mr = 8, gemm_avx512_f64_nr = 16;

#define CK_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

namespace {
// Where A(i, k) is: a[k*8 + i] (a packed panel), a[i*lda + k] (rows read in
// place) or a[k*lda + i] (columns read in place); the same FMAs either way.
enum class ALayout { packed, rows, cols };
template <ALayout L>
inline __attribute__((always_inline)) void ukr_f32(int64_t kc, const float* a, int64_t lda, const float* b,
                                                   float* c, int64_t ldc, int accumulate, const float* init) {
    constexpr bool rows = L == ALayout::rows;
    const int64_t row_step = rows ? lda : 1;                                // A(i+1, k) - A(i, k)
    const int64_t k_step = L == ALayout::packed ? 8 : rows ? 1 : lda;       // A(i, k+1) - A(i, k)
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
#define STEP(i) { const __m512 av = _mm512_set1_ps(a[i * row_step]); \
        c##i##0 = _mm512_fmadd_ps(av, b0, c##i##0); c##i##1 = _mm512_fmadd_ps(av, b1, c##i##1); }
        CK_ROWS(STEP)
#undef STEP
        a += k_step;
        b += 32;
    }
#define STORE(i) _mm512_storeu_ps(c + i * ldc, c##i##0); _mm512_storeu_ps(c + i * ldc + 16, c##i##1);
    CK_ROWS(STORE)
#undef STORE
}
}  // namespace

void gemm_ukr_avx512_f32(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int accumulate,
                         const float* init) {
    ukr_f32<ALayout::packed>(kc, a, 0, b, c, ldc, accumulate, init);
}
void gemm_ukr_rows_avx512_f32(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                              int accumulate, const float* init) {
    ukr_f32<ALayout::rows>(kc, a, lda, b, c, ldc, accumulate, init);
}
void gemm_ukr_cols_avx512_f32(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                              int accumulate, const float* init) {
    ukr_f32<ALayout::cols>(kc, a, lda, b, c, ldc, accumulate, init);
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

void panel_transpose_avx512_f32(const float* src, int64_t ld, int64_t rows, int64_t kb, float* dst) {
    panel_transpose_f32(src, ld, rows, kb, dst);
}
void panel_transpose_avx512_f64(const double* src, int64_t ld, int64_t rows, int64_t kb, double* dst) {
    panel_transpose_f64(src, ld, rows, kb, dst);
}

void split_row_avx512_f32(const float* row, int64_t nb, int64_t panel_stride, float* dst) {
    split_row_impl<float, 32>(row, nb, panel_stride, dst);
}
void split_row_avx512_f64(const double* row, int64_t nb, int64_t panel_stride, double* dst) {
    split_row_impl<double, 16>(row, nb, panel_stride, dst);
}

}  // namespace convkit
