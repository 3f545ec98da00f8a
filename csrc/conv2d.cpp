// Convolution kernels: implicit-im2col GEMM (packed panels + ISA micro-kernels,
// see gemm.h) for general layers. Depthwise-like layers (one input and one
// output channel per group) and tiny backward-weight GEMMs are dispatched to
// the direct paths in conv2d_depthwise.cpp.
//
// Paths:
//   forward        per task (image, group, pixel tile, output-channel block):
//                  y = W * im2col(x) + bias, im2col rows packed straight into
//                  B panels, bias as the starting value of each sum; 1x1/s1/p0
//                  reads x in place.
//   backward data  per task (image, group, input-channel chunk): for each
//                  pixel tile, col = W^T * grad_y (GEMM) then col2im into the
//                  task's own channels; 1x1/s1/p0 is one GEMM into grad_x;
//                  depthwise stride 1 is a correlation with the flipped kernel.
//   backward wgt   per task (batch chunk, group, column block, row block):
//                  grad_w += grad_y[n] * im2col[n]^T over the chunk's images.
//   backward bias  per channel, 8 double lanes.
//
// Determinism: every output element is computed by exactly one task, and its
// arithmetic (kernel, order of its sum) depends only on the geometry and the
// active ISA. Splits that depend on the thread count (output-channel blocks,
// forward pixel tiles, column blocks) never change an element's arithmetic (see
// gemm.h); the kc blocks, the backward-data pixel tile and the batch chunks of
// backward weight (summed in order afterwards) depend only on geometry and ISA.
//
// Memory: scratch is per thread (packed A/B blocks, an im2col row or panel, a
// col block of at most 1 MiB for backward data, partial weight gradients of at
// most 4 MiB), bounded independently of the batch size, allocated before each
// parallel region and cached per calling thread. Nothing inside a region
// allocates or throws.
#include "conv2d.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "conv2d_depthwise.h"
#include "conv_common.h"
#include "gemm.h"
#include "parallel.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace convkit {
namespace {

// Adjoint of im2col_row: x_plane[...] += src[q - q0] for every in-range read.
template <typename T>
void col2im_row_add(const ConvGeometry& g, T* xp, int64_t r, int64_t s, int64_t q0, int64_t n,
                    const T* src) {
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
        if (ih >= 0 && ih < H) {
            T* xr = xp + ih * W;
            const int64_t a = std::min(std::max(lo, ow), end);
            const int64_t b = std::min(std::max(hi, a), end);
            const T* sp = src + (a - ow);
            if (sw == 1) {
                for (int64_t o = a; o < b; ++o) xr[o + off_w] += sp[o - a];
            } else {
                for (int64_t o = a; o < b; ++o) xr[o * sw + off_w] += sp[o - a];
            }
        }
        src += end - ow;
        n -= end - ow;
        ++oh;
        ow = 0;
    }
}

// 1x1 kernel whose pixels map one-to-one onto the input plane.
inline bool is_pointwise_identity(const ConvGeometry& g) {
    return g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 &&
           g.pad_top == 0 && g.pad_left == 0 && g.out_h == g.in_h && g.out_w == g.in_w;
}

// Pixel tile (multiple of nr, about nc pixels) for GEMMs whose results do not
// depend on the tiling: when there are few tiles, their number is made a
// multiple of the thread count so the last round of tasks is not half empty.
inline int64_t balanced_tile(int64_t P, int64_t nc, int64_t nr, int64_t outer, int nt) {
    int64_t tiles = ceil_div(P, nc);
    const int64_t max_tiles = ceil_div(P, nr);
    if (outer * tiles < 8 * int64_t(nt)) {
        int64_t t = tiles;
        while (t < max_tiles && (outer * t) % nt != 0) ++t;
        if ((outer * t) % nt == 0) tiles = t;
    }
    return std::min(P, round_up(ceil_div(P, tiles), nr));
}

// Pick a split count (power of two, <= max_split) so that base*split >= want.
inline int64_t split_for(int64_t base, int64_t max_split, int64_t want) {
    int64_t s = 1;
    while (base * s < want && s * 2 <= max_split) s *= 2;
    return s;
}

}  // namespace

// ---------------------------------------------------------------- forward

