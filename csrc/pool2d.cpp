// Pooling kernels with PyTorch 2.x CPU semantics (NCHW, contiguous planes).
//
// Reference loops reproduced here (aten/src/ATen/native/cpu/*Pool*Kernel.cpp):
//
//  max_pool2d: ih0 = oh*sh - ph; ih1 = min(ih0 + (kh-1)*dh + 1, H);
//      while (ih0 < 0) ih0 += dh; (same for w); maxindex = ih0*W + iw0;
//      maxval = -inf; taps in row-major order:
//      if (val > maxval || isnan(val)) { maxval = val; maxindex = ih*W + iw; }
//      -> the first maximum wins, the last NaN wins.
//  avg_pool2d: ih0 = oh*sh - ph; ih1 = min(ih0 + kh, H + ph); pool_size =
//      (ih1-ih0)*(iw1-iw0); clamp to [0, H) x [0, W); empty -> 0; sum in
//      row-major order from 0; divisor = override, or pool_size
//      (count_include_pad), or the clamped count; y = sum / divisor.
//      Backward: grad_delta = gy / divisor added over the clamped window;
//      each input receives its contributions in (oh, ow) order, which the
//      gather form here reproduces exactly.
//  lp_pool2d (torch.nn.functional.lp_pool2d):
//      A = avg_pool2d(x.pow(p), k, s, 0, ceil_mode)      (count_include_pad)
//      y = (sign(A) * relu(abs(A))).mul(kh*kw).pow(1/p)
//      with torch's pow special cases (exp 0 -> 1, 1 -> copy, 2 -> b*b,
//      3 -> b*b*b, 0.5 -> sqrt, -0.5 -> 1/sqrt, -1 -> 1/b, -2 -> 1/(b*b),
//      else std::pow in double). The backward replays autograd step by step:
//      gB = gy * (1/p * B.pow(1/p - 1)); gC = gB * kk; through sign*relu(abs):
//      gA = (R <= 0 ? 0 : gC*sign(A)) * sign(A) with R = relu(abs(A))
//      (so windows with A == 0 get a zero gradient even though B.pow(1/p-1)
//      is inf there; NaNs propagate as in torch, sign(NaN) = 0);
//      gX = avg_pool2d_backward(gA); gx = gX * (p * x.pow(p-1)).
//      x.pow(p-1) follows the formula: x == 0 with p < 1 gives inf/NaN,
//      exactly what autograd gives. Non-special exponents use std::pow in
//      double, torch's scalar path (its SIMD path uses Sleef powf, which may
//      differ by an ulp in float).
//  adaptive pools: window [floor(o*n/m), ceil((o+1)*n/m)); avg y = sum / kh / kw
//      (two divisions, as torch); backward delta = gy / kh / kw; adaptive max
//      uses the max_pool2d rule and initial index.
//
// Every output is written; each value is computed by one thread in a fixed
// order, so results are bitwise identical for any thread count. Backward
// passes are gathers (avg, lp, adaptive avg) or per-plane scatters (max;
// gathers in the same order at column stride 1 for dilated and 3x3 windows).
#include "pool2d.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "cpu_features.h"
#include "kernels/pool_impl.h"
#include "kernels/pool_isa.h"
#include "parallel.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace convkit {
namespace {

using poolk::ceil_div_nonneg;

// Work below this many elements runs on one thread (the native test harness
// sets it to 0 so that small cases exercise the threaded paths).
#ifdef CONVKIT_POOL_SERIAL_WORK
constexpr int64_t kSerialWork = CONVKIT_POOL_SERIAL_WORK;
#else
constexpr int64_t kSerialWork = 1 << 15;
#endif

// Planes summed side by side by the narrow-output paths; their elements are
// interleaved into a per-thread buffer for planes of at most kInterleaveMax.
constexpr int64_t kPlaneBlock = 8;
constexpr int64_t kInterleaveMax = 4096;

// Dilated max-pool backward gathers (cost per input ~ taps) up to this many
// window taps; larger windows scatter (cost per output ~ 1).
constexpr int64_t kGatherMaxTaps = 25;

int threads_for(int64_t work) {
    if (work < kSerialWork) return 1;
    return num_threads();
}

// Work estimate planes * (plane_out * taps + plane_in) * scale of a window
// pass, saturating: legal geometries (window 2^30 x 2^30 over a 64x64 input)
// overflow the plain product. Taps are clamped to the input, as the loops are.
int64_t window_work(const PoolGeometry& g, int64_t scale = 1) {
    const int64_t taps = sat_mul(std::min(g.kernel_h, g.in_h), std::min(g.kernel_w, g.in_w));
    const int64_t per_plane = sat_add(sat_mul(g.out_h * g.out_w, taps), g.in_h * g.in_w);
    return sat_mul(sat_mul(g.planes, per_plane), scale);
}

// Calls f(plane, row_begin, row_end) over all planes x rows, split into
// enough items that few-plane inputs still use every thread.
template <typename F>
void parallel_plane_rows(int64_t planes, int64_t rows, int64_t work, F f) {
    if (planes <= 0 || rows <= 0) return;
    const int nt = threads_for(work);
    int64_t nb = 1;
    if (nt > 1 && planes < 4 * int64_t(nt)) nb = std::min(rows, ceil_div_nonneg(4 * int64_t(nt), planes));
    const int64_t items = planes * nb;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && items > 1)
    for (int64_t it = 0; it < items; ++it) {
        const int64_t p = it / nb, b = it % nb;
        f(p, rows * b / nb, rows * (b + 1) / nb);
    }
}

// `threads` > 0 fixes the team size: callers that sized per-thread scratch
// with it must pass it, since another Python thread may change
// set_num_threads() in between.
template <typename F>
void parallel_planes(int64_t planes, int64_t work, F f, int threads = 0) {
    if (planes <= 0) return;
    const int nt = threads > 0 ? threads : threads_for(work);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && planes > 1)
    for (int64_t p = 0; p < planes; ++p) f(p);
}

// For each input position i along an axis, the outputs whose windows contain
// it form the contiguous range [oa[i], ob[i]) (windows are monotone in o).
// win(o, lo, hi) gives the clamped window of output o.
template <typename W>
void gather_ranges(int64_t out, int64_t in, W win, std::vector<int64_t>& oa, std::vector<int64_t>& ob) {
    oa.assign(static_cast<size_t>(in), 0);
    ob.assign(static_cast<size_t>(in), 0);
    std::vector<char> seen(static_cast<size_t>(in), 0);
    for (int64_t o = 0; o < out; ++o) {
        int64_t lo, hi;
        win(o, lo, hi);
        lo = std::max<int64_t>(lo, 0);
        hi = std::min(hi, in);
        for (int64_t i = lo; i < hi; ++i) {
            if (!seen[i]) {
                seen[i] = 1;
                oa[i] = o;
            }
            ob[i] = o + 1;
        }
    }
}

// grad_x[plane rows r0..r1) = 0 + sum over (oh, ow) in order of delta.
template <typename T>
void gather_rows(const T* dp, T* gp, int64_t in_w, int64_t out_w, int64_t r0, int64_t r1,
                 const std::vector<int64_t>& ha, const std::vector<int64_t>& hb, const std::vector<int64_t>& wa,
                 const std::vector<int64_t>& wb, bool single) {
    for (int64_t ih = r0; ih < r1; ++ih) {
        T* gr = gp + ih * in_w;
        const int64_t h0 = ha[ih], h1 = hb[ih];
        if (single) {
            // Every input in at most one window per axis.
            if (h1 <= h0) {
                for (int64_t iw = 0; iw < in_w; ++iw) gr[iw] = T(0);
                continue;
            }
            const T* dr = dp + h0 * out_w;
            for (int64_t iw = 0; iw < in_w; ++iw) gr[iw] = wb[iw] > wa[iw] ? T(0) + dr[wa[iw]] : T(0);
            continue;
        }
        for (int64_t iw = 0; iw < in_w; ++iw) {
            T s = T(0);
            const int64_t w0 = wa[iw], w1 = wb[iw];
            for (int64_t oh = h0; oh < h1; ++oh) {
                const T* dr = dp + oh * out_w;
                for (int64_t ow = w0; ow < w1; ++ow) s += dr[ow];
            }
            gr[iw] = s;
        }
    }
}

bool ranges_single(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
    for (size_t i = 0; i < a.size(); ++i)
        if (b[i] - a[i] > 1) return false;
    return true;
}

// ------------------------------------------------------------ ISA picks ----

template <typename T>
struct IsaFns;

template <>
struct IsaFns<float> {
    using MeanFn = void (*)(const float*, int64_t, int64_t, int64_t, float*);
    // AVX-512 machines run the AVX2 intrinsics of some float kernels: on an
    // Intel Xeon (2 threads, in-process A/B, same bits) they beat the AVX-512
    // builds, whose rows keep one vector in flight where the AVX2 rows keep up
    // to four (global average pooling 1.43x, average pooling forward
    // 0.98-1.44x, 2x2/s2 max pooling forward 1.02-1.21x; 3x3 max forward stays
    // on AVX-512, 1.07-1.2x faster there).
    static MeanFn mean_fn() {
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::plane_means_avx2_f32;
#endif
        return poolk::plane_means<float>;
    }
    using PlaneMaxFn = void (*)(const float*, int64_t, int64_t, int64_t, float*, int64_t*);
    static PlaneMaxFn plane_max_fn() {
#ifdef CONVKIT_HAVE_AVX512
        if (active_isa() == Isa::avx512) return poolk::plane_maxes_avx512_f32;
#endif
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::plane_maxes_avx2_f32;
#endif
        return poolk::plane_maxes<float>;
    }
    using MaxFn = void (*)(const PoolGeometry&, const float*, float*, int64_t*, int64_t, int64_t);
    using AvgFn = void (*)(const PoolGeometry&, bool, int64_t, const float*, float*, int64_t, int64_t);
    static MaxFn max_fn(const PoolGeometry& g) {
#ifdef CONVKIT_HAVE_AVX512
        const bool window_2x2_s2 = g.kernel_h == 2 && g.kernel_w == 2 && g.stride_h == 2 && g.stride_w == 2;
        if (active_isa() == Isa::avx512 && !window_2x2_s2) return poolk::max_fwd_rows_avx512_f32;
#endif
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::max_fwd_rows_avx2_f32;
#endif
        (void)g;
        return poolk::max_fwd_rows<float>;
    }
    static AvgFn avg_fn() {
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::avg_fwd_rows_avx2_f32;
#endif
        return poolk::avg_fwd_rows<float>;
    }
    using ScatterFn = void (*)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                               const int64_t*, const int64_t*, const int64_t*, const float*, const float*, float*, float*);
    using DisjointFn = void (*)(int64_t, int64_t, int64_t, int64_t, const int64_t*, const int32_t*, const float*,
                                const float*, float*, float*);
    static ScatterFn avg_bwd_scatter_fn() {
#ifdef CONVKIT_HAVE_AVX512
        if (active_isa() == Isa::avx512) return poolk::avg_bwd_scatter_plane_avx512_f32;
#endif
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::avg_bwd_scatter_plane_avx2_f32;
#endif
        return poolk::avg_bwd_scatter_plane<float>;
    }
    using S1Fn = void (*)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                          const int64_t*, const float*, const float*, float*, float*);
    static S1Fn avg_bwd_s1_fn() {
#ifdef CONVKIT_HAVE_AVX512
        if (active_isa() == Isa::avx512) return poolk::avg_bwd_s1_plane_avx512_f32;
#endif
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::avg_bwd_s1_plane_avx2_f32;
#endif
        return poolk::avg_bwd_s1_plane<float>;
    }
    // Max-pool backward of whole 2x2 windows at stride 2 (pool_isa.h), or
    // nullptr (the general path).
    using Max2x2Fn = int64_t (*)(const float*, const int64_t*, float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                 int64_t);
    static Max2x2Fn max_bwd_2x2_fn() {
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::max_bwd_2x2_rows_avx2_f32;
#endif
        return nullptr;
    }
    // Max-pool backward at column stride 1 as a gather (pool_isa.h), or
    // nullptr (the scatter).
    using GatherW1Fn = int64_t (*)(const PoolGeometry&, const float*, const int64_t*, float*, int64_t, int64_t);
    static GatherW1Fn max_bwd_gather_w1_fn() {
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::max_bwd_gather_w1_avx2_f32;
#endif
        return nullptr;
    }
    static DisjointFn avg_bwd_disjoint_fn() {
#ifdef CONVKIT_HAVE_AVX512
        if (active_isa() == Isa::avx512) return poolk::avg_bwd_disjoint_rows_avx512_f32;
#endif
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::avg_bwd_disjoint_rows_avx2_f32;
#endif
        return poolk::avg_bwd_disjoint_rows<float>;
    }
};

