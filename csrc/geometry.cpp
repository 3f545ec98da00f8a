#include "geometry.h"

#include <initializer_list>

namespace convkit {
namespace {

[[noreturn]] void fail(const char* function, const std::string& what) {
    throw std::invalid_argument(std::string(function) + ": " + what);
}

// Product of non-negative factors, failing instead of overflowing int64.
// Zero factors are skipped in the check: an empty batch must not hide a
// per-plane size that overflows (kernels still compute h*w, k*k, ...).
int64_t checked_product(const char* function, const char* what, std::initializer_list<int64_t> factors) {
    int64_t product = 1;
    for (int64_t f : factors) {
        if (f < 0) fail(function, std::string(what) + " has a negative dimension");
        if (f == 0) continue;
        if (__builtin_mul_overflow(product, f, &product))
            fail(function, std::string(what) + " has too many elements (int64 overflow)");
    }
    // Keep byte offsets (x8) and index arithmetic safe as well.
    if (product > (int64_t(1) << 60)) fail(function, std::string(what) + " has too many elements");
    return product;
}

void positive(const char* function, const char* name, int64_t v) {
    if (v < 1) fail(function, std::string(name) + " must be positive, got " + std::to_string(v));
}

void non_negative(const char* function, const char* name, int64_t v) {
    if (v < 0) fail(function, std::string(name) + " must be non-negative, got " + std::to_string(v));
}

// Largest coordinate touched along one axis stays representable.
void extent_fits(const char* function, int64_t out, int64_t stride, int64_t kernel, int64_t dilation, int64_t pad) {
    int64_t a = 0, b = 0, c = 0;
    if (__builtin_mul_overflow(out, stride, &a) || __builtin_mul_overflow(kernel, dilation, &b) ||
        __builtin_add_overflow(a, b, &c) || __builtin_add_overflow(c, pad, &c) || c > (int64_t(1) << 60))
        fail(function, "window coordinates overflow int64");
}

}  // namespace

void validate(const ConvGeometry& g, const char* f) {
    non_negative(f, "batch", g.batch);
    non_negative(f, "in_channels", g.in_channels);
    non_negative(f, "in_h", g.in_h);
    non_negative(f, "in_w", g.in_w);
    non_negative(f, "out_channels", g.out_channels);
    positive(f, "kernel_h", g.kernel_h);
    positive(f, "kernel_w", g.kernel_w);
    non_negative(f, "out_h", g.out_h);
    non_negative(f, "out_w", g.out_w);
    positive(f, "stride_h", g.stride_h);
    positive(f, "stride_w", g.stride_w);
    non_negative(f, "pad_top", g.pad_top);
    non_negative(f, "pad_left", g.pad_left);
    positive(f, "dilation_h", g.dilation_h);
    positive(f, "dilation_w", g.dilation_w);
    positive(f, "groups", g.groups);
    if (g.in_channels % g.groups || g.out_channels % g.groups)
        fail(f, "in_channels and out_channels must be divisible by groups");
    checked_product(f, "input", {g.batch, g.in_channels, g.in_h, g.in_w});
    checked_product(f, "output", {g.batch, g.out_channels, g.out_h, g.out_w});
    checked_product(f, "weight", {g.out_channels, g.in_channels / g.groups, g.kernel_h, g.kernel_w});
    checked_product(f, "im2col row", {g.in_channels / g.groups, g.kernel_h, g.kernel_w, g.out_h, g.out_w});
    extent_fits(f, g.out_h, g.stride_h, g.kernel_h, g.dilation_h, g.pad_top);
    extent_fits(f, g.out_w, g.stride_w, g.kernel_w, g.dilation_w, g.pad_left);
}

void validate(const PoolGeometry& g, const char* f) {
    non_negative(f, "planes", g.planes);
    positive(f, "in_h", g.in_h);
    positive(f, "in_w", g.in_w);
    non_negative(f, "out_h", g.out_h);
    non_negative(f, "out_w", g.out_w);
    positive(f, "kernel_h", g.kernel_h);
    positive(f, "kernel_w", g.kernel_w);
    positive(f, "stride_h", g.stride_h);
    positive(f, "stride_w", g.stride_w);
    positive(f, "dilation_h", g.dilation_h);
    positive(f, "dilation_w", g.dilation_w);
    non_negative(f, "pad_h", g.pad_h);
    non_negative(f, "pad_w", g.pad_w);
    if (g.pad_h > g.kernel_h / 2 || g.pad_w > g.kernel_w / 2)
        fail(f, "padding must be at most half of kernel_size");
    checked_product(f, "input", {g.planes, g.in_h, g.in_w});
    checked_product(f, "output", {g.planes, g.out_h, g.out_w});
    checked_product(f, "window", {g.kernel_h, g.kernel_w});
    extent_fits(f, g.out_h, g.stride_h, g.kernel_h, g.dilation_h, g.pad_h);
    extent_fits(f, g.out_w, g.stride_w, g.kernel_w, g.dilation_w, g.pad_w);
}

void validate(const AdaptiveGeometry& g, const char* f) {
    non_negative(f, "planes", g.planes);
    positive(f, "in_h", g.in_h);
    positive(f, "in_w", g.in_w);
    positive(f, "out_h", g.out_h);
    positive(f, "out_w", g.out_w);
    checked_product(f, "input", {g.planes, g.in_h, g.in_w});
    checked_product(f, "output", {g.planes, g.out_h, g.out_w});
    // (o + 1) * in_size is computed for window bounds (out sizes are <= 2^60 here).
    checked_product(f, "window bounds", {g.out_h + 1, g.in_h});
    checked_product(f, "window bounds", {g.out_w + 1, g.in_w});
}

}  // namespace convkit
