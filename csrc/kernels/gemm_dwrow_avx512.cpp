// Direct-convolution row and dot kernels (depthwise / tiny layers), avx512 build; see gemm.h.
#include <cstdint>

#include "gemm.h"

namespace convkit {

void direct_row_avx512_f32(float* y, int64_t n, const float* const* src, const float* w,
                         int64_t taps, int64_t sw) {
    direct_row_impl<float, 16>(y, n, src, w, taps, sw);
}
void direct_row_avx512_f64(double* y, int64_t n, const double* const* src, const double* w,
                         int64_t taps, int64_t sw) {
    direct_row_impl<double, 8>(y, n, src, w, taps, sw);
}

void direct_dot_avx512_f32(float* lanes, int64_t nrows, const float* y, const float* col,
                        int64_t ldcol, int64_t n) {
    direct_dot_impl<float>(lanes, nrows, y, col, ldcol, n);
}
void direct_dot_avx512_f64(double* lanes, int64_t nrows, const double* y, const double* col,
                        int64_t ldcol, int64_t n) {
    direct_dot_impl<double>(lanes, nrows, y, col, ldcol, n);
}

}  // namespace convkit
