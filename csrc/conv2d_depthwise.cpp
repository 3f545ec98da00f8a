// Direct convolution paths for depthwise-like layers (one input and one
// output channel per group) and direct backward weight for tiny layers; see
// conv2d_depthwise.h. Determinism: every output element is computed by one
// task with an order fixed by the geometry and the active ISA.
#include "conv2d_depthwise.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "conv_common.h"
#include "cpu_features.h"
#include "gemm.h"
#include "kernels/dwconv_impl.h"
#include "parallel.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace convkit {
namespace dw {
namespace {

// Adjoint of im2col_row: x_plane[...] += src[q - q0] for every in-range read.

// Pick a split count (power of two, <= max_split) so that base*split >= want.
inline int64_t split_for(int64_t base, int64_t max_split, int64_t want) {
    int64_t s = 1;
    while (base * s < want && s * 2 <= max_split) s *= 2;
    return s;
}

// ---------------------------------------------------------------- direct paths

// Valid output-column range [lo[s], hi[s]) of every kernel column s (computed
// once per call, outside the parallel region).
struct ColRanges {
    std::vector<int64_t> lo, hi;
    explicit ColRanges(const ConvGeometry& g) : lo(g.kernel_w), hi(g.kernel_w) {
        for (int64_t s = 0; s < g.kernel_w; ++s)
            valid_cols(s * g.dilation_w - g.pad_left, g.stride_w, g.in_w, g.out_w, lo[s], hi[s]);
    }
};

// Direct forward for one output plane per task. Per element the order is
// bias, then (c, r, s) ascending; interior columns (every tap in range) go
// through the ISA row kernel, edge columns through a scalar loop.
template <typename T>
void direct_forward(const ConvGeometry& g, const T* x, const T* w, const T* bias, T* y) {
    const int64_t N = g.batch, C = g.in_channels, H = g.in_h, W = g.in_w, K = g.out_channels;
    const int64_t R = g.kernel_h, S = g.kernel_w, OH = g.out_h, OW = g.out_w, G = g.groups;
    const int64_t Cg = C / G, Kg = K / G, RS = R * S, sw = g.stride_w;
    const int nt = threads_for_work(double(N) * K * OH * OW * Cg * RS);
    const int64_t planes = N * K;
    const ColRanges cr(g);
    const int64_t* lo_s = cr.lo.data();
    const int64_t* hi_s = cr.hi.data();
    int64_t ilo = 0, ihi = OW;  // interior columns
    for (int64_t s = 0; s < S; ++s) {
        ilo = std::max(ilo, lo_s[s]);
        ihi = std::min(ihi, hi_s[s]);
    }
    if (ihi < ilo) ihi = ilo;
    const DirectRowFn<T> row_kernel = direct_row_kernel_for<T>(active_isa());
    // Per-thread tap lists, padded so that threads never share a cache line.
    const int64_t tap_stride = round_up(std::max<int64_t>(RS, 1), 16) + 16;
    std::vector<const T*> src_all(static_cast<size_t>(nt * tap_stride));
    std::vector<T> wts_all(static_cast<size_t>(nt * tap_stride));
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t t = 0; t < planes; ++t) {
        const FlushDenormals flush_denormals;
        const int64_t n = t / K, k = t % K, gi = k / Kg;
        const int tid = thread_id();
        const T** src = src_all.data() + tid * tap_stride;
        T* wts = wts_all.data() + tid * tap_stride;
        T* yp = y + t * OH * OW;
        const T b0 = bias ? bias[k] : T(0);
        for (int64_t oh = 0; oh < OH; ++oh) {
            T* yr = yp + oh * OW;
            for (int64_t ow = 0; ow < OW; ++ow) yr[ow] = b0;
            for (int64_t c = 0; c < Cg; ++c) {
                const T* xp = x + (n * C + gi * Cg + c) * H * W;
                const T* wk = w + (k * Cg + c) * RS;
                int64_t taps = 0;
                for (int64_t r = 0; r < R; ++r) {
                    const int64_t ih = oh * g.stride_h - g.pad_top + r * g.dilation_h;
                    if (ih < 0 || ih >= H) continue;
                    const T* xr = xp + ih * W;
                    for (int64_t s = 0; s < S; ++s) {
                        const int64_t off = s * g.dilation_w - g.pad_left;
                        if (ihi > ilo) src[taps] = xr + (ilo * sw + off);
                        wts[taps] = wk[r * S + s];
                        ++taps;
                        // Edge columns: scalar, same (r, s) order.
                        for (int64_t ow = lo_s[s]; ow < std::min(hi_s[s], ilo); ++ow)
                            yr[ow] += wts[taps - 1] * xr[ow * sw + off];
                        for (int64_t ow = std::max(lo_s[s], ihi); ow < hi_s[s]; ++ow)
                            yr[ow] += wts[taps - 1] * xr[ow * sw + off];
                    }
                }
                if (taps > 0 && ihi > ilo) row_kernel(yr + ilo, ihi - ilo, src, wts, taps, sw);
            }
        }
    }
}

template <typename T>
void direct_backward_data(const ConvGeometry& g, const T* gy, const T* w, T* gx) {
    const int64_t N = g.batch, C = g.in_channels, H = g.in_h, W = g.in_w, K = g.out_channels;
    const int64_t R = g.kernel_h, S = g.kernel_w, OH = g.out_h, OW = g.out_w, G = g.groups;
    const int64_t Cg = C / G, Kg = K / G;
    const int nt = threads_for_work(double(N) * K * OH * OW * Cg * R * S);
    const int64_t planes = N * C;
    const ColRanges cr(g);
    const int64_t* lo_s = cr.lo.data();
    const int64_t* hi_s = cr.hi.data();
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t t = 0; t < planes; ++t) {
        const FlushDenormals flush_denormals;
        const int64_t n = t / C, c = t % C, gi = c / Cg, cl = c % Cg;
        T* xp = gx + t * H * W;
        for (int64_t i = 0; i < H * W; ++i) xp[i] = T(0);
        for (int64_t oh = 0; oh < OH; ++oh) {
            for (int64_t kl = 0; kl < Kg; ++kl) {
                const int64_t k = gi * Kg + kl;
                const T* __restrict yr = gy + ((n * K + k) * OH + oh) * OW;
                const T* wk = w + (k * Cg + cl) * R * S;
                for (int64_t r = 0; r < R; ++r) {
                    const int64_t ih = oh * g.stride_h - g.pad_top + r * g.dilation_h;
                    if (ih < 0 || ih >= H) continue;
                    T* __restrict xr = xp + ih * W;
                    for (int64_t s = 0; s < S; ++s) {
                        const int64_t off = s * g.dilation_w - g.pad_left;
                        const int64_t lo = lo_s[s], hi = hi_s[s];
                        const T wv = wk[r * S + s];
                        if (g.stride_w == 1) {
                            for (int64_t ow = lo; ow < hi; ++ow) xr[ow + off] += wv * yr[ow];
                        } else if (g.stride_w == 2) {
                            for (int64_t ow = lo; ow < hi; ++ow) xr[2 * ow + off] += wv * yr[ow];
                        } else {
                            for (int64_t ow = lo; ow < hi; ++ow)
                                xr[ow * g.stride_w + off] += wv * yr[ow];
                        }
                    }
                }
            }
        }
    }
}

