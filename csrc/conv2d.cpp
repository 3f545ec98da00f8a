// Convolution kernels: implicit-im2col GEMM (packed panels + ISA micro-kernels,
// see gemm.h) for general layers. Depthwise-like layers (one input and one
// output channel per group) and tiny backward-weight GEMMs are dispatched to
// the direct paths in conv2d_depthwise.cpp.
//
// Paths:
//   forward        float on AVX2/AVX-512, few taps (C/G * R * S up to 32, or
//                  up to 75-144 on rows of whole vectors with at most 64
//                  output channels per group; not 1x1) on rows of at least
//                  one vector: pixel-lane direct convolution (a row's pixels
//                  in vector lanes, y written in place).
//                  Otherwise 3x3-like layers up to 256 output
//                  channels per group (512 with 16-lane vectors on planes
//                  of 128+ output pixels) and of at least 9 taps (C/G * R * S):
//                  direct convolution (output channels in vector lanes, taps
//                  broadcast from zero-padded input rows, input channels in
//                  L1-sized passes).
//                  1x1/s1/p0 float layers of at most 64 input channels per
//                  group (256 with at most 32 output channels): pixels in
//                  vector lanes, x read and y written in place.
//                  Otherwise implicit GEMM over the whole batch of a group:
//                  weights packed once per call (read in place for few
//                  columns), column tiles of output pixels that may span
//                  images, B rows built from zero-padded input rows (1x1
//                  layers: gathered from x, or plain copies for 1x1/s1/p0),
//                  bias as the starting value of each sum.
//   backward data  stride 1: the forward convolution of grad_y with the
//                  flipped, transposed weight (1x1 layers on the GEMM path
//                  read the weight by columns, no transposed copy).
//                  Otherwise per task (image, group, input-channel chunk):
//                  for each pixel tile, col = W^T * grad_y (GEMM) then col2im
//                  into the task's own channels; 1x1/s1/p0 is one GEMM into
//                  grad_x; depthwise stride 1 is a correlation with the
//                  flipped kernel.
//   backward wgt   float layers of the direct forward with at least 32 taps:
//                  the direct tile with input channels in place of pixels,
//                  reduced over the pixels of each band. Otherwise per task
//                  (batch chunk, group, column block, row block): one GEMM
//                  grad_w = grad_y * im2col^T over the chunk's images.
//   backward bias  per channel, 8 double lanes.
//
// Determinism: every output element is computed by exactly one task, and its
// arithmetic (kernel, order of its sum) depends only on the geometry and the
// active ISA. Splits that depend on the thread count (output-channel blocks,
// forward pixel tiles, column blocks) never change an element's arithmetic (see
// gemm.h); the kc blocks, the backward-data pixel tile and the batch chunks of
// backward weight (summed in order afterwards) depend only on geometry and ISA.
//
// Memory: one packed copy of the weights per call; scratch is per thread
// (packed A/B blocks, an im2col row or panel, zero-padded input rows of at most
// 2 MiB, a col block of at most 1 MiB for backward data, partial weight
// gradients of at most 4 MiB, the pointwise path's zero-padded last pixels,
// the pixel-lane path's padded rows: 128 KiB, or one output row's),
// bounded independently of the batch size, allocated before each parallel
// region and cached per calling thread. Nothing inside a region allocates or
// throws.
#include "conv2d.h"

#include <algorithm>
#include <cassert>
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

// ---------------------------------------------------------------- direct forward (float)

// Direct convolution for float on AVX2/AVX-512: output channels in vector
// lanes, PW pixels of one output row per register tile, every tap a broadcast
// from zero-padded input rows (no im2col, no packed B panels). It wins where
// the GEMM's B packing costs as much as its FMAs: few output channels per group
// against many taps, and small planes. Per task (image, group, band of output
// rows) the band's input rows are copied once into zero-padded rows; weights
// are packed once per call as [group][channel block][tap][lanes*kv], zero past
// Kg. For each output-channel block the band's tiles run in passes over
// blocks of input channels (each pass's weights and rows stay in L1), the
// partial sums kept per band pixel between passes. Each output element is
// bias + its taps in increasing (c, r, s) order, one FMA each: the GEMM path's
// chain, so both paths give the same bits, whatever the passes and tiles.
namespace {

inline int direct_conv_vectors(const ConvGeometry& g, const DirectConvKernel& dk) {
    return g.out_channels / g.groups <= dk.lanes ? 1 : 2;
}

// Fewest taps (C/G * R * S) per output for the direct path. Forward: on
// Zen 3 (AVX2, 2 threads) 1.2-1.4x the GEMM path for 1- and 3-channel layers
// of 9-27 taps once the tiles' sums went to NCHW through 8x8 transposes (they
// had been stored one scalar at a time). Backward weight: its tiles still lose
// there (Keras 1 -> 32 5x5: 3.7 -> 4.6 ms), so it keeps 32.
enum class DirectPass { forward, backward_weight };

bool use_direct_conv(const ConvGeometry& g, DirectPass pass, int lanes) {
    // Measured against the GEMM path (AVX-512, 1 thread): 1.1-1.8x faster for
    // 3x3/5x5/1x7 layers up to 256 output channels per group; slower for 1x1
    // (no taps to share a padded row). With 16-lane vectors also up to 512
    // output channels per group on planes of 128+ output pixels (Intel Xeon,
    // 2 MiB L2, 2 threads, in-process A/B; forward / grad_x / grad_w):
    // 384 -> 384 at 13x13 1.15x / 1.19x / 1.16x, 192 -> 384 at 13x13 1.19x /
    // 1.02x / 1.26x, 512 -> 512 at 14x14 1.12x / 1.11x / 1.05x, at 28x28
    // 1.05x / 1.03x / 1.03x, 256 -> 512 stride 2 to 14x14 1.11x forward, grad_w
    // 0.95x; on 7x7 planes the GEMM, whose column tiles span images and so
    // share each weight panel among more pixels, stays 1.1x faster. AVX2
    // kernels keep 256 (Zen 3: 512 KiB of L2 against 590 KiB of weights per
    // channel block of a 512-channel 3x3 layer).
    const int64_t Kg = g.out_channels / g.groups;
    const int64_t max_kg = lanes >= 16 && g.out_h * g.out_w >= 128 ? 512 : 256;
    const int64_t CRS = (g.in_channels / g.groups) * g.kernel_h * g.kernel_w;
    const int64_t min_taps = pass == DirectPass::forward ? 9 : 32;
    // The padded rows of one output row (per channel of a group) must be
    // small: huge paddings or dilations are legal but take the GEMM path.
    const int64_t band1 = sat_mul(sat_mul(g.in_channels / g.groups, padded_band_rows(g, 1)), padded_row_width(g));
    // The partial sums of one output row (at most 32 channels per pixel) are
    // kept per thread: rows of more than 4096 pixels take the GEMM path.
    return Kg <= max_kg && CRS >= min_taps && g.kernel_h * g.kernel_w > 1 && band1 <= (int64_t(1) << 22) &&
           g.out_w <= 4096;
}

// Where each of the first `count` pixels of a band of output rows reads,
// relative to the band's first zero-padded input row (rows Wp wide).
std::vector<int64_t> band_pixel_offsets(const ConvGeometry& g, int64_t Wp, int64_t count) {
    std::vector<int64_t> offsets(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i)
        offsets[static_cast<size_t>(i)] = (i / g.out_w) * g.stride_h * Wp + (i % g.out_w) * g.stride_w;
    return offsets;
}

// Weights of `taps` terms per output channel as [group][block][tap][block
// channels] and bias as [group][block][block channels], blocks of `block`
// output channels, zero past Kg (the direct and pointwise tiles' layout).
void pack_channel_blocks(const float* w, const float* bias, int64_t G, int64_t Kg, int64_t taps, int64_t block,
                         int nt, float* wd, float* bd) {
    const int64_t kblocks = ceil_div(Kg, block);
    // Full blocks go through the GEMM's vector panel transpose (the scalar
    // gather below took a fifth of a batch-1 256 -> 256 3x3 layer at 14x14).
    const PanelTransposeFn<float> transpose = gemm_kernel<float>().transpose;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t blk = 0; blk < G * kblocks; ++blk) {
        const FlushDenormals flush_denormals;
        const int64_t gi = blk / kblocks, k0 = (blk % kblocks) * block;
        float* d = wd + blk * taps * block;
        if (transpose && k0 + block <= Kg) {
            transpose(w + (gi * Kg + k0) * taps, taps, block, taps, d);
        } else {
            for (int64_t t = 0; t < taps; ++t)
                for (int64_t j = 0; j < block; ++j)
                    d[t * block + j] = k0 + j < Kg ? w[(gi * Kg + k0 + j) * taps + t] : 0.f;
        }
        for (int64_t j = 0; j < block; ++j)
            bd[blk * block + j] = (bias && k0 + j < Kg) ? bias[gi * Kg + k0 + j] : 0.f;
    }
}