template <>
struct IsaFns<double> {
    using MeanFn = void (*)(const double*, int64_t, int64_t, int64_t, double*);
    static MeanFn mean_fn() {
#ifdef CONVKIT_HAVE_AVX512
        if (active_isa() == Isa::avx512) return poolk::plane_means_avx512_f64;
#endif
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::plane_means_avx2_f64;
#endif
        return poolk::plane_means<double>;
    }
    using PlaneMaxFn = void (*)(const double*, int64_t, int64_t, int64_t, double*, int64_t*);
    static PlaneMaxFn plane_max_fn() {
#ifdef CONVKIT_HAVE_AVX512
        if (active_isa() == Isa::avx512) return poolk::plane_maxes_avx512_f64;
#endif
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::plane_maxes_avx2_f64;
#endif
        return poolk::plane_maxes<double>;
    }
    using MaxFn = void (*)(const PoolGeometry&, const double*, double*, int64_t*, int64_t, int64_t);
    using AvgFn = void (*)(const PoolGeometry&, bool, int64_t, const double*, double*, int64_t, int64_t);
    static MaxFn max_fn(const PoolGeometry&) {
#ifdef CONVKIT_HAVE_AVX512
        if (active_isa() == Isa::avx512) return poolk::max_fwd_rows_avx512_f64;
#endif
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::max_fwd_rows_avx2_f64;
#endif
        return poolk::max_fwd_rows<double>;
    }
    static AvgFn avg_fn() {
#ifdef CONVKIT_HAVE_AVX512
        if (active_isa() == Isa::avx512) return poolk::avg_fwd_rows_avx512_f64;
#endif
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::avg_fwd_rows_avx2_f64;
#endif
        return poolk::avg_fwd_rows<double>;
    }
    using ScatterFn = void (*)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                               const int64_t*, const int64_t*, const int64_t*, const double*, const double*, double*, double*);
    using DisjointFn = void (*)(int64_t, int64_t, int64_t, int64_t, const int64_t*, const int32_t*, const double*,
                                const double*, double*, double*);
    static ScatterFn avg_bwd_scatter_fn() {
#ifdef CONVKIT_HAVE_AVX512
        if (active_isa() == Isa::avx512) return poolk::avg_bwd_scatter_plane_avx512_f64;
#endif
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::avg_bwd_scatter_plane_avx2_f64;
#endif
        return poolk::avg_bwd_scatter_plane<double>;
    }
    using S1Fn = void (*)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                          const int64_t*, const double*, const double*, double*, double*);
    static S1Fn avg_bwd_s1_fn() {
#ifdef CONVKIT_HAVE_AVX512
        if (active_isa() == Isa::avx512) return poolk::avg_bwd_s1_plane_avx512_f64;
#endif
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::avg_bwd_s1_plane_avx2_f64;
#endif
        return poolk::avg_bwd_s1_plane<double>;
    }
    using Max2x2Fn = int64_t (*)(const double*, const int64_t*, double*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                 int64_t);
    static Max2x2Fn max_bwd_2x2_fn() { return nullptr; }
    using GatherW1Fn = int64_t (*)(const PoolGeometry&, const double*, const int64_t*, double*, int64_t, int64_t);
    static GatherW1Fn max_bwd_gather_w1_fn() { return nullptr; }
    static DisjointFn avg_bwd_disjoint_fn() {
#ifdef CONVKIT_HAVE_AVX512
        if (active_isa() == Isa::avx512) return poolk::avg_bwd_disjoint_rows_avx512_f64;
#endif
#ifdef CONVKIT_HAVE_AVX2
        if (active_isa() >= Isa::avx2) return poolk::avg_bwd_disjoint_rows_avx2_f64;
#endif
        return poolk::avg_bwd_disjoint_rows<double>;
    }
};

// Per-axis max-pool window: clamped [lo, hi) and unclamped start.
struct MaxAxis {
    int64_t lo, hi, start;
};

std::vector<MaxAxis> max_axes(int64_t out, int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
    std::vector<MaxAxis> v(static_cast<size_t>(std::max<int64_t>(out, 0)));
    for (int64_t o = 0; o < out; ++o) {
        int64_t i0 = o * s - p;
        const int64_t i1 = std::min(i0 + (k - 1) * d + 1, in);
        v[o].start = i0;
        i0 = poolk::first_tap_inside(i0, d);
        v[o].lo = i0;
        v[o].hi = i1;
    }
    return v;
}

inline int64_t adaptive_start(int64_t o, int64_t m, int64_t n) { return (o / m) * n + ((o % m) * n) / m; }
inline int64_t adaptive_end(int64_t o, int64_t m, int64_t n) { return 1 + ((o + 1) * n - 1) / m; }

// row = idx / in_w for 0 <= idx < plane through a double reciprocal (exact
// after the fix-up for idx < 2^52; larger planes use the integer division).
struct RowDiv {
    int64_t in_w;
    double inv;
    bool fast;
    RowDiv(int64_t w, int64_t plane)
        : in_w(w), inv(w > 0 ? 1.0 / static_cast<double>(w) : 0.0), fast(plane < (int64_t(1) << 52)) {}
    int64_t operator()(int64_t idx) const {
        if (!fast) return idx / in_w;
        int64_t row = static_cast<int64_t>(static_cast<double>(idx) * inv);
        if (row * in_w > idx)
            --row;
        else if ((row + 1) * in_w <= idx)
            ++row;
        return row;
    }
};

// Scatter-add of one plane's max-pool gradient with index validation.
// Returns the first bad output position in the plane, or -1.
// check(oh, ow, idx) returns 1 when idx lies in that output's window (add the
// gradient), 2 when the window holds no input at all and idx is the index the
// forward gives such a window (accepted, no gradient), 0 when bad.
template <typename T, typename Check>
int64_t scatter_plane(const T* gyp, const int64_t* ip, T* gxp, int64_t plane_in, int64_t out_h, int64_t out_w,
                      Check check) {
    std::fill(gxp, gxp + plane_in, T(0));
    for (int64_t oh = 0; oh < out_h; ++oh) {
        for (int64_t ow = 0; ow < out_w; ++ow) {
            const int64_t o = oh * out_w + ow;
            const int64_t idx = ip[o];
            const int c = check(oh, ow, idx);
            if (c == 1)
                gxp[idx] += gyp[o];
            else if (c == 0)
                return o;  // grad_x is unspecified from here on
        }
    }
    return -1;
}

}  // namespace

// ================================================================ max ====

template <typename T>
void max_pool2d_forward(const PoolGeometry& g, const T* x, T* y, int64_t* indices) {
    const int64_t plane_in = g.in_h * g.in_w, plane_out = g.out_h * g.out_w;
    if (g.planes <= 0 || plane_out <= 0) return;
    auto fn = IsaFns<T>::max_fn(g);
    const int64_t work = window_work(g);
    parallel_plane_rows(g.planes, g.out_h, work, [&](int64_t p, int64_t r0, int64_t r1) {
        fn(g, x + p * plane_in, y + p * plane_out, indices ? indices + p * plane_out : nullptr, r0, r1);
    });
}