// Direct backward weight (tiny GEMMs): one task per (input channel, block of
// output channels of its group). For each image and pixel chunk the task
// builds the R*S im2col rows of its channel once, then accumulates every
// (k, tap) pair with fixed-lane dot products. Per output the order is
// (image, chunk, pixel), fixed by the geometry; lanes are combined pairwise.
template <typename T>
void direct_backward_weight(const ConvGeometry& g, const T* gy, const T* x, T* grad_w,
                            int64_t nb_chunks, T* partial) {
    const int64_t N = g.batch, C = g.in_channels, H = g.in_h, W = g.in_w, K = g.out_channels;
    const int64_t R = g.kernel_h, S = g.kernel_w, G = g.groups;
    const int64_t Cg = C / G, Kg = K / G, RS = R * S, P = g.out_h * g.out_w;
    const int64_t wsize = g.w_size();
    const int nt = threads_for_work(double(N) * K * P * Cg * RS);
    constexpr int L = kDotLanes;
    const int64_t pc = std::max<int64_t>(L, std::min(round_up(P, L), (int64_t(4096) / RS) / L * L));
    const int64_t ksplit = split_for(nb_chunks * C, Kg, 2 * int64_t(nt));
    const int64_t kblk = ceil_div(Kg, ksplit);
    const int64_t kblocks = ceil_div(Kg, kblk);
    const int64_t tasks = nb_chunks * C * kblocks;
    const DirectDotFn<T> dot = direct_dot_kernel_for<T>(active_isa());
    Scratch<T> scratch(nt, kblk * RS * L + RS * pc);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
        const FlushDenormals flush_denormals;
        const int64_t kb = t % kblocks, c = (t / kblocks) % C, b = t / (kblocks * C);
        const int64_t gi = c / Cg, cl = c % Cg;
        const int64_t n_begin = b * N / nb_chunks, n_end = (b + 1) * N / nb_chunks;
        T* gw = nb_chunks > 1 ? partial + b * wsize : grad_w;
        const int64_t k0 = gi * Kg + kb * kblk, kcount = std::min(kblk, Kg - kb * kblk);
        T* lanes = scratch.get(thread_id());
        T* col = lanes + kblk * RS * L;
        for (int64_t i = 0; i < kcount * RS * L; ++i) lanes[i] = T(0);
        for (int64_t n = n_begin; n < n_end; ++n) {
            const T* xp = x + (n * C + c) * H * W;
            for (int64_t q0 = 0; q0 < P; q0 += pc) {
                const int64_t qn = std::min(pc, P - q0);
                for (int64_t rs = 0; rs < RS; ++rs) im2col_row(g, xp, rs / S, rs % S, q0, qn, col + rs * pc);
                for (int64_t kk = 0; kk < kcount; ++kk)
                    dot(lanes + kk * RS * L, RS, gy + (n * K + k0 + kk) * P + q0, col, pc, qn);
            }
        }
        for (int64_t kk = 0; kk < kcount; ++kk) {
            T* out = gw + ((k0 + kk) * Cg + cl) * RS;
            for (int64_t i = 0; i < RS; ++i) {
                T v[L];
                for (int j = 0; j < L; ++j) v[j] = lanes[(kk * RS + i) * L + j];
                for (int w = L / 2; w >= 1; w /= 2)
                    for (int j = 0; j < w; ++j) v[j] = v[j] + v[j + w];
                out[i] = v[0];
            }
        }
    }
}


