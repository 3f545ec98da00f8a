// Entry points of the ISA-specific builds of the pool row kernels
// (pool_fwd_avx2.cpp, pool_fwd_avx512.cpp: pool_impl.h compiled with wider
// vectors). Same results as the portable build, bit for bit.
#pragma once
#include <cstdint>

#include "geometry.h"

namespace convkit {
namespace poolk {
#ifdef CONVKIT_HAVE_AVX2
void plane_means_avx2_f32(const float*, int64_t, int64_t, int64_t, float*);
void plane_means_avx2_f64(const double*, int64_t, int64_t, int64_t, double*);
void plane_maxes_avx2_f32(const float*, int64_t, int64_t, int64_t, float*, int64_t*);
void plane_maxes_avx2_f64(const double*, int64_t, int64_t, int64_t, double*, int64_t*);
void max_fwd_rows_avx2_f32(const PoolGeometry&, const float*, float*, int64_t*, int64_t, int64_t);
void max_fwd_rows_avx2_f64(const PoolGeometry&, const double*, double*, int64_t*, int64_t, int64_t);
void avg_fwd_rows_avx2_f32(const PoolGeometry&, bool, int64_t, const float*, float*, int64_t, int64_t);
void avg_fwd_rows_avx2_f64(const PoolGeometry&, bool, int64_t, const double*, double*, int64_t, int64_t);
void avg_bwd_scatter_plane_avx2_f32(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                                   const int64_t*, const int64_t*, const int64_t*, const float*, const float*, float*, float*);
void avg_bwd_s1_plane_avx2_f32(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                              const int64_t*, const float*, const float*, float*, float*);
void avg_bwd_disjoint_rows_avx2_f32(int64_t, int64_t, int64_t, int64_t, const int64_t*, const int32_t*, const float*,
                                   const float*, float*, float*);
void avg_bwd_scatter_plane_avx2_f64(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                                   const int64_t*, const int64_t*, const int64_t*, const double*, const double*, double*, double*);
void avg_bwd_s1_plane_avx2_f64(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                              const int64_t*, const double*, const double*, double*, double*);
void avg_bwd_disjoint_rows_avx2_f64(int64_t, int64_t, int64_t, int64_t, const int64_t*, const int32_t*, const double*,
                                   const double*, double*, double*);
// Max-pool backward of output rows [oh0, oh1) of one plane of whole 2x2
// windows at stride 2 (out_h = in_h / 2, out_w = in_w / 2 >= 4, in_w < 2^30,
// no padding):
// writes input rows 2*oh0 .. 2*oh1, plus the odd last input column of those
// rows and, when oh1 == out_h, the odd last input row (no window covers them:
// zeros). Every input is 0 + gy of its window where the window's index points
// at it, else +0 (zero fill then assign, bit for bit). Returns the first
// output position (in the plane) whose index is outside its window, or -1
// (grad_x is then unspecified).
int64_t max_bwd_2x2_rows_avx2_f32(const float* gy, const int64_t* idx, float* gx, int64_t in_h, int64_t in_w,
                                  int64_t out_w, int64_t oh0, int64_t oh1, int64_t out_h);
// Max-pool backward of input rows [ih0, ih1) of one plane, for column stride
// 1, any kernel, row stride, padding and dilation, windows that may overlap
// but none of padding only, kernel_h <= 32, planes under 2^31 elements: every input of those
// rows is written, 0 + the gy of the outputs whose index points at it, in
// ascending output order (the scatter's bits). Returns how many outputs
// matched their input; an index off its window's taps matches none.
int64_t max_bwd_gather_w1_avx2_f32(const PoolGeometry& g, const float* gy, const int64_t* idx, float* gx,
                                   int64_t ih0, int64_t ih1);
// Max-pool window check of n outputs of one row (dilation 1, planes of at
// most 2^30 elements, windows of rows [row_base / in_w, + nr) and columns
// [wlo[o], wlo[o] + wn_minus1[o] + 1), none empty): out[o] = idx[o] as int32;
// true when every index lies in its window (out is then usable). overread:
// idx may be read up to the next multiple of 8 past n; wlo, wn_minus1 and
// out always hold that many.
bool max_bwd_window_check_avx2(const int64_t* idx, int64_t n, bool overread, const int32_t* wlo,
                               const int32_t* wn_minus1, int32_t row_base, int32_t in_w, int64_t nr, int32_t* out);
#endif
#ifdef CONVKIT_HAVE_AVX512
void plane_means_avx512_f64(const double*, int64_t, int64_t, int64_t, double*);
void plane_maxes_avx512_f32(const float*, int64_t, int64_t, int64_t, float*, int64_t*);
void plane_maxes_avx512_f64(const double*, int64_t, int64_t, int64_t, double*, int64_t*);
void max_fwd_rows_avx512_f32(const PoolGeometry&, const float*, float*, int64_t*, int64_t, int64_t);
void max_fwd_rows_avx512_f64(const PoolGeometry&, const double*, double*, int64_t*, int64_t, int64_t);
void avg_fwd_rows_avx512_f64(const PoolGeometry&, bool, int64_t, const double*, double*, int64_t, int64_t);
void avg_bwd_scatter_plane_avx512_f32(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                                   const int64_t*, const int64_t*, const int64_t*, const float*, const float*, float*, float*);
void avg_bwd_s1_plane_avx512_f32(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                              const int64_t*, const float*, const float*, float*, float*);
void avg_bwd_disjoint_rows_avx512_f32(int64_t, int64_t, int64_t, int64_t, const int64_t*, const int32_t*, const float*,
                                   const float*, float*, float*);
void avg_bwd_scatter_plane_avx512_f64(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                                   const int64_t*, const int64_t*, const int64_t*, const double*, const double*, double*, double*);
void avg_bwd_s1_plane_avx512_f64(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                              const int64_t*, const double*, const double*, double*, double*);
void avg_bwd_disjoint_rows_avx512_f64(int64_t, int64_t, int64_t, int64_t, const int64_t*, const int32_t*, const double*,
                                   const double*, double*, double*);
#endif
}  // namespace poolk
}  // namespace convkit