namespace {

// Splits planes x rows into items: planes * nb bands of rows (nb > 1 only
// when there are too few planes to keep every thread busy).
int64_t bands_per_plane(int64_t planes, int64_t rows, int nt) {
    if (nt > 1 && planes < 4 * int64_t(nt)) return std::max<int64_t>(1, std::min(rows, ceil_div_nonneg(4 * int64_t(nt), planes)));
    return 1;
}

// Whether d = idx - (the window's top-left input) lies in a window of nr rows
// (NR: nr as a compile-time count, 0: nr_rt) and n columns, rows W apart.
template <int NR>
inline bool in_window(uint64_t d, uint64_t n, uint64_t W, int64_t nr_rt) {
    const int64_t nr = NR > 0 ? NR : nr_rt;
    bool ok = d < n;
    for (int64_t r = 1; r < nr; ++r) ok |= d - static_cast<uint64_t>(r) * W < n;
    return ok;
}

// f(std::integral_constant<int, NR>{}) with NR = nr for the common 2 and 3
// window rows (a loop of 1-2 trips per output cost 30% of a 2x2 backward),
// else NR = 0 (nr at run time).
template <class F>
inline auto with_window_rows(int64_t nr, F&& f) {
    if (nr == 2) return f(std::integral_constant<int, 2>{});
    if (nr == 3) return f(std::integral_constant<int, 3>{});
    return f(std::integral_constant<int, 0>{});
}

// Outputs [ow0, out_w) of one row of max_bwd_rows_d1. Stops at the first
// output whose index is outside its window (or whose window has no input
// columns) and returns its column, or -1.
template <bool ASSIGN, int NR, typename T>
inline int64_t max_bwd_row_d1(const T* __restrict gr, const int64_t* __restrict ir, T* __restrict gxp, uint64_t W,
                              int64_t ow0, int64_t out_w, uint64_t base, int64_t nr, const int64_t* wlo,
                              const uint64_t* wn) {
    for (int64_t ow = ow0; ow < out_w; ++ow) {
        const int64_t idx = ir[ow];
        const uint64_t d = static_cast<uint64_t>(idx) - base - static_cast<uint64_t>(wlo[ow]);
        if (!in_window<NR>(d, wn[ow], W, nr)) return ow;
        if (ASSIGN)
            gxp[idx] = T(0) + gr[ow];
        else
            gxp[idx] += gr[ow];
    }
    return -1;
}

// Max-pool backward of output rows [oh0, oh1) of one plane with dilation 1
// on both axes. Windows are rectangles [h.lo, h.hi) x [wlo, wlo + wn); a
// window with no input (h or w empty) goes through generic(). ASSIGN: each
// input gets at most one contribution (non-overlapping windows), so
// gx[idx] = 0 + gy (the rows were zeroed by the caller); else gx[idx] += gy.
// Returns the first bad output position (within the plane) or -1.
template <bool ASSIGN, typename T, typename Generic>
int64_t max_bwd_rows_d1(const T* __restrict gyp, const int64_t* __restrict ip, T* __restrict gxp, int64_t in_w,
                        int64_t out_w, int64_t oh0, int64_t oh1, const MaxAxis* hp, const int64_t* wlo,
                        const uint64_t* wn, Generic generic) {
    const uint64_t W = static_cast<uint64_t>(in_w);
    for (int64_t oh = oh0; oh < oh1; ++oh) {
        const MaxAxis& h = hp[oh];
        const T* gr = gyp + oh * out_w;
        const int64_t* ir = ip + oh * out_w;
        if (h.lo >= h.hi) {
            for (int64_t ow = 0; ow < out_w; ++ow)
                if (generic(oh, ow, ir[ow]) == 0) return oh * out_w + ow;
            continue;
        }
        const uint64_t base = static_cast<uint64_t>(h.lo * in_w);
        const int64_t nr = h.hi - h.lo;
        for (int64_t ow0 = 0; ow0 < out_w;) {
            const int64_t ow = with_window_rows(nr, [&](auto NR) {
                return max_bwd_row_d1<ASSIGN, decltype(NR)::value>(gr, ir, gxp, W, ow0, out_w, base, nr, wlo, wn);
            });
            if (ow < 0) break;
            // Outside its window: bad, unless the window has no input columns
            // and idx is the index the forward gives it (no gradient).
            if (wn[ow] != 0 || generic(oh, ow, ir[ow]) == 0) return oh * out_w + ow;
            ow0 = ow + 1;
        }
    }
    return -1;
}

// One output row of 4 planes (gy, idx plane_out apart, gx plane_in apart) of
// max_bwd_4planes_d1; false at the first index outside its window (or a
// window without input columns).
template <int NR, typename T>
inline bool max_bwd_row_4planes(const T* __restrict gr, const int64_t* __restrict ir, T* __restrict gx,
                                int64_t plane_in, int64_t plane_out, uint64_t W, int64_t out_w, uint64_t base,
                                int64_t nr, const int64_t* wlo, const uint64_t* wn) {
    for (int64_t ow = 0; ow < out_w; ++ow) {
        const uint64_t start = base + static_cast<uint64_t>(wlo[ow]), n = wn[ow];
        auto inside = [&](int64_t idx) { return in_window<NR>(static_cast<uint64_t>(idx) - start, n, W, nr); };
        const int64_t i0 = ir[ow], i1 = ir[ow + plane_out], i2 = ir[ow + 2 * plane_out], i3 = ir[ow + 3 * plane_out];
        if (!(inside(i0) & inside(i1) & inside(i2) & inside(i3))) return false;
        gx[i0] += gr[ow];
        gx[plane_in + i1] += gr[ow + plane_out];
        gx[2 * plane_in + i2] += gr[ow + 2 * plane_out];
        gx[3 * plane_in + i3] += gr[ow + 3 * plane_out];
    }
    return true;
}

// Max-pool backward (dilation 1, windows that may overlap) of 4 whole planes,
// their scatters interleaved: gx = 0, then gx[idx] += gy over the outputs in
// order, per plane. False (gx unspecified) at a window of padding only or an
// index outside its window: the caller redoes the planes one by one.
template <typename T>
bool max_bwd_4planes_d1(const T* gyp, const int64_t* ip, T* gxp, int64_t plane_in, int64_t plane_out, int64_t in_w,
                        int64_t out_w, int64_t out_h, const MaxAxis* hp, const int64_t* wlo, const uint64_t* wn) {
    std::fill(gxp, gxp + 4 * plane_in, T(0));
    const uint64_t W = static_cast<uint64_t>(in_w);
    for (int64_t oh = 0; oh < out_h; ++oh) {
        const MaxAxis& h = hp[oh];
        if (h.lo >= h.hi) return false;
        const uint64_t base = static_cast<uint64_t>(h.lo * in_w);
        const int64_t nr = h.hi - h.lo;
        const T* gr = gyp + oh * out_w;
        const int64_t* ir = ip + oh * out_w;
        const bool ok = with_window_rows(nr, [&](auto NR) {
            return max_bwd_row_4planes<decltype(NR)::value>(gr, ir, gxp, plane_in, plane_out, W, out_w, base, nr,
                                                            wlo, wn);
        });
        if (!ok) return false;
    }
    return true;
}

// Window check of a row's indices ahead of the scatter (pool_isa.h), or
// nullptr.
using WindowCheckFn = bool (*)(const int64_t*, int64_t, bool, const int32_t*, const int32_t*, int32_t, int32_t,
                               int64_t, int32_t*);
WindowCheckFn window_check_fn() {
#ifdef CONVKIT_HAVE_AVX2
    if (active_isa() >= Isa::avx2) return poolk::max_bwd_window_check_avx2;
#endif
    return nullptr;
}

// max_bwd_4planes_d1 with the indices checked ahead, 8 at a time (check:
// window_check_fn()): the scatter loop is then loads, adds and stores only
// (the per-index test cost 3x torch's whole backward at 5x5/1). Rows of
// kFlatRows outputs or more are checked row by row (each output's window: the
// row's first input row + its column table); shorter rows in spans that run
// across rows, within runs of rows whose windows have the same number of
// input rows, from each output's own window start (calls per row and plane,
// each ending in a partial vector, cost as much as the scatter on rows of
// 13-28 outputs: 1.1-1.2x faster this way; on rows of 56+ the per-output
// tables lost 10-15%). No window of padding only (the caller's condition).
struct RowRun {
    int64_t oh0, oh1, nr;  // output rows [oh0, oh1), their windows' input rows
};

struct OutputWindows {
    static constexpr int64_t kFlatRows = 32;       // rows shorter than this: spans across rows
    static constexpr int64_t kWholePlane = 1 << 16;  // planes up to this: tables for every output
    const MaxAxis* hp;
    const int64_t* wlo;
    const uint64_t* wn;
    int64_t in_w, out_w;
    std::vector<RowRun> runs;
    // Row by row: per column (padded by 8). Across rows: per output of the
    // plane (padded by 8), or empty for large planes (filled per span).
    std::vector<int32_t> start, lim;

    OutputWindows(const MaxAxis* hp_, int64_t out_h, const int64_t* wlo_, const uint64_t* wn_, int64_t in_w_,
                  int64_t out_w_)
        : hp(hp_), wlo(wlo_), wn(wn_), in_w(in_w_), out_w(out_w_) {
        if (out_h <= 0) return;  // unused
        for (int64_t oh = 0; oh < out_h; ++oh) {
            const int64_t nr = hp[oh].hi - hp[oh].lo;
            if (runs.empty() || runs.back().nr != nr) runs.push_back({oh, oh, nr});
            runs.back().oh1 = oh + 1;
        }
        if (!flat()) {
            start.assign(wlo, wlo + out_w);
            for (int64_t ow = 0; ow < out_w; ++ow) lim.push_back(static_cast<int32_t>(wn[ow]) - 1);
            start.resize(start.size() + 8);
            lim.resize(lim.size() + 8);
        } else if (out_h * out_w <= kWholePlane) {
            start.assign(static_cast<size_t>(out_h * out_w + 8), 0);
            lim.assign(static_cast<size_t>(out_h * out_w + 8), 0);
            fill(0, out_h * out_w, start.data(), lim.data());
        }
    }
    bool flat() const { return out_w < kFlatRows; }

    // Plane positions of the windows' first inputs and their column counts
    // - 1, of outputs [o0, o0 + m) of the plane.
    void fill(int64_t o0, int64_t m, int32_t* st, int32_t* lm) const {
        int64_t oh = o0 / out_w, ow = o0 % out_w;
        for (int64_t i = 0; i < m; ++i) {
            st[i] = static_cast<int32_t>(hp[oh].lo * in_w + wlo[ow]);
            lm[i] = static_cast<int32_t>(wn[ow]) - 1;
            if (++ow == out_w) {
                ow = 0;
                ++oh;
            }
        }
    }
};

template <typename T>
bool max_bwd_4planes_prechecked(WindowCheckFn check, const T* gyp, const int64_t* ip, T* gxp, int64_t plane_in,
                                int64_t plane_out, const OutputWindows& windows, const int64_t* indices_end) {
    std::fill(gxp, gxp + 4 * plane_in, T(0));
    constexpr int64_t kSpan = 256;
    int32_t at[4][kSpan];
    int32_t st[kSpan + 8], lm[kSpan + 8];  // a span's tables, for large planes across rows
    const int64_t out_w = windows.out_w;
    const bool whole = !windows.start.empty();  // across rows: tables for the whole plane
    // Outputs [o0, o0 + m) whose windows start at row_base + start[i], with
    // lim[i] + 1 columns and nr rows.
    auto span = [&](int64_t o0, int64_t m, int64_t row_base, const int32_t* start, const int32_t* lim, int64_t nr) {
        bool ok = true;
        for (int p = 0; p < 4; ++p) {
            const int64_t* idx = ip + p * plane_out + o0;
            ok &= check(idx, m, indices_end - idx >= (m + 7) / 8 * 8, start, lim, static_cast<int32_t>(row_base),
                        static_cast<int32_t>(windows.in_w), nr, at[p]);
        }
        if (!ok) return false;
        const T* gr = gyp + o0;
        for (int64_t o = 0; o < m; ++o) {
            gxp[at[0][o]] += gr[o];
            gxp[plane_in + at[1][o]] += gr[plane_out + o];
            gxp[2 * plane_in + at[2][o]] += gr[2 * plane_out + o];
            gxp[3 * plane_in + at[3][o]] += gr[3 * plane_out + o];
        }
        return true;
    };
    for (const RowRun& run : windows.runs) {
        if (!windows.flat()) {
            for (int64_t oh = run.oh0; oh < run.oh1; ++oh)
                for (int64_t ow0 = 0; ow0 < out_w; ow0 += kSpan)
                    if (!span(oh * out_w + ow0, std::min(kSpan, out_w - ow0), windows.hp[oh].lo * windows.in_w,
                              windows.start.data() + ow0, windows.lim.data() + ow0, run.nr))
                        return false;
            continue;
        }
        const int64_t end = run.oh1 * out_w;
        for (int64_t o0 = run.oh0 * out_w; o0 < end; o0 += kSpan) {
            const int64_t m = std::min(kSpan, end - o0);
            if (!whole) {
                windows.fill(o0, m, st, lm);
                std::fill(st + m, st + m + 8, 0);  // read (and ignored) past the span's last vector
                std::fill(lm + m, lm + m + 8, 0);
            }
            if (!span(o0, m, 0, whole ? windows.start.data() + o0 : st, whole ? windows.lim.data() + o0 : lm, run.nr))
                return false;
        }
    }
    return true;
}

// Same with the general window test check(oh, ow, idx) (any dilation).
template <bool ASSIGN, typename T, typename Check>
int64_t max_bwd_rows_generic(const T* gyp, const int64_t* ip, T* gxp, int64_t out_w, int64_t oh0, int64_t oh1,
                             Check check) {
    for (int64_t oh = oh0; oh < oh1; ++oh) {
        for (int64_t ow = 0; ow < out_w; ++ow) {
            const int64_t o = oh * out_w + ow;
            const int64_t idx = ip[o];
            const int c = check(oh, ow, idx);
            if (c == 1) {
                if (ASSIGN)
                    gxp[idx] = T(0) + gyp[o];
                else
                    gxp[idx] += gyp[o];
            } else if (c == 0) {
                return o;  // grad_x is unspecified from here on
            }
        }
    }
    return -1;
}

}  // namespace