// ---------------------------------------------------------------- 3x3 fast paths

// Depthwise 3x3, dilation 1, stride_w 1 or 2, non-negative padding: the
// vector kernels of dwconv_impl.h on zero-padded input bands.
inline bool use_dw3(const ConvGeometry& g) {
    return g.kernel_h == 3 && g.kernel_w == 3 && g.dilation_h == 1 && g.dilation_w == 1 &&
           (g.stride_w == 1 || g.stride_w == 2) && g.stride_h >= 1 && g.pad_top >= 0 &&
           g.pad_left >= 0;
}
// The banded forward for other kernel sizes, dilation 1 (5x5, 7x7, 1x7 ...:
// a 5x5 layer ran 6x slower than torch on the tap-list path), up to 16 taps a
// side and 65536 output columns (the band's scratch stays under ~16 MiB).
inline bool use_dw_banded_forward(const ConvGeometry& g) {
    return use_dw3(g) ||
           (g.dilation_h == 1 && g.dilation_w == 1 && (g.stride_w == 1 || g.stride_w == 2) &&
            g.stride_h >= 1 && g.pad_top >= 0 && g.pad_left >= 0 && g.kernel_h <= 16 && g.kernel_w <= 16 &&
            g.out_w <= (int64_t(1) << 16));
}

template <typename T> DwFwdFn<T> dw_fwd_for(Isa isa);
template <typename T> Dw3WgtFn<T> dw3_wgt_for(Isa isa);
template <> DwFwdFn<float> dw_fwd_for<float>(Isa isa) {
#ifdef CONVKIT_HAVE_AVX512
    if (isa == Isa::avx512) return dw_fwd_avx512_f32;
#endif
#ifdef CONVKIT_HAVE_AVX2
    if (isa == Isa::avx2 || isa == Isa::avx512) return dw_fwd_avx2_f32;
#endif
    (void)isa;
    return dw_fwd_generic_f32;
}
template <> DwFwdFn<double> dw_fwd_for<double>(Isa isa) {
#ifdef CONVKIT_HAVE_AVX512
    if (isa == Isa::avx512) return dw_fwd_avx512_f64;
#endif
#ifdef CONVKIT_HAVE_AVX2
    if (isa == Isa::avx2 || isa == Isa::avx512) return dw_fwd_avx2_f64;
#endif
    (void)isa;
    return dw_fwd_generic_f64;
}
template <> Dw3WgtFn<float> dw3_wgt_for<float>(Isa isa) {
#ifdef CONVKIT_HAVE_AVX512
    if (isa == Isa::avx512) return dw3_wgt_avx512_f32;
#endif
#ifdef CONVKIT_HAVE_AVX2
    if (isa == Isa::avx2 || isa == Isa::avx512) return dw3_wgt_avx2_f32;
#endif
    (void)isa;
    return dw3_wgt_generic_f32;
}
template <> Dw3WgtFn<double> dw3_wgt_for<double>(Isa isa) {
#ifdef CONVKIT_HAVE_AVX512
    if (isa == Isa::avx512) return dw3_wgt_avx512_f64;
#endif
#ifdef CONVKIT_HAVE_AVX2
    if (isa == Isa::avx2 || isa == Isa::avx512) return dw3_wgt_avx2_f64;
#endif
    (void)isa;
    return dw3_wgt_generic_f64;
}

// Zero-padded input bands: a band of `out_rows` output rows reads
// (out_rows-1)*sh + R padded input rows of ldx columns (about 64 KiB).
struct DwBands {
    int64_t ldx, out_rows, in_rows;
    explicit DwBands(const ConvGeometry& g, int64_t elem_size) {
        const int64_t R = g.kernel_h;
        ldx = round_up(round_up(g.out_w, kDwChunk) * g.stride_w + g.kernel_w, 16);
        const int64_t budget = (int64_t(64) << 10) / elem_size;
        const int64_t fit = budget / ldx;
        out_rows = fit > R ? (fit - R) / g.stride_h + 1 : 1;
        out_rows = std::max<int64_t>(1, std::min(out_rows, g.out_h));
        in_rows = (out_rows - 1) * g.stride_h + R;
    }
};

// Fills rows [row0, row0 + rows) of the padded plane (row i holds input row
// i - pad_top, column j holds input column j - pad_left; zero elsewhere).
template <typename T>
inline void dw_fill_band(const ConvGeometry& g, const T* xp, int64_t ldx, int64_t row0,
                          int64_t rows, T* band) {
    const int64_t H = g.in_h, W = g.in_w, pl = g.pad_left;
    const int64_t c0 = std::min(pl, ldx), c1 = std::min(pl + W, ldx);
    for (int64_t i = 0; i < rows; ++i) {
        T* d = band + i * ldx;
        const int64_t ih = row0 + i - g.pad_top;
        if (ih < 0 || ih >= H) {
            for (int64_t j = 0; j < ldx; ++j) d[j] = T(0);
            continue;
        }
        const T* s = xp + ih * W;
        for (int64_t j = 0; j < c0; ++j) d[j] = T(0);
        for (int64_t j = c0; j < c1; ++j) d[j] = s[j - pl];
        for (int64_t j = c1; j < ldx; ++j) d[j] = T(0);
    }
}

