// Helpers shared by the convolution kernels (conv2d.cpp, conv2d_depthwise.cpp):
// thread index, per-calling-thread scratch buffers, and im2col row readers.
// Internal header: everything has internal linkage in each file that uses it.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "geometry.h"

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace convkit {
namespace {

inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// Flush-to-zero and denormals-are-zero for the scope (x86 MXCSR, this thread
// only, so every parallel task sets it itself). Without them a subnormal
// product costs a microcode assist on Intel cores: a convolution of subnormal
// inputs ran 60-140x slower. Subnormal inputs then count as zero and subnormal
// results become zero (values below 1.2e-38 in float32, 2.2e-308 in float64);
// everything else, NaN and inf included, is unchanged.
struct FlushDenormals {
#if defined(__SSE__) || defined(__x86_64__)
    unsigned saved;
    FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }  // FTZ (bit 15) | DAZ (bit 6)
    ~FlushDenormals() { _mm_setcsr(saved); }
#endif
    FlushDenormals(const FlushDenormals&) = delete;
    FlushDenormals& operator=(const FlushDenormals&) = delete;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Width of the zero-padded input rows the padded paths read (the input row
// with its left padding, or the span of one output row's taps if longer), and
// the number of input rows that `rows` consecutive output rows read
// (saturating: see sat_mul).
inline int64_t padded_row_width(const ConvGeometry& g) {
    const int64_t span = sat_add(sat_add(sat_mul(g.out_w - 1, g.stride_w), sat_mul(g.kernel_w - 1, g.dilation_w)), 1);
    return std::max(sat_add(g.in_w, g.pad_left), span);
}
inline int64_t padded_band_rows(const ConvGeometry& g, int64_t rows) {
    return sat_add(sat_add(sat_mul(rows - 1, g.stride_h), sat_mul(g.kernel_h - 1, g.dilation_h)), 1);
}

// Scratch memory cached per calling thread (so repeated calls do not pay for
// fresh pages), grown on demand. Allocation happens before any parallel
// region; std::bad_alloc propagates to the caller. slot distinguishes buffers
// that are alive at the same time within one call.
inline unsigned char* caller_buffer(int slot, size_t bytes) {
    struct Buf {
        std::unique_ptr<unsigned char[]> mem;
        size_t size = 0;
    };
    thread_local Buf bufs[3];
    Buf& b = bufs[slot];
    if (b.size < bytes) {
        b.mem.reset();
        b.size = 0;
        b.mem.reset(new unsigned char[bytes]);
        b.size = bytes;
    }
    return b.mem.get();
}

// Per-thread slices (64-byte aligned) of a caller_buffer.
template <typename T>
class Scratch {
public:
    Scratch(int threads, int64_t per_thread, int slot = 0) {
        stride_ = round_up(std::max<int64_t>(per_thread, 1), 64 / int64_t(sizeof(T)));
        const size_t bytes = static_cast<size_t>(stride_ * threads) * sizeof(T) + 64;
        unsigned char* raw = caller_buffer(slot, bytes);
        const auto addr = reinterpret_cast<uintptr_t>(raw);
        base_ = reinterpret_cast<T*>(raw + (64 - addr % 64) % 64);
    }
    T* get(int thread) const { return base_ + stride_ * thread; }

private:
    T* base_ = nullptr;
    int64_t stride_ = 0;
};

// Output columns ow with 0 <= ow*stride + off < in_w, as [lo, hi) clamped to [0, out_w).
inline void valid_cols(int64_t off, int64_t stride, int64_t in_w, int64_t out_w, int64_t& lo,
                       int64_t& hi) {
    lo = off >= 0 ? 0 : ceil_div(-off, stride);
    hi = (in_w - 1 - off) < 0 ? 0 : (in_w - 1 - off) / stride + 1;
    lo = std::min(lo, out_w);
    hi = std::min(hi, out_w);
    if (hi < lo) hi = lo;
}

// dst[q - q0] = x_plane value read by output pixel q (linear over out_h*out_w)
// through kernel tap (r, s), zero when outside the input. q in [q0, q0+n).
// Destination for im2col rows (a plain array).
template <typename T>
struct LinearWriter {
    T* d;
    void zero(int64_t n) {
        for (int64_t i = 0; i < n; ++i) d[i] = T(0);
        d += n;
    }
    void copy(const T* s, int64_t n) {
        for (int64_t i = 0; i < n; ++i) d[i] = s[i];
        d += n;
    }
    void gather(const T* s, int64_t stride, int64_t n) {
        if (stride == 2) {
            for (int64_t i = 0; i < n; ++i) d[i] = s[2 * i];
        } else {
            for (int64_t i = 0; i < n; ++i) d[i] = s[i * stride];
        }
        d += n;
    }
};

// Writes the x_plane values read by output pixels q in [q0, q0+n) (linear
// over out_h*out_w) through kernel tap (r, s); zero outside the input.
template <typename T, class Writer>
void im2col_row_to(const ConvGeometry& g, const T* xp, int64_t r, int64_t s, int64_t q0, int64_t n,
                   Writer& out) {
    if (n <= 0) return;
    const int64_t OW = g.out_w, H = g.in_h, W = g.in_w, sw = g.stride_w;
    int64_t oh = q0 / OW, ow = q0 % OW;
    const int64_t off_w = s * g.dilation_w - g.pad_left;
    const int64_t off_h = r * g.dilation_h - g.pad_top;
    int64_t lo, hi;
    valid_cols(off_w, sw, W, OW, lo, hi);
    while (n > 0) {
        const int64_t end = ow + std::min(n, OW - ow);
        const int64_t ih = oh * g.stride_h + off_h;
        if (ih < 0 || ih >= H) {
            out.zero(end - ow);
        } else {
            const T* xr = xp + ih * W;
            const int64_t a = std::min(std::max(lo, ow), end);
            const int64_t b = std::min(std::max(hi, a), end);
            out.zero(a - ow);
            if (b > a) {
                if (sw == 1) out.copy(xr + (a + off_w), b - a);
                else out.gather(xr + (a * sw + off_w), sw, b - a);
            }
            out.zero(end - b);
        }
        n -= end - ow;
        ++oh;
        ow = 0;
    }
}

template <typename T>
void im2col_row(const ConvGeometry& g, const T* xp, int64_t r, int64_t s, int64_t q0, int64_t n,
                T* dst) {
    LinearWriter<T> w{dst};
    im2col_row_to(g, xp, r, s, q0, n, w);
}

}  // namespace
}  // namespace convkit