template <typename T>
int64_t max_pool2d_backward(const PoolGeometry& g, const T* grad_y, const int64_t* indices, T* grad_x) {
    const int64_t plane_in = g.in_h * g.in_w, plane_out = g.out_h * g.out_w;
    if (g.planes <= 0) return -1;
    if (plane_out <= 0) {
        if (plane_in > 0) std::fill(grad_x, grad_x + g.planes * plane_in, T(0));
        return -1;
    }
    const std::vector<MaxAxis> ha = max_axes(g.out_h, g.in_h, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h);
    const std::vector<MaxAxis> wa = max_axes(g.out_w, g.in_w, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w);
    const int64_t dh = g.dilation_h, dw = g.dilation_w;
    const MaxAxis* hp = ha.data();
    const MaxAxis* wp = wa.data();
    const int64_t in_w = g.in_w, out_w = g.out_w;
    const RowDiv rowdiv(in_w, plane_in);
    auto check = [hp, wp, dh, dw, in_w, plane_in, &rowdiv](int64_t oh, int64_t ow, int64_t idx) -> int {
        const MaxAxis& h = hp[oh];
        const MaxAxis& w = wp[ow];
        if (h.lo >= h.hi || w.lo >= w.hi)  // window of padding only: -inf, index h.lo*W + w.lo
            return idx == h.lo * in_w + w.lo ? 2 : 0;
        if (idx < 0 || idx >= plane_in) return 0;
        const int64_t row = rowdiv(idx), col = idx - row * in_w;
        return row >= h.lo && row < h.hi && col >= w.lo && col < w.hi &&
               (dh == 1 || (row - h.start) % dh == 0) && (dw == 1 || (col - w.start) % dw == 0);
    };
    const bool d1 = dh == 1 && dw == 1;
    std::vector<int64_t> wlo(static_cast<size_t>(out_w));
    std::vector<uint64_t> wn(static_cast<size_t>(out_w));
    for (int64_t ow = 0; ow < out_w; ++ow) {
        wlo[ow] = wp[ow].lo;
        wn[ow] = wp[ow].hi > wp[ow].lo ? static_cast<uint64_t>(wp[ow].hi - wp[ow].lo) : 0;
    }
    const int64_t* wlop = wlo.data();
    const uint64_t* wnp = wn.data();
    const int nt = threads_for(g.planes * (plane_in + 3 * plane_out));
    // Windows that never share an input (extent <= stride on both axes): each
    // input gets at most one contribution, so a band of output rows owns the
    // input rows [row_start(r0), row_start(r1)) outright; zero those, then
    // assign. Bands of one plane are independent: parallel over planes x bands.
    const bool disjoint = (g.kernel_h - 1) * dh + 1 <= g.stride_h && (g.kernel_w - 1) * dw + 1 <= g.stride_w;
    if (disjoint) {
        const int64_t nb = bands_per_plane(g.planes, g.out_h, nt);
        const int64_t items = g.planes * nb;
        auto row_start = [&](int64_t oh) -> int64_t {
            if (oh <= 0) return 0;
            if (oh >= g.out_h) return g.in_h;
            return std::min(std::max<int64_t>(oh * g.stride_h - g.pad_h, 0), g.in_h);
        };
        // Whole 2x2 windows at stride 2 (the seed networks' and VGG's pools):
        // each input written once, selected from its window's gradient, no
        // zero fill and no scatter (AVX2: 1.x-3x faster, same bits).
        const auto tiles_2x2 = d1 && g.kernel_h == 2 && g.kernel_w == 2 && g.stride_h == 2 && g.stride_w == 2 &&
                                       g.pad_h == 0 && g.pad_w == 0 && g.out_h == g.in_h / 2 && g.out_w == g.in_w / 2 &&
                                   g.out_w >= 4 && g.in_w < (int64_t(1) << 30)
                                   ? IsaFns<T>::max_bwd_2x2_fn()
                                   : nullptr;
        std::vector<int64_t> bad(static_cast<size_t>(items), -1);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && items > 1)
        for (int64_t it = 0; it < items; ++it) {
            const int64_t p = it / nb, b = it % nb;
            const int64_t r0 = g.out_h * b / nb, r1 = g.out_h * (b + 1) / nb;
            T* gxp = grad_x + p * plane_in;
            const T* gyp = grad_y + p * plane_out;
            const int64_t* ip = indices + p * plane_out;
            if (tiles_2x2) {
                bad[it] = tiles_2x2(gyp, ip, gxp, g.in_h, in_w, out_w, r0, r1, g.out_h);
                continue;
            }
            std::fill(gxp + row_start(r0) * in_w, gxp + row_start(r1) * in_w, T(0));
            bad[it] = d1 ? max_bwd_rows_d1<true>(gyp, ip, gxp, in_w, out_w, r0, r1, hp, wlop, wnp, check)
                         : max_bwd_rows_generic<true>(gyp, ip, gxp, out_w, r0, r1, check);
        }
        for (int64_t it = 0; it < items; ++it)
            if (bad[it] >= 0) return (it / nb) * plane_out + bad[it];
        return -1;
    }
    std::vector<int64_t> bad(static_cast<size_t>(g.planes), -1);
    auto one_plane = [&](int64_t p) {
        T* gxp = grad_x + p * plane_in;
        std::fill(gxp, gxp + plane_in, T(0));
        const T* gyp = grad_y + p * plane_out;
        const int64_t* ip = indices + p * plane_out;
        bad[p] = d1 ? max_bwd_rows_d1<false>(gyp, ip, gxp, in_w, out_w, 0, g.out_h, hp, wlop, wnp, check)
                    : max_bwd_rows_generic<false>(gyp, ip, gxp, out_w, 0, g.out_h, check);
    };
    // Column stride 1, dilated windows or windows of up to 4 taps over rows
    // of a few vectors: every input gathers its gradient (pool_isa.h),
    // parallel over planes x bands of input rows (dilated 3x3/1: 3.2x the
    // scatter; 2x2/1, 1x3/1 over 56 columns 1.1x). From 6 taps on, the
    // pre-checked 4-plane scatter below wins (3x3/1 over 24-112 columns
    // 1.1-1.5x the gather, 2x3 / 3x2 even). A plane whose match count falls
    // short of its outputs holds a bad index: redone through the checked
    // scatter, which names it.
    const auto gather = IsaFns<T>::max_bwd_gather_w1_fn();
    const bool any_empty = std::any_of(ha.begin(), ha.end(), [](const MaxAxis& a) { return a.lo >= a.hi; }) ||
                           std::any_of(wa.begin(), wa.end(), [](const MaxAxis& a) { return a.lo >= a.hi; });
    const int64_t taps = g.kernel_h * g.kernel_w;
    const bool gather_pays = d1 ? taps <= 4 && in_w >= 24 : taps <= kGatherMaxTaps;
    if (gather && g.stride_w == 1 && gather_pays && !any_empty && plane_in < (int64_t(1) << 31) - 64) {
        const int64_t nb = bands_per_plane(g.planes, g.in_h, nt);
        std::vector<int64_t> matched(static_cast<size_t>(g.planes * nb));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && g.planes * nb > 1)
        for (int64_t it = 0; it < g.planes * nb; ++it) {
            const int64_t p = it / nb, b = it % nb;
            matched[it] = gather(g, grad_y + p * plane_out, indices + p * plane_out, grad_x + p * plane_in,
                                 g.in_h * b / nb, g.in_h * (b + 1) / nb);
        }
        for (int64_t p = 0; p < g.planes; ++p) {
            int64_t m = 0;
            for (int64_t b = 0; b < nb; ++b) m += matched[p * nb + b];
            if (m != plane_out) {
                one_plane(p);
                if (bad[p] >= 0) return p * plane_out + bad[p];
            }
        }
        return -1;
    }
    // Overlapping windows: neighbours often share their maximum, so the
    // scatter's gx[idx] += gy waits on the store before it (3x3/1 windows
    // ran 0.65x torch). Four planes' scatters interleaved hide that latency,
    // each plane's additions in its own order (the same bits). A block with
    // a window of padding only or a bad index is redone plane by plane.
    const int64_t blocks = d1 ? g.planes / 4 : 0;
    // (rows narrower than a vector: the per-index test stays cheaper)
    const WindowCheckFn check_ahead =
        !any_empty && out_w >= 8 && plane_in <= (int64_t(1) << 30) ? window_check_fn() : nullptr;
    // Window tables only where 4-plane blocks will read them.
    const OutputWindows windows(hp, check_ahead && blocks > 0 ? g.out_h : 0, wlop, wnp, in_w, out_w);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && g.planes > 1)
    for (int64_t it = 0; it < blocks + (g.planes - 4 * blocks); ++it) {
        if (it >= blocks) {
            one_plane(4 * blocks + (it - blocks));
            continue;
        }
        const int64_t p0 = 4 * it;
        const T* gyp = grad_y + p0 * plane_out;
        const int64_t* ip = indices + p0 * plane_out;
        T* gxp = grad_x + p0 * plane_in;
        const bool done = check_ahead ? max_bwd_4planes_prechecked(check_ahead, gyp, ip, gxp, plane_in, plane_out,
                                                                   windows, indices + g.planes * plane_out)
                                      : max_bwd_4planes_d1(gyp, ip, gxp, plane_in, plane_out, in_w, out_w, g.out_h,
                                                           hp, wlop, wnp);
        if (!done)
            for (int64_t p = p0; p < p0 + 4; ++p) one_plane(p);
    }
    for (int64_t p = 0; p < g.planes; ++p)
        if (bad[p] >= 0) return p * plane_out + bad[p];
    return -1;
}

