// Portable GEMM micro-kernels (plain loops the compiler may vectorise; no
// reassociation, so each C element is one in-order chain over k).
#include <cstdint>

#include "gemm.h"

namespace convkit {

const int gemm_generic_f32_mr = 4, gemm_generic_f32_nr = 8;
const int gemm_generic_f64_mr = 4, gemm_generic_f64_nr = 4;

namespace {
template <typename T, int MR, int NR>
inline void ukr(int64_t kc, const T* __restrict a, const T* __restrict b, T* __restrict c,
                int64_t ldc, int accumulate, const T* init) {
    T acc[MR][NR];
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) acc[i][j] = accumulate ? c[i * ldc + j] : init ? init[i] : T(0);
    for (int64_t k = 0; k < kc; ++k) {
        const T* ak = a + k * MR;
        const T* bk = b + k * NR;
        for (int i = 0; i < MR; ++i) {
            const T av = ak[i];
            for (int j = 0; j < NR; ++j) acc[i][j] += av * bk[j];
        }
    }
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) c[i * ldc + j] = acc[i][j];
}
template <typename T>
inline void transpose(const T* src, int64_t ld, int64_t rows, int64_t kb, T* dst) {
    for (int64_t l = 0; l < kb; ++l)
        for (int64_t j = 0; j < rows; ++j) dst[l * rows + j] = src[j * ld + l];
}
}  // namespace

void panel_transpose_generic_f32(const float* src, int64_t ld, int64_t rows, int64_t kb, float* dst) {
    transpose(src, ld, rows, kb, dst);
}
void panel_transpose_generic_f64(const double* src, int64_t ld, int64_t rows, int64_t kb,
                                 double* dst) {
    transpose(src, ld, rows, kb, dst);
}

void gemm_ukr_generic_f32(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                          int accumulate, const float* init) {
    ukr<float, 4, 8>(kc, a, b, c, ldc, accumulate, init);
}
void gemm_ukr_generic_f64(int64_t kc, const double* a, const double* b, double* c, int64_t ldc,
                          int accumulate, const double* init) {
    ukr<double, 4, 4>(kc, a, b, c, ldc, accumulate, init);
}

void split_row_generic_f32(const float* row, int64_t nb, int64_t panel_stride, float* dst) {
    split_row_impl<float, 8>(row, nb, panel_stride, dst);
}
void split_row_generic_f64(const double* row, int64_t nb, int64_t panel_stride, double* dst) {
    split_row_impl<double, 4>(row, nb, panel_stride, dst);
}

}  // namespace convkit