// Threads for `work` multiply-adds: one below ~256K (a region costs more).
inline int threads_for(int64_t work) {
    return work < (int64_t(1) << 18) ? 1 : num_threads();
}

// Narrow planes at stride 1 (rows of at most 32 outputs): the flat forward of
// dwconv_impl.h on bands of compact zero-padded rows. The banded path pads
// rows to 64-column chunks and runs 32-column blocks, 2.3-4.6x the work of
// 14- and 7-wide rows.
inline bool use_dw_flat_forward(const ConvGeometry& g) {
    return g.stride_h == 1 && g.stride_w == 1 && g.dilation_h == 1 && g.dilation_w == 1 && g.pad_top >= 0 &&
           g.pad_left >= 0 && g.out_w <= 32 && g.kernel_h <= 16 && g.kernel_w <= 16;
}

template <typename T> DwFlatFwdFn<T> dw_flat_fwd_for(Isa isa, int& block);
#define CONVKIT_DW_FLAT_FOR(T, sfx)                                          \
    template <> DwFlatFwdFn<T> dw_flat_fwd_for<T>(Isa isa, int& block) {     \
        CONVKIT_DW_FLAT_AVX512(sfx)                                          \
        CONVKIT_DW_FLAT_AVX2(sfx)                                            \
        (void)isa;                                                           \
        block = dw_flat_block_generic_##sfx();                               \
        return dw_flat_fwd_generic_##sfx;                                    \
    }
