// Direct-convolution tile kernel, shared by conv_direct_<isa>.cpp (each file
// includes this header with its own -m flags; internal linkage keeps the
// copies apart).
//
// One call computes PW pixels times KV vectors of output channels, all in
// registers, over every tap t of the reduction:
//   out[p*KV*L + j] = start + sum_t x_p[off[t]] * w[t*KV*L + j]
// summed in increasing t with one FMA per term (the GEMM path's chain), for
// p < PW and j < KV*L (L = vector lanes), where start is out's own value when
// accumulating (the chain goes on where an earlier call stopped), else init[j]
// or 0. x_p is where pixel p reads, by the addressing mode:
//   unit_stride  in + p           (a run of one output row, stride 1)
//   strided      in + p*sw        (a run of one row with stride sw, or the
//                                  backward-weight tile's channels, sw = plane)
//   per_pixel    px[p]            (any PW pixels, e.g. a run that wraps onto
//                                  the next output rows, so that every tile
//                                  is full on narrow planes)
// The inputs are zero-padded rows, so no read needs a bounds check; w holds
// KV*L channels per tap (zero for channels past the layer's, never stored).
// The pointwise tile below reads x in place instead (full vectors of pixels
// only; the caller zero-pads the last pixels of a plane).
#pragma once
#include <algorithm>
#include <cstdint>
#include <utility>

#ifdef __AVX2__
#include "transpose8x8_avx2.h"
#endif

#include "gemm.h"  // dconv::Addressing, dconv::TileFn

namespace convkit {
namespace dconv {
namespace {

template <class V, int PW, int KV, Addressing A>
void tile(int64_t taps, const int64_t* off, const float* in, int64_t sw, const float* const* px,
          const float* w, const float* init, float* out, bool accumulate) {
    constexpr int L = V::lanes;
    typename V::reg acc[PW][KV];
#pragma GCC unroll 32
    for (int p = 0; p < PW; ++p)
#pragma GCC unroll 4
        for (int v = 0; v < KV; ++v)
            acc[p][v] = accumulate ? V::load(out + p * KV * L + v * L)
                        : init     ? V::load(init + v * L)
                                   : V::zero();
    // Per-pixel bases live in registers for the whole loop (PW <= the ISA's
    // max_px2, chosen so that they do not spill).
    const float* base[A == Addressing::per_pixel ? PW : 1];
#pragma GCC unroll 32
    for (int p = 0; p < (A == Addressing::per_pixel ? PW : 1); ++p)
        base[p] = A == Addressing::per_pixel ? px[p] : in;
    for (int64_t t = 0; t < taps; ++t) {
        const int64_t o = off[t];
        typename V::reg wv[KV];
#pragma GCC unroll 4
        for (int v = 0; v < KV; ++v) wv[v] = V::load(w + (t * KV + v) * L);
#pragma GCC unroll 32
        for (int p = 0; p < PW; ++p) {
            float xv;
            if constexpr (A == Addressing::per_pixel) xv = base[p][o];
            else if constexpr (A == Addressing::unit_stride) xv = base[0][o + p];
            else xv = (base[0] + o)[p * sw];
            const typename V::reg xb = V::set1(xv);
#pragma GCC unroll 4
            for (int v = 0; v < KV; ++v) acc[p][v] = V::fmadd(xb, wv[v], acc[p][v]);
        }
    }
#pragma GCC unroll 32
    for (int p = 0; p < PW; ++p)
#pragma GCC unroll 4
        for (int v = 0; v < KV; ++v) V::store(out + p * KV * L + v * L, acc[p][v]);
}

// The pointwise tile (see DirectConvKernel::pointwise): MR output channels x
// NV vectors of pixels; pixels in lanes, so x is read and y written in place,
// with no packing and no transposes.
template <class V, int MR, int NV>
void pointwise_tile(int64_t channels, const float* x, int64_t ld, const float* w, const float* init, int64_t rows,
                    float* y) {
    constexpr int L = V::lanes;
    typename V::reg acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = init ? V::set1(init[i]) : V::zero();
    for (int64_t c = 0; c < channels; ++c) {
        typename V::reg xv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) xv[v] = V::load(x + c * ld + v * L);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            const typename V::reg wb = V::set1(w[c * MR + i]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(wb, xv[v], acc[i][v]);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
        if (i >= rows) break;
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) V::store(y + i * ld + v * L, acc[i][v]);
    }
}

// The pixel-lane tile (see DirectConvKernel::lane_tile): MR output channels x
// NV vectors of one output row's pixels, taps as offsets into zero-padded
// rows, so y is written in place (no transposes). The operand held across the
// inner loop is the smaller set (MR weights or NV pixel vectors), so
// MR*NV + min(MR, NV) + 1 registers suffice.
template <class V, int MR, int NV>
void lane_tile(int64_t taps, const int64_t* off, const float* in, const float* w, int64_t wld, const float* init,
               int64_t last, float* y, int64_t ld) {
    constexpr int L = V::lanes;
    auto at = [last](int v) { return v + 1 < NV ? int64_t(v) * L : last; };
    typename V::reg acc[MR][NV];
#pragma GCC unroll 24
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = init ? V::set1(init[i]) : V::zero();
    for (int64_t t = 0; t < taps; ++t) {
        const float* xt = in + off[t];
        const float* wt = w + t * wld;
        if constexpr (NV <= MR) {
            typename V::reg xv[NV];
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) xv[v] = V::load(xt + at(v));
#pragma GCC unroll 24
            for (int i = 0; i < MR; ++i) {
                const typename V::reg wb = V::set1(wt[i]);
#pragma GCC unroll 4
                for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(wb, xv[v], acc[i][v]);
            }
        } else {
            typename V::reg wb[MR];
#pragma GCC unroll 24
            for (int i = 0; i < MR; ++i) wb[i] = V::set1(wt[i]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) {
                const typename V::reg xv = V::load(xt + at(v));
#pragma GCC unroll 24
                for (int i = 0; i < MR; ++i) acc[i][v] = V::fmadd(wb[i], xv, acc[i][v]);
            }
        }
    }
#pragma GCC unroll 24
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) V::store(y + i * ld + at(v), acc[i][v]);
}

