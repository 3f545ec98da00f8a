// Geometry structs passed from Python (convkit/_params.py computes every
// field) to the kernels. The kernels never derive shapes; they only re-check
// them (validate_*) so that a direct call can never index out of bounds.
#pragma once
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace convkit {

// Saturating arithmetic for size and work estimates: legal geometries
// (padding, dilation or windows near 2^40 over a small input) overflow the
// plain products; a saturated estimate just fails the "small enough" test
// (or picks the threaded path) that uses it.
inline int64_t sat_mul(int64_t a, int64_t b) {
    int64_t p;
    return __builtin_mul_overflow(a, b, &p) ? std::numeric_limits<int64_t>::max() : p;
}
inline int64_t sat_add(int64_t a, int64_t b) {
    int64_t s;
    return __builtin_add_overflow(a, b, &s) ? std::numeric_limits<int64_t>::max() : s;
}

// Geometry of a forward convolution y = conv(x, w).
//   x: (batch, in_channels, in_h, in_w)
//   w: (out_channels, in_channels / groups, kernel_h, kernel_w)
//   y: (batch, out_channels, out_h, out_w)
// Input row of output row oh and kernel row r: oh*stride_h - pad_top + r*dilation_h;
// rows outside [0, in_h) read as zero (so bottom/right padding is implied by
// out_h/out_w). Transposed convolution reuses this struct: its output is the
// "x" of the equivalent forward convolution and its input is the "y".
struct ConvGeometry {
    int64_t batch = 0, in_channels = 0, in_h = 0, in_w = 0;
    int64_t out_channels = 0, kernel_h = 0, kernel_w = 0;
    int64_t out_h = 0, out_w = 0;
    int64_t stride_h = 1, stride_w = 1;
    int64_t pad_top = 0, pad_left = 0;
    int64_t dilation_h = 1, dilation_w = 1;
    int64_t groups = 1;

    int64_t x_size() const { return batch * in_channels * in_h * in_w; }
    int64_t w_size() const { return out_channels * (in_channels / groups) * kernel_h * kernel_w; }
    int64_t y_size() const { return batch * out_channels * out_h * out_w; }
};

// Geometry of a sliding-window pool over planes = batch*channels planes.
// Window of output (oh, ow) starts at (oh*stride_h - pad_h, ow*stride_w - pad_w)
// and takes kernel_h x kernel_w taps spaced by dilation.
struct PoolGeometry {
    int64_t planes = 0, in_h = 0, in_w = 0, out_h = 0, out_w = 0;
    int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1;
    int64_t pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1;

    int64_t x_size() const { return planes * in_h * in_w; }
    int64_t y_size() const { return planes * out_h * out_w; }
};

// Adaptive pools: window of output o along an axis of length n -> m is
// [floor(o*n/m), ceil((o+1)*n/m)).
struct AdaptiveGeometry {
    int64_t planes = 0, in_h = 0, in_w = 0, out_h = 0, out_w = 0;

    int64_t x_size() const { return planes * in_h * in_w; }
    int64_t y_size() const { return planes * out_h * out_w; }
};

// Throw std::invalid_argument (-> Python ValueError) when a geometry is
// inconsistent: negative sizes, non-positive stride/dilation/kernel/groups,
// channels not divisible by groups, element counts overflowing int64, or
// pool padding larger than half the window. Defined in geometry.cpp.
void validate(const ConvGeometry& g, const char* function);
void validate(const PoolGeometry& g, const char* function);
void validate(const AdaptiveGeometry& g, const char* function);

}  // namespace convkit