// The direct kernel for this layer, or nullptr for the GEMM path.
const DirectConvKernel* direct_conv_kernel(const ConvGeometry& g, DirectPass pass) {
    const DirectConvKernel* dk = direct_conv_kernel_for(active_isa());
    if (!dk) return nullptr;
    // 8 or fewer channels: 8-lane vectors leave no lanes idle.
    if (g.out_channels / g.groups <= 8 && dk->lanes > 8) dk = direct_conv_kernel_for(Isa::avx2);
    return use_direct_conv(g, pass, dk->lanes) ? dk : nullptr;
}


// Output rows per band of the forward direct paths: halved from OH until
// fits(b), then until there are 4 bands per thread over images and groups.
template <class Fits>
int64_t band_height(const ConvGeometry& g, int nt, Fits&& fits) {
    int64_t b = g.out_h;
    while (b > 1 && !fits(b)) b = ceil_div(b, 2);
    while (b > 1 && g.batch * g.groups * ceil_div(g.out_h, b) < 4 * int64_t(nt)) b = ceil_div(b, 2);
    return b;
}

// Forward direct task `task` of N * G * bands (image, group, band of b output
// rows): its output rows [oh0, oh1) and the padded input rows [pr0, pr1) they read.
struct BandTask {
    int64_t n, gi, oh0, oh1, pr0, pr1;
};
inline BandTask band_task(const ConvGeometry& g, int64_t task, int64_t bands, int64_t b) {
    const int64_t band = task % bands, gi = (task / bands) % g.groups, n = task / (bands * g.groups);
    const int64_t oh0 = band * b, oh1 = std::min(g.out_h, oh0 + b), pr0 = oh0 * g.stride_h;
    return {n, gi, oh0, oh1, pr0, pr0 + padded_band_rows(g, oh1 - oh0)};
}

// Zero-padded rows [pr0, pr1) (padded-row coordinates: input row pr - pad_top)
// of `channels` consecutive input planes, Wp wide, plane `plane` apart.
template <typename T>
void pad_input_rows(const ConvGeometry& g, const T* x, int64_t channels, int64_t pr0, int64_t pr1,
                    int64_t Wp, int64_t plane, T* dst) {
    const int64_t H = g.in_h, W = g.in_w;
    for (int64_t c = 0; c < channels; ++c) {
        const T* xp = x + c * H * W;
        for (int64_t pr = pr0; pr < pr1; ++pr) {
            T* d = dst + c * plane + (pr - pr0) * Wp;
            const int64_t ih = pr - g.pad_top;
            const int64_t copy = (ih >= 0 && ih < H) ? std::min(W, Wp - g.pad_left) : 0;
            const int64_t left = copy > 0 ? g.pad_left : Wp;
            for (int64_t i = 0; i < left; ++i) d[i] = T(0);
            if (copy > 0) std::memcpy(d + left, xp + ih * W, sizeof(T) * static_cast<size_t>(copy));
            for (int64_t i = left + copy; i < Wp; ++i) d[i] = T(0);
        }
    }
}

void direct_conv_forward(const ConvGeometry& g, const float* x, const float* w, const float* bias,
                         float* y, const DirectConvKernel& dk) {
    const int64_t N = g.batch, C = g.in_channels, H = g.in_h, W = g.in_w, K = g.out_channels;
    const int64_t R = g.kernel_h, S = g.kernel_w, G = g.groups;
    const int64_t Cg = C / G, Kg = K / G, OH = g.out_h, OW = g.out_w, P = OH * OW;
    const int64_t RS = R * S, CRS = Cg * RS;
    const int64_t sh = g.stride_h, sw = g.stride_w, dh = g.dilation_h, dwl = g.dilation_w;
    const int nt = threads_for_work(double(N) * K * P * CRS);
    const int kv = direct_conv_vectors(g, dk);
    const int64_t KB = int64_t(kv) * dk.lanes, kblocks = ceil_div(Kg, KB);
    // Register tiles: runs of one output row (row_tiles per row, pw0 pixels
    // each), or, where the ISA has them, per-pixel tiles of px0 consecutive
    // pixels of the band that wrap from one output row onto the next, so that
    // all but the band's last tile are full.
    const bool per_pixel = kv == 2 && dk.max_px2 > 0;
    const int64_t max_pw = kv == 1 ? dk.max_pw1 : dk.max_pw2;
    const int64_t row_tiles = ceil_div(OW, max_pw), pw0 = ceil_div(OW, row_tiles);
    const int64_t px0 = dk.max_px2;

    // Bands of output rows: their padded input rows stay within a budget, their
    // register tiles' partial sums (one channel block) within another.
    const int64_t Wp = padded_row_width(g);
    auto band_rows = [&](int64_t b) { return padded_band_rows(g, b); };
    // Both budgets scale with the vector width: 2^17 floats of padded rows
    // and 2^13 of sums per 8 lanes, so that bands hold as many pixels with
    // 16-lane channel blocks as with 8-lane ones (AVX-512 machines have 1-2
    // MiB of L2, Zen 3 512 KiB). On an Intel Xeon (48 KiB L1, 2 MiB L2; 2
    // threads, interleaved runs) doubling the sums ran 1.03-1.05x faster on
    // 3x3 layers of 64-128 channels at 28x28-112x112, 1.06x on Inception's 1x7
    // and 1.17x on its 7x1 (one band of 17 rows, not two that each pad and
    // read 6 extra rows); doubling the rows then 1.05-1.08x on 512 -> 512 at
    // 28x28 (bands of 14 rows, not 4 that read 6), 1.03x on 64 -> 64 at 32x32,
    // even elsewhere. AVX2 keeps the budgets tuned on Zen 3.
    const int64_t band_budget = (int64_t(1) << 17) * (dk.lanes / 8);
    const int64_t acc_budget = (int64_t(1) << 13) * (dk.lanes / 8);
    const int64_t row_acc = OW * KB;  // partial sums of one output row
    const int64_t wblock = CRS * KB;  // packed weights of one channel block
    int64_t b = OH;
    while (b > 1 && !(sat_mul(sat_mul(Cg, band_rows(b)), Wp) <= band_budget && sat_mul(b, row_acc) <= acc_budget))
        b = ceil_div(b, 2);
    // Enough tasks to go round the threads (4 per thread): halve the bands, or
    // split the channel blocks of a band into `ksplit` tasks, whichever task
    // would read more data (its weights, or its padded rows). Thin bands read
    // all the weights per few pixels: batch-1 ResNet-50 256 -> 256 3x3 at
    // 14x14 had bands of one row, 14 pixels per 2.4 MB of weights.
    int64_t ksplit = 1;
    while (N * G * ceil_div(OH, b) * ksplit < 4 * int64_t(nt)) {
        const int64_t task_weights = ceil_div(kblocks, ksplit) * wblock;
        const int64_t task_rows = Cg * band_rows(b) * Wp;
        if (ksplit < kblocks && (b == 1 || task_weights > task_rows)) ksplit *= 2;
        else if (b > 1) b = ceil_div(b, 2);
        else break;
    }
    const int64_t kchunk = ceil_div(kblocks, std::min(ksplit, kblocks));  // channel blocks per task
    ksplit = ceil_div(kblocks, kchunk);
    const int64_t bands = ceil_div(OH, b), plane = band_rows(b) * Wp;
    const int64_t tasks = N * G * bands * ksplit;
    // Input channels per pass over the band's tiles: the pass's weights and
    // padded rows stay in L1 while every tile of the band reads them, and the
    // tiles' sums go on in their buffer between passes (the same chain, so
    // the same bits as one pass over all channels).
    int64_t cblock = Cg;
    while (cblock > 4 && sat_mul(cblock, sat_add(RS * KB, sat_mul(band_rows(b), Wp))) > (int64_t(1) << 14))
        cblock = ceil_div(cblock, 2);

    // Packed weights and bias (padded to KB channels per block), tap offsets.
    Scratch<float> packed(1, G * kblocks * (wblock + KB), 2);
    float* wd = packed.get(0);
    float* bd = wd + G * kblocks * wblock;
    pack_channel_blocks(w, bias, G, Kg, CRS, KB, nt, wd, bd);
    std::vector<int64_t> offsets(static_cast<size_t>(CRS));
    for (int64_t t = 0; t < CRS; ++t) {
        const int64_t c = t / RS, r = (t % RS) / S, s = t % S;
        offsets[static_cast<size_t>(t)] = c * plane + r * dh * Wp + s * dwl;
    }
    const int64_t* off = offsets.data();
    const dconv::Addressing rows_mode = sw == 1 ? dconv::Addressing::unit_stride : dconv::Addressing::strided;
    const dconv::TileFn full_tile = dk.tile(int(pw0), kv, rows_mode);
    const dconv::TileFn last_tile = dk.tile(int(OW - (row_tiles - 1) * pw0), kv, rows_mode);
    const std::vector<int64_t> pixel_offsets = band_pixel_offsets(g, Wp, per_pixel ? b * OW : 0);
    const dconv::TileFn full_px_tile = per_pixel ? dk.tile(int(px0), kv, dconv::Addressing::per_pixel) : nullptr;

    Scratch<float> scratch(nt, Cg * plane + b * row_acc);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
        const FlushDenormals flush_denormals;
        const auto [n, gi, oh0, oh1, pr0, pr1] = band_task(g, task / ksplit, bands, b);
        const int64_t kb0 = (task % ksplit) * kchunk, kb1 = std::min(kblocks, kb0 + kchunk);
        float* pad = scratch.get(thread_id());
        float* acc = pad + Cg * plane;  // [band pixel][KB]
        pad_input_rows(g, x + (n * C + gi * Cg) * H * W, Cg, pr0, pr1, Wp, plane, pad);
        const int64_t band_px = (oh1 - oh0) * OW;
        const dconv::TileFn last_px_tile =
            per_pixel ? dk.tile(int(band_px - (ceil_div(band_px, px0) - 1) * px0), kv, dconv::Addressing::per_pixel)
                      : nullptr;
        for (int64_t kb = kb0; kb < kb1; ++kb) {
            const int64_t blk = gi * kblocks + kb, k0 = kb * KB, kcount = std::min(KB, Kg - k0);
            const float* wk = wd + blk * wblock;
            const float* init = bias ? bd + blk * KB : nullptr;
            for (int64_t c0 = 0; c0 < Cg; c0 += cblock) {
                const int64_t t0 = c0 * RS, taps = (std::min(Cg, c0 + cblock) - c0) * RS;
                const float* wc = wk + t0 * KB;
                if (per_pixel) {
                    for (int64_t i0 = 0; i0 < band_px; i0 += px0) {
                        const int64_t count = std::min(px0, band_px - i0);
                        const float* bases[16];
                        for (int64_t p = 0; p < count; ++p) bases[p] = pad + pixel_offsets[size_t(i0 + p)];
                        (count == px0 ? full_px_tile : last_px_tile)(taps, off + t0, nullptr, 0, bases, wc, init,
                                                                     acc + i0 * KB, c0 > 0);
                    }
                    continue;
                }
                for (int64_t oh = oh0; oh < oh1; ++oh)
                    for (int64_t rt = 0; rt < row_tiles; ++rt)
                        (rt + 1 < row_tiles ? full_tile : last_tile)(
                            taps, off + t0, pad + (oh - oh0) * sh * Wp + rt * pw0 * sw, sw, nullptr, wc, init,
                            acc + (oh - oh0) * row_acc + rt * pw0 * KB, c0 > 0);
            }
            // The band's rows are consecutive in every output plane.
            dk.store(acc, KB, kcount, band_px, y + ((n * K + gi * Kg + k0) * OH + oh0) * OW, P);
        }
    }
}

