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
#endif
#ifdef CONVKIT_HAVE_AVX512
void plane_means_avx512_f32(const float*, int64_t, int64_t, int64_t, float*);
void plane_means_avx512_f64(const double*, int64_t, int64_t, int64_t, double*);
void max_fwd_rows_avx512_f32(const PoolGeometry&, const float*, float*, int64_t*, int64_t, int64_t);
void max_fwd_rows_avx512_f64(const PoolGeometry&, const double*, double*, int64_t*, int64_t, int64_t);
void avg_fwd_rows_avx512_f32(const PoolGeometry&, bool, int64_t, const float*, float*, int64_t, int64_t);
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