#ifdef CONVKIT_HAVE_AVX512
#define CONVKIT_DW_FLAT_AVX512(sfx) \
    if (isa == Isa::avx512) { block = dw_flat_block_avx512_##sfx(); return dw_flat_fwd_avx512_##sfx; }
#else
#define CONVKIT_DW_FLAT_AVX512(sfx)
#endif
#ifdef CONVKIT_HAVE_AVX2
#define CONVKIT_DW_FLAT_AVX2(sfx) \
    if (isa == Isa::avx2 || isa == Isa::avx512) { block = dw_flat_block_avx2_##sfx(); return dw_flat_fwd_avx2_##sfx; }
#else
#define CONVKIT_DW_FLAT_AVX2(sfx)
#endif
CONVKIT_DW_FLAT_FOR(float, f32)
CONVKIT_DW_FLAT_FOR(double, f64)
#undef CONVKIT_DW_FLAT_FOR
#undef CONVKIT_DW_FLAT_AVX512
#undef CONVKIT_DW_FLAT_AVX2

template <typename T>
void dw_flat_forward(const ConvGeometry& g, const T* x, const T* w, const T* bias, T* y) {
    const int64_t K = g.out_channels, H = g.in_h, W = g.in_w, OH = g.out_h, OW = g.out_w;
    const int64_t R = g.kernel_h, S = g.kernel_w, RS = R * S, pt = g.pad_top, pl = g.pad_left;
    const int64_t planes = g.batch * K;
    const int64_t Wp = OW + S - 1;  // padded columns the outputs read
    int block = 1;
    const DwFlatFwdFn<T> kern = dw_flat_fwd_for<T>(active_isa(), block);
    // Bands of up to ~4096 computed outputs; the padded rows hold the band's
    // rows*Wp outputs rounded up to a block, plus what the last taps read.
    const int64_t band = std::max<int64_t>(1, std::min(OH, int64_t(4096) / Wp));
    const int64_t vlen = round_up(band * Wp, int64_t(block));
    const int64_t xlen = vlen + (R - 1) * Wp + S;
    const int nt = threads_for(planes * OH * OW * RS);
    // Planes of a few dozen outputs: chunks of them per scheduling step.
    const int chunk = int(std::max<int64_t>(1, std::min<int64_t>(64, 4096 / std::max<int64_t>(1, OH * OW))));
    Scratch<T> scratch(nt, xlen + vlen);
#pragma omp parallel for num_threads(nt) schedule(dynamic, chunk)
    for (int64_t t = 0; t < planes; ++t) {
        const FlushDenormals flush_denormals;
        const int64_t k = t % K;
        T* xb = scratch.get(thread_id());
        T* vbuf = xb + xlen;
        const T* xp = x + t * H * W;  // Cg == Kg == 1: input plane t
        const T b0 = bias ? bias[k] : T(0);
        for (int64_t oh0 = 0; oh0 < OH; oh0 += band) {
            const int64_t rows = std::min(band, OH - oh0), in_rows = rows + R - 1;
            // Padded row oh0 + i holds input row oh0 + i - pt, column c input column c - pl.
            for (int64_t i = 0; i < in_rows; ++i) {
                T* d = xb + i * Wp;
                const int64_t ih = oh0 + i - pt;
                const int64_t copy = (ih >= 0 && ih < H) ? std::max<int64_t>(0, std::min(W, Wp - pl)) : 0;
                const int64_t left = copy > 0 ? pl : Wp;
                for (int64_t j = 0; j < left; ++j) d[j] = T(0);
                if (copy > 0) {  // (no pointer into rows outside the input)
                    const T* src = xp + ih * W;
                    for (int64_t j = 0; j < copy; ++j) d[left + j] = src[j];
                }
                for (int64_t j = left + copy; j < Wp; ++j) d[j] = T(0);
            }
            for (int64_t j = in_rows * Wp; j < xlen; ++j) xb[j] = T(0);
            kern(xb, Wp, R, S, w + k * RS, b0, vbuf, y + (t * OH + oh0) * OW, rows, OW);
        }
    }
}


template <typename T>
void dw_banded_forward(const ConvGeometry& g, const T* x, const T* w, const T* bias, T* y) {
    const int64_t K = g.out_channels, H = g.in_h, W = g.in_w, OH = g.out_h, OW = g.out_w;
    const int64_t R = g.kernel_h, S = g.kernel_w, RS = R * S;
    const int64_t planes = g.batch * K;
    const DwBands bd(g, int64_t(sizeof(T)));
    const int nt = threads_for(planes * OH * OW * RS);
    const DwFwdFn<T> kern = dw_fwd_for<T>(active_isa());
    Scratch<T> scratch(nt, bd.in_rows * bd.ldx);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 4)
    for (int64_t t = 0; t < planes; ++t) {
        const FlushDenormals flush_denormals;
        const int64_t k = t % K;
        T* band = scratch.get(thread_id());
        const T* xp = x + t * H * W;  // Cg == Kg == 1: input plane t
        const T b0 = bias ? bias[k] : T(0);
        for (int64_t oh0 = 0; oh0 < OH; oh0 += bd.out_rows) {
            const int64_t rows = std::min(bd.out_rows, OH - oh0);
            dw_fill_band(g, xp, bd.ldx, oh0 * g.stride_h, (rows - 1) * g.stride_h + R, band);
            kern(band, bd.ldx, R, S, w + k * RS, b0, y + (t * OH + oh0) * OW, rows, OW, g.stride_h,
                 g.stride_w);
        }
    }
}

// Small planes (at most 256 output pixels, at least 8 planes per image, any
// stride, dilation and kernel up to 16 a side, non-negative padding): blocks
// of kDwCl planes of one image in vector lanes (dw_cl_fwd_impl), so that a
// 7x7 plane is not padded and computed in row chunks of its own: on an Intel
// Xeon the flat path spent ~300 instructions per 7x7 plane filling and
// emptying its band.
// Rows and columns of the padded region a small-plane layer's outputs read
// (rows and columns past it are never read).
inline int64_t dw_cl_rows(const ConvGeometry& g) { return (g.out_h - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h + 1; }
inline int64_t dw_cl_cols(const ConvGeometry& g) { return (g.out_w - 1) * g.stride_w + (g.kernel_w - 1) * g.dilation_w + 1; }

inline bool use_dw_cl_forward(const ConvGeometry& g) {
    if (!(g.out_h * g.out_w <= 1024 && g.in_h * g.in_w <= 1024 && g.out_channels >= 8 && g.pad_top >= 0 &&
          g.pad_left >= 0 && g.kernel_h <= 16 && g.kernel_w <= 16 && g.dilation_h <= 16 && g.dilation_w <= 16 &&
          g.stride_h <= 16 && g.stride_w <= 16))
        return false;
    // The padded region the outputs read stays small (its lanes are scratch).
    return dw_cl_rows(g) * dw_cl_cols(g) <= 4096;
}

template <typename T> DwClFwdFn<T> dw_cl_fwd_for(Isa isa);
#define CONVKIT_DW_CL_FOR(T, sfx)                             \
    template <> DwClFwdFn<T> dw_cl_fwd_for<T>(Isa isa) {      \
        CONVKIT_DW_CL_AVX512(sfx)                             \
        CONVKIT_DW_CL_AVX2(sfx)                               \
        (void)isa;                                            \
        return dw_cl_fwd_generic_##sfx;                       \
    }
#ifdef CONVKIT_HAVE_AVX512
#define CONVKIT_DW_CL_AVX512(sfx) if (isa == Isa::avx512) return dw_cl_fwd_avx512_##sfx;
#else
#define CONVKIT_DW_CL_AVX512(sfx)
#endif
#ifdef CONVKIT_HAVE_AVX2
#define CONVKIT_DW_CL_AVX2(sfx) if (isa == Isa::avx2 || isa == Isa::avx512) return dw_cl_fwd_avx2_##sfx;
#else
#define CONVKIT_DW_CL_AVX2(sfx)
#endif
CONVKIT_DW_CL_FOR(float, f32)
CONVKIT_DW_CL_FOR(double, f64)
#undef CONVKIT_DW_CL_FOR
template <typename T> DwClWgtFn<T> dw_cl_wgt_for(Isa isa);
#define CONVKIT_DW_CL_FOR(T, sfx)                             \
    template <> DwClWgtFn<T> dw_cl_wgt_for<T>(Isa isa) {      \
        CONVKIT_DW_CLW_AVX512(sfx)                            \
        CONVKIT_DW_CLW_AVX2(sfx)                              \
        (void)isa;                                            \
        return dw_cl_wgt_generic_##sfx;                       \
    }
#ifdef CONVKIT_HAVE_AVX512
#define CONVKIT_DW_CLW_AVX512(sfx) if (isa == Isa::avx512) return dw_cl_wgt_avx512_##sfx;
#else
#define CONVKIT_DW_CLW_AVX512(sfx)
#endif
#ifdef CONVKIT_HAVE_AVX2
#define CONVKIT_DW_CLW_AVX2(sfx) if (isa == Isa::avx2 || isa == Isa::avx512) return dw_cl_wgt_avx2_##sfx;
#else
#define CONVKIT_DW_CLW_AVX2(sfx)
#endif
CONVKIT_DW_CL_FOR(float, f32)
CONVKIT_DW_CL_FOR(double, f64)
#undef CONVKIT_DW_CL_FOR
#undef CONVKIT_DW_CLW_AVX512
#undef CONVKIT_DW_CLW_AVX2
#undef CONVKIT_DW_CL_AVX512
#undef CONVKIT_DW_CL_AVX2

// The lanes layout of a small-plane layer: the padded region the outputs read
// (Hp x Wp), the input rows and
// columns inside it, each tap's offset and each output pixel's position in it.
struct DwClLayout {
    int64_t Hp, Wp, ih1, iw1;
    std::vector<int64_t> off, base;
    explicit DwClLayout(const ConvGeometry& g)
        : Hp(dw_cl_rows(g)),
          Wp(dw_cl_cols(g)),
          ih1(std::max<int64_t>(0, std::min(g.in_h, Hp - g.pad_top))),
          iw1(std::max<int64_t>(0, std::min(g.in_w, Wp - g.pad_left))),
          off(static_cast<size_t>(g.kernel_h * g.kernel_w)),
          base(static_cast<size_t>(g.out_h * g.out_w)) {
        for (size_t t = 0; t < off.size(); ++t)
            off[t] = int64_t(t) / g.kernel_w * g.dilation_h * Wp + int64_t(t) % g.kernel_w * g.dilation_w;
        for (size_t p = 0; p < base.size(); ++p)
            base[p] = int64_t(p) / g.out_w * g.stride_h * Wp + int64_t(p) % g.out_w * g.stride_w;
    }
};

template <typename T>
void dw_cl_forward(const ConvGeometry& g, const T* x, const T* w, const T* bias, T* y) {
    constexpr int L = kDwCl;
    const int64_t N = g.batch, K = g.out_channels, H = g.in_h, W = g.in_w, OH = g.out_h, OW = g.out_w;
    const int64_t R = g.kernel_h, S = g.kernel_w, RS = R * S, P = OH * OW;
    const int64_t pt = g.pad_top, pl = g.pad_left;
    const DwClLayout lay(g);
    const int64_t Hp = lay.Hp, Wp = lay.Wp, ih1 = lay.ih1, iw1 = lay.iw1;
    const int64_t kblocks = ceil_div(K, int64_t(L)), tasks = N * kblocks;
    const int64_t* offs = lay.off.data();
    const int64_t* bases = lay.base.data();
    const DwClFwdFn<T> kern = dw_cl_fwd_for<T>(active_isa());
    const int nt = threads_for(N * K * P * RS);
    // Per thread: xin (its zero border written once), tmp, out, weights, bias.
    const int64_t xin_len = Hp * Wp * L, per_thread = xin_len + H * W * L + P * L + RS * L + L;
    Scratch<T> scratch(nt, per_thread);
    for (int i = 0; i < nt; ++i) std::fill(scratch.get(i), scratch.get(i) + xin_len, T(0));
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
        const FlushDenormals flush_denormals;
        const int64_t n = task / kblocks, k0 = (task % kblocks) * L, kc = std::min(int64_t(L), K - k0);
        T* xin = scratch.get(thread_id());
        T* tmp = xin + xin_len;
        T* out = tmp + H * W * L;
        T* wt = out + P * L;
        T* bl = wt + RS * L;
        for (int64_t t = 0; t < RS; ++t)
            for (int l = 0; l < L; ++l) wt[t * L + l] = l < kc ? w[(k0 + l) * RS + t] : T(0);
        for (int l = 0; l < L; ++l) bl[l] = (bias && l < kc) ? bias[k0 + l] : T(0);
        // Lanes past kc keep what an earlier block left (finite or not): their
        // sums are never stored, and lanes never mix.
        kern(x + (n * K + k0) * H * W, H * W, W, kc, ih1, iw1, pt, pl, Wp, offs, RS, wt, bl, bases, P, xin, tmp,
             out, y + (n * K + k0) * P);
    }
}

// Backward weight of the small planes of dw_cl_forward: per task (batch
// chunk, block of kDwCl planes) each image's padded input and gradients go to
// lanes and every tap's products are summed over the pixels in four partials
// (image by image, pixel order fixed), added pairwise at the end.
template <typename T>
void dw_cl_backward_weight(const ConvGeometry& g, const T* gy, const T* x, T* grad_w, int64_t nb_chunks,
                           T* partial) {
    constexpr int L = kDwCl;
    const int64_t N = g.batch, K = g.out_channels, H = g.in_h, W = g.in_w, OH = g.out_h, OW = g.out_w;
    const int64_t R = g.kernel_h, S = g.kernel_w, RS = R * S, P = OH * OW, wsize = g.w_size();
    const int64_t pt = g.pad_top, pl = g.pad_left;
    const DwClLayout lay(g);
    const int64_t Hp = lay.Hp, Wp = lay.Wp, ih1 = lay.ih1, iw1 = lay.iw1;
    const int64_t kblocks = ceil_div(K, int64_t(L)), tasks = nb_chunks * kblocks;
    const DwClWgtFn<T> kern = dw_cl_wgt_for<T>(active_isa());
    const int nt = threads_for(N * K * P * RS);
    const int64_t xin_len = Hp * Wp * L, per_thread = xin_len + H * W * L + P * L + RS * 4 * L;
    Scratch<T> scratch(nt, per_thread);
    for (int i = 0; i < nt; ++i) std::fill(scratch.get(i), scratch.get(i) + xin_len, T(0));
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
        const FlushDenormals flush_denormals;
        const int64_t b = task / kblocks, k0 = (task % kblocks) * L, kc = std::min(int64_t(L), K - k0);
        const int64_t n_begin = b * N / nb_chunks, n_end = (b + 1) * N / nb_chunks;
        T* xin = scratch.get(thread_id());
        T* tmp = xin + xin_len;
        T* gyl = tmp + H * W * L;
        T* acc = gyl + P * L;
        std::fill(acc, acc + RS * 4 * L, T(0));
        for (int64_t n = n_begin; n < n_end; ++n)
            kern(x + (n * K + k0) * H * W, H * W, W, kc, ih1, iw1, pt, pl, Wp, lay.off.data(), RS, lay.base.data(), P,
                 gy + (n * K + k0) * P, xin, tmp, gyl, acc);
        T* out = nb_chunks > 1 ? partial + b * wsize : grad_w;
        for (int64_t l = 0; l < kc; ++l)
            for (int64_t t = 0; t < RS; ++t) {
                const T* a = acc + t * 4 * L + l;
                out[(k0 + l) * RS + t] = (a[0] + a[L]) + (a[2 * L] + a[3 * L]);
            }
    }
}