// ================================================================ avg ====

namespace {

// Window sums of `count` <= kPlaneBlock planes side by side, for results
// with fewer columns than a vector (a 7x7 window over 7x7 planes, AlexNet's
// adaptive 13x13 -> 6x6, the backward gather of such layers): the row kernels
// vectorise over columns, which would idle, and each sum is one chain of
// dependent adds (latency-bound: 4x slower than torch at one output per
// plane). Result (r, c) of plane j:
//   dst[j*dst_plane + r*cols + c] = finish(sum, r, c), sum = 0 + the
//   src[j*src_plane + i*src_w + k] for i in [h0[r], h1[r]), k in [w0[c], w1[c])
// in row-major order: each plane's own order, so the bits of the per-plane
// loops.
template <typename T, class Finish>
void plane_block_window_sums(const T* src, int64_t src_plane, int64_t src_w, T* dst, int64_t dst_plane,
                             int64_t rows, int64_t cols, const int64_t* h0, const int64_t* h1, const int64_t* w0,
                             const int64_t* w1, int64_t count, Finish finish) {
    if (count == kPlaneBlock && src_plane <= kInterleaveMax) {
        // The planes' elements interleaved first (src_plane x 8), so that
        // each tap of the 8 sums is one contiguous 8-lane add, not 8 loads
        // (Inception's 5x5/3 backward: ~9 cycles per input before).
        thread_local std::vector<T> tiles;
        std::vector<T>& t = tiles;
        t.resize(static_cast<size_t>(src_plane * kPlaneBlock));
        for (int64_t e = 0; e < src_plane; ++e)
            for (int64_t j = 0; j < kPlaneBlock; ++j) t[e * kPlaneBlock + j] = src[j * src_plane + e];
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) {
                T acc[kPlaneBlock] = {};
                for (int64_t i = h0[r]; i < h1[r]; ++i) {
                    const T* q = t.data() + i * src_w * kPlaneBlock;
                    for (int64_t k = w0[c]; k < w1[c]; ++k)
                        for (int64_t j = 0; j < kPlaneBlock; ++j) acc[j] += q[k * kPlaneBlock + j];
                }
                for (int64_t j = 0; j < kPlaneBlock; ++j) dst[j * dst_plane + r * cols + c] = finish(acc[j], r, c);
            }
        return;
    }
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
            T acc[kPlaneBlock] = {};
            if (count == kPlaneBlock) {
                // Named scalars: an array here was kept on the stack
                // (store-forwarding chains, 3x slower).
                T a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
                for (int64_t i = h0[r]; i < h1[r]; ++i) {
                    const T* q = src + i * src_w;
                    for (int64_t k = w0[c]; k < w1[c]; ++k) {
                        a0 += q[k];
                        a1 += q[k + src_plane];
                        a2 += q[k + 2 * src_plane];
                        a3 += q[k + 3 * src_plane];
                        a4 += q[k + 4 * src_plane];
                        a5 += q[k + 5 * src_plane];
                        a6 += q[k + 6 * src_plane];
                        a7 += q[k + 7 * src_plane];
                    }
                }
                acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
                acc[4] = a4; acc[5] = a5; acc[6] = a6; acc[7] = a7;
            } else {
                for (int64_t i = h0[r]; i < h1[r]; ++i)
                    for (int64_t k = w0[c]; k < w1[c]; ++k)
                        for (int64_t j = 0; j < count; ++j) acc[j] += src[j * src_plane + i * src_w + k];
            }
            for (int64_t j = 0; j < count; ++j) dst[j * dst_plane + r * cols + c] = finish(acc[j], r, c);
        }
}

// f(p0, count) over blocks of kPlaneBlock planes (the last one shorter).
template <typename F>
void parallel_plane_blocks(int64_t planes, int64_t work, F f) {
    parallel_planes(ceil_div_nonneg(planes, kPlaneBlock), work, [&](int64_t b) {
        const int64_t p0 = b * kPlaneBlock;
        f(p0, std::min(kPlaneBlock, planes - p0));
    });
}

// avg_pool2d's windows for plane_block_window_sums: rows [h0, h1), columns
// [w0, w1) (empty: lo == hi), and each output's divisor as T.
template <typename T>
struct AvgWindows {
    std::vector<int64_t> h0, h1, w0, w1;
    std::vector<T> div;

    AvgWindows(const PoolGeometry& g, bool count_include_pad, int64_t divisor_override)
        : h0(g.out_h), h1(g.out_h), w0(g.out_w), w1(g.out_w), div(static_cast<size_t>(g.out_h * g.out_w)) {
        for (int64_t oh = 0; oh < g.out_h; ++oh) {
            const poolk::AvgAxis h = poolk::avg_axis(oh, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
            h0[oh] = h.lo;
            h1[oh] = std::max(h.lo, h.hi);
            for (int64_t ow = 0; ow < g.out_w; ++ow) {
                const poolk::AvgAxis w = poolk::avg_axis(ow, g.stride_w, g.pad_w, g.kernel_w, g.in_w);
                w0[ow] = w.lo;
                w1[ow] = std::max(w.lo, w.hi);
                div[oh * g.out_w + ow] = static_cast<T>(poolk::avg_divisor(h, w, count_include_pad, divisor_override));
            }
        }
    }

    // Outputs of `count` planes side by side: sum / divisor, or 0 for a
    // window that holds no input (as avg_one).
    void block_means(const PoolGeometry& g, const T* x, T* y, int64_t count) const {
        auto finish = [&](T sum, int64_t oh, int64_t ow) {
            return h0[oh] < h1[oh] && w0[ow] < w1[ow] ? sum / div[oh * g.out_w + ow] : sum;
        };
        plane_block_window_sums(x, g.in_h * g.in_w, g.in_w, y, g.out_h * g.out_w, g.out_h, g.out_w, h0.data(),
                                h1.data(), w0.data(), w1.data(), count, finish);
    }
};

}  // namespace

template <typename T>
void avg_pool2d_forward(const PoolGeometry& g, bool count_include_pad, int64_t divisor_override, const T* x,
                        T* y) {
    const int64_t plane_in = g.in_h * g.in_w, plane_out = g.out_h * g.out_w;
    if (g.planes <= 0 || plane_out <= 0) return;
    const int64_t work = window_work(g);
    if (g.out_w < kPlaneBlock && g.planes >= kPlaneBlock) {
        // Narrow outputs: planes side by side.
        const AvgWindows<T> win(g, count_include_pad, divisor_override);
        parallel_plane_blocks(g.planes, work, [&](int64_t p0, int64_t count) {
            win.block_means(g, x + p0 * plane_in, y + p0 * plane_out, count);
        });
        return;
    }
    auto fn = IsaFns<T>::avg_fn();
    parallel_plane_rows(g.planes, g.out_h, work, [&](int64_t p, int64_t r0, int64_t r1) {
        fn(g, count_include_pad, divisor_override, x + p * plane_in, y + p * plane_out, r0, r1);
    });
}

