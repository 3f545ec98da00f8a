// Direct-convolution row kernel (depthwise layers), generic build; see gemm.h.
#include <cstdint>

#include "gemm.h"

namespace convkit {

void direct_row_generic_f32(float* y, int64_t n, const float* const* src, const float* w,
                         int64_t taps, int64_t sw) {
    direct_row_impl<float, 8>(y, n, src, w, taps, sw);
}
void direct_row_generic_f64(double* y, int64_t n, const double* const* src, const double* w,
                         int64_t taps, int64_t sw) {
    direct_row_impl<double, 4>(y, n, src, w, taps, sw);
}

}  // namespace convkit