template <class V, int NV, int... MRs>
LaneTileFn pick_lane(int mr, std::integer_sequence<int, MRs...>) {
    LaneTileFn fns[] = {&lane_tile<V, MRs + 1, NV>...};
    return fns[mr - 1];
}

// The pixel-lane tile for mr channels x nv vectors (mr * nv <= V::lane_acc,
// 1 <= nv <= 4).
template <class V>
LaneTileFn lane_tile_for(int mr, int nv) {
    constexpr int A = V::lane_acc;
    switch (nv) {
        case 1: return pick_lane<V, 1>(mr, std::make_integer_sequence<int, A>());
        case 2: return pick_lane<V, 2>(mr, std::make_integer_sequence<int, A / 2>());
        case 3: return pick_lane<V, 3>(mr, std::make_integer_sequence<int, A / 3>());
        default: return pick_lane<V, 4>(mr, std::make_integer_sequence<int, A / 4>());
    }
}

// y[j*ystride + p] = acc[p*kb + j] for j < kcount, p < npix: a band's sums
// ([pixel][channel block]) into NCHW rows, in 8x8 register transposes (the
// scalar loop was ~1/3 of the time of 8 -> 16 channel 3x3 layers).
inline void store_channels(const float* acc, int64_t kb, int64_t kcount, int64_t npix, float* y,
                           int64_t ystride) {
    int64_t p = 0;
#ifdef __AVX2__
    const int64_t k8 = kcount / 8 * 8;
    for (; p + 8 <= npix; p += 8) {
        for (int64_t j = 0; j < k8; j += 8) transpose8x8_f32(acc + p * kb + j, kb, y + j * ystride + p, ystride);
        // kb is a multiple of 8: the last block's rows are there to read.
        if (k8 < kcount)
            transpose8x8_f32_part(acc + p * kb + k8, kb, 8, y + k8 * ystride + p, ystride, kcount - k8, 8);
    }
#endif
    for (; p < npix; ++p)
        for (int64_t j = 0; j < kcount; ++j) y[j * ystride + p] = acc[p * kb + j];
}

// The inverse: dst[p*kb + j] = src[j*sstride + p] for j < kcount and 0 for
// kcount <= j < kb, p < npix (grad_y's channels per pixel, for the
// backward-weight tiles).
inline void gather_channels(const float* src, int64_t sstride, int64_t kcount, int64_t kb, int64_t npix,
                            float* dst) {
    int64_t p = 0;
#ifdef __AVX2__
    const int64_t k8 = kcount / 8 * 8;
    for (; p + 8 <= npix; p += 8) {
        for (int64_t j = 0; j < k8; j += 8) transpose8x8_f32(src + j * sstride + p, sstride, dst + p * kb + j, kb);
        // Channels past kcount as zeros (kb is a multiple of 8).
        for (int64_t j = k8; j < kb; j += 8) {
            const int64_t rows = std::max<int64_t>(0, kcount - j);
            const float* s = rows > 0 ? src + j * sstride + p : src;  // no row read when 0
            transpose8x8_f32_part(s, sstride, rows, dst + p * kb + j, kb, 8, 8);
        }
    }
#endif
    for (; p < npix; ++p)
        for (int64_t j = 0; j < kb; ++j) dst[p * kb + j] = j < kcount ? src[j * sstride + p] : 0.f;
}

// Table entry for PW pixels (1 <= PW <= sizeof...(PWs)).
template <class V, int KV, Addressing A, int... PWs>
TileFn pick(int pw, std::integer_sequence<int, PWs...>) {
    TileFn fns[] = {&tile<V, PWs + 1, KV, A>...};
    return fns[pw - 1];
}

template <class V, int KV>
TileFn pick_rows(int pw, Addressing a) {
    constexpr int max_pw = KV == 1 ? V::max_pw1 : V::max_pw2;
    return a == Addressing::unit_stride
               ? pick<V, KV, Addressing::unit_stride>(pw, std::make_integer_sequence<int, max_pw>())
               : pick<V, KV, Addressing::strided>(pw, std::make_integer_sequence<int, max_pw>());
}

// The tile for pw pixels, kv vectors and an addressing mode; per_pixel exists
// for kv == 2 and pw <= V::max_px2 only (nullptr otherwise).
template <class V>
TileFn tile_for(int pw, int kv, Addressing a) {
    if (a == Addressing::per_pixel) {
        if constexpr (V::max_px2 > 0) {
            if (kv == 2 && pw <= V::max_px2)
                return pick<V, 2, Addressing::per_pixel>(pw, std::make_integer_sequence<int, V::max_px2>());
        }
        return nullptr;
    }
    return kv == 1 ? pick_rows<V, 1>(pw, a) : pick_rows<V, 2>(pw, a);
}

}  // namespace
}  // namespace dconv
}  // namespace convkit