// Any forward of a depthwise-like layer: channels-in-lanes, flat, banded or tap-list path.
template <typename T>
void forward_any(const ConvGeometry& g, const T* x, const T* w, const T* bias, T* y) {
    if (use_dw_cl_forward(g)) return dw_cl_forward(g, x, w, bias, y);
    if (use_dw_flat_forward(g)) return dw_flat_forward(g, x, w, bias, y);
    if (use_dw_banded_forward(g)) return dw_banded_forward(g, x, w, bias, y);
    direct_forward(g, x, w, bias, y);
}

template <typename T>
void dw3_backward_weight(const ConvGeometry& g, const T* gy, const T* x, T* grad_w,
                         int64_t nb_chunks, T* partial) {
    const int64_t N = g.batch, K = g.out_channels, H = g.in_h, W = g.in_w;
    const int64_t OH = g.out_h, OW = g.out_w, P = OH * OW, wsize = g.w_size();
    constexpr int L = kDwLanes;
    const DwBands bd(g, int64_t(sizeof(T)));
    const int64_t tasks = nb_chunks * K;
    const int nt = threads_for(N * K * P * 9);
    const Dw3WgtFn<T> kern = dw3_wgt_for<T>(active_isa());
    Scratch<T> scratch(nt, bd.in_rows * bd.ldx + 9 * L);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
        const FlushDenormals flush_denormals;
        const int64_t k = t % K, b = t / K;
        const int64_t n_begin = b * N / nb_chunks, n_end = (b + 1) * N / nb_chunks;
        T* band = scratch.get(thread_id());
        T* lanes = band + bd.in_rows * bd.ldx;
        for (int i = 0; i < 9 * L; ++i) lanes[i] = T(0);
        for (int64_t n = n_begin; n < n_end; ++n) {
            const T* xp = x + (n * K + k) * H * W;
            for (int64_t oh0 = 0; oh0 < OH; oh0 += bd.out_rows) {
                const int64_t rows = std::min(bd.out_rows, OH - oh0);
                dw_fill_band(g, xp, bd.ldx, oh0 * g.stride_h, (rows - 1) * g.stride_h + 3, band);
                kern(lanes, gy + (n * K + k) * P + oh0 * OW, band, bd.ldx, rows, OW, g.stride_h,
                     g.stride_w);
            }
        }
        T* out = (nb_chunks > 1 ? partial + b * wsize : grad_w) + k * 9;
        for (int tap = 0; tap < 9; ++tap) {
            T v[L];
            for (int j = 0; j < L; ++j) v[j] = lanes[tap * L + j];
            for (int h = L / 2; h >= 1; h /= 2)
                for (int j = 0; j < h; ++j) v[j] = v[j] + v[j + h];
            out[tap] = v[0];
        }
    }
}