namespace {

struct NoAfter {
    void operator()(int64_t, int64_t, int64_t) const {}
};

// Gradient of every input of the planes from per-output deltas: gx = gather.
// after(p, r0, r1) runs on input rows [r0, r1) of plane p once they are
// gathered, by the same thread (lp's finishing pass, while they are cached).
template <typename T, class After = NoAfter>
void gather_backward(int64_t planes, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, const T* delta,
                     T* grad_x, const std::vector<int64_t>& ha, const std::vector<int64_t>& hb,
                     const std::vector<int64_t>& wa, const std::vector<int64_t>& wb, After after = {}) {
    const int64_t plane_in = in_h * in_w, plane_out = out_h * out_w;
    const bool single = ranges_single(ha, hb) && ranges_single(wa, wb);
    if (!single && out_w < kPlaneBlock && planes >= kPlaneBlock) {
        // Narrow outputs (AlexNet's adaptive 13x13 -> 6x6): each input's sum
        // of deltas, planes side by side (gather_rows' order).
        parallel_plane_blocks(planes, planes * (plane_in + plane_out), [&](int64_t p0, int64_t count) {
            plane_block_window_sums(delta + p0 * plane_out, plane_out, out_w, grad_x + p0 * plane_in, plane_in, in_h,
                                    in_w, ha.data(), hb.data(), wa.data(), wb.data(), count,
                                    [](T sum, int64_t, int64_t) { return sum; });
            for (int64_t p = p0; p < p0 + count; ++p) after(p, 0, in_h);
        });
        return;
    }
    parallel_plane_rows(planes, in_h, planes * (plane_in + plane_out), [&](int64_t p, int64_t r0, int64_t r1) {
        gather_rows(delta + p * plane_out, grad_x + p * plane_in, in_w, out_w, r0, r1, ha, hb, wa, wb, single);
        after(p, r0, r1);
    });
}

template <typename T>
void avg_ranges(const PoolGeometry& g, std::vector<int64_t>& ha, std::vector<int64_t>& hb,
                std::vector<int64_t>& wa, std::vector<int64_t>& wb) {
    gather_ranges(
        g.out_h, g.in_h,
        [&](int64_t o, int64_t& lo, int64_t& hi) {
            const poolk::AvgAxis a = poolk::avg_axis(o, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
            lo = a.lo;
            hi = a.hi;
        },
        ha, hb);
    gather_ranges(
        g.out_w, g.in_w,
        [&](int64_t o, int64_t& lo, int64_t& hi) {
            const poolk::AvgAxis a = poolk::avg_axis(o, g.stride_w, g.pad_w, g.kernel_w, g.in_w);
            lo = a.lo;
            hi = a.hi;
        },
        wa, wb);
}

}  // namespace

namespace {

// avg_pool2d's backward from each output's divisor div (as T, the same for
// all planes): every input gets 0 + the gy / div of the windows holding it,
// in torch's order. after(p, r0, r1) runs on input rows [r0, r1) of plane p
// once they are written, by the same thread (lp's finishing pass).
template <typename T, class After = NoAfter>
void avg_backward(const PoolGeometry& g, const std::vector<T>& div, const T* grad_y, T* grad_x, After after = {}) {
    const int64_t plane_in = g.in_h * g.in_w, plane_out = g.out_h * g.out_w;
    std::vector<poolk::AvgAxis> hx(g.out_h), wx(g.out_w);
    for (int64_t o = 0; o < g.out_h; ++o) hx[o] = poolk::avg_axis(o, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
    for (int64_t o = 0; o < g.out_w; ++o) wx[o] = poolk::avg_axis(o, g.stride_w, g.pad_w, g.kernel_w, g.in_w);
    const int nt = threads_for(g.planes * (plane_in + plane_out));
    std::vector<int64_t> ha, hb, wa, wb;
    avg_ranges<T>(g, ha, hb, wa, wb);
    if (plane_out == 1 && hx[0].lo == 0 && hx[0].hi == g.in_h && wx[0].lo == 0 && wx[0].hi == g.in_w) {
        // One window over the whole plane (a 7x7 window over 7x7 planes): each
        // plane is filled with 0 + gy / divisor (the row path below took
        // 4x torch's time on 7x7 planes, in per-row and per-plane set-up).
        const T d0 = div[0];
        parallel_planes(g.planes, g.planes * plane_in, [&](int64_t p) {
            const T v = T(0) + grad_y[p] / d0;
            std::fill(grad_x + p * plane_in, grad_x + (p + 1) * plane_in, v);
            after(p, 0, g.in_h);
        }, nt);
        return;
    }
    if (ranges_single(ha, hb) && ranges_single(wa, wb)) {
        // Every input lies in at most one window: gx = 0 + gy / divisor of
        // that window (or 0). Any split of the input rows is race-free.
        std::vector<int64_t> oh_of(static_cast<size_t>(g.in_h));
        for (int64_t ih = 0; ih < g.in_h; ++ih) oh_of[ih] = hb[ih] > ha[ih] ? ha[ih] : -1;
        std::vector<int32_t> col(static_cast<size_t>(g.in_w));
        const bool narrow = g.out_w < (int64_t(1) << 31) - 1;
        if (narrow) {
            for (int64_t iw = 0; iw < g.in_w; ++iw) col[iw] = static_cast<int32_t>(wb[iw] > wa[iw] ? wa[iw] : g.out_w);
            auto fn = IsaFns<T>::avg_bwd_disjoint_fn();
            const int64_t nb = bands_per_plane(g.planes, g.in_h, nt);
            const int64_t items = g.planes * nb;
            std::vector<T> scratch(static_cast<size_t>(nt * (g.out_w + 1)));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && items > 1)
            for (int64_t it = 0; it < items; ++it) {
#ifdef _OPENMP
                T* d = scratch.data() + omp_get_thread_num() * (g.out_w + 1);
#else
                T* d = scratch.data();
#endif
                const int64_t p = it / nb, b = it % nb, r0 = g.in_h * b / nb, r1 = g.in_h * (b + 1) / nb;
                fn(g.in_w, g.out_w, r0, r1, oh_of.data(), col.data(), div.data(), grad_y + p * plane_out,
                   grad_x + p * plane_in, d);
                after(p, r0, r1);
            }
            return;
        }
    }
    const bool overlap = g.kernel_h > g.stride_h || g.kernel_w > g.stride_w;
    // The two per-plane paths below need scratch and loops over kernel_w taps;
    // a window much wider than the input (kernel 2^34 with padding 2^33 is
    // legal) takes the delta + gather path, whose scratch is one delta per
    // output. Both give bitwise the same sums in the same order.
    const bool narrow_window = g.kernel_w <= 2 * g.in_w + 16;
    // Outputs narrower than a vector take the delta + gather path, 8 planes
    // side by side (Inception's 5x5/3 over 17x17: 2x torch's time per plane
    // in the scatter's per-row set-up).
    const bool narrow_out = g.out_w < kPlaneBlock && g.planes >= kPlaneBlock;
    if (overlap && narrow_window && !narrow_out && g.stride_w == 1 && g.planes >= 2 * int64_t(nt)) {
        // Per-plane gather over padded delta rows (each plane by one thread).
        const int64_t rz = std::max(g.kernel_w, g.in_w + g.pad_w + 1 - g.out_w) + 16;
        const int64_t L = g.out_w + g.kernel_w + rz;
        auto fn = IsaFns<T>::avg_bwd_s1_fn();
        std::vector<T> scratch(static_cast<size_t>(nt * g.out_h * L));
        parallel_planes(g.planes, g.planes * (plane_in + plane_out), [&](int64_t p) {
#ifdef _OPENMP
            T* D = scratch.data() + omp_get_thread_num() * g.out_h * L;
#else
            T* D = scratch.data();
#endif
            fn(g.in_h, g.in_w, g.out_h, g.out_w, g.kernel_w, g.pad_w, rz, ha.data(), hb.data(), div.data(),
               grad_y + p * plane_out, grad_x + p * plane_in, D);
            after(p, 0, g.in_h);
        }, nt);
        return;
    }
    if (overlap && narrow_window && !narrow_out && g.planes >= 2 * int64_t(nt)) {
        // Per-plane tap-major scatter (each plane by one thread).
        std::vector<int64_t> ca(g.kernel_w), cb(g.kernel_w), hlo(g.out_h), hhi(g.out_h);
        for (int64_t c = 0; c < g.kernel_w; ++c) {
            // ow*sw + c - pad_w in [0, in_w), ow in [0, out_w)
            const int64_t lo = g.pad_w - c;  // ow*sw >= lo
            ca[c] = std::min(g.out_w, lo > 0 ? ceil_div_nonneg(lo, g.stride_w) : 0);
            const int64_t hi = g.in_w - 1 + g.pad_w - c;  // ow*sw <= hi
            cb[c] = hi < 0 ? ca[c] : std::max(ca[c], std::min(g.out_w, hi / g.stride_w + 1));
        }
        for (int64_t oh = 0; oh < g.out_h; ++oh) {
            hlo[oh] = hx[oh].lo;
            hhi[oh] = hx[oh].hi;
        }
        auto fn = IsaFns<T>::avg_bwd_scatter_fn();
        const int64_t per_thread = poolk::avg_scatter_scratch(g.in_w, g.out_w, g.kernel_w, g.stride_w);
        std::vector<T> scratch(static_cast<size_t>(nt * per_thread));
        parallel_planes(g.planes, g.planes * (plane_in + plane_out), [&](int64_t p) {
#ifdef _OPENMP
            T* d = scratch.data() + omp_get_thread_num() * per_thread;
#else
            T* d = scratch.data();
#endif
            fn(g.in_h, g.in_w, g.out_h, g.out_w, g.kernel_w, g.stride_w, g.pad_w, hlo.data(), hhi.data(), ca.data(),
               cb.data(), div.data(), grad_y + p * plane_out, grad_x + p * plane_in, d);
            after(p, 0, g.in_h);
        }, nt);
        return;
    }
    std::vector<T> delta(static_cast<size_t>(g.planes * plane_out));
    T* dl = delta.data();
    parallel_plane_rows(g.planes, g.out_h, g.planes * plane_out, [&](int64_t p, int64_t r0, int64_t r1) {
        const T* gyp = grad_y + p * plane_out;
        T* dp = dl + p * plane_out;
        for (int64_t o = r0 * g.out_w; o < r1 * g.out_w; ++o) dp[o] = gyp[o] / div[o];
    });
    gather_backward(g.planes, g.in_h, g.in_w, g.out_h, g.out_w, dl, grad_x, ha, hb, wa, wb, after);
}

}  // namespace

template <typename T>
void avg_pool2d_backward(const PoolGeometry& g, bool count_include_pad, int64_t divisor_override,
                         const T* grad_y, T* grad_x) {
    const int64_t plane_in = g.in_h * g.in_w, plane_out = g.out_h * g.out_w;
    if (g.planes <= 0 || plane_in <= 0) return;
    if (plane_out <= 0) {
        std::fill(grad_x, grad_x + g.planes * plane_in, T(0));
        return;
    }
    avg_backward(g, AvgWindows<T>(g, count_include_pad, divisor_override).div, grad_y, grad_x);
}

// ================================================================= lp ====

namespace {

// The formulas of torch's Tensor.pow(Scalar) for float/double tensors, by
// exponent, in the order it tests them. The lp loops are instantiated per
// kind (chosen once per call, not per element) so that all but `general`
// vectorise.
enum class PowKind { zero, one, two, three, half, neg_half, neg_one, neg_two, general };

PowKind pow_kind(double e) {
    if (e == 0.0) return PowKind::zero;
    if (e == 1.0) return PowKind::one;
    if (e == 2.0) return PowKind::two;
    if (e == 3.0) return PowKind::three;
    if (e == 0.5) return PowKind::half;
    if (e == -0.5) return PowKind::neg_half;
    if (e == -1.0) return PowKind::neg_one;
    if (e == -2.0) return PowKind::neg_two;
    return PowKind::general;
}

template <PowKind K, typename T>
inline T torch_pow(T b, double e) {
    if constexpr (K == PowKind::zero) return T(1);
    else if constexpr (K == PowKind::one) return b;
    else if constexpr (K == PowKind::two) return b * b;
    else if constexpr (K == PowKind::three) return b * b * b;
    else if constexpr (K == PowKind::half) return std::sqrt(b);
    else if constexpr (K == PowKind::neg_half) return T(1) / std::sqrt(b);
    else if constexpr (K == PowKind::neg_one) return T(1) / b;
    else if constexpr (K == PowKind::neg_two) return T(1) / (b * b);
    else return static_cast<T>(std::pow(static_cast<double>(b), e));
}

// f(std::integral_constant<PowKind, pow_kind(e)>{}).
template <class F>
void with_pow_kind(double e, F&& f) {
    using K = PowKind;
    switch (pow_kind(e)) {
        case K::zero: return f(std::integral_constant<K, K::zero>{});
        case K::one: return f(std::integral_constant<K, K::one>{});
        case K::two: return f(std::integral_constant<K, K::two>{});
        case K::three: return f(std::integral_constant<K, K::three>{});
        case K::half: return f(std::integral_constant<K, K::half>{});
        case K::neg_half: return f(std::integral_constant<K, K::neg_half>{});
        case K::neg_one: return f(std::integral_constant<K, K::neg_one>{});
        case K::neg_two: return f(std::integral_constant<K, K::neg_two>{});
        default: return f(std::integral_constant<K, K::general>{});
    }
}

template <typename T>
inline T torch_sign(T a) {
    return T(T(0) < a) - T(a < T(0));  // NaN -> +0, as torch.sign
}

// relu(abs(a)): NaN stays NaN.
template <typename T>
inline T relu_abs(T a) {
    const T m = std::abs(a);
    return m <= T(0) ? T(0) : m;
}

// v, or +0 where `zero`: a select the compiler cannot turn into a branch
// around v's computation (a branch around a multiply, which may trap, keeps
// the loop from vectorising).
template <typename T>
inline T zero_where(bool zero, T v) {
    using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    U u;
    std::memcpy(&u, &v, sizeof u);
    u &= U(0) - U(!zero);
    std::memcpy(&v, &u, sizeof u);
    return v;
}

// Elements of x.pow(p) one work item holds at a time (32 KiB of float).
constexpr int64_t kLpScratch = 1 << 13;

// A = avg_pool2d(x.pow(p), count_include_pad) of every output, into a. Each
// window's x.pow(p) is summed row-major from 0, then divided once by the
// count: the order of the avg_pool2d forward kernels, which therefore run on
// x.pow(p) of a band of input rows in per-item scratch. after(p, o0, o1)
// runs on each finished range [o0, o1) of plane p's outputs, by the same
// thread while they are in cache.
template <typename T, class After>
void lp_window_means(const PoolGeometry& g, const AvgWindows<T>& win, double norm_type, const T* x, T* a,
                     After after) {
    const int64_t plane_in = g.in_h * g.in_w, plane_out = g.out_h * g.out_w;
    auto pow_into = [norm_type](const T* src, int64_t n, T* dst) {
        with_pow_kind(norm_type, [&](auto K) {
            for (int64_t i = 0; i < n; ++i) dst[i] = torch_pow<decltype(K)::value>(src[i], norm_type);
        });
    };
    const int64_t work = window_work(g, 4);
    if (g.out_w < kPlaneBlock && g.planes >= kPlaneBlock && kPlaneBlock * plane_in <= kLpScratch) {
        // Narrow outputs of small planes: planes side by side, as avg_pool2d.
        parallel_plane_blocks(g.planes, work, [&](int64_t p0, int64_t count) {
            std::unique_ptr<T[]> s(new T[count * plane_in]);
            pow_into(x + p0 * plane_in, count * plane_in, s.get());
            win.block_means(g, s.get(), a + p0 * plane_out, count);
            for (int64_t p = p0; p < p0 + count; ++p) after(p, 0, plane_out);
        });
        return;
    }
    auto fn = IsaFns<T>::avg_fn();
    // Chunks of output rows whose input rows fit the scratch, which holds them
    // from input row shift*stride_h on (shift: the chunk's first output row):
    // a geometry of those rows and outputs has the same windows and counts.
    // With padding (direct C++ calls only; Python's lp has none) the bottom
    // rows' counts need the whole plane's height: the scratch keeps plane
    // rows (shift 0) and each band is one chunk.
    const bool padded = g.pad_h > 0;
    const int64_t kh = std::min(g.kernel_h, g.in_h);
    const int64_t fit = std::max(kLpScratch / std::max<int64_t>(g.in_w, 1), kh);
    const int64_t chunk = padded ? g.out_h : (fit - kh) / g.stride_h + 1;
    const int64_t scratch = (padded ? g.in_h : std::min(g.in_h, fit)) * g.in_w;
    // Output rows past rows_in have windows without input rows: A = 0 (as
    // avg_one). All rows reach the input in Python's geometries.
    const int64_t rows_in = std::min(g.out_h, ceil_div_nonneg(g.in_h + g.pad_h, g.stride_h));
    parallel_plane_rows(g.planes, g.out_h, work, [&](int64_t p, int64_t r0, int64_t r1) {
        T* ap = a + p * plane_out;
        std::unique_ptr<T[]> s(r0 < rows_in ? new T[scratch] : nullptr);
        for (int64_t c0 = r0; c0 < std::min(r1, rows_in); c0 += chunk) {
            const int64_t c1 = std::min({c0 + chunk, r1, rows_in});
            const int64_t shift = padded ? 0 : c0, base = shift * g.stride_h;
            const int64_t lo = std::max<int64_t>(c0 * g.stride_h - g.pad_h, 0);
            const int64_t hi = std::min(g.in_h, (c1 - 1) * g.stride_h - g.pad_h + g.kernel_h);
            pow_into(x + p * plane_in + lo * g.in_w, (hi - lo) * g.in_w, s.get() + (lo - base) * g.in_w);
            PoolGeometry sub = g;
            sub.planes = 1;
            sub.in_h = (padded ? g.in_h : hi) - base;
            sub.out_h = g.out_h - shift;
            fn(sub, true, 0, s.get(), ap + shift * g.out_w, c0 - shift, c1 - shift);
            after(p, c0 * g.out_w, c1 * g.out_w);
        }
        const int64_t e0 = std::max(r0, rows_in);
        if (e0 < r1) {
            std::fill(ap + e0 * g.out_w, ap + r1 * g.out_w, T(0));
            after(p, e0 * g.out_w, r1 * g.out_w);
        }
    });
}

}  // namespace

template <typename T>
void lp_pool2d_forward(const PoolGeometry& g, double norm_type, const T* x, T* y) {
    const int64_t plane_out = g.out_h * g.out_w;
    if (g.planes <= 0 || plane_out <= 0) return;
    const T kk = static_cast<T>(g.kernel_h * g.kernel_w);
    const double inv_p = 1.0 / norm_type;
    const AvgWindows<T> win(g, true, 0);
    lp_window_means(g, win, norm_type, x, y, [&](int64_t p, int64_t o0, int64_t o1) {
        T* yp = y + p * plane_out;
        // (sign(A) * relu(abs(A))) * kh*kw, then pow(1/p)
        with_pow_kind(inv_p, [&](auto K) {
            for (int64_t o = o0; o < o1; ++o)
                yp[o] = torch_pow<decltype(K)::value>(torch_sign(yp[o]) * relu_abs(yp[o]) * kk, inv_p);
        });
    });
}

template <typename T>
void lp_pool2d_backward(const PoolGeometry& g, double norm_type, const T* grad_y, const T* x, T* grad_x) {
    const int64_t plane_in = g.in_h * g.in_w, plane_out = g.out_h * g.out_w;
    if (g.planes <= 0 || plane_in <= 0) return;
    if (plane_out <= 0) {
        std::fill(grad_x, grad_x + g.planes * plane_in, T(0));
        return;
    }
    const T kk = static_cast<T>(g.kernel_h * g.kernel_w);
    const double inv_p = 1.0 / norm_type;
    const T inv_p_t = static_cast<T>(inv_p);
    const AvgWindows<T> win(g, true, 0);
    const std::unique_ptr<T[]> grad_a(new T[g.planes * plane_out]);  // every element written below
    T* ga = grad_a.get();
    // A, then autograd's chain from gy back to A's gradient. The division by
    // the count is avg_backward's (a window with count 0 holds no input: its
    // value reaches no gradient).
    lp_window_means(g, win, norm_type, x, ga, [&](int64_t p, int64_t o0, int64_t o1) {
        T* gap = ga + p * plane_out;
        const T* gyp = grad_y + p * plane_out;
        with_pow_kind(inv_p - 1.0, [&](auto K) {
            for (int64_t o = o0; o < o1; ++o) {
                const T a = gap[o];
                const T s = torch_sign(a), r = relu_abs(a);
                const T b = (s * r) * kk;
                const T gb_pow = gyp[o] * (inv_p_t * torch_pow<decltype(K)::value>(b, inv_p - 1.0));
                const T gb = inv_p == 0.0 ? T(0) * gyp[o] : gb_pow;  // pow_backward with exponent 0: zeros
                // through sign(A) * relu(abs(A)): relu(abs(A)) <= 0 exactly where A == +-0
                gap[o] = zero_where(a == T(0), (gb * kk) * s) * s;
            }
        });
    });
    // gx = gX * (p * x.pow(p - 1)), on each band of rows avg_backward wrote
    const T p_t = static_cast<T>(norm_type);
    avg_backward(g, win.div, ga, grad_x, [&](int64_t p, int64_t r0, int64_t r1) {
        const T* xp = x + p * plane_in;
        T* gp = grad_x + p * plane_in;
        with_pow_kind(norm_type - 1.0, [&](auto K) {
            if (norm_type == 0.0)  // pow_backward with exponent 0: zeros
                for (int64_t i = r0 * g.in_w; i < r1 * g.in_w; ++i) gp[i] = T(0) * gp[i];
            else
                for (int64_t i = r0 * g.in_w; i < r1 * g.in_w; ++i)
                    gp[i] = gp[i] * (p_t * torch_pow<decltype(K)::value>(xp[i], norm_type - 1.0));
        });
    });
}

// =========================================================== adaptive ====

namespace {

// f(p0, p1) over contiguous runs of planes, one per thread (one call each, no
// per-plane dispatch): planes of a 7x7 map are only 49 elements.
template <typename F>
void plane_runs(int64_t planes, int64_t work, F f) {
    const int nt = threads_for(work);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        const int64_t t = omp_get_thread_num(), nth = omp_get_num_threads();
#else
        const int64_t t = 0, nth = 1;
#endif
        f(planes * t / nth, planes * (t + 1) / nth);
    }
}

}  // namespace