// Pointwise forward (float, 1x1, stride 1, no padding, few channels):
// pixels in vector lanes, so x is read and y written in place (the GEMM path
// copies every x row into packed panels and writes 6 rows x 16 pixels per
// tile through its C tile). Per task (image, group, run of pixel tiles), each
// block of output channels goes over the run's tiles, whose x rows stay in L2.
// The last pixels of an image (fewer than one tile) go through a zero-padded
// copy. Each output is bias + its terms in increasing c, one FMA each: the
// GEMM path's chain, so both paths give the same bits.
namespace {

// Measured against the GEMM path on Zen 3 (2 threads, medians, interleaved):
// up to 64 input channels per group 1.0-2.4x (SqueezeNet 16 -> 64 at 55x55
// 2.4x, MobileNet-V2 16 -> 96, 32 -> 192 expansions 1.4x, 1.8x; ResNet-50 64 ->
// 256 even); up to 256 with at most 32 output channels 1.1-1.2x (MobileNet-V2
// 96/144/192 -> 24/32 projections); slower for 128 -> 512 (0.92x) and 256 ->
// 64/128 (0.97x), where the GEMM's blocking over the input channels wins.
bool use_pointwise_direct(const ConvGeometry& g) {
    const int64_t Cg = g.in_channels / g.groups, Kg = g.out_channels / g.groups;
    // Cg >= 1: no input channels take the GEMM path (the sums are the bias).
    return is_pointwise_identity(g) && Cg >= 1 && (Cg <= 64 || (Cg <= 256 && Kg <= 32));
}

void pointwise_direct_forward(const ConvGeometry& g, const float* x, const float* w, const float* bias, float* y,
                              const DirectConvKernel& dk) {
    const int64_t N = g.batch, C = g.in_channels, K = g.out_channels, G = g.groups;
    const int64_t Cg = C / G, Kg = K / G, P = g.out_h * g.out_w;
    const int64_t MR = dk.pw_rows, PX = dk.pw_px, kblocks = ceil_div(Kg, MR);
    const int nt = threads_for_work(double(N) * K * P * Cg);

    // Weights packed as [group][channel block][c][MR], bias as [group][block][MR].
    Scratch<float> packed(1, G * kblocks * MR * (Cg + 1), 2);
    float* wd = packed.get(0);
    float* bd = wd + G * kblocks * Cg * MR;
    pack_channel_blocks(w, bias, G, Kg, Cg, MR, nt, wd, bd);

    // Runs of tiles whose x rows take up to 256 KiB (half of a 512 KiB L2: 1.3-2.4x
    // faster than runs kept within 16 KiB of L1, as each channel block then
    // writes long stretches of its output rows), enough runs to go round the
    // threads.
    const int64_t tiles = P / PX, tail = P - tiles * PX;
    int64_t run = std::max<int64_t>(1, (int64_t(1) << 16) / (Cg * PX));
    while (run > 1 && N * G * ceil_div(tiles, run) < 4 * int64_t(nt)) run = ceil_div(run, 2);
    const int64_t runs = std::max<int64_t>(1, ceil_div(tiles, run));  // the last one also does the tail
    const int64_t tasks = N * G * runs;
    Scratch<float> scratch(nt, (Cg + MR) * PX);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
        const FlushDenormals flush_denormals;
        const int64_t r = task % runs, gi = (task / runs) % G, n = task / (runs * G);
        const float* xg = x + (n * C + gi * Cg) * P;
        float* yg = y + (n * K + gi * Kg) * P;
        const int64_t t0 = r * run, t1 = std::min(tiles, t0 + run);
        // The last run also does the image's last pixels, from a zero-padded copy.
        const bool last_pixels = r + 1 == runs && tail > 0;
        float* xs = scratch.get(thread_id());  // [Cg][PX] then [MR][PX]
        float* ys = xs + Cg * PX;
        if (last_pixels)
            for (int64_t c = 0; c < Cg; ++c)
                for (int64_t p = 0; p < PX; ++p) xs[c * PX + p] = p < tail ? xg[c * P + tiles * PX + p] : 0.f;
        for (int64_t kb = 0; kb < kblocks; ++kb) {
            const int64_t blk = gi * kblocks + kb, rows = std::min(MR, Kg - kb * MR);
            const float* wk = wd + blk * Cg * MR;
            const float* init = bias ? bd + blk * MR : nullptr;
            float* yk = yg + kb * MR * P;
            for (int64_t t = t0; t < t1; ++t) dk.pointwise(Cg, xg + t * PX, P, wk, init, rows, yk + t * PX);
            if (!last_pixels) continue;
            dk.pointwise(Cg, xs, PX, wk, init, rows, ys);
            for (int64_t i = 0; i < rows; ++i)
                std::memcpy(yk + i * P + tiles * PX, ys + i * PX, sizeof(float) * size_t(tail));
        }
    }
}

}  // namespace

