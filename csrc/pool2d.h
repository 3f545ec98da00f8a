// Pooling kernels over contiguous (planes, H, W) buffers, T = float or double.
// Semantics follow PyTorch's CPU kernels exactly (see comments in pool2d.cpp).
// Every function fully writes its outputs, is deterministic and bitwise
// identical for any thread count, and never throws from inside an OpenMP
// region. The caller has validated the geometry and buffer sizes and released
// the GIL.
#pragma once
#include "geometry.h"

namespace convkit {

// indices may be nullptr. Index = ih*in_w + iw of the maximum within the plane;
// first maximum wins, a NaN always wins (the last NaN, as PyTorch).
template <typename T>
void max_pool2d_forward(const PoolGeometry& g, const T* x, T* y, int64_t* indices);

// Returns -1 when every index lies inside its own window, otherwise the flat
// position (into indices) of the first bad one; in that case grad_x is left
// unspecified but nothing outside it was written.
template <typename T>
int64_t max_pool2d_backward(const PoolGeometry& g, const T* grad_y, const int64_t* indices, T* grad_x);

// divisor_override == 0 means none.
template <typename T>
void avg_pool2d_forward(const PoolGeometry& g, bool count_include_pad, int64_t divisor_override,
                        const T* x, T* y);
template <typename T>
void avg_pool2d_backward(const PoolGeometry& g, bool count_include_pad, int64_t divisor_override,
                         const T* grad_y, T* grad_x);

// PyTorch's lp_pool2d: y = (avg_pool2d(x**p, count_include_pad=True, pad 0) * kh*kw) ** (1/p)
// (x**p, not |x|**p; the backward recomputes y from x).
template <typename T>
void lp_pool2d_forward(const PoolGeometry& g, double norm_type, const T* x, T* y);
template <typename T>
void lp_pool2d_backward(const PoolGeometry& g, double norm_type, const T* grad_y, const T* x, T* grad_x);

template <typename T>
void adaptive_avg_pool2d_forward(const AdaptiveGeometry& g, const T* x, T* y);
template <typename T>
void adaptive_avg_pool2d_backward(const AdaptiveGeometry& g, const T* grad_y, T* grad_x);
template <typename T>
void adaptive_max_pool2d_forward(const AdaptiveGeometry& g, const T* x, T* y, int64_t* indices);
// Same return convention as max_pool2d_backward.
template <typename T>
int64_t adaptive_max_pool2d_backward(const AdaptiveGeometry& g, const T* grad_y, const int64_t* indices, T* grad_x);

}  // namespace convkit