template <typename T>
void adaptive_avg_pool2d_forward(const AdaptiveGeometry& g, const T* x, T* y) {
    const int64_t plane_in = g.in_h * g.in_w, plane_out = g.out_h * g.out_w;
    if (g.planes <= 0 || plane_out <= 0) return;
    const int64_t work = g.planes * (plane_out + plane_in);
    if (g.out_h == 1 && g.out_w == 1) {
        // torch computes a 1x1 adaptive average as input.mean((-1, -2)): its
        // cascade (multi-accumulator, vectorised) sum rounded to T, then one
        // division by h*w. That sum order depends on torch's build and CPU, so
        // it is not reproduced bit for bit; we use a more accurate sum (8
        // interleaved double accumulators, combined pairwise: plane_means)
        // rounded to T, then the same division.
        auto fn = IsaFns<T>::mean_fn();
        plane_runs(g.planes, work, [&](int64_t p0, int64_t p1) { fn(x, plane_in, p0, p1, y); });
        return;
    }
    std::vector<int64_t> h0(g.out_h), h1(g.out_h), w0(g.out_w), w1(g.out_w);
    for (int64_t o = 0; o < g.out_h; ++o) {
        h0[o] = adaptive_start(o, g.out_h, g.in_h);
        h1[o] = adaptive_end(o, g.out_h, g.in_h);
    }
    for (int64_t o = 0; o < g.out_w; ++o) {
        w0[o] = adaptive_start(o, g.out_w, g.in_w);
        w1[o] = adaptive_end(o, g.out_w, g.in_w);
    }
    if (g.out_w < kPlaneBlock && g.planes >= kPlaneBlock) {
        // Narrow outputs (AlexNet's 13x13 -> 6x6): planes side by side, as
        // avg_pool2d's; the same sums in the same order.
        auto finish = [&](T sum, int64_t oh, int64_t ow) {
            return sum / static_cast<T>(h1[oh] - h0[oh]) / static_cast<T>(w1[ow] - w0[ow]);
        };
        parallel_plane_blocks(g.planes, work, [&](int64_t p0, int64_t count) {
            plane_block_window_sums(x + p0 * plane_in, plane_in, g.in_w, y + p0 * plane_out, plane_out, g.out_h,
                                    g.out_w, h0.data(), h1.data(), w0.data(), w1.data(), count, finish);
        });
        return;
    }
    parallel_plane_rows(g.planes, g.out_h, work, [&](int64_t p, int64_t r0, int64_t r1) {
        const T* xp = x + p * plane_in;
        T* yp = y + p * plane_out;
        for (int64_t oh = r0; oh < r1; ++oh) {
            const T kh = static_cast<T>(h1[oh] - h0[oh]);
            for (int64_t ow = 0; ow < g.out_w; ++ow) {
                T sum = 0;
                for (int64_t ih = h0[oh]; ih < h1[oh]; ++ih)
                    for (int64_t iw = w0[ow]; iw < w1[ow]; ++iw) sum += xp[ih * g.in_w + iw];
                yp[oh * g.out_w + ow] = sum / kh / static_cast<T>(w1[ow] - w0[ow]);
            }
        }
    });
}