// Pixel-lane direct forward (float, few taps per output): the pixels of one
// output row in vector lanes and the output channels as broadcast weights,
// so y is written in place, row by row (the channel-lane tiles' sums go to
// NCHW through 8x8 transposes: ~40% of a 1 -> 32 channel 3x3 layer). Per task
// (image, group, band of output rows) the band's input rows are copied once
// into zero-padded rows whose columns are split by phase (column mod
// stride_w), so each tap of a vector of output pixels is one contiguous load
// at any stride. A row's vectors go in chunks of up to 4; the row's last
// vector ends at the row's end, overlapping the one before it (the shared
// pixels computed twice, the same way), so rows need at least one vector of
// pixels and no masked stores. Each output is bias + its taps in increasing
// (c, r, s), one FMA each: the other paths' chain, so the same bits.
namespace {

// The kernel for this layer's pixel-lane path, or nullptr. Measured against
// the channel-lane direct path on Zen 3 (AVX2, 2 threads, interleaved
// medians): 1.2-2x for 1-4 channel layers of up to 36 taps (MNIST/Keras/LeNet/
// CIFAR first layers, VGG conv1_1, a 3-channel stride-2 stem), 1.1-1.5x for
// up to 144 taps at stride 1 on rows of whole vectors (16 -> 16/32 and 12 ->
// 24 channel 3x3), up to 75 taps at stride 2; 0.9-0.95x for 54-72 taps on
// rows whose last vector overlaps (14 and 28 wide: 1/8 of the lanes
// recomputed) and for 147-363 taps at strides 2 and 4 (ResNet-50 and
// AlexNet stems).
const DirectConvKernel* pixel_lane_kernel(const ConvGeometry& g) {
    const DirectConvKernel* dk = direct_conv_kernel_for(active_isa());
    // Rows narrower than a 16-lane vector: 8 lanes.
    if (dk && g.out_w < dk->lanes) dk = direct_conv_kernel_for(Isa::avx2);
    if (!dk || g.out_w < dk->lanes) return nullptr;
    const int64_t CRS = (g.in_channels / g.groups) * g.kernel_h * g.kernel_w;
    const bool whole_vectors = g.out_w % dk->lanes == 0;
    const int64_t max_taps = !whole_vectors ? 32 : g.stride_w == 1 ? 144 : 75;
    // Past 32 taps only measured up to 64 output channels per group (16 ->
    // 64 even); 1x1 layers have the pointwise and GEMM paths.
    const bool few_outputs = CRS <= 32 || g.out_channels / g.groups <= 64;
    // The padded rows of one output row must be small (huge paddings or
    // dilations are legal but take the other paths).
    const int64_t band1 = sat_mul(sat_mul(g.in_channels / g.groups, padded_band_rows(g, 1)),
                                  sat_mul(g.stride_w, ceil_div(padded_row_width(g), g.stride_w)));
    return CRS >= 1 && CRS <= max_taps && few_outputs && g.kernel_h * g.kernel_w > 1 &&
                   band1 <= (int64_t(1) << 22)
               ? dk
               : nullptr;
}

// Zero-padded rows [pr0, pr1) of `channels` input planes (as pad_input_rows),
// each row's padded column pc stored at (pc % sw) * Wph + pc / sw; rows sw *
// Wph apart, planes `plane` apart.
void pad_phased_rows(const ConvGeometry& g, const float* x, int64_t channels, int64_t pr0, int64_t pr1,
                     int64_t Wph, int64_t plane, float* dst) {
    const int64_t sw = g.stride_w, H = g.in_h, W = g.in_w;
    if (sw == 1) return pad_input_rows(g, x, channels, pr0, pr1, Wph, plane, dst);
    for (int64_t c = 0; c < channels; ++c)
        for (int64_t pr = pr0; pr < pr1; ++pr) {
            float* d = dst + c * plane + (pr - pr0) * sw * Wph;
            const int64_t ih = pr - g.pad_top;
            if (ih < 0 || ih >= H) {
                std::fill(d, d + sw * Wph, 0.f);
                continue;
            }
            const float* xr = x + (c * H + ih) * W;
            for (int64_t phase = 0; phase < sw; ++phase) {
                // dp[i] holds input column i * sw + phase - pad_left, zero outside
                // [0, W): i in [lo, hi) reads the input.
                float* dp = d + phase * Wph;
                const int64_t first = phase - g.pad_left;
                const int64_t lo = std::min(Wph, first >= 0 ? 0 : ceil_div(-first, sw));
                const int64_t hi = std::max(lo, std::min(Wph, W - first > 0 ? ceil_div(W - first, sw) : 0));
                std::fill(dp, dp + lo, 0.f);
                for (int64_t i = lo; i < hi; ++i) dp[i] = xr[first + i * sw];
                std::fill(dp + hi, dp + Wph, 0.f);
            }
        }
}

// One chunk of a row's pixel vectors and its tiles.
struct LaneChunk {
    int64_t q0, last;
    dconv::LaneTileFn full, last_block;  // mr and mr_last channels
};

void pixel_lane_forward(const ConvGeometry& g, const float* x, const float* w, const float* bias, float* y,
                        const DirectConvKernel& dk) {
    const int64_t N = g.batch, C = g.in_channels, H = g.in_h, W = g.in_w, K = g.out_channels;
    const int64_t S = g.kernel_w, G = g.groups;
    const int64_t Cg = C / G, Kg = K / G, OH = g.out_h, OW = g.out_w, P = OH * OW;
    const int64_t RS = g.kernel_h * S, CRS = Cg * RS;
    const int64_t sh = g.stride_h, sw = g.stride_w, dh = g.dilation_h, dwl = g.dilation_w;
    const int nt = threads_for_work(double(N) * K * P * CRS);
    const int64_t L = dk.lanes;

    // Rows of sw phases of Wph padded columns; bands of output rows whose
    // padded rows stay within 128 KiB (down to one output row, whose rows
    // pixel_lane_kernel bounds), enough bands to go round the threads.
    const int64_t Wph = ceil_div(padded_row_width(g), sw), row = sw * Wph;
    auto band_rows = [&](int64_t b) { return padded_band_rows(g, b); };
    const int64_t b =
        band_height(g, nt, [&](int64_t rows) { return sat_mul(sat_mul(Cg, band_rows(rows)), row) <= (1 << 15); });
    const int64_t bands = ceil_div(OH, b), plane = band_rows(b) * row, tasks = N * G * bands;

    // Chunks of a row's vectors, as even as possible (3 + 2 rather than 4 + 1:
    // the fewer the vectors, the more loads per FMA). Blocks of mr output
    // channels, as even as the widest chunk's accumulators allow; each block
    // goes over the band's rows, so its mr output planes are written as
    // sequential streams (going over a row's blocks wrote all K planes a
    // piece at a time: 1.4x slower on a 1 -> 32 channel layer whose 11 MB
    // output missed L2).
    const int64_t nvec = ceil_div(OW, L), nchunks = ceil_div(nvec, int64_t(4));
    const int64_t max_nv = ceil_div(nvec, nchunks);
    const int64_t kblocks = ceil_div(Kg, dk.lane_acc / max_nv), mr = ceil_div(Kg, kblocks);
    const int64_t mr_last = Kg - (kblocks - 1) * mr;
    std::vector<LaneChunk> chunks;
    for (int64_t j = 0, q0 = 0; j < nchunks; ++j) {
        const int64_t nv = nvec / nchunks + (j < nvec % nchunks ? 1 : 0);
        const int64_t last = j + 1 < nchunks ? (nv - 1) * L : OW - L - q0;
        chunks.push_back({q0, last, dk.lane_tile(int(mr), int(nv)), dk.lane_tile(int(mr_last), int(nv))});
        q0 += nv * L;
    }

    // Weights as [group][tap][Kg], bias as [group][Kg]; tap offsets.
    Scratch<float> packed(1, G * Kg * (CRS + 1), 2);
    float* wd = packed.get(0);
    float* bd = wd + G * CRS * Kg;
    pack_channel_blocks(w, bias, G, Kg, CRS, Kg, nt, wd, bd);
    std::vector<int64_t> offsets(static_cast<size_t>(CRS));
    for (int64_t t = 0; t < CRS; ++t) {
        const int64_t c = t / RS, r = (t % RS) / S, s = t % S;
        offsets[static_cast<size_t>(t)] = c * plane + r * dh * row + (s * dwl) % sw * Wph + (s * dwl) / sw;
    }
    const int64_t* off = offsets.data();

    Scratch<float> scratch(nt, Cg * plane);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
        const FlushDenormals flush_denormals;
        const auto [n, gi, oh0, oh1, pr0, pr1] = band_task(g, task, bands, b);
        float* pad = scratch.get(thread_id());
        pad_phased_rows(g, x + (n * C + gi * Cg) * H * W, Cg, pr0, pr1, Wph, plane, pad);
        const float* wg = wd + gi * CRS * Kg;
        const float* bg = bias ? bd + gi * Kg : nullptr;
        for (int64_t kb = 0; kb < kblocks; ++kb) {
            const int64_t k0 = kb * mr;
            const float* wk = wg + k0;
            const float* init = bg ? bg + k0 : nullptr;
            for (int64_t oh = oh0; oh < oh1; ++oh) {
                const float* in = pad + (oh - oh0) * sh * row;
                float* yrow = y + ((n * K + gi * Kg + k0) * OH + oh) * OW;
                for (const LaneChunk& ch : chunks)
                    (kb + 1 < kblocks ? ch.full : ch.last_block)(CRS, off, in + ch.q0, wk, Kg, init, ch.last,
                                                                 yrow + ch.q0, P);
            }
        }
    }
}

}  // namespace