template <typename T>
void conv2d_forward(const ConvGeometry& g, const T* x, const T* w, const T* bias, T* y) {
    if (g.y_size() <= 0) return;
    if (dw::use_direct(g)) return dw::forward(g, x, w, bias, y);
    const int64_t N = g.batch, C = g.in_channels, H = g.in_h, W = g.in_w, K = g.out_channels;
    const int64_t R = g.kernel_h, S = g.kernel_w, G = g.groups;
    const int64_t Cg = C / G, Kg = K / G, P = g.out_h * g.out_w, RS = R * S, CRS = Cg * RS;
    const GemmKernel<T> kr = gemm_kernel<T>();
    const int nt = threads_for_work(double(N) * K * P * CRS);
    const bool pointwise = is_pointwise_identity(g);

    // Small planes: several images side by side in the GEMM's N dimension
    // (fewer zero-padded panel columns, A packed once per group), computed
    // into a per-thread C buffer and scattered to y. For stride 1 each task
    // first copies its images' channel planes into zero-padded planes (Hp x Wp)
    // and computes the output on the padded-width grid (OH x Wp, the Wp - OW
    // extra columns are discarded): the B row of tap (c, r, s) is then one
    // contiguous slice of the padded plane starting at r*dh*Wp + s*dw.
    // The grouping depends on the geometry only; an element's arithmetic never
    // depends on it (gemm.h).
    {
        const bool padded = g.stride_h == 1 && g.stride_w == 1 && !pointwise;
        const int64_t OH = g.out_h, OW = g.out_w;
        const int64_t Wp = padded ? OW + (S - 1) * g.dilation_w : OW;
        const int64_t Hp = padded ? OH + (R - 1) * g.dilation_h : OH;
        const int64_t Pg = OH * Wp;                       // grid columns per image
        const int64_t plane = padded ? Hp * Wp + (S - 1) * g.dilation_w : 0;
        const int64_t imgs = Pg > 0 ? std::min<int64_t>(N, kr.nc / Pg) : 0;
        const int64_t pad_elems = padded ? imgs * Cg * plane : 0;
        if (!pointwise && imgs >= (padded ? 1 : 2) && pad_elems <= (int64_t(1) << 18)) {
            const int64_t ngroups = ceil_div(N, imgs);
            const int64_t cols_max = round_up(imgs * Pg, kr.nr);
            const int64_t mpanels = ceil_div(Kg, kr.mr);
            const int64_t cbuf_budget = (int64_t(1) << 18);  // elements of C per thread
            const int64_t mcap = std::max<int64_t>(1, cbuf_budget / (cols_max * kr.mr));
            const int64_t msplit0 = split_for(ngroups * G, mpanels, int64_t(nt));
            const int64_t mrows = std::min(ceil_div(mpanels, msplit0), mcap) * kr.mr;
            const int64_t mchunks = ceil_div(Kg, mrows);
            const int64_t tasks = ngroups * G * mchunks;
            const int64_t rowlen = round_up(std::min(kr.nc, cols_max), kr.nr);
            Scratch<T> scratch(nt, gemm_scratch_size(kr) + rowlen + mrows * cols_max + pad_elems);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
            for (int64_t t = 0; t < tasks; ++t) {
                int64_t rem = t;
                const int64_t mc = rem % mchunks; rem /= mchunks;
                const int64_t gi = rem % G;
                const int64_t grp = rem / G;
                const int64_t n0 = grp * imgs, ni = std::min(imgs, N - n0);
                const int64_t m0 = mc * mrows, mcount = std::min(mrows, Kg - m0);
                const int64_t cols = ni * Pg;
                T* buf = scratch.get(thread_id());
                T* rowbuf = buf + gemm_scratch_size(kr);
                T* cbuf = rowbuf + rowlen;
                T* pbuf = cbuf + mrows * cols_max;
                if (padded) {
                    std::memset(pbuf, 0, sizeof(T) * static_cast<size_t>(ni * Cg * plane));
                    for (int64_t img = 0; img < ni; ++img)
                        for (int64_t c = 0; c < Cg; ++c) {
                            const T* xp = x + ((n0 + img) * C + gi * Cg + c) * H * W;
                            T* pp = pbuf + (img * Cg + c) * plane;
                            for (int64_t ih = 0; ih < H; ++ih) {
                                const int64_t ph = ih + g.pad_top;
                                if (ph < 0 || ph >= Hp) continue;
                                const int64_t lo = std::max<int64_t>(0, -g.pad_left);
                                const int64_t hi = std::min<int64_t>(W, Wp - g.pad_left);
                                if (hi > lo)
                                    std::memcpy(pp + ph * Wp + lo + g.pad_left, xp + ih * W + lo,
                                                sizeof(T) * static_cast<size_t>(hi - lo));
                            }
                        }
                }
                const T* wg = w + (gi * Kg + m0) * CRS;
                const int64_t mr = kr.mr, nr = kr.nr;
                auto pack_a = [&](int64_t i0, int64_t mb, int64_t p0, int64_t kb, T* dst) {
                    pack_a_strided(wg, CRS, int64_t(1), mr, i0, mb, p0, kb, dst, kr.transpose);
                };
                auto pack_b = [&](int64_t p0, int64_t kb, int64_t j0, int64_t nb, T* dst) {
                    for (int64_t kk = 0; kk < kb; ++kk) {
                        const int64_t k = p0 + kk;
                        const int64_t c = k / RS, rs = k % RS, r = rs / S, sx = rs % S;
                        const int64_t off = r * g.dilation_h * Wp + sx * g.dilation_w;
                        // Column j (j0 <= j < j0+nb) is grid pixel j % Pg of image n0 + j / Pg.
                        const int64_t img0 = j0 / Pg, img1 = (j0 + nb - 1) / Pg;
                        if (padded && img0 == img1) {
                            kr.split_row(pbuf + (img0 * Cg + c) * plane + off + (j0 - img0 * Pg), nb,
                                         kb * nr, dst + kk * nr);
                            continue;
                        }
                        int64_t j = j0;
                        T* d = rowbuf;
                        while (j < j0 + nb) {
                            const int64_t img = j / Pg, q = j % Pg;
                            const int64_t cnt = std::min(Pg - q, j0 + nb - j);
                            if (padded) {
                                std::memcpy(d, pbuf + (img * Cg + c) * plane + off + q,
                                            sizeof(T) * static_cast<size_t>(cnt));
                            } else {
                                const T* xp = x + ((n0 + img) * C + gi * Cg + c) * H * W;
                                im2col_row(g, xp, r, sx, q, cnt, d);
                            }
                            d += cnt;
                            j += cnt;
                        }
                        kr.split_row(rowbuf, nb, kb * nr, dst + kk * nr);
                    }
                };
                gemm_run(kr, mcount, cols, CRS, pack_a, pack_b, cbuf, cols_max, false,
                         bias ? bias + gi * Kg + m0 : nullptr, buf);
                for (int64_t img = 0; img < ni; ++img) {
                    T* yc = y + ((n0 + img) * K + gi * Kg + m0) * P;
                    for (int64_t i = 0; i < mcount; ++i) {
                        const T* cs = cbuf + i * cols_max + img * Pg;
                        T* yr = yc + i * P;
                        if (Wp == OW) {
                            std::memcpy(yr, cs, sizeof(T) * static_cast<size_t>(P));
                        } else {
                            for (int64_t oh = 0; oh < OH; ++oh)
                                std::memcpy(yr + oh * OW, cs + oh * Wp, sizeof(T) * static_cast<size_t>(OW));
                        }
                    }
                }
            }
            return;
        }
    }

    // Pixel tiles of about kr.nc pixels, balanced, multiple of nr.
    const int64_t npt = balanced_tile(P, kr.nc, kr.nr, N * G, nt);
    const int64_t tiles = ceil_div(P, npt);
    const int64_t mpanels = ceil_div(Kg, kr.mr);
    const int64_t msplit = split_for(N * G * tiles, mpanels, int64_t(nt));
    const int64_t mrows = ceil_div(mpanels, msplit) * kr.mr;
    const int64_t mchunks = ceil_div(Kg, mrows);
    const int64_t tasks = N * G * tiles * mchunks;

    Scratch<T> scratch(nt, gemm_scratch_size(kr) + round_up(npt, kr.nr));

#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
        int64_t rem = t;
        const int64_t mc = rem % mchunks; rem /= mchunks;
        const int64_t tile = rem % tiles; rem /= tiles;
        const int64_t gi = rem % G;
        const int64_t n = rem / G;
        const int64_t m0 = mc * mrows, mcount = std::min(mrows, Kg - m0);
        const int64_t q0 = tile * npt, qcount = std::min(npt, P - q0);
        T* buf = scratch.get(thread_id());
        T* rowbuf = buf + gemm_scratch_size(kr);
        const T* wg = w + (gi * Kg + m0) * CRS;
        const T* xg = x + (n * C + gi * Cg) * H * W;
        const int64_t mr = kr.mr, nr = kr.nr;
        auto pack_a = [&](int64_t i0, int64_t mb, int64_t p0, int64_t kb, T* dst) {
            pack_a_strided(wg, CRS, int64_t(1), mr, i0, mb, p0, kb, dst, kr.transpose);
        };
        auto pack_b = [&](int64_t p0, int64_t kb, int64_t j0, int64_t nb, T* dst) {
            for (int64_t kk = 0; kk < kb; ++kk) {
                const int64_t k = p0 + kk;
                const int64_t c = k / RS, rs = k % RS;
                const T* xp = xg + c * H * W;
                const T* src = xp + q0 + j0;
                if (!pointwise) {
                    im2col_row(g, xp, rs / S, rs % S, q0 + j0, nb, rowbuf);
                    src = rowbuf;
                }
                kr.split_row(src, nb, kb * nr, dst + kk * nr);
            }
        };
        T* yc = y + (n * K + gi * Kg + m0) * P + q0;
        gemm_run(kr, mcount, qcount, CRS, pack_a, pack_b, yc, P, false,
                 bias ? bias + gi * Kg + m0 : nullptr, buf);
    }
}

