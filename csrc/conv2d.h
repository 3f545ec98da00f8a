// Convolution kernels (NCHW, contiguous, T = float or double).
// Every function fully writes its output (no accumulation into it), handles
// any dimension being 0, is deterministic and bitwise identical for any
// thread count, never throws from inside an OpenMP region, and keeps scratch
// memory per thread and bounded (no im2col over the whole batch).
// The caller has validated g and the buffer sizes, and released the GIL.
#pragma once
#include "geometry.h"

namespace convkit {

// y = conv(x, w) + bias; bias may be nullptr.
template <typename T>
void conv2d_forward(const ConvGeometry& g, const T* x, const T* w, const T* bias, T* y);

// grad_x = gradient of sum(grad_y * conv(x, w)) with respect to x.
template <typename T>
void conv2d_backward_data(const ConvGeometry& g, const T* grad_y, const T* w, T* grad_x);

// grad_w = gradient with respect to w.
template <typename T>
void conv2d_backward_weight(const ConvGeometry& g, const T* grad_y, const T* x, T* grad_w);

// grad_bias[k] = sum over batch and pixels of grad_y[:, k].
template <typename T>
void conv2d_backward_bias(const ConvGeometry& g, const T* grad_y, T* grad_bias);

}  // namespace convkit