template <typename T>
using Dw3s2BwdFn = void (*)(T*, int64_t, int64_t, const T* const*, const T*, T*);
template <typename T> Dw3s2BwdFn<T> dw3s2_bwd_for(Isa isa);
#define CONVKIT_DW3S2_FOR(T, sfx)                                                        \
    template <> Dw3s2BwdFn<T> dw3s2_bwd_for<T>(Isa isa) {                              \
        CONVKIT_DW3S2_AVX512(sfx)                                                      \
        CONVKIT_DW3S2_AVX2(sfx)                                                        \
        (void)isa;                                                                     \
        return dw3s2_bwd_row_generic_##sfx;                                            \
    }
#ifdef CONVKIT_HAVE_AVX512
#define CONVKIT_DW3S2_AVX512(sfx) if (isa == Isa::avx512) return dw3s2_bwd_row_avx512_##sfx;
#else
#define CONVKIT_DW3S2_AVX512(sfx)
#endif
#ifdef CONVKIT_HAVE_AVX2
#define CONVKIT_DW3S2_AVX2(sfx) \
    if (isa == Isa::avx2 || isa == Isa::avx512) return dw3s2_bwd_row_avx2_##sfx;
#else
#define CONVKIT_DW3S2_AVX2(sfx)
#endif
CONVKIT_DW3S2_FOR(float, f32)
CONVKIT_DW3S2_FOR(double, f64)
#undef CONVKIT_DW3S2_FOR
#undef CONVKIT_DW3S2_AVX512
#undef CONVKIT_DW3S2_AVX2

