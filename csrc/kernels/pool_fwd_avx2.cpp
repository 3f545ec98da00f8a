// pool_impl.h row kernels built with the avx2 flags (see CMakeLists.txt).
#include "pool_impl.h"
#include "pool_isa.h"

namespace convkit {
namespace poolk {

void max_fwd_rows_avx2_f32(const PoolGeometry& g, const float* x, float* y, int64_t* i, int64_t r0, int64_t r1) {
    max_fwd_rows<float>(g, x, y, i, r0, r1);
}
void max_fwd_rows_avx2_f64(const PoolGeometry& g, const double* x, double* y, int64_t* i, int64_t r0,
                           int64_t r1) {
    max_fwd_rows<double>(g, x, y, i, r0, r1);
}
void avg_fwd_rows_avx2_f32(const PoolGeometry& g, bool cip, int64_t dov, const float* x, float* y, int64_t r0,
                           int64_t r1) {
    avg_fwd_rows<float>(g, cip, dov, x, y, r0, r1);
}
void avg_fwd_rows_avx2_f64(const PoolGeometry& g, bool cip, int64_t dov, const double* x, double* y, int64_t r0,
                           int64_t r1) {
    avg_fwd_rows<double>(g, cip, dov, x, y, r0, r1);
}

}  // namespace poolk
}  // namespace convkit
