// Internal: direct convolution paths for depthwise-like layers (one input and
// one output channel per group) and direct backward weight for tiny layers.
// Called by the dispatch in conv2d.cpp; same contract as conv2d.h (full
// writes, deterministic and bitwise identical for any thread count, no
// throw/allocation inside parallel regions, bounded per-thread scratch).
#pragma once
#include <cstdint>

#include "geometry.h"

namespace convkit {
namespace dw {

// Depthwise-like layers (Cg == 1 && Kg == 1): GEMM would have M = 1.
inline bool use_direct(const ConvGeometry& g) {
    const int64_t Cg = g.in_channels / g.groups, Kg = g.out_channels / g.groups;
    return Cg == 1 && Kg == 1;
}

// Backward weight by direct dot products when the GEMM would be tiny.
inline bool use_direct_backward_weight(const ConvGeometry& g) {
    const int64_t Cg = g.in_channels / g.groups, Kg = g.out_channels / g.groups;
    return use_direct(g) || (Cg * g.kernel_h * g.kernel_w <= 16 && Kg <= 16);
}

// Require use_direct(g); g.y_size() > 0.
template <typename T>
void forward(const ConvGeometry& g, const T* x, const T* w, const T* bias, T* y);

// Require use_direct(g); g.x_size() > 0 and out_h*out_w > 0.
template <typename T>
void backward_data(const ConvGeometry& g, const T* grad_y, const T* w, T* grad_x);

// Require use_direct_backward_weight(g). Writes grad_w when nb_chunks == 1,
// else partial[b * w_size] for every batch chunk b (images
// [b*N/nb_chunks, (b+1)*N/nb_chunks)); the caller sums the chunks in order.
template <typename T>
void backward_weight(const ConvGeometry& g, const T* grad_y, const T* x, T* grad_w,
                     int64_t nb_chunks, T* partial);

}  // namespace dw
}  // namespace convkit