// Direct backward weight (float, direct-forward layers of at least 32 taps): the
// forward's register tile with roles swapped. For kernel tap (r, s) a tile
// holds PW input channels x (lanes*kv) output channels of grad_w; its
// reduction runs over the output pixels of a band, broadcasting the input
// value each (channel, pixel) reads from zero-padded rows and loading
// grad_y's channels at that pixel as a vector (grad_y transposed per band).
// Each task (batch chunk, group, channel block) keeps its partial grad_w in a
// buffer and continues every element's chain over bands and images in order,
// so results do not depend on the banding or the thread count.
void direct_conv_backward_weight(const ConvGeometry& g, const float* grad_y, const float* x,
                                 float* grad_w, int64_t nb_chunks, float* partial,
                                 const DirectConvKernel& dk) {
    const int64_t N = g.batch, C = g.in_channels, H = g.in_h, W = g.in_w, K = g.out_channels;
    const int64_t R = g.kernel_h, S = g.kernel_w, G = g.groups;
    const int64_t Cg = C / G, Kg = K / G, OH = g.out_h, OW = g.out_w, P = OH * OW;
    const int64_t RS = R * S, CRS = Cg * RS, wsize = g.w_size();
    const int64_t sh = g.stride_h, sw = g.stride_w, dh = g.dilation_h, dwl = g.dilation_w;
    const int nt = threads_for_work(double(N) * K * P * CRS);
    const int kv = direct_conv_vectors(g, dk);
    const int64_t KB = int64_t(kv) * dk.lanes, kblocks = ceil_div(Kg, KB);
    const int64_t max_pw = kv == 1 ? dk.max_pw1 : dk.max_pw2;
    const int64_t ctiles = ceil_div(Cg, max_pw), pc0 = ceil_div(Cg, ctiles);

    const int64_t Wp = padded_row_width(g);
    auto band_rows = [&](int64_t b) { return padded_band_rows(g, b); };
    int64_t b = OH;
    while (b > 1 && (sat_mul(sat_mul(Cg, band_rows(b)), Wp) > (int64_t(1) << 17) || b * OW * KB > (int64_t(1) << 16)))
        b = ceil_div(b, 2);
    const int64_t bands = ceil_div(OH, b), plane = band_rows(b) * Wp, band_px = b * OW;
    const std::vector<int64_t> offsets = band_pixel_offsets(g, Wp, band_px);
    const int64_t* off = offsets.data();
    const dconv::TileFn full_tile = dk.tile(int(pc0), kv, dconv::Addressing::strided);
    const dconv::TileFn last_tile = dk.tile(int(Cg - (ctiles - 1) * pc0), kv, dconv::Addressing::strided);

    // Output-channel blocks per task: a run of blocks shares each padded
    // input band (padding it once per block cost as much as the FMAs on
    // 256-channel stride-2 layers), as many as keep the task's partial sums
    // within 1 MiB while there are tasks for every thread. Any grouping gives
    // the same bits: each element's chain runs over its chunk's pixels in order.
    const int64_t acc_per_block = RS * Cg * KB;
    const int64_t max_run = std::max<int64_t>(1, (int64_t(1) << 18) / acc_per_block);
    int64_t kgroups = std::max(ceil_div(kblocks, max_run), std::min(kblocks, ceil_div(nt, nb_chunks * G)));
    for (int64_t t = kgroups; t <= std::min(kblocks, 2 * kgroups); ++t) {
        if ((nb_chunks * G * t) % nt == 0) {
            kgroups = t;
            break;
        }
    }
    const int64_t run = ceil_div(kblocks, kgroups);
    kgroups = ceil_div(kblocks, run);

    const int64_t tasks = nb_chunks * G * kgroups;
    Scratch<float> scratch(nt, Cg * plane + band_px * KB + run * acc_per_block);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
        const FlushDenormals flush_denormals;
        const int64_t kg = task % kgroups, gi = (task / kgroups) % G, chunk = task / (kgroups * G);
        const int64_t kb_begin = kg * run, kb_end = std::min(kblocks, kb_begin + run);
        const int64_t n_begin = chunk * N / nb_chunks, n_end = (chunk + 1) * N / nb_chunks;
        float* pad = scratch.get(thread_id());
        float* gyt = pad + Cg * plane;
        float* acc = gyt + band_px * KB;  // [block of the run][tap][channel][KB]
        bool first = true;
        for (int64_t n = n_begin; n < n_end; ++n) {
            for (int64_t band = 0; band < bands; ++band) {
                const int64_t oh0 = band * b, oh1 = std::min(OH, oh0 + b), px = (oh1 - oh0) * OW;
                pad_input_rows(g, x + (n * C + gi * Cg) * H * W, Cg, oh0 * sh,
                               oh0 * sh + band_rows(oh1 - oh0), Wp, plane, pad);
                for (int64_t kb = kb_begin; kb < kb_end; ++kb) {
                    const int64_t k0 = kb * KB, kcount = std::min(KB, Kg - k0);
                    float* acc_kb = acc + (kb - kb_begin) * acc_per_block;
                    dk.gather(grad_y + (n * K + gi * Kg + k0) * P + oh0 * OW, P, kcount, KB, px, gyt);
                    for (int64_t rs = 0; rs < RS; ++rs) {
                        const float* base = pad + (rs / S) * dh * Wp + (rs % S) * dwl;
                        for (int64_t ct = 0; ct < ctiles; ++ct) {
                            const int64_t c0 = ct * pc0;
                            (ct + 1 < ctiles ? full_tile : last_tile)(px, off, base + c0 * plane, plane, nullptr,
                                                                      gyt, nullptr, acc_kb + (rs * Cg + c0) * KB,
                                                                      !first);
                        }
                    }
                }
                first = false;
            }
        }
        float* target = nb_chunks > 1 ? partial + chunk * wsize : grad_w;
        for (int64_t kb = kb_begin; kb < kb_end; ++kb) {
            const int64_t k0 = kb * KB, kcount = std::min(KB, Kg - k0);
            const float* acc_kb = acc + (kb - kb_begin) * acc_per_block;
            for (int64_t j = 0; j < kcount; ++j)
                for (int64_t c = 0; c < Cg; ++c)
                    for (int64_t rs = 0; rs < RS; ++rs)
                        target[((gi * Kg + k0 + j) * Cg + c) * RS + rs] = acc_kb[(rs * Cg + c) * KB + j];
        }
    }
}

}  // namespace

// ---------------------------------------------------------------- forward

// Weights packed once per call into the GEMM's A micro-panels, for every group:
// A(i, k) = w[gi*M*Kred + i*rs + k*cs] for i < M rows and k < Kred (the
// forward's W: M = Kg, Kred = C*R*S; backward data's W^T: M = C*R*S, Kred =
// Kg). Group gi, reduction block p0 (a multiple of kc, kb = its length) and
// row panel i (rows i*mr ...) start at data + gi*Mp*Kred + p0*Mp + i*mr*kb,
// with Mp = M rounded up to mr.
template <typename T>
struct PackedWeights {
    const T* data = nullptr;
    int64_t Mp = 0, Kred = 0, mr = 1;
    // Block of rows [row0, ...) (row0 a multiple of mr) for reduction block p0.
    const T* block(int64_t gi, int64_t row0, int64_t p0, int64_t kb) const {
        return data + gi * Mp * Kred + p0 * Mp + row0 * kb;
    }
};

template <typename T>
PackedWeights<T> pack_weights(const GemmKernel<T>& kr, const T* w, int64_t G, int64_t M, int64_t Kred,
                              int64_t rs, int64_t cs, int nt, T* dst) {
    const int64_t mr = kr.mr, Mp = round_up(M, mr), panels = Mp / mr;
    const int64_t kblocks = ceil_div(Kred, kr.kc);
    const int64_t jobs = G * kblocks * panels;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < jobs; ++t) {
        const FlushDenormals flush_denormals;
        const int64_t panel = t % panels, kblk = (t / panels) % kblocks, gi = t / (panels * kblocks);
        const int64_t p0 = kblk * kr.kc, kb = std::min(kr.kc, Kred - p0), i0 = panel * mr;
        pack_a_strided(w + gi * M * Kred, rs, cs, mr, i0, std::min(mr, M - i0), p0, kb,
                       dst + gi * Mp * Kred + p0 * Mp + i0 * kb, kr.transpose);
    }
    return PackedWeights<T>{dst, Mp, Kred, mr};
}

// n elements of a B row from a zero-padded plane: dst[i] = src[i*sw]. For
// sw == 1 it copies whole chunks of 8, writing (and reading) up to 7 elements
// past the run: the next run overwrites them, and both buffers have that slack
// (chunks of 8, not 16: 7-wide planes copied 16 for 7).
template <typename T>
inline void copy_run(T* __restrict dst, const T* __restrict src, int64_t n, int64_t sw) {
    if (sw == 1) {
        for (int64_t i = 0; i < n; i += 8)
            for (int v = 0; v < 8; ++v) dst[i + v] = src[i + v];
    } else if (sw == 2) {
        for (int64_t i = 0; i < n; ++i) dst[i] = src[2 * i];
    } else {
        for (int64_t i = 0; i < n; ++i) dst[i] = src[i * sw];
    }
}
constexpr int64_t kRunSlack = 16;  // >= copy_run's overrun (at most 7)

// Which forward path takes a layer (conv2d_forward's dispatch), with the
// direct kernel it runs: looked up once, as set_isa() may change the active
// ISA from another thread meanwhile.
enum class ForwardPath { depthwise, pixel_lane, direct, pointwise, gemm };
struct ForwardChoice {
    ForwardPath path;
    const DirectConvKernel* kernel = nullptr;  // pixel_lane, direct, pointwise
};
template <typename T>
ForwardChoice forward_path(const ConvGeometry& g) {
    if (dw::use_direct(g)) return {ForwardPath::depthwise};
    if constexpr (std::is_same_v<T, float>) {
        if (const DirectConvKernel* lk = pixel_lane_kernel(g)) return {ForwardPath::pixel_lane, lk};
        if (const DirectConvKernel* dk = direct_conv_kernel(g, DirectPass::forward)) return {ForwardPath::direct, dk};
        const DirectConvKernel* pk = direct_conv_kernel_for(active_isa());
        if (pk && use_pointwise_direct(g)) return {ForwardPath::pointwise, pk};
    }
    return {ForwardPath::gemm};
}