template <typename T>
void adaptive_avg_pool2d_backward(const AdaptiveGeometry& g, const T* grad_y, T* grad_x) {
    const int64_t plane_in = g.in_h * g.in_w, plane_out = g.out_h * g.out_w;
    if (g.planes <= 0 || plane_in <= 0) return;
    if (plane_out <= 0) {
        std::fill(grad_x, grad_x + g.planes * plane_in, T(0));
        return;
    }
    if (g.out_h == 1 && g.out_w == 1) {
        // mean((-1, -2)) backward, as torch: gy / (h*w) broadcast.
        const T n = static_cast<T>(plane_in);
        parallel_plane_rows(g.planes, g.in_h, g.planes * plane_in, [&](int64_t p, int64_t r0, int64_t r1) {
            const T d = grad_y[p] / n;
            std::fill(grad_x + p * plane_in + r0 * g.in_w, grad_x + p * plane_in + r1 * g.in_w, d);
        });
        return;
    }
    std::vector<int64_t> kh(g.out_h), kw(g.out_w);
    for (int64_t o = 0; o < g.out_h; ++o) kh[o] = adaptive_end(o, g.out_h, g.in_h) - adaptive_start(o, g.out_h, g.in_h);
    for (int64_t o = 0; o < g.out_w; ++o) kw[o] = adaptive_end(o, g.out_w, g.in_w) - adaptive_start(o, g.out_w, g.in_w);
    std::vector<T> delta(static_cast<size_t>(g.planes * plane_out));
    T* dl = delta.data();
    parallel_plane_rows(g.planes, g.out_h, g.planes * plane_out, [&](int64_t p, int64_t r0, int64_t r1) {
        const T* gyp = grad_y + p * plane_out;
        T* dp = dl + p * plane_out;
        for (int64_t oh = r0; oh < r1; ++oh)
            for (int64_t ow = 0; ow < g.out_w; ++ow) {
                const int64_t o = oh * g.out_w + ow;
                dp[o] = gyp[o] / static_cast<T>(kh[oh]) / static_cast<T>(kw[ow]);
            }
    });
    std::vector<int64_t> ha, hb, wa, wb;
    gather_ranges(
        g.out_h, g.in_h,
        [&](int64_t o, int64_t& lo, int64_t& hi) {
            lo = adaptive_start(o, g.out_h, g.in_h);
            hi = adaptive_end(o, g.out_h, g.in_h);
        },
        ha, hb);
    gather_ranges(
        g.out_w, g.in_w,
        [&](int64_t o, int64_t& lo, int64_t& hi) {
            lo = adaptive_start(o, g.out_w, g.in_w);
            hi = adaptive_end(o, g.out_w, g.in_w);
        },
        wa, wb);
    gather_backward(g.planes, g.in_h, g.in_w, g.out_h, g.out_w, dl, grad_x, ha, hb, wa, wb);
}

template <typename T>
void adaptive_max_pool2d_forward(const AdaptiveGeometry& g, const T* x, T* y, int64_t* indices) {
    const int64_t plane_in = g.in_h * g.in_w, plane_out = g.out_h * g.out_w;
    if (g.planes <= 0 || plane_out <= 0) return;
    if (g.out_h == 1 && g.out_w == 1 && plane_in > 0) {
        // One window over each plane (a global max): 8 lanes per plane
        // (plane_maxes), not one compare chain through 49 elements.
        auto fn = IsaFns<T>::plane_max_fn();
        plane_runs(g.planes, g.planes * (1 + plane_in),
                   [&](int64_t p0, int64_t p1) { fn(x, plane_in, p0, p1, y, indices); });
        return;
    }
    if (g.in_h > 0 && g.in_w > 0 && g.in_h % g.out_h == 0 && g.in_w % g.out_w == 0 &&
        (g.out_w > 1 || g.out_h > 1)) {
        // Uniform windows: exactly max_pool2d with kernel = stride = n / m.
        PoolGeometry pg;
        pg.planes = g.planes;
        pg.in_h = g.in_h;
        pg.in_w = g.in_w;
        pg.out_h = g.out_h;
        pg.out_w = g.out_w;
        pg.kernel_h = pg.stride_h = g.in_h / g.out_h;
        pg.kernel_w = pg.stride_w = g.in_w / g.out_w;
        max_pool2d_forward(pg, x, y, indices);
        return;
    }
    std::vector<int64_t> h0(g.out_h), h1(g.out_h), w0(g.out_w), w1(g.out_w);
    for (int64_t o = 0; o < g.out_h; ++o) {
        h0[o] = adaptive_start(o, g.out_h, g.in_h);
        h1[o] = adaptive_end(o, g.out_h, g.in_h);
    }
    for (int64_t o = 0; o < g.out_w; ++o) {
        w0[o] = adaptive_start(o, g.out_w, g.in_w);
        w1[o] = adaptive_end(o, g.out_w, g.in_w);
    }
    parallel_plane_rows(g.planes, g.out_h, g.planes * (plane_out + plane_in), [&](int64_t p, int64_t r0, int64_t r1) {
        const T* xp = x + p * plane_in;
        T* yp = y + p * plane_out;
        int64_t* ip = indices ? indices + p * plane_out : nullptr;
        for (int64_t oh = r0; oh < r1; ++oh) {
            for (int64_t ow = 0; ow < g.out_w; ++ow) {
                int64_t maxindex = h0[oh] * g.in_w + w0[ow];
                T maxval = -std::numeric_limits<T>::infinity();
                for (int64_t ih = h0[oh]; ih < h1[oh]; ++ih) {
                    for (int64_t iw = w0[ow]; iw < w1[ow]; ++iw) {
                        const int64_t index = ih * g.in_w + iw;
                        const T val = xp[index];
                        if ((val > maxval) || std::isnan(val)) {
                            maxval = val;
                            maxindex = index;
                        }
                    }
                }
                yp[oh * g.out_w + ow] = maxval;
                if (ip) ip[oh * g.out_w + ow] = maxindex;
            }
        }
    });
}

template <typename T>
int64_t adaptive_max_pool2d_backward(const AdaptiveGeometry& g, const T* grad_y, const int64_t* indices,
                                     T* grad_x) {
    const int64_t plane_in = g.in_h * g.in_w, plane_out = g.out_h * g.out_w;
    if (g.planes <= 0) return -1;
    if (plane_out <= 0) {
        if (plane_in > 0) std::fill(grad_x, grad_x + g.planes * plane_in, T(0));
        return -1;
    }
    if (plane_out == 1 && plane_in > 0) {
        // One window over each plane (a global max): every index inside the
        // plane is valid. A run of planes is zeroed at once (one fill, not one
        // per 49-element plane), then each gets 0 + gy at its index.
        std::vector<int64_t> bad(static_cast<size_t>(g.planes), -1);
        plane_runs(g.planes, g.planes * (plane_in + 1), [&](int64_t p0, int64_t p1) {
            std::fill(grad_x + p0 * plane_in, grad_x + p1 * plane_in, T(0));
            for (int64_t p = p0; p < p1; ++p) {
                const int64_t idx = indices[p];
                if (static_cast<uint64_t>(idx) < static_cast<uint64_t>(plane_in))
                    grad_x[p * plane_in + idx] += grad_y[p];
                else
                    bad[p] = 0;
            }
        });
        for (int64_t p = 0; p < g.planes; ++p)
            if (bad[p] >= 0) return p;
        return -1;
    }
    std::vector<int64_t> h0(g.out_h), h1(g.out_h), w0(g.out_w), w1(g.out_w);
    for (int64_t o = 0; o < g.out_h; ++o) {
        h0[o] = adaptive_start(o, g.out_h, g.in_h);
        h1[o] = adaptive_end(o, g.out_h, g.in_h);
    }
    for (int64_t o = 0; o < g.out_w; ++o) {
        w0[o] = adaptive_start(o, g.out_w, g.in_w);
        w1[o] = adaptive_end(o, g.out_w, g.in_w);
    }
    const int64_t *a0 = h0.data(), *a1 = h1.data(), *b0 = w0.data(), *b1 = w1.data();
    const int64_t in_w = g.in_w;
    const RowDiv rowdiv(in_w, plane_in);
    auto check = [a0, a1, b0, b1, in_w, plane_in, &rowdiv](int64_t oh, int64_t ow, int64_t idx) -> int {
        if (idx < 0 || idx >= plane_in) return 0;
        const int64_t row = rowdiv(idx), col = idx - row * in_w;
        return row >= a0[oh] && row < a1[oh] && col >= b0[ow] && col < b1[ow];
    };
    std::vector<int64_t> bad(static_cast<size_t>(g.planes), -1);
    parallel_planes(g.planes, g.planes * (plane_in + plane_out), [&](int64_t p) {
        bad[p] = scatter_plane(grad_y + p * plane_out, indices + p * plane_out, grad_x + p * plane_in, plane_in,
                               g.out_h, g.out_w, check);
    });
    for (int64_t p = 0; p < g.planes; ++p)
        if (bad[p] >= 0) return p * plane_out + bad[p];
    return -1;
}

// ====================================================== instantiations ====

#define CONVKIT_POOL_INSTANTIATE(T)                                                                              \
    template void max_pool2d_forward<T>(const PoolGeometry&, const T*, T*, int64_t*);                          \
    template int64_t max_pool2d_backward<T>(const PoolGeometry&, const T*, const int64_t*, T*);                \
    template void avg_pool2d_forward<T>(const PoolGeometry&, bool, int64_t, const T*, T*);                     \
    template void avg_pool2d_backward<T>(const PoolGeometry&, bool, int64_t, const T*, T*);                    \
    template void lp_pool2d_forward<T>(const PoolGeometry&, double, const T*, T*);                             \
    template void lp_pool2d_backward<T>(const PoolGeometry&, double, const T*, const T*, T*);                  \
    template void adaptive_avg_pool2d_forward<T>(const AdaptiveGeometry&, const T*, T*);                       \
    template void adaptive_avg_pool2d_backward<T>(const AdaptiveGeometry&, const T*, T*);                      \
    template void adaptive_max_pool2d_forward<T>(const AdaptiveGeometry&, const T*, T*, int64_t*);             \
    template int64_t adaptive_max_pool2d_backward<T>(const AdaptiveGeometry&, const T*, const int64_t*, T*);

CONVKIT_POOL_INSTANTIATE(float)
CONVKIT_POOL_INSTANTIATE(double)

}  // namespace convkit
