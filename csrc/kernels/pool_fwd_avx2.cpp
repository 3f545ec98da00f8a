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

void avg_bwd_scatter_plane_avx2_f32(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, int64_t kw,
                                   int64_t sw, int64_t pw, const int64_t* hlo, const int64_t* hhi, const int64_t* ca,
                                   const int64_t* cb, const float* div, const float* gyp, float* gxp, float* d) {
    avg_bwd_scatter_plane<float>(in_h, in_w, out_h, out_w, kw, sw, pw, hlo, hhi, ca, cb, div, gyp, gxp, d);
}
void avg_bwd_s1_plane_avx2_f32(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, int64_t kw, int64_t pw,
                              int64_t rz, const int64_t* ha, const int64_t* hb, const float* div, const float* gyp,
                              float* gxp, float* D) {
    avg_bwd_s1_plane<float>(in_h, in_w, out_h, out_w, kw, pw, rz, ha, hb, div, gyp, gxp, D);
}
void avg_bwd_disjoint_rows_avx2_f32(int64_t in_w, int64_t out_w, int64_t ih0, int64_t ih1, const int64_t* oh_of,
                                   const int32_t* col, const float* div, const float* gyp, float* gxp, float* d) {
    avg_bwd_disjoint_rows<float>(in_w, out_w, ih0, ih1, oh_of, col, div, gyp, gxp, d);
}
void avg_bwd_scatter_plane_avx2_f64(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, int64_t kw,
                                   int64_t sw, int64_t pw, const int64_t* hlo, const int64_t* hhi, const int64_t* ca,
                                   const int64_t* cb, const double* div, const double* gyp, double* gxp, double* d) {
    avg_bwd_scatter_plane<double>(in_h, in_w, out_h, out_w, kw, sw, pw, hlo, hhi, ca, cb, div, gyp, gxp, d);
}
void avg_bwd_s1_plane_avx2_f64(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, int64_t kw, int64_t pw,
                              int64_t rz, const int64_t* ha, const int64_t* hb, const double* div, const double* gyp,
                              double* gxp, double* D) {
    avg_bwd_s1_plane<double>(in_h, in_w, out_h, out_w, kw, pw, rz, ha, hb, div, gyp, gxp, D);
}
void avg_bwd_disjoint_rows_avx2_f64(int64_t in_w, int64_t out_w, int64_t ih0, int64_t ih1, const int64_t* oh_of,
                                   const int32_t* col, const double* div, const double* gyp, double* gxp, double* d) {
    avg_bwd_disjoint_rows<double>(in_w, out_w, ih0, ih1, oh_of, col, div, gyp, gxp, d);
}

void plane_means_avx2_f32(const float* x, int64_t plane, int64_t p0, int64_t p1, float* y) {
    plane_means<float>(x, plane, p0, p1, y);
}
void plane_means_avx2_f64(const double* x, int64_t plane, int64_t p0, int64_t p1, double* y) {
    plane_means<double>(x, plane, p0, p1, y);
}

}  // namespace poolk
}  // namespace convkit