// The forward GEMM runs over the whole batch of a group: column j is output
// pixel j % P of image j / P, so small planes share panels across images and
// the packed weights are reused for every column tile. A tile's B rows are
// built from zero-padded copies of the input rows it reads (only the channels
// of the current reduction block): every kernel tap then reads runs of output
// row pixels with no bounds checks. Where those copies would be too large, and
// for 1x1 kernels, the rows come from im2col_row; 1x1/s1/p0 rows are copies.
// The weights are w[k][c][r][s], or with w_transposed (1x1 layers only) the
// transposed layer's w[c][k] (backward data: no transposed copy is made).
template <typename T>
void gemm_forward(const ConvGeometry& g, const T* x, const T* w, bool w_transposed, const T* bias, T* y) {
    const int64_t N = g.batch, C = g.in_channels, H = g.in_h, W = g.in_w, K = g.out_channels;
    const int64_t R = g.kernel_h, S = g.kernel_w, G = g.groups;
    assert(!w_transposed || R * S == 1);  // the indexing below is w[c][k] only for 1x1
    const int64_t Cg = C / G, Kg = K / G, OH = g.out_h, OW = g.out_w, P = OH * OW;
    const int64_t RS = R * S, CRS = Cg * RS;
    const int64_t sh = g.stride_h, sw = g.stride_w, dh = g.dilation_h, dwl = g.dilation_w;
    const GemmKernel<T> kr = gemm_kernel<T>();
    const int64_t mr = kr.mr, nr = kr.nr;
    const int nt = threads_for_work(double(N) * K * P * CRS);
    const bool pointwise = is_pointwise_identity(g);
    // A(i, k) = w[gi*Kg*CRS + i*w_rs + k*w_cs] for group gi.
    const int64_t w_rs = w_transposed ? 1 : CRS, w_cs = w_transposed ? Kg : 1;

    // Column tiles: inside one image for large planes, across the batch for
    // small ones. Tasks are column tiles times chunks of output rows.
    const int64_t J = N * P;
    const int64_t mpanels = ceil_div(Kg, mr);
    int64_t nb_tile, msplit;
    if (P >= kr.nc) {
        // Few tiles are made a multiple of the thread count; rows are split
        // only when there are fewer tiles than threads.
        nb_tile = balanced_tile(P, kr.nc, nr, N * G, nt);
        msplit = split_for(N * G * ceil_div(P, nb_tile), mpanels, int64_t(nt));
    } else {
        // Few tiles are made a multiple of the thread count, rows split only
        // when there are fewer tiles than threads; unless a split has a
        // clearly (10%) shorter run: rounds of tasks per thread times the
        // largest task's register tiles, plus one per B panel it packs (with
        // the row chunks the C buffer's cap below makes). Batch-2 2048 -> 512
        // 1x1 at 7x7 (98 columns) had two tiles of 64 and 34 columns; two
        // chunks of rows over all 98 columns ran 1.08-1.15x faster.
        auto cost_of = [&](int64_t tile, int64_t sp, int64_t& tasks) {
            const int64_t cap = std::max<int64_t>(1, (int64_t(1) << 18) / tile / mr);  // row panels per chunk
            const int64_t panels_per_chunk = std::min(ceil_div(mpanels, sp), cap);
            tasks = G * ceil_div(J, tile) * ceil_div(mpanels, panels_per_chunk);
            return ceil_div(tasks, int64_t(nt)) * (tile / nr) * (panels_per_chunk + 1);
        };
        const int64_t min_tiles = ceil_div(J, kr.nc), max_tiles = ceil_div(J, 4 * nr);
        int64_t tiles = min_tiles;
        if (G * tiles < 8 * int64_t(nt)) {
            int64_t t = tiles;
            while (t < max_tiles && (G * t) % nt != 0) ++t;
            if ((G * t) % nt == 0) tiles = t;
        }
        nb_tile = round_up(ceil_div(J, tiles), nr);
        msplit = split_for(G * ceil_div(J, nb_tile), mpanels, int64_t(nt));
        int64_t best_tasks = 0;
        const int64_t usual = cost_of(nb_tile, msplit, best_tasks);
        int64_t best = usual;
        for (int64_t t = min_tiles; t <= std::min(std::max(min_tiles, max_tiles), min_tiles + 64); ++t) {
            const int64_t tile = round_up(ceil_div(J, t), nr);
            for (int64_t sp = 1; sp <= mpanels; sp *= 2) {
                int64_t tasks = 0;
                const int64_t cost = cost_of(tile, sp, tasks);
                if (10 * cost < 9 * usual && (cost < best || (cost == best && tasks < best_tasks))) {
                    best = cost; best_tasks = tasks; nb_tile = tile; msplit = sp;
                }
                if (tasks >= 8 * int64_t(nt)) break;
            }
        }
    }
    nb_tile = std::min(nb_tile, J);
    const int64_t tiles_per_image = P >= kr.nc ? ceil_div(P, nb_tile) : 0;
    const int64_t tiles = tiles_per_image ? N * tiles_per_image : ceil_div(J, nb_tile);
    // Column range of tile t.
    auto tile_range = [&](int64_t t, int64_t& j0, int64_t& j1) {
        if (tiles_per_image) {
            const int64_t n = t / tiles_per_image, q0 = (t % tiles_per_image) * nb_tile;
            j0 = n * P + q0;
            j1 = n * P + std::min(P, q0 + nb_tile);
        } else {
            j0 = t * nb_tile;
            j1 = std::min(J, j0 + nb_tile);
        }
    };

    // Output rows per task (as split above), fewer where the C block of a
    // tile that spans images would be too large.
    const int64_t cbuf_budget = int64_t(1) << 18;  // elements of C per thread
    int64_t mrows = ceil_div(mpanels, msplit) * mr;
    mrows = std::min(mrows, std::max<int64_t>(mr, cbuf_budget / nb_tile / mr * mr));
    const int64_t mchunks = ceil_div(Kg, mrows);
    const int64_t tasks = G * tiles * mchunks;

    // Zero-padded input rows of one reduction block: per image of a tile, per
    // channel of the block, the padded rows its output rows read.
    // (Saturating: huge paddings or dilations are legal and just go unpadded.)
    const int64_t Wp = padded_row_width(g);
    const int64_t oh_span = std::min(OH, ceil_div(nb_tile, OW) + 1);
    const int64_t rows_cap = padded_band_rows(g, oh_span);
    const int64_t plane_cap = sat_add(sat_mul(rows_cap, Wp), kRunSlack);
    const int64_t imgs_cap = std::min(N, ceil_div(nb_tile, P) + 1);
    const int64_t ch_cap = std::min(Cg, kr.kc / RS + 2);
    const int64_t pad_elems = sat_mul(sat_mul(imgs_cap, ch_cap), plane_cap);
    // (1x1 layers read each input value once: strided or padded ones gather
    // their B rows straight from x, the padded copy would only add traffic.)
    const bool padded = !pointwise && RS > 1 && pad_elems <= (int64_t(1) << 19);

    // Weights read in place (w's rows, or columns, are A's rows) where the kernel can and
    // few columns would reuse a packed copy: packing reads and writes every
    // weight once, a quarter of the time of batch-1 layers at 7x7 with 512
    // channels (Zen 3, 2 threads: 512 -> 512 3x3 4.0 -> 2.9 ms, 512 -> 2048
    // 1x1 1.8 -> 1.1 ms, 256 -> 1024 1x1 at 14x14 1.20 -> 1.00 ms). With
    // thousands of columns packing is noise, and rows 4 KiB apart (1024
    // input channels) ran 5% slower in place. Columns (w_transposed) are
    // read 6 values per cache line and reduction index: in place 1.13-1.18x
    // at 49 columns (batch-1 2048 <-> 512 at 7x7), even at 98-147, 0.88-0.93x
    // at 196-392 against packing them. (AVX-512 has the same in-place
    // kernels and limits; measured only on Zen 3, checked in the emulated
    // AVX-512 test build.)
    const bool weights_in_place =
        w_transposed ? kr.ukr_cols != nullptr && J <= 128 : kr.ukr_rows != nullptr && J <= 1024;
    Scratch<T> packed_w(1, weights_in_place ? 1 : G * round_up(Kg, mr) * CRS, 2);
    const PackedWeights<T> pw =
        weights_in_place ? PackedWeights<T>{} : pack_weights(kr, w, G, Kg, CRS, w_rs, w_cs, nt, packed_w.get(0));
    const int64_t rowlen = nb_tile + kRunSlack;
    Scratch<T> scratch(nt, gemm_scratch_size(kr) + rowlen + mrows * nb_tile + (padded ? pad_elems : 0));

#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
        const FlushDenormals flush_denormals;
        const int64_t mc = t % mchunks, tile = (t / mchunks) % tiles, gi = t / (mchunks * tiles);
        int64_t jt0, jt1;
        tile_range(tile, jt0, jt1);
        const int64_t cols = jt1 - jt0;
        const int64_t m0 = mc * mrows, mcount = std::min(mrows, Kg - m0);
        T* buf = scratch.get(thread_id());
        T* rowbuf = buf + gemm_scratch_size(kr);
        T* cbuf = rowbuf + rowlen;
        T* pbuf = cbuf + mrows * nb_tile;

        auto pack_a = [&](int64_t i0, int64_t, int64_t p0, int64_t kb, T*) -> const T* {
            return pw.block(gi, m0 + i0, p0, kb);
        };
        auto in_place_a = [&](int64_t i0, int64_t, int64_t p0, int64_t, T*) -> InPlaceA<T> {
            return {w + gi * Kg * CRS + (m0 + i0) * w_rs + p0 * w_cs, w_transposed ? Kg : CRS, w_transposed};
        };
        // Calls f(image, q_lo, q_hi) for each image segment of columns [j0, j1).
        auto for_segments = [&](int64_t j0, int64_t j1, auto&& f) {
            for (int64_t n = j0 / P; n * P < j1; ++n)
                f(n, std::max(j0 - n * P, int64_t(0)), std::min(j1 - n * P, P));
        };
        auto pack_b = [&](int64_t p0, int64_t kb, int64_t jr0, int64_t nbc, T* dst) {
            const int64_t j0 = jt0 + jr0, j1 = j0 + nbc, n_first = j0 / P;
            const int64_t c_first = p0 / RS, c_last = (p0 + kb - 1) / RS;
            if (padded) {
                for_segments(j0, j1, [&](int64_t n, int64_t q_lo, int64_t q_hi) {
                    const int64_t pr0 = q_lo / OW * sh, pr1 = (q_hi - 1) / OW * sh + (R - 1) * dh + 1;
                    for (int64_t c = c_first; c <= c_last; ++c) {
                        T* plane = pbuf + ((n - n_first) * ch_cap + (c - c_first)) * plane_cap;
                        const T* xp = x + ((n * C + gi * Cg + c) * H) * W;
                        for (int64_t pr = pr0; pr < pr1; ++pr) {
                            T* d = plane + (pr - pr0) * Wp;
                            const int64_t ih = pr - g.pad_top;
                            const int64_t copy = (ih >= 0 && ih < H) ? std::min(W, Wp - g.pad_left) : 0;
                            const int64_t left = copy > 0 ? g.pad_left : Wp;
                            for (int64_t i = 0; i < left; ++i) d[i] = T(0);
                            if (copy > 0) std::memcpy(d + left, xp + ih * W, sizeof(T) * static_cast<size_t>(copy));
                            for (int64_t i = left + copy; i < Wp; ++i) d[i] = T(0);
                        }
                        // The slack after the last row read by copy_run's chunks of 8.
                        T* end = plane + (pr1 - pr0) * Wp;
                        for (int64_t i = 0; i < kRunSlack; ++i) end[i] = T(0);
                    }
                });
            }
            for (int64_t kk = 0; kk < kb; ++kk) {
                const int64_t k = p0 + kk, c = k / RS, rs = k % RS, r = rs / S, s = rs % S;
                T* d = rowbuf;
                for_segments(j0, j1, [&](int64_t n, int64_t q_lo, int64_t q_hi) {
                    const int64_t len = q_hi - q_lo;
                    if (pointwise) {
                        std::memcpy(d, x + (n * C + gi * Cg + c) * P + q_lo, sizeof(T) * static_cast<size_t>(len));
                    } else if (!padded) {
                        im2col_row(g, x + (n * C + gi * Cg + c) * H * W, r, s, q_lo, len, d);
                    } else {
                        const T* plane = pbuf + ((n - n_first) * ch_cap + (c - c_first)) * plane_cap;
                        // Runs of output rows: (oh, ow) advanced, not divided out per run.
                        int64_t ow = q_lo % OW;
                        const T* src = plane + (r * dh) * Wp + s * dwl;
                        T* dd = d;
                        for (int64_t q = q_lo; q < q_hi;) {
                            const int64_t run = std::min(OW - ow, q_hi - q);
                            copy_run(dd, src + ow * sw, run, sw);
                            dd += run;
                            q += run;
                            ow = 0;
                            if (q < q_hi) src += sh * Wp;  // (not past the last row: huge strides are legal)
                        }
                    }
                    d += len;
                });
                kr.split_row(rowbuf, nbc, kb * nr, dst + kk * nr);
            }
        };

        const T* bias_g = bias ? bias + gi * Kg + m0 : nullptr;
        auto run = [&](T* cdst, int64_t ldc) {
            if (weights_in_place)
                gemm_run(kr, mcount, cols, CRS, in_place_a, pack_b, cdst, ldc, false, bias_g, buf);
            else
                gemm_run(kr, mcount, cols, CRS, pack_a, pack_b, cdst, ldc, false, bias_g, buf);
        };
        const int64_t n0 = jt0 / P;
        if ((jt1 - 1) / P == n0) {  // one image: straight into y
            run(y + (n0 * K + gi * Kg + m0) * P + (jt0 - n0 * P), P);
        } else {
            run(cbuf, cols);
            for_segments(jt0, jt1, [&](int64_t n, int64_t q_lo, int64_t q_hi) {
                const T* cs = cbuf + (n * P + q_lo - jt0);
                T* yc = y + (n * K + gi * Kg + m0) * P + q_lo;
                for (int64_t i = 0; i < mcount; ++i)
                    std::memcpy(yc + i * P, cs + i * cols, sizeof(T) * static_cast<size_t>(q_hi - q_lo));
            });
        }
    }
}