// ---------------------------------------------------------------- backward data

template <typename T>
void conv2d_backward_data(const ConvGeometry& g, const T* grad_y, const T* w, T* grad_x) {
    if (g.x_size() <= 0) return;
    const int64_t N = g.batch, C = g.in_channels, H = g.in_h, W = g.in_w, K = g.out_channels;
    const int64_t R = g.kernel_h, S = g.kernel_w, G = g.groups;
    const int64_t Cg = C / G, Kg = K / G, P = g.out_h * g.out_w, RS = R * S, CRS = Cg * RS;
    if (Kg == 0 || P == 0) {
        std::memset(grad_x, 0, sizeof(T) * static_cast<size_t>(g.x_size()));
        return;
    }
    if (dw::use_direct(g)) return dw::backward_data(g, grad_y, w, grad_x);
    const GemmKernel<T> kr = gemm_kernel<T>();
    const int nt = threads_for_work(double(N) * K * P * CRS);
    const int64_t mr = kr.mr, nr = kr.nr;

    if (is_pointwise_identity(g)) {
        // grad_x[n, g] (Cg x P) = W_g^T (Cg x Kg) * grad_y[n, g] (Kg x P).
        const int64_t npt = balanced_tile(P, kr.nc, nr, N * G, nt);
        const int64_t tiles = ceil_div(P, npt);
        const int64_t mpanels = ceil_div(Cg, mr);
        const int64_t msplit = split_for(N * G * tiles, mpanels, int64_t(nt));
        const int64_t mrows = ceil_div(mpanels, msplit) * mr;
        const int64_t mchunks = ceil_div(Cg, mrows);
        const int64_t tasks = N * G * tiles * mchunks;
        Scratch<T> scratch(nt, gemm_scratch_size(kr));
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (int64_t t = 0; t < tasks; ++t) {
            int64_t rem = t;
            const int64_t mc = rem % mchunks; rem /= mchunks;
            const int64_t tile = rem % tiles; rem /= tiles;
            const int64_t gi = rem % G;
            const int64_t n = rem / G;
            const int64_t c0 = mc * mrows, ccount = std::min(mrows, Cg - c0);
            const int64_t q0 = tile * npt, qcount = std::min(npt, P - q0);
            const T* wg = w + gi * Kg * Cg + c0;  // A(i, k) = wg[i + k*Cg]
            const T* yg = grad_y + (n * K + gi * Kg) * P + q0;
            auto pack_a = [&](int64_t i0, int64_t mb, int64_t p0, int64_t kb, T* dst) {
                pack_a_strided(wg, int64_t(1), Cg, mr, i0, mb, p0, kb, dst);
            };
            auto pack_b = [&](int64_t p0, int64_t kb, int64_t j0, int64_t nb, T* dst) {
                pack_b_strided(yg, P, int64_t(1), nr, p0, kb, j0, nb, dst);
            };
            gemm_run(kr, ccount, qcount, Kg, pack_a, pack_b,
                     grad_x + (n * C + gi * Cg + c0) * P + q0, P, false,
                     static_cast<const T*>(nullptr), scratch.get(thread_id()));
        }
        return;
    }

    // Stride 1 on small planes: grad_x is the forward convolution of grad_y
    // (padding (R-1)*d - pad) with the flipped, transposed weight, which runs
    // on the padded-plane path of conv2d_forward. Only for few input channels
    // per group (short col rows, where col2im dominates): measured 10% faster
    // on N128 8->16 3x3 14x14, but slower on 32->64 5x5 and 512->512 3x3 7x7
    // (the weight transform and the narrower M side cost more than col2im).
    if (g.stride_h == 1 && g.stride_w == 1 && CRS <= 256 && g.w_size() <= (int64_t(1) << 16) &&
        H * (W + (S - 1) * g.dilation_w) <= kr.nc) {
        ConvGeometry g2 = g;
        g2.in_channels = K; g2.out_channels = C;
        g2.in_h = g.out_h; g2.in_w = g.out_w;
        g2.out_h = H; g2.out_w = W;
        g2.pad_top = (R - 1) * g.dilation_h - g.pad_top;
        g2.pad_left = (S - 1) * g.dilation_w - g.pad_left;
        // w2[gi*Cg + c][k][r][s] = w[gi*Kg + k][c][R-1-r][S-1-s]
        Scratch<T> wt(1, g.w_size(), 1);
        T* w2 = wt.get(0);
        for (int64_t gi = 0; gi < G; ++gi)
            for (int64_t c = 0; c < Cg; ++c)
                for (int64_t k = 0; k < Kg; ++k) {
                    const T* src = w + ((gi * Kg + k) * Cg + c) * RS;
                    T* dst = w2 + ((gi * Cg + c) * Kg + k) * RS;
                    for (int64_t i = 0; i < RS; ++i) dst[i] = src[RS - 1 - i];
                }
        conv2d_forward<T>(g2, grad_y, w2, static_cast<const T*>(nullptr), grad_x);
        return;
    }

    // General case: per (image, group, channel chunk) task, for each pixel tile
    // and block of col rows: col = W^T * grad_y (GEMM), then col2im into the
    // task's own channels (no write conflicts; fixed order: tile, row, pixel).
    const int64_t tiles0 = ceil_div(P, kr.nc);
    const int64_t npt = std::min(P, round_up(ceil_div(P, tiles0), nr));  // fixed by geometry+ISA
    const int64_t tiles = ceil_div(P, npt);
    const int64_t col_ld = round_up(npt, nr);
    const int64_t max_col_elems = (int64_t(1) << 20) / int64_t(sizeof(T));  // 1 MiB
    int64_t rb = std::max<int64_t>(1, max_col_elems / col_ld);
    if (rb >= mr) rb = rb / mr * mr;
    rb = std::min(rb, CRS);
    const int64_t csplit = split_for(N * G, Cg, 2 * int64_t(nt));
    const int64_t cc = ceil_div(Cg, csplit);
    const int64_t cchunks = ceil_div(Cg, cc);
    const int64_t tasks = N * G * cchunks;
    Scratch<T> scratch(nt, gemm_scratch_size(kr) + rb * col_ld);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
        int64_t rem = t;
        const int64_t ch = rem % cchunks; rem /= cchunks;
        const int64_t gi = rem % G;
        const int64_t n = rem / G;
        const int64_t c0 = ch * cc, c1 = std::min(Cg, c0 + cc);
        T* buf = scratch.get(thread_id());
        T* col = buf + gemm_scratch_size(kr);
        T* xg = grad_x + (n * C + gi * Cg) * H * W;
        std::memset(xg + c0 * H * W, 0, sizeof(T) * static_cast<size_t>((c1 - c0) * H * W));
        const T* wg = w + gi * Kg * CRS;  // A(row, k) = wg[row + k*CRS]
        for (int64_t tile = 0; tile < tiles; ++tile) {
            const int64_t q0 = tile * npt, qcount = std::min(npt, P - q0);
            const T* yg = grad_y + (n * K + gi * Kg) * P + q0;
            for (int64_t row0 = c0 * RS; row0 < c1 * RS; row0 += rb) {
                const int64_t rows = std::min(rb, c1 * RS - row0);
                auto pack_a = [&](int64_t i0, int64_t mb, int64_t p0, int64_t kb, T* dst) {
                    pack_a_strided(wg + row0, int64_t(1), CRS, mr, i0, mb, p0, kb, dst);
                };
                auto pack_b = [&](int64_t p0, int64_t kb, int64_t j0, int64_t nb, T* dst) {
                    pack_b_strided(yg, P, int64_t(1), nr, p0, kb, j0, nb, dst);
                };
                gemm_run(kr, rows, qcount, Kg, pack_a, pack_b, col, col_ld, false,
                         static_cast<const T*>(nullptr), buf);
                for (int64_t i = 0; i < rows; ++i) {
                    const int64_t row = row0 + i, c = row / RS, rs = row % RS;
                    col2im_row_add(g, xg + c * H * W, rs / S, rs % S, q0, qcount, col + i * col_ld);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- backward weight

// Backward weight by GEMM: grad_w[g] (Kg x C*R*S) = sum over images of
// grad_y[n, g] (Kg x P) * im2col[n, g]^T (P x C*R*S); one task per (batch
// chunk, group, column block, row block), images summed in order.
template <typename T>
void gemm_backward_weight(const ConvGeometry& g, const T* grad_y, const T* x, T* grad_w,
                          int64_t nb_chunks, T* partial_buf) {
    const int64_t N = g.batch, C = g.in_channels, H = g.in_h, W = g.in_w, K = g.out_channels;
    const int64_t R = g.kernel_h, S = g.kernel_w, G = g.groups;
    const int64_t Cg = C / G, Kg = K / G, P = g.out_h * g.out_w, RS = R * S, CRS = Cg * RS;
    const int64_t wsize = g.w_size();
    const GemmKernel<T> kr = gemm_kernel<T>();
    const int nt = threads_for_work(double(N) * K * P * CRS);
    const int64_t mr = kr.mr, nr = kr.nr;
    const bool pointwise = is_pointwise_identity(g);
    // Split outputs: columns (C*R*S) then rows (K).
    const int64_t npanels = ceil_div(CRS, nr);
    const int64_t nsplit = split_for(nb_chunks * G, npanels, 2 * int64_t(nt));
    const int64_t ncols = ceil_div(npanels, nsplit) * nr;
    const int64_t nchunks = ceil_div(CRS, ncols);
    const int64_t mpanels = ceil_div(Kg, mr);
    const int64_t msplit = split_for(nb_chunks * G * nchunks, mpanels, 2 * int64_t(nt));
    const int64_t mrows = ceil_div(mpanels, msplit) * mr;
    const int64_t mchunks = ceil_div(Kg, mrows);
    const int64_t tasks = nb_chunks * G * nchunks * mchunks;

    Scratch<T> scratch(nt, gemm_scratch_size(kr) + int64_t(kr.nr) * kr.kc);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
        int64_t rem = t;
        const int64_t mc = rem % mchunks; rem /= mchunks;
        const int64_t nc = rem % nchunks; rem /= nchunks;
        const int64_t gi = rem % G;
        const int64_t b = rem / G;
        const int64_t m0 = mc * mrows, mcount = std::min(mrows, Kg - m0);
        const int64_t j0 = nc * ncols, jcount = std::min(ncols, CRS - j0);
        const int64_t n_begin = b * N / nb_chunks, n_end = (b + 1) * N / nb_chunks;
        T* buf = scratch.get(thread_id());
        T* rows = buf + gemm_scratch_size(kr);
        T* target = nb_chunks > 1 ? partial_buf + b * wsize : grad_w;
        T* cptr = target + (gi * Kg + m0) * CRS + j0;
        for (int64_t n = n_begin; n < n_end; ++n) {
            const T* yg = grad_y + (n * K + gi * Kg + m0) * P;
            const T* xg = x + (n * C + gi * Cg) * H * W;
            auto pack_a = [&](int64_t i0, int64_t mb, int64_t p0, int64_t kb, T* dst) {
                pack_a_strided(yg, P, int64_t(1), mr, i0, mb, p0, kb, dst, kr.transpose);
            };
            auto pack_b = [&](int64_t p0, int64_t kb, int64_t jc, int64_t nb, T* dst) {
                // Per panel: nr im2col rows (pixels p0..p0+kb) side by side, then
                // one transpose into the panel. Pointwise rows are read in place.
                for (int64_t jp = 0; jp < nb; jp += nr) {
                    const int64_t nn = std::min(nr, nb - jp);
                    const int64_t jfirst = j0 + jc + jp;
                    const T* src = rows;
                    int64_t ld = kb;
                    if (pointwise && nn == nr) {
                        src = xg + jfirst * H * W + p0;
                        ld = H * W;
                    } else {
                        for (int64_t jj = 0; jj < nr; ++jj) {
                            T* row = rows + jj * kb;
                            if (jj >= nn) {
                                for (int64_t l = 0; l < kb; ++l) row[l] = T(0);
                                continue;
                            }
                            const int64_t j = jfirst + jj, c = j / RS, rs = j % RS;
                            const T* xp = xg + c * H * W;
                            if (pointwise) std::memcpy(row, xp + p0, sizeof(T) * static_cast<size_t>(kb));
                            else im2col_row(g, xp, rs / S, rs % S, p0, kb, row);
                        }
                    }
                    kr.transpose(src, ld, nr, kb, dst + (jp / nr) * kb * nr);
                }
            };
            gemm_run(kr, mcount, jcount, P, pack_a, pack_b, cptr, CRS, n != n_begin,
                     static_cast<const T*>(nullptr), buf);
        }
    }
}


template <typename T>
void conv2d_backward_weight(const ConvGeometry& g, const T* grad_y, const T* x, T* grad_w) {
    const int64_t wsize = g.w_size();
    if (wsize <= 0) return;
    const int64_t P = g.out_h * g.out_w;
    if (g.batch == 0 || P == 0) {
        std::memset(grad_w, 0, sizeof(T) * static_cast<size_t>(wsize));
        return;
    }
    const int64_t N = g.batch;

    // Batch chunks: a function of the geometry only (bounded partial buffers).
    const int64_t partial_budget = (int64_t(4) << 20) / int64_t(sizeof(T));  // 4 MiB
    const int64_t nb_chunks = std::max<int64_t>(1, std::min<int64_t>({N, 16, partial_budget / wsize}));
    const int nt = threads_for_work(double(nb_chunks) * wsize, 1 << 16);
    Scratch<T> partial(1, nb_chunks > 1 ? nb_chunks * wsize : 1, 1);
    if (dw::use_direct_backward_weight(g)) {
        dw::backward_weight(g, grad_y, x, grad_w, nb_chunks, partial.get(0));
    } else {
        gemm_backward_weight(g, grad_y, x, grad_w, nb_chunks, partial.get(0));
    }
    if (nb_chunks > 1) {
        const T* pp = partial.get(0);
        const int64_t blk = 4096;
        const int64_t blocks = ceil_div(wsize, blk);
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t bi = 0; bi < blocks; ++bi) {
            const int64_t e0 = bi * blk, e1 = std::min(wsize, e0 + blk);
            for (int64_t e = e0; e < e1; ++e) grad_w[e] = pp[e];
            for (int64_t b = 1; b < nb_chunks; ++b) {
                const T* src = pp + b * wsize;
                for (int64_t e = e0; e < e1; ++e) grad_w[e] += src[e];
            }
        }
    }
}

// ---------------------------------------------------------------- backward bias

template <typename T>
void conv2d_backward_bias(const ConvGeometry& g, const T* grad_y, T* grad_bias) {
    const int64_t N = g.batch, K = g.out_channels, P = g.out_h * g.out_w;
    if (K <= 0) return;
    const int nt = threads_for_work(double(N) * K * P, 1 << 16);
    constexpr int L = 8;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t k = 0; k < K; ++k) {
        double lane[L] = {};
        for (int64_t n = 0; n < N; ++n) {
            const T* s = grad_y + (n * K + k) * P;
            int64_t p = 0;
            for (; p + L <= P; p += L)
                for (int j = 0; j < L; ++j) lane[j] += double(s[p + j]);
            for (int j = 0; p < P; ++p, ++j) lane[j] += double(s[p]);
        }
        grad_bias[k] = T(((lane[0] + lane[1]) + (lane[2] + lane[3])) +
                         ((lane[4] + lane[5]) + (lane[6] + lane[7])));
    }
}

#define CONVKIT_INSTANTIATE(T)                                                                   \
    template void conv2d_forward<T>(const ConvGeometry&, const T*, const T*, const T*, T*);    \
    template void conv2d_backward_data<T>(const ConvGeometry&, const T*, const T*, T*);        \
    template void conv2d_backward_weight<T>(const ConvGeometry&, const T*, const T*, T*);      \
    template void conv2d_backward_bias<T>(const ConvGeometry&, const T*, T*);
CONVKIT_INSTANTIATE(float)
CONVKIT_INSTANTIATE(double)
#undef CONVKIT_INSTANTIATE

}  // namespace convkit
