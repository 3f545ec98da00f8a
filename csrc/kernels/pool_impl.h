// Row kernels of the sliding-window pools, shared by pool2d.cpp (portable
// build) and the ISA-specific translation units pool_fwd_avx2.cpp /
// pool_fwd_avx512.cpp, which include this header and get their own copies
// (everything here has internal linkage, so no ODR clash between copies built
// with different -m flags).
//
// The loops are written tap-major over a chunk of outputs of one row: for each
// tap (r, c) in PyTorch's order (row-major within the window), every output of
// the chunk is updated. The inner loop over outputs is a plain element-wise
// loop that the compiler vectorises; each output still sees its taps in
// exactly PyTorch's order, so the results are bitwise those of the scalar
// reference. No multiply-add patterns occur here (max: compares/blends only;
// avg: sums then one division), so FMA contraction in the ISA builds cannot
// change results.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "geometry.h"

namespace convkit {
namespace poolk {
namespace {

constexpr int64_t kChunk = 256;

// Hook for hand-written row kernels (pool_fwd_avx512.cpp): return true when
// the row was handled. The portable build handles nothing here.
struct NoFast {
    template <typename T>
    static bool max_row(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, T*, int64_t*, int64_t) {
        return false;
    }
    template <typename T>
    static bool avg_row(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, T, T*) {
        return false;
    }
};

inline int64_t ceil_div_nonneg(int64_t a, int64_t b) { return (a + b - 1) / b; }

// First tap start + t*d (t >= 0) at or after 0, computed: the padding before
// it may be 2^39 taps long.
inline int64_t first_tap_inside(int64_t start, int64_t d) {
    return start < 0 ? start + ceil_div_nonneg(-start, d) * d : start;
}

// Range [owa, owb) of outputs whose windows lie entirely inside [0, in) along
// one axis (start o*s - p, taps spaced by d, k taps).
inline void interior_range(int64_t out, int64_t in, int64_t k, int64_t s, int64_t p, int64_t d,
                           int64_t& a, int64_t& b) {
    a = std::min(out, ceil_div_nonneg(p, s));
    const int64_t lim = in - 1 - (k - 1) * d + p;  // need o*s <= lim
    if (lim < 0) {
        b = a;
        return;
    }
    b = std::max(a, std::min(out, lim / s + 1));
}

// ---------------------------------------------------------------- max ----

// One output of max_pool2d, exactly PyTorch's loop.
template <typename T>
inline void max_one(const PoolGeometry& g, const T* xp, int64_t oh, int64_t ow, T& yv, int64_t& iv) {
    int64_t ih0 = oh * g.stride_h - g.pad_h;
    int64_t iw0 = ow * g.stride_w - g.pad_w;
    const int64_t ih1 = std::min(ih0 + (g.kernel_h - 1) * g.dilation_h + 1, g.in_h);
    const int64_t iw1 = std::min(iw0 + (g.kernel_w - 1) * g.dilation_w + 1, g.in_w);
    ih0 = first_tap_inside(ih0, g.dilation_h);
    iw0 = first_tap_inside(iw0, g.dilation_w);
    int64_t maxindex = ih0 * g.in_w + iw0;
    T maxval = -std::numeric_limits<T>::infinity();
    for (int64_t ih = ih0; ih < ih1; ih += g.dilation_h) {
        for (int64_t iw = iw0; iw < iw1; iw += g.dilation_w) {
            const int64_t index = ih * g.in_w + iw;
            const T val = xp[index];
            if ((val > maxval) || std::isnan(val)) {
                maxval = val;
                maxindex = index;
            }
        }
    }
    yv = maxval;
    iv = maxindex;
}

// n outputs of one row whose column windows are all interior. p points at the
// first visited tap of the first output (row = first valid row, col = its
// window start); nrows >= 1 valid rows spaced rstep elements apart; columns
// kw taps spaced dw; consecutive outputs SW (or sw) elements apart. The first
// tap is always the initial index, so the running state starts from it.
template <typename T, typename Off, bool IDX, int SW>
inline void max_row_interior(const T* __restrict p, int64_t n, int64_t sw_rt, int64_t nrows, int64_t rstep,
                             int64_t kw, int64_t dw, T* __restrict y, int64_t* __restrict idx,
                             int64_t base_index) {
    const int64_t sw = SW > 0 ? SW : sw_rt;
    alignas(64) T mv[kChunk];
    alignas(64) Off mo[kChunk];
    for (int64_t o0 = 0; o0 < n; o0 += kChunk) {
        const int64_t m = std::min(kChunk, n - o0);
        const T* __restrict q0 = p + o0 * sw;
        for (int64_t i = 0; i < m; ++i) {
            mv[i] = q0[i * sw];
            if (IDX) mo[i] = 0;
        }
        for (int64_t r = 0; r < nrows; ++r) {
            for (int64_t c = (r == 0 ? 1 : 0); c < kw; ++c) {
                const int64_t toff64 = r * rstep + c * dw;
                const Off toff = static_cast<Off>(toff64);
                const T* __restrict q = q0 + toff64;
                for (int64_t i = 0; i < m; ++i) {
                    const T v = q[i * sw];
                    const bool take = (v > mv[i]) | (v != v);
                    mv[i] = take ? v : mv[i];
                    if (IDX) mo[i] = take ? toff : mo[i];
                }
            }
        }
        for (int64_t i = 0; i < m; ++i) y[o0 + i] = mv[i];
        if (IDX) {
            const int64_t b = base_index + o0 * sw;
            for (int64_t i = 0; i < m; ++i) idx[o0 + i] = b + i * sw + static_cast<int64_t>(mo[i]);
        }
    }
}

template <typename T, typename Off, bool IDX>
inline void max_row_interior_dispatch(const T* p, int64_t n, int64_t sw, int64_t nrows, int64_t rstep, int64_t kw,
                                      int64_t dw, T* y, int64_t* idx, int64_t base_index) {
    if (sw == 1)
        max_row_interior<T, Off, IDX, 1>(p, n, sw, nrows, rstep, kw, dw, y, idx, base_index);
    else if (sw == 2)
        max_row_interior<T, Off, IDX, 2>(p, n, sw, nrows, rstep, kw, dw, y, idx, base_index);
    else
        max_row_interior<T, Off, IDX, 0>(p, n, sw, nrows, rstep, kw, dw, y, idx, base_index);
}

// Output rows [oh0, oh1) of one plane. xp/yp/ip point at the plane.
template <typename T, typename Fast = NoFast>
inline void max_fwd_rows(const PoolGeometry& g, const T* xp, T* yp, int64_t* ip, int64_t oh0, int64_t oh1) {
    int64_t owa, owb;
    interior_range(g.out_w, g.in_w, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w, owa, owb);
    // Offsets inside a window fit in 32 bits for any plane under 2^31 elements;
    // float lanes then pair with int32 lanes (same vector width).
    const bool small = g.in_h * g.in_w < (int64_t(1) << 31);
    for (int64_t oh = oh0; oh < oh1; ++oh) {
        T* yr = yp + oh * g.out_w;
        int64_t* ir = ip ? ip + oh * g.out_w : nullptr;
        int64_t ih0 = oh * g.stride_h - g.pad_h;
        const int64_t ih1 = std::min(ih0 + (g.kernel_h - 1) * g.dilation_h + 1, g.in_h);
        ih0 = first_tap_inside(ih0, g.dilation_h);
        const int64_t nrows = ih1 > ih0 ? ceil_div_nonneg(ih1 - ih0, g.dilation_h) : 0;
        int64_t a = owa, b = owb;
        if (nrows == 0) a = b = g.out_w;  // empty rows: all through the scalar path
        for (int64_t ow = 0; ow < a; ++ow) {
            int64_t iv;
            max_one(g, xp, oh, ow, yr[ow], iv);
            if (ir) ir[ow] = iv;
        }
        if (b > a) {
            const int64_t c0 = a * g.stride_w - g.pad_w;
            const T* p = xp + ih0 * g.in_w + c0;
            const int64_t base = ih0 * g.in_w + c0;
            const int64_t rstep = g.dilation_h * g.in_w;
            const int64_t n = b - a;
            if (small && Fast::max_row(p, n, g.stride_w, nrows, rstep, g.kernel_w, g.dilation_w, yr + a,
                                       ir ? ir + a : nullptr, base)) {
                // handled by the hand-written kernel
            } else if (ir) {
                if (sizeof(T) == 4 && small)
                    max_row_interior_dispatch<T, int32_t, true>(p, n, g.stride_w, nrows, rstep, g.kernel_w,
                                                                g.dilation_w, yr + a, ir + a, base);
                else
                    max_row_interior_dispatch<T, int64_t, true>(p, n, g.stride_w, nrows, rstep, g.kernel_w,
                                                                g.dilation_w, yr + a, ir + a, base);
            } else {
                max_row_interior_dispatch<T, int64_t, false>(p, n, g.stride_w, nrows, rstep, g.kernel_w,
                                                             g.dilation_w, yr + a, nullptr, base);
            }
        }
        for (int64_t ow = std::max(b, a); ow < g.out_w; ++ow) {
            int64_t iv;
            max_one(g, xp, oh, ow, yr[ow], iv);
            if (ir) ir[ow] = iv;
        }
    }
}

// ---------------------------------------------------------------- avg ----

struct AvgAxis {
    int64_t lo, hi, pool;  // clamped window [lo, hi), unclamped pool extent
};

inline AvgAxis avg_axis(int64_t o, int64_t s, int64_t p, int64_t k, int64_t in) {
    int64_t i0 = o * s - p;
    int64_t i1 = std::min(i0 + k, in + p);
    AvgAxis r;
    // A window past the padded input (a geometry the Python layer never makes,
    // but the C++ entry points accept) counts 0, not a huge negative extent.
    r.pool = std::max<int64_t>(i1 - i0, 0);
    r.lo = std::max(i0, int64_t(0));
    r.hi = std::min(i1, in);
    return r;
}

inline int64_t avg_divisor(const AvgAxis& h, const AvgAxis& w, bool cip, int64_t dov) {
    if (dov != 0) return dov;
    if (cip) return h.pool * w.pool;
    // Both factors are at most the kernel extents, whose product fits.
    return std::max<int64_t>(h.hi - h.lo, 0) * std::max<int64_t>(w.hi - w.lo, 0);
}

template <typename T>
inline T avg_one(const PoolGeometry& g, bool cip, int64_t dov, const T* xp, int64_t oh, int64_t ow) {
    const AvgAxis h = avg_axis(oh, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
    const AvgAxis w = avg_axis(ow, g.stride_w, g.pad_w, g.kernel_w, g.in_w);
    if (h.lo >= h.hi || w.lo >= w.hi) return T(0);
    T sum = 0;
    for (int64_t ih = h.lo; ih < h.hi; ++ih)
        for (int64_t iw = w.lo; iw < w.hi; ++iw) sum += xp[ih * g.in_w + iw];
    return sum / static_cast<T>(avg_divisor(h, w, cip, dov));
}

template <typename T, int SW>
inline void avg_row_interior(const T* __restrict p, int64_t n, int64_t sw_rt, int64_t nrows, int64_t in_w,
                             int64_t kw, T div, T* __restrict y) {
    const int64_t sw = SW > 0 ? SW : sw_rt;
    alignas(64) T sm[kChunk];
    for (int64_t o0 = 0; o0 < n; o0 += kChunk) {
        const int64_t m = std::min(kChunk, n - o0);
        const T* __restrict q0 = p + o0 * sw;
        for (int64_t i = 0; i < m; ++i) sm[i] = T(0);
        for (int64_t r = 0; r < nrows; ++r) {
            for (int64_t c = 0; c < kw; ++c) {
                const T* __restrict q = q0 + r * in_w + c;
                for (int64_t i = 0; i < m; ++i) sm[i] += q[i * sw];
            }
        }
        for (int64_t i = 0; i < m; ++i) y[o0 + i] = sm[i] / div;
    }
}

template <typename T, typename Fast = NoFast>
inline void avg_fwd_rows(const PoolGeometry& g, bool cip, int64_t dov, const T* xp, T* yp, int64_t oh0,
                         int64_t oh1) {
    int64_t owa, owb;
    interior_range(g.out_w, g.in_w, g.kernel_w, g.stride_w, g.pad_w, 1, owa, owb);
    for (int64_t oh = oh0; oh < oh1; ++oh) {
        T* yr = yp + oh * g.out_w;
        const AvgAxis h = avg_axis(oh, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
        int64_t a = owa, b = owb;
        if (h.lo >= h.hi) a = b = g.out_w;
        for (int64_t ow = 0; ow < a; ++ow) yr[ow] = avg_one(g, cip, dov, xp, oh, ow);
        if (b > a) {
            // Interior columns: w.pool == clamped width == kernel_w.
            AvgAxis w;
            w.lo = 0;
            w.hi = g.kernel_w;
            w.pool = g.kernel_w;
            const T div = static_cast<T>(avg_divisor(h, w, cip, dov));
            const int64_t c0 = a * g.stride_w - g.pad_w;
            const T* p = xp + h.lo * g.in_w + c0;
            const int64_t n = b - a, nrows = h.hi - h.lo;
            if (Fast::avg_row(p, n, g.stride_w, nrows, g.in_w, g.kernel_w, div, yr + a)) {
                // handled by the hand-written kernel
            } else if (g.stride_w == 1)
                avg_row_interior<T, 1>(p, n, 1, nrows, g.in_w, g.kernel_w, div, yr + a);
            else if (g.stride_w == 2)
                avg_row_interior<T, 2>(p, n, 2, nrows, g.in_w, g.kernel_w, div, yr + a);
            else
                avg_row_interior<T, 0>(p, n, g.stride_w, nrows, g.in_w, g.kernel_w, div, yr + a);
        }
        for (int64_t ow = std::max(a, b); ow < g.out_w; ++ow) yr[ow] = avg_one(g, cip, dov, xp, oh, ow);
    }
}

// ------------------------------------------------------- avg backward ----
//
// Both planes kernels take per-output divisors (div, out_h x out_w, already
// converted to T) and reproduce torch's scatter: gx = 0, then every output in
// (oh, ow) order adds gy / divisor to each input of its clamped window.

// Overlapping windows: one whole plane. For each output row oh (ascending),
// an input column receives up to slots = ceil(kw / sw) contributions, in
// ascending ow: tap column c lands in slot (kw - 1 - c) / sw (the taps of one
// slot land on distinct columns). Those slots are written once per output row
// into `slots` rows of in_w (+0 where no tap lands), then each input row of
// the window adds them in slot order: contiguous vector adds instead of kw
// strided passes per input row (3x3/2 windows: 3-4x fewer operations). A +0
// slot changes nothing (a running sum that starts at +0 is never -0), so for
// a fixed input the sums are torch's: ascending ow, then ascending oh. Wider
// slot counts keep the tap-major scatter: per window row, the column taps from
// last to first, each a pass over the outputs. ca/cb[c]: outputs whose tap
// column c lies inside [0, in_w). d: avg_scatter_scratch(...) elements.
constexpr int64_t kAvgMaxSlots = 4;

inline int64_t avg_scatter_slots(int64_t kw, int64_t sw) {
    const int64_t slots = kw / sw + (kw % sw != 0);  // ceil, without kw + sw overflowing
    return slots <= kAvgMaxSlots ? slots : 0;
}

inline int64_t avg_scatter_scratch(int64_t in_w, int64_t out_w, int64_t kw, int64_t sw) {
    return out_w + 2 * avg_scatter_slots(kw, sw) * in_w;
}

template <typename T>
inline void avg_bwd_scatter_plane(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, int64_t kw,
                                  int64_t sw, int64_t pw, const int64_t* hlo, const int64_t* hhi,
                                  const int64_t* ca, const int64_t* cb, const T* __restrict div,
                                  const T* __restrict gyp, T* __restrict gxp, T* __restrict d) {
    const int64_t slots = avg_scatter_slots(kw, sw);
    if (slots == 0) std::fill(gxp, gxp + in_h * in_w, T(0));
    // Two sets of slot rows: an output row's are added one row later, when
    // the scalar stores that built them have left the store buffer (read at
    // once, their vector loads waited on store forwarding: a third of the
    // time). Every output row writes the same positions: the rest stay +0.
    T* const slot_sets[2] = {d + out_w, d + out_w + slots * in_w};
    std::fill(slot_sets[0], slot_sets[0] + 2 * slots * in_w, T(0));
    // Input rows [0, fresh) hold their sums so far; window rows only grow
    // with oh, so a row past `fresh` starts at 0 + its first slot (no zero
    // fill to add to), and rows no window reaches are zeroed on the way.
    int64_t fresh = 0;
    auto add_slots = [&](int64_t oh, const T* __restrict slot_rows) {
        if (hlo[oh] > fresh) std::fill(gxp + fresh * in_w, gxp + hlo[oh] * in_w, T(0));
        for (int64_t ih = hlo[oh]; ih < hhi[oh]; ++ih) {
            T* __restrict row = gxp + ih * in_w;
            int64_t m = 0;
            if (ih >= fresh) {
                for (int64_t iw = 0; iw < in_w; ++iw) row[iw] = T(0) + slot_rows[iw];
                m = 1;
            }
            for (; m < slots; ++m) {
                const T* __restrict add = slot_rows + m * in_w;
                for (int64_t iw = 0; iw < in_w; ++iw) row[iw] += add[iw];
            }
        }
        fresh = std::max(fresh, hhi[oh]);
    };
    int64_t pending = -1, set = 0;  // output row whose slots wait in slot_sets[set ^ 1]
    for (int64_t oh = 0; oh < out_h; ++oh) {
        if (hlo[oh] >= hhi[oh]) continue;
        const T* __restrict gr = gyp + oh * out_w;
        const T* __restrict dr = div + oh * out_w;
        for (int64_t ow = 0; ow < out_w; ++ow) d[ow] = gr[ow] / dr[ow];
        if (slots > 0) {
            T* __restrict slot_rows = slot_sets[set];
            int64_t c = kw - 1;
            if (sw == 2) {
                // Stride 2: the two taps of a slot fill adjacent columns with
                // the same share, over the outputs both reach: d duplicated
                // into pairs (a vectorised loop; element by element, these
                // strided stores took a third of the time).
                for (; c >= 1; c -= 2) {
                    T* __restrict q = slot_rows + (kw - 1 - c) / 2 * in_w + c - 1 - pw;
                    const int64_t a = std::max(ca[c], ca[c - 1]), b = std::min(cb[c], cb[c - 1]);
                    for (int64_t ow = a; ow < b; ++ow) {
                        q[2 * ow] = d[ow];
                        q[2 * ow + 1] = d[ow];
                    }
                    for (int64_t ow = ca[c]; ow < std::min(a, cb[c]); ++ow) q[2 * ow + 1] = d[ow];
                    for (int64_t ow = std::max(b, ca[c]); ow < cb[c]; ++ow) q[2 * ow + 1] = d[ow];
                    for (int64_t ow = ca[c - 1]; ow < std::min(a, cb[c - 1]); ++ow) q[2 * ow] = d[ow];
                    for (int64_t ow = std::max(b, ca[c - 1]); ow < cb[c - 1]; ++ow) q[2 * ow] = d[ow];
                }
                if (c == 0) {
                    // A slot of one tap: the column after each of its own is
                    // no tap's, +0 (written as pairs while it is in the row).
                    T* __restrict q = slot_rows + (kw - 1) / 2 * in_w - pw;
                    const int64_t b = std::min(cb[0], (in_w + pw - 1) / 2);  // 2*ow + 1 - pw < in_w
                    int64_t ow = ca[0];
                    for (; ow < b; ++ow) {
                        q[2 * ow] = d[ow];
                        q[2 * ow + 1] = T(0);
                    }
                    for (; ow < cb[0]; ++ow) q[2 * ow] = d[ow];
                    c = -1;
                }
            }
            for (; c >= 0; --c) {
                T* __restrict q = slot_rows + (kw - 1 - c) / sw * in_w + c - pw;
                for (int64_t ow = ca[c]; ow < cb[c]; ++ow) q[ow * sw] = d[ow];
            }
            if (pending >= 0) add_slots(pending, slot_sets[set ^ 1]);
            pending = oh;
            set ^= 1;
            continue;
        }
        for (int64_t ih = hlo[oh]; ih < hhi[oh]; ++ih) {
            T* __restrict row = gxp + ih * in_w;
            for (int64_t c = kw - 1; c >= 0; --c) {
                T* __restrict q = row + c - pw;
                const int64_t a = ca[c], b = cb[c];
                if (sw == 1) {
                    for (int64_t ow = a; ow < b; ++ow) q[ow] += d[ow];
                } else if (sw == 2) {
                    for (int64_t ow = a; ow < b; ++ow) q[ow * 2] += d[ow];
                } else {
                    for (int64_t ow = a; ow < b; ++ow) q[ow * sw] += d[ow];
                }
            }
        }
    }
    if (pending >= 0) add_slots(pending, slot_sets[set ^ 1]);
    if (slots > 0) std::fill(gxp + fresh * in_w, gxp + in_h * in_w, T(0));
}

// Gather of avg_bwd_s1_plane from the padded delta rows D (row length L).
template <typename T>
inline void avg_bwd_s1_rows_portable(int64_t in_h, int64_t in_w, int64_t kw, int64_t pw, int64_t L,
                                     const int64_t* ha, const int64_t* hb, const T* __restrict D,
                                     T* __restrict gxp) {
    for (int64_t ih = 0; ih < in_h; ++ih) {
        T* __restrict row = gxp + ih * in_w;
        for (int64_t iw = 0; iw < in_w; ++iw) row[iw] = T(0);
        for (int64_t oh = ha[ih]; oh < hb[ih]; ++oh) {
            for (int64_t c = kw - 1; c >= 0; --c) {
                const T* __restrict src = D + oh * L + kw + pw - c;
                for (int64_t iw = 0; iw < in_w; ++iw) row[iw] += src[iw];
            }
        }
    }
}

#ifndef CONVKIT_POOL_S1_ROWS
#define CONVKIT_POOL_S1_ROWS avg_bwd_s1_rows_portable
#endif
template <typename T>
inline void avg_bwd_s1_rows(int64_t in_h, int64_t in_w, int64_t kw, int64_t pw, int64_t L, const int64_t* ha,
                            const int64_t* hb, const T* D, T* gxp) {
    CONVKIT_POOL_S1_ROWS(in_h, in_w, kw, pw, L, ha, hb, D, gxp);
}

// Overlapping windows with stride_w 1: one whole plane as a gather. D holds
// each output row's deltas between kw zeros on the left and rz zeros on the
// right (row length out_w + kw + rz; rz >= kw, rz >= in_w + pw + 1 - out_w,
// plus 16 for the chunked reads); input (ih, iw) gets, for oh in
// [ha[ih], hb[ih]) ascending and tap column c descending (ascending ow),
// D[oh][iw + pw - c]: torch's order. The padding zeros are exact no-ops: a
// sum that starts from +0 is never -0, and x + (+0) == x for any other x.
template <typename T>
inline void avg_bwd_s1_plane(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, int64_t kw, int64_t pw,
                             int64_t rz, const int64_t* ha, const int64_t* hb, const T* __restrict div,
                             const T* __restrict gyp, T* __restrict gxp, T* __restrict D) {
    const int64_t L = out_w + kw + rz;
    for (int64_t oh = 0; oh < out_h; ++oh) {
        T* __restrict dr = D + oh * L;
        const T* __restrict gr = gyp + oh * out_w;
        const T* __restrict vr = div + oh * out_w;
        for (int64_t i = 0; i < kw; ++i) dr[i] = T(0);
        for (int64_t ow = 0; ow < out_w; ++ow) dr[kw + ow] = gr[ow] / vr[ow];
        for (int64_t i = 0; i < rz; ++i) dr[kw + out_w + i] = T(0);
    }
    avg_bwd_s1_rows(in_h, in_w, kw, pw, L, ha, hb, D, gxp);
}

// Windows that never share an input: input rows [ih0, ih1) of one plane,
// gx = 0 + gy / divisor of the one window holding it, or 0. oh_of[ih]: output
// row of input row ih or -1; col[iw]: output column of iw or out_w (none).
// d: out_w + 1 scratch.
template <typename T>
inline void avg_bwd_disjoint_rows(int64_t in_w, int64_t out_w, int64_t ih0, int64_t ih1, const int64_t* oh_of,
                                  const int32_t* __restrict col, const T* __restrict div,
                                  const T* __restrict gyp, T* __restrict gxp, T* __restrict d) {
    int64_t cur = -1;
    d[out_w] = T(0);
    // Windows 2 columns wide from column 0 (2x2 average pools): each value
    // written twice side by side, not through the col[] lookup, which does
    // not vectorise (1.x-2x slower at DenseNet's and the MNIST shapes).
    bool pairs = 2 * out_w <= in_w;
    for (int64_t iw = 0; iw < in_w && pairs; ++iw) pairs = col[iw] == (iw < 2 * out_w ? iw / 2 : out_w);
    for (int64_t ih = ih0; ih < ih1; ++ih) {
        T* __restrict row = gxp + ih * in_w;
        const int64_t oh = oh_of[ih];
        if (oh < 0) {
            std::fill(row, row + in_w, T(0));
            continue;
        }
        if (oh != cur) {
            const T* __restrict gr = gyp + oh * out_w;
            const T* __restrict dr = div + oh * out_w;
            for (int64_t ow = 0; ow < out_w; ++ow) d[ow] = T(0) + gr[ow] / dr[ow];
            cur = oh;
        }
        if (pairs) {
            for (int64_t ow = 0; ow < out_w; ++ow) {
                row[2 * ow] = d[ow];
                row[2 * ow + 1] = d[ow];
            }
            for (int64_t iw = 2 * out_w; iw < in_w; ++iw) row[iw] = T(0);
        } else {
            for (int64_t iw = 0; iw < in_w; ++iw) row[iw] = d[col[iw]];
        }
    }
}

// ------------------------------------------------------- plane means ----

// y[p] = mean of plane p for p in [p0, p1) (global average pooling). Element
// i of a plane goes into double accumulator i % 8 (for float and double
// alike); the eight are combined pairwise, rounded to T and divided by the
// plane size once. The accumulator layout is fixed, so every vector width
// (one zmm, two ymm or four xmm of doubles) gives the same bits.
template <typename T>
inline void plane_means(const T* __restrict x, int64_t plane, int64_t p0, int64_t p1, T* __restrict y) {
    const T n = static_cast<T>(plane);
    for (int64_t p = p0; p < p1; ++p) {
        const T* __restrict xp = x + p * plane;
        double a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t i = 0;
        for (; i + 8 <= plane; i += 8)
            for (int j = 0; j < 8; ++j) a[j] += static_cast<double>(xp[i + j]);
        // The tail as one more full step, padded with -0.0 (a + -0.0 == a
        // exactly): no variable index into a[], which would keep it in memory.
        double t[8];
        for (int j = 0; j < 8; ++j) t[j] = i + j < plane ? static_cast<double>(xp[i + j]) : -0.0;
        for (int j = 0; j < 8; ++j) a[j] += t[j];
        const double s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        y[p] = static_cast<T>(s) / n;
    }
}

// Whole-plane maxima (adaptive max pooling to 1x1) of planes [p0, p1): y[p]
// and idx[p] are those of PyTorch's row-major scan (take v when v > max or v
// is NaN): the last NaN if there is one, else the first maximum (+0 and -0
// equal), else -inf at index 0. Lane j scans elements j, j+8, ... in order by
// the same rule, which keeps its own last NaN or first maximum; the lanes
// then combine by that outcome. Off: index lanes (int32 beside float lanes
// when the plane fits, for one vector width).
template <typename T, typename Off>
inline void plane_maxes_off(const T* __restrict x, int64_t plane, int64_t p0, int64_t p1, T* __restrict y,
                        int64_t* __restrict idx) {
    const T ninf = -std::numeric_limits<T>::infinity();
    for (int64_t p = p0; p < p1; ++p) {
        const T* __restrict xp = x + p * plane;
        T m[8];
        Off mi[8];
        for (int j = 0; j < 8; ++j) {
            m[j] = ninf;
            mi[j] = -1;  // nothing taken
        }
        int64_t i = 0;
        auto step = [&](const T* v, int64_t at) {
            for (int j = 0; j < 8; ++j) {
                const bool take = (v[j] > m[j]) | (v[j] != v[j]);
                m[j] = take ? v[j] : m[j];
                mi[j] = take ? static_cast<Off>(at + j) : mi[j];
            }
        };
        for (; i + 8 <= plane; i += 8) step(xp + i, i);
        T t[8];  // the tail padded with -inf (never taken)
        for (int j = 0; j < 8; ++j) t[j] = i + j < plane ? xp[i + j] : ninf;
        step(t, i);
        int best = -1;
        bool nan = false;
        for (int j = 0; j < 8; ++j) {
            if (mi[j] < 0) continue;
            const bool jn = m[j] != m[j];
            if (best < 0 || (jn && (!nan || mi[j] > mi[best])) ||
                (!jn && !nan && (m[j] > m[best] || (m[j] == m[best] && mi[j] < mi[best]))))
                best = j;
            nan |= jn;
        }
        y[p] = best < 0 ? ninf : m[best];
        if (idx) idx[p] = best < 0 ? 0 : static_cast<int64_t>(mi[best]);
    }
}

template <typename T>
inline void plane_maxes(const T* x, int64_t plane, int64_t p0, int64_t p1, T* y, int64_t* idx) {
    if (sizeof(T) == 4 && plane < (int64_t(1) << 31))
        plane_maxes_off<T, int32_t>(x, plane, p0, p1, y, idx);
    else
        plane_maxes_off<T, int64_t>(x, plane, p0, p1, y, idx);
}

}  // namespace
}  // namespace poolk
}  // namespace convkit