template <typename T>
void conv2d_forward(const ConvGeometry& g, const T* x, const T* w, const T* bias, T* y) {
    const FlushDenormals flush_denormals;  // serial parts too (see conv_common.h)
    if (g.y_size() <= 0) return;
    const ForwardChoice choice = forward_path<T>(g);
    switch (choice.path) {
        case ForwardPath::depthwise: return dw::forward(g, x, w, bias, y);
        case ForwardPath::pixel_lane:
            if constexpr (std::is_same_v<T, float>) return pixel_lane_forward(g, x, w, bias, y, *choice.kernel);
            break;
        case ForwardPath::direct:
            if constexpr (std::is_same_v<T, float>) return direct_conv_forward(g, x, w, bias, y, *choice.kernel);
            break;
        case ForwardPath::pointwise:
            if constexpr (std::is_same_v<T, float>) return pointwise_direct_forward(g, x, w, bias, y, *choice.kernel);
            break;
        case ForwardPath::gemm: break;
    }
    gemm_forward(g, x, w, false, bias, y);
}

// ---------------------------------------------------------------- backward data

template <typename T>
void conv2d_backward_data(const ConvGeometry& g, const T* grad_y, const T* w, T* grad_x) {
    const FlushDenormals flush_denormals;  // serial parts too (see conv_common.h)
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

    // Stride 1: grad_x is the forward convolution of grad_y (padding
    // (R-1)*d - pad) with the flipped, transposed weight, on conv2d_forward's
    // fast paths (measured 1.2-1.7x faster than col2im below, float, 3x3 and
    // 5x5 layers from 8 to 512 channels; for 1x1 layers 0.92-1.33x, median
    // 1.05x, the per-image GEMM below, which repacks W^T for every image and
    // runs one image's columns at a time; measured with the transposed copy
    // that 1x1 layers on the GEMM path no longer make).
    // Not for 1-7 input channels per group (the forward's output channels):
    // vector lanes would idle, unless the planes are small.
    const bool as_forward = Cg >= 8 || (CRS <= 256 && g.w_size() <= (int64_t(1) << 16) &&
                                        H * (W + (S - 1) * g.dilation_w) <= kr.nc);
    if (is_pointwise_identity(g) && !as_forward) {
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
            const FlushDenormals flush_denormals;
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

    if (g.stride_h == 1 && g.stride_w == 1 && as_forward && g.pad_top <= (R - 1) * g.dilation_h &&
        g.pad_left <= (S - 1) * g.dilation_w) {
        ConvGeometry g2 = g;
        g2.in_channels = K; g2.out_channels = C;
        g2.in_h = g.out_h; g2.in_w = g.out_w;
        g2.out_h = H; g2.out_w = W;
        g2.pad_top = (R - 1) * g.dilation_h - g.pad_top;
        g2.pad_left = (S - 1) * g.dilation_w - g.pad_left;
        // A 1x1 layer's W^T is W read by columns: the GEMM takes it as it is
        // (the transposed copy below took as long as the GEMM itself for
        // batch-1 512 -> 2048 at 7x7).
        if (RS == 1 && forward_path<T>(g2).path == ForwardPath::gemm)
            return gemm_forward<T>(g2, grad_y, w, true, static_cast<const T*>(nullptr), grad_x);
        // w2[gi*Cg + c][k][r][s] = w[gi*Kg + k][c][R-1-r][S-1-s], in 16x16
        // (k, c) blocks across the threads (done serially and column by
        // column it had taken ~1/3 of a 512x2048 1x1 layer's backward data).
        // 1x1 layers get here for the pointwise and depthwise forwards.
        Scratch<T> wt(1, g.w_size(), 1);
        T* w2 = wt.get(0);
        const int64_t blk = 16, kblocks = ceil_div(Kg, blk), cblocks = ceil_div(Cg, blk);
#pragma omp parallel for num_threads(threads_for_work(double(g.w_size()), 1 << 16)) schedule(static)
        for (int64_t job = 0; job < G * kblocks * cblocks; ++job) {
            const int64_t gi = job / (kblocks * cblocks), kb = (job / cblocks) % kblocks, cb = job % cblocks;
            const int64_t k0 = kb * blk, k1 = std::min(Kg, k0 + blk);
            const int64_t c0 = cb * blk, c1 = std::min(Cg, c0 + blk);
            const T* wg = w + gi * Kg * Cg * RS;
            T* w2g = w2 + gi * Cg * Kg * RS;
            if (RS == 1) {  // a plain transpose (1x1 layers)
                for (int64_t c = c0; c < c1; ++c)
                    for (int64_t k = k0; k < k1; ++k) w2g[c * Kg + k] = wg[k * Cg + c];
                continue;
            }
            for (int64_t k = k0; k < k1; ++k)
                for (int64_t c = c0; c < c1; ++c) {
                    const T* src = wg + (k * Cg + c) * RS;
                    T* dst = w2g + (c * Kg + k) * RS;
                    for (int64_t i = 0; i < RS; ++i) dst[i] = src[RS - 1 - i];
                }
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
    // W^T packed once per call (it was repacked per image and row block);
    // row blocks that do not start on a panel boundary pack their own.
    Scratch<T> packed_w(1, G * round_up(CRS, mr) * Kg, 2);
    const PackedWeights<T> pw = pack_weights(kr, w, G, CRS, Kg, int64_t(1), CRS, nt, packed_w.get(0));
    Scratch<T> scratch(nt, gemm_scratch_size(kr) + rb * col_ld);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
        const FlushDenormals flush_denormals;
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
                auto pack_a = [&](int64_t i0, int64_t mb, int64_t p0, int64_t kb, T* dst) -> const T* {
                    if ((row0 + i0) % mr == 0) return pw.block(gi, row0 + i0, p0, kb);
                    pack_a_strided(wg + row0, int64_t(1), CRS, mr, i0, mb, p0, kb, dst);
                    return dst;
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
    // Reduction blocks of whole images when planes are small (fewer, longer
    // packed segments); a function of the geometry only.
    GemmKernel<T> kr = gemm_kernel<T>();
    if (P < kr.kc) kr.kc = kr.kc / P * P;
    const int nt = threads_for_work(double(N) * K * P * CRS);
    const int64_t mr = kr.mr, nr = kr.nr;
    const bool pointwise = is_pointwise_identity(g);
    // Split outputs: columns (C*R*S) then rows (K), or rows first when there
    // are more of them: every task packs all of the other operand's rows for
    // its reduction (grad_y's Kg rows, or the CRS im2col rows), so split the
    // dimension whose operand is larger (a 2048x512 1x1 layer packed its
    // grad_y once per column chunk: ~1/3 of its time).
    const int64_t npanels = ceil_div(CRS, nr), mpanels = ceil_div(Kg, mr);
    const bool rows_first = Kg > CRS;
    int64_t nsplit = 1, msplit = 1;
    if (rows_first) {
        msplit = split_for(nb_chunks * G, mpanels, 2 * int64_t(nt));
        nsplit = split_for(nb_chunks * G * msplit, npanels, 2 * int64_t(nt));
    } else {
        nsplit = split_for(nb_chunks * G, npanels, 2 * int64_t(nt));
        msplit = split_for(nb_chunks * G * nsplit, mpanels, 2 * int64_t(nt));
    }
    const int64_t ncols = ceil_div(npanels, nsplit) * nr;
    const int64_t nchunks = ceil_div(CRS, ncols);
    const int64_t mrows = ceil_div(mpanels, msplit) * mr;
    const int64_t mchunks = ceil_div(Kg, mrows);
    const int64_t tasks = nb_chunks * G * nchunks * mchunks;

    Scratch<T> scratch(nt, gemm_scratch_size(kr) + int64_t(kr.nr) * kr.kc);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
        const FlushDenormals flush_denormals;
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
        // One GEMM over the chunk's images: reduction index l is pixel l % P
        // of image n_begin + l / P (summed in increasing l, in kc blocks that
        // depend on the geometry only), so the C block is loaded and stored
        // once per kc block rather than once per image.
        auto for_segments = [&](int64_t p0, int64_t kb, auto&& f) {
            for (int64_t l = p0; l < p0 + kb;) {
                const int64_t n = n_begin + l / P, q = l % P, len = std::min(P - q, p0 + kb - l);
                f(n, q, len, l - p0);
                l += len;
            }
        };
        auto pack_a = [&](int64_t i0, int64_t mb, int64_t p0, int64_t kb, T* dst) {
            for (int64_t ip = 0; ip < mb; ip += mr) {
                T* panel = dst + (ip / mr) * kb * mr;
                for_segments(p0, kb, [&](int64_t n, int64_t q, int64_t len, int64_t l0) {
                    const T* yg = grad_y + (n * K + gi * Kg + m0) * P;
                    pack_a_strided(yg, P, int64_t(1), mr, i0 + ip, std::min(mr, mb - ip), q, len,
                                   panel + l0 * mr, kr.transpose);
                });
            }
        };
        auto pack_b = [&](int64_t p0, int64_t kb, int64_t jc, int64_t nb, T* dst) {
            // Per panel: nr im2col rows (reduction indices p0..p0+kb) side by
            // side, then one transpose into the panel. Pointwise rows inside
            // one image are read in place.
            const bool one_image = (p0 / P) == ((p0 + kb - 1) / P);
            for (int64_t jp = 0; jp < nb; jp += nr) {
                const int64_t nn = std::min(nr, nb - jp);
                const int64_t jfirst = j0 + jc + jp;
                const T* src = rows;
                int64_t ld = kb;
                if (pointwise && nn == nr && one_image) {
                    src = x + ((n_begin + p0 / P) * C + gi * Cg + jfirst) * H * W + p0 % P;
                    ld = H * W;
                } else {
                    for (int64_t jj = 0; jj < nr; ++jj) {
                        T* row = rows + jj * kb;
                        if (jj >= nn) {
                            for (int64_t l = 0; l < kb; ++l) row[l] = T(0);
                            continue;
                        }
                        const int64_t j = jfirst + jj, c = j / RS, rs = j % RS;
                        for_segments(p0, kb, [&](int64_t n, int64_t q, int64_t len, int64_t l0) {
                            const T* xp = x + (n * C + gi * Cg + c) * H * W;
                            if (pointwise) std::memcpy(row + l0, xp + q, sizeof(T) * static_cast<size_t>(len));
                            else im2col_row(g, xp, rs / S, rs % S, q, len, row + l0);
                        });
                    }
                }
                kr.transpose(src, ld, nr, kb, dst + (jp / nr) * kb * nr);
            }
        };
        gemm_run(kr, mcount, jcount, (n_end - n_begin) * P, pack_a, pack_b, cptr, CRS, false,
                 static_cast<const T*>(nullptr), buf);
    }
}


template <typename T>
void conv2d_backward_weight(const ConvGeometry& g, const T* grad_y, const T* x, T* grad_w) {
    const FlushDenormals flush_denormals;  // serial parts too (see conv_common.h)
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
    const DirectConvKernel* dk = nullptr;
    if constexpr (std::is_same_v<T, float>) dk = direct_conv_kernel(g, DirectPass::backward_weight);
    if (dw::use_direct_backward_weight(g)) {
        dw::backward_weight(g, grad_y, x, grad_w, nb_chunks, partial.get(0));
    } else if (dk) {
        if constexpr (std::is_same_v<T, float>)
            direct_conv_backward_weight(g, grad_y, x, grad_w, nb_chunks, partial.get(0), *dk);
    } else {
        gemm_backward_weight(g, grad_y, x, grad_w, nb_chunks, partial.get(0));
    }
    if (nb_chunks > 1) {
        const T* pp = partial.get(0);
        const int64_t blk = 4096;
        const int64_t blocks = ceil_div(wsize, blk);
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t bi = 0; bi < blocks; ++bi) {
            const FlushDenormals flush_denormals;
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
    const FlushDenormals flush_denormals;  // serial parts too (see conv_common.h)
    const int64_t N = g.batch, K = g.out_channels, P = g.out_h * g.out_w;
    if (K <= 0) return;
    if (N == 0 || P == 0) {  // nothing to sum (and no loop over a huge batch of empty planes)
        std::fill(grad_bias, grad_bias + K, T(0));
        return;
    }
    const int nt = threads_for_work(double(N) * K * P, 1 << 16);
    constexpr int L = 8;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t k = 0; k < K; ++k) {
        const FlushDenormals flush_denormals;
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