// Stride-2 backward data (depthwise 3x3, stride_w 2): per grad_x plane, each
// row from the (up to 3) grad_y rows that reach it, via zero-padded copies.
template <typename T>
void dw3s2_backward_data(const ConvGeometry& g, const T* gy, const T* w, T* gx) {
    const int64_t C = g.in_channels, H = g.in_h, W = g.in_w, OH = g.out_h, OW = g.out_w;
    const int64_t pl = g.pad_left, sh = g.stride_h;
    const int64_t planes = g.batch * C;
    const int64_t M = (W + pl) / 2 + 1;
    const int64_t ldg = std::max(M + 1, OW + 2);  // padded grad_y row
    const int nt = threads_for(planes * H * W * 3);
    const Dw3s2BwdFn<T> kern = dw3s2_bwd_for<T>(active_isa());
    Scratch<T> scratch(nt, OH * ldg + 2 * (M + 1));
#pragma omp parallel for num_threads(nt) schedule(dynamic, 4)
    for (int64_t t = 0; t < planes; ++t) {
        const FlushDenormals flush_denormals;
        const int64_t c = t % C;
        T* buf = scratch.get(thread_id());
        T* tmp = buf + OH * ldg;
        const T* yp = gy + t * OH * OW;
        for (int64_t oh = 0; oh < OH; ++oh) {
            T* d = buf + oh * ldg;
            d[0] = T(0);
            const int64_t n = std::min(OW, ldg - 1);
            for (int64_t j = 0; j < n; ++j) d[j + 1] = yp[oh * OW + j];
            for (int64_t j = n + 1; j < ldg; ++j) d[j] = T(0);
        }
        T* xp = gx + t * H * W;
        for (int64_t ih = 0; ih < H; ++ih) {
            const T* rows[3];
            const int64_t i = ih + g.pad_top;
            for (int r = 0; r < 3; ++r) {
                rows[r] = nullptr;
                if (i - r < 0 || (i - r) % sh != 0) continue;
                const int64_t oh = (i - r) / sh;
                if (oh < OH) rows[r] = buf + oh * ldg;
            }
            kern(xp + ih * W, W, pl, rows, w + c * 9, tmp);
        }
    }
}

}  // namespace

template <typename T>
void forward(const ConvGeometry& g, const T* x, const T* w, const T* bias, T* y) {
    forward_any(g, x, w, bias, y);
}

template <typename T>
void backward_data(const ConvGeometry& g, const T* grad_y, const T* w, T* grad_x) {
    const int64_t C = g.in_channels, K = g.out_channels;
    const int64_t R = g.kernel_h, S = g.kernel_w, RS = R * S;
    if (g.stride_h == 1 && g.stride_w == 1) {
        // Stride 1: grad_x is the correlation of grad_y with the flipped kernel.
        ConvGeometry t = g;
        t.in_channels = K; t.out_channels = C;
        t.in_h = g.out_h; t.in_w = g.out_w; t.out_h = g.in_h; t.out_w = g.in_w;
        t.pad_top = g.dilation_h * (R - 1) - g.pad_top;
        t.pad_left = g.dilation_w * (S - 1) - g.pad_left;
        std::vector<T> wf(static_cast<size_t>(g.w_size()));
        for (int64_t k = 0; k < K; ++k)
            for (int64_t i = 0; i < RS; ++i) wf[k * RS + i] = w[k * RS + (RS - 1 - i)];
        return forward_any(t, grad_y, wf.data(), static_cast<const T*>(nullptr), grad_x);
    }
    if (use_dw3(g) && g.stride_w == 2) return dw3s2_backward_data(g, grad_y, w, grad_x);
    direct_backward_data(g, grad_y, w, grad_x);
}

template <typename T>
void backward_weight(const ConvGeometry& g, const T* grad_y, const T* x, T* grad_w,
                     int64_t nb_chunks, T* partial) {
    if (use_direct(g) && use_dw_cl_forward(g))
        return dw_cl_backward_weight(g, grad_y, x, grad_w, nb_chunks, partial);
    if (use_direct(g) && use_dw3(g)) return dw3_backward_weight(g, grad_y, x, grad_w, nb_chunks, partial);
    direct_backward_weight(g, grad_y, x, grad_w, nb_chunks, partial);
}

#define CONVKIT_INSTANTIATE(T)                                                             \
    template void forward<T>(const ConvGeometry&, const T*, const T*, const T*, T*);     \
    template void backward_data<T>(const ConvGeometry&, const T*, const T*, T*);         \
    template void backward_weight<T>(const ConvGeometry&, const T*, const T*, T*, int64_t, T*);
CONVKIT_INSTANTIATE(float)
CONVKIT_INSTANTIATE(double)
#undef CONVKIT_INSTANTIATE

}  // namespace dw
}  // namespace convkit
