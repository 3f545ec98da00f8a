// Depthwise kernels (dilation 1, any padding, stride_w 1 or 2, any stride_h;
// forward for any R x S with 3x3 unrolled, backward weight 3x3) on a
// zero-padded input band; compiled once per ISA file
// (dwconv_{generic,avx2,avx512}.cpp), dispatched from conv2d_depthwise.cpp.
//
// Padded band: xp[i * ldx + j] (i: band row, j: padded column); the caller
// zero-fills everything outside the real input, including the columns that
// the last (partial) vector chunk reads beyond the output width, so every
// read below is in bounds and branch-free. ldx >= round_up(OW, kDwChunk) * sw + S.
//
// Order of every sum is fixed by the geometry (and the ISA's FMA use):
//   forward   y = bias + w0*x0 + w1*x1 + ...   (taps row-major)
//   weight    lanes[t * kDwLanes + (ow % kDwLanes)] += gy * x, over the band's
//             output rows then columns in increasing order.
#pragma once
#include <cstdint>

#include "cpu_features.h"

#ifdef __AVX2__
#include <immintrin.h>

#include "transpose8x8_avx2.h"
#endif

namespace convkit {
namespace dw {

constexpr int kDwChunk = 64;  // forward: output columns per vector block (max)
constexpr int kDwLanes = 32;  // backward weight: accumulator lanes per tap

namespace {

// One block of B output columns starting at j; stores the first n (<= B).
template <typename T, int B, int SW>
inline void dw3_fwd_block(const T* __restrict x0, const T* __restrict x1, const T* __restrict x2,
                          const T* __restrict w, T bias, T* __restrict y, int64_t j, int n) {
    T acc[B];
    for (int v = 0; v < B; ++v) acc[v] = bias;
    const T* rows[3] = {x0 + j * SW, x1 + j * SW, x2 + j * SW};
    for (int r = 0; r < 3; ++r) {
        const T* __restrict xr = rows[r];
        const T w0 = w[3 * r], w1 = w[3 * r + 1], w2 = w[3 * r + 2];
        for (int v = 0; v < B; ++v) acc[v] += w0 * xr[v * SW];
        for (int v = 0; v < B; ++v) acc[v] += w1 * xr[v * SW + 1];
        for (int v = 0; v < B; ++v) acc[v] += w2 * xr[v * SW + 2];
    }
    if (n == B) {
        for (int v = 0; v < B; ++v) y[j + v] = acc[v];
    } else {
        for (int v = 0; v < n; ++v) y[j + v] = acc[v];
    }
}

template <typename T, int SW>
inline void dw3_fwd_rows(const T* xp, int64_t ldx, const T* w, T bias, T* y, int64_t rows,
                         int64_t OW, int64_t sh) {
    constexpr int B = kDwChunk * 4 / int(sizeof(T));  // 64 floats / 32 doubles
    constexpr int B2 = B / 2, B4 = B / 4;
    for (int64_t i = 0; i < rows; ++i) {
        const T* x0 = xp + i * sh * ldx;
        const T* x1 = x0 + ldx;
        const T* x2 = x1 + ldx;
        T* yr = y + i * OW;
        int64_t j = 0;
        for (; j + B <= OW; j += B) dw3_fwd_block<T, B, SW>(x0, x1, x2, w, bias, yr, j, B);
        const int64_t rem = OW - j;
        if (rem > B2) dw3_fwd_block<T, B, SW>(x0, x1, x2, w, bias, yr, j, int(rem));
        else if (rem > B4) dw3_fwd_block<T, B2, SW>(x0, x1, x2, w, bias, yr, j, int(rem));
        else if (rem > 0) dw3_fwd_block<T, B4, SW>(x0, x1, x2, w, bias, yr, j, int(rem));
    }
}

// Any R x S kernel (taps in runtime loops, row-major; the same sum order as
// the 3x3 blocks): NR output rows (row i reads from x0 + i*row_step) times
// one block of B output columns starting at j; stores the first n (<= B).
// Narrow rows go NR = 2 at a time so that enough independent accumulators
// cover the FMA latency (4 vectors alone ran at half the FMA rate).
template <typename T, int B, int SW, int NR>
inline void dwk_fwd_block(const T* __restrict x0, int64_t row_step, int64_t ldx, int64_t R, int64_t S,
                          const T* __restrict w, T bias, T* __restrict y, int64_t ystep, int64_t j, int n) {
    T acc[NR][B];
    for (int i = 0; i < NR; ++i)
        for (int v = 0; v < B; ++v) acc[i][v] = bias;
    for (int64_t r = 0; r < R; ++r) {
        for (int64_t s = 0; s < S; ++s) {
            const T ws = w[r * S + s];
            for (int i = 0; i < NR; ++i) {
                const T* __restrict xr = x0 + i * row_step + r * ldx + j * SW + s;
                for (int v = 0; v < B; ++v) acc[i][v] += ws * xr[v * SW];
            }
        }
    }
    for (int i = 0; i < NR; ++i) {
        if (n == B) {
            for (int v = 0; v < B; ++v) y[i * ystep + j + v] = acc[i][v];
        } else {
            for (int v = 0; v < n; ++v) y[i * ystep + j + v] = acc[i][v];
        }
    }
}

template <typename T, int SW>
inline void dwk_fwd_rows(const T* xp, int64_t ldx, int64_t R, int64_t S, const T* w, T bias, T* y,
                         int64_t rows, int64_t OW, int64_t sh) {
    constexpr int B = kDwChunk * 4 / int(sizeof(T));
    constexpr int B2 = B / 2;
    // (One row: no step; a huge stride_h with one output row is legal.)
    const int64_t step = rows > 1 ? sh * ldx : 0;
    int64_t i = 0;
    // Narrow rows: two at a time, in B/2-column blocks even for rows of at
    // most B/4 columns (GCC spilled the B/4-wide blocks: 5x5 on 14- and
    // 7-wide rows ran ~5x slower than on 28-wide ones). The band rows are
    // at least B*sw + S wide, so the extra columns read stay inside.
    if (OW <= B2) {
        for (; i + 2 <= rows; i += 2)
            dwk_fwd_block<T, B2, SW, 2>(xp + i * step, step, ldx, R, S, w, bias, y + i * OW, OW, 0, int(OW));
    }
    for (; i < rows; ++i) {
        const T* x0 = xp + i * step;
        T* yr = y + i * OW;
        int64_t j = 0;
        for (; j + B <= OW; j += B) dwk_fwd_block<T, B, SW, 1>(x0, step, ldx, R, S, w, bias, yr, OW, j, B);
        const int64_t rem = OW - j;
        if (rem > B2) dwk_fwd_block<T, B, SW, 1>(x0, step, ldx, R, S, w, bias, yr, OW, j, int(rem));
        else if (rem > 0) dwk_fwd_block<T, B2, SW, 1>(x0, step, ldx, R, S, w, bias, yr, OW, j, int(rem));
    }
}

template <typename T>
inline void dw_fwd_impl(const T* xp, int64_t ldx, int64_t R, int64_t S, const T* w, T bias, T* y,
                        int64_t rows, int64_t OW, int64_t sh, int64_t sw) {
    if (R == 3 && S == 3) {
        if (sw == 1) dw3_fwd_rows<T, 1>(xp, ldx, w, bias, y, rows, OW, sh);
        else dw3_fwd_rows<T, 2>(xp, ldx, w, bias, y, rows, OW, sh);
    } else {
        if (sw == 1) dwk_fwd_rows<T, 1>(xp, ldx, R, S, w, bias, y, rows, OW, sh);
        else dwk_fwd_rows<T, 2>(xp, ldx, R, S, w, bias, y, rows, OW, sh);
    }
}

// Narrow planes at stride 1 ("flat" forward): a band's zero-padded rows are
// exactly Wp = OW + S - 1 wide and consecutive, so output (i, j) of the band
// reads xp[(i*Wp + j) + r*Wp + s]: for every tap one contiguous run over q =
// i*Wp + j. All q < rows*Wp are computed in blocks of kDwFlatBlock, the S - 1
// columns j >= OW of each row included (no output needs them: dropped), so
// narrow rows fill whole vectors. Each output is bias + taps in (r, s) order,
// one multiply-add each: the banded kernels' order.
#ifdef __AVX512F__
constexpr int kDwFlatBytes = 512;  // 8 zmm of sums per block
#else
constexpr int kDwFlatBytes = 256;  // 8 ymm
#endif
template <typename T>
constexpr int dw_flat_block_len() { return kDwFlatBytes / int(sizeof(T)); }

template <typename T, int B>
inline void dw_flat_block(const T* __restrict xp, int64_t Wp, int64_t R, int64_t S, const T* __restrict w,
                          T bias, T* __restrict v) {
    T acc[B];
    for (int i = 0; i < B; ++i) acc[i] = bias;
    for (int64_t r = 0; r < R; ++r) {
        for (int64_t s = 0; s < S; ++s) {
            const T ws = w[r * S + s];
            const T* __restrict xt = xp + r * Wp + s;
            for (int i = 0; i < B; ++i) acc[i] += ws * xt[i];
        }
    }
    for (int i = 0; i < B; ++i) v[i] = acc[i];
}

// y[i*OW + j] (i < rows, j < OW) from the band xp of rows*Wp + (R-1)*Wp + S-1
// + one block of readable (zero) slack; vbuf: rows*Wp rounded up to a block.
template <typename T>
inline void dw_flat_fwd_impl(const T* xp, int64_t Wp, int64_t R, int64_t S, const T* w, T bias, T* vbuf, T* y,
                             int64_t rows, int64_t OW) {
    constexpr int B = dw_flat_block_len<T>();
    const int64_t V = rows * Wp;
    for (int64_t q = 0; q < V; q += B) dw_flat_block<T, B>(xp + q, Wp, R, S, w, bias, vbuf + q);
    for (int64_t i = 0; i < rows; ++i) {
        const T* __restrict src = vbuf + i * Wp;
        T* __restrict dst = y + i * OW;
        for (int64_t j = 0; j < OW; ++j) dst[j] = src[j];
    }
}

// Small planes ("channels in lanes"): a block of kDwCl planes of one image
// laid out pixel by pixel, xin[(pr*Wp + pc)*kDwCl + l] the zero-padded input of
// lane l's plane, wt[t*kDwCl + l] its tap t, bias[l]; output pixel p of every
// lane from the pixels at base[p] + off[t], PX pixels at a time so that
// their sums overlap. Each output is bias + taps in (r, s) order, one
// multiply-add each: the other paths' order.
constexpr int kDwCl = 16;
#ifdef __AVX512F__
constexpr int kDwClBytes = 512;  // 8 zmm of sums
#else
constexpr int kDwClBytes = 256;  // 8 ymm
#endif

// (GCC vector types: written as plain loops over the lanes GCC kept them
// scalar. Every vector below starts at a multiple of kDwCl elements from the
// 64-byte aligned scratch.)
template <typename T> struct DwClVecOf;
template <> struct DwClVecOf<float> { typedef float type __attribute__((vector_size(4 * kDwCl), aligned(64))); };
template <> struct DwClVecOf<double> { typedef double type __attribute__((vector_size(8 * kDwCl), aligned(64))); };
template <typename T>
using DwClVec = typename DwClVecOf<T>::type;

template <typename T, int PX>
inline void dw_cl_pixels(const T* __restrict xin, const int64_t* __restrict off, int64_t taps,
                         const T* __restrict wt, const T* __restrict bias, const int64_t* __restrict base,
                         T* __restrict out) {
    using V = DwClVec<T>;
    V acc[PX];
    const V b = *reinterpret_cast<const V*>(bias);
    for (int p = 0; p < PX; ++p) acc[p] = b;
    for (int64_t t = 0; t < taps; ++t) {
        const V wv = *reinterpret_cast<const V*>(wt + t * kDwCl);
        for (int p = 0; p < PX; ++p)
            acc[p] += wv * *reinterpret_cast<const V*>(xin + (base[p] + off[t]) * kDwCl);
    }
    for (int p = 0; p < PX; ++p) *reinterpret_cast<V*>(out + p * kDwCl) = acc[p];
}

// out[p*kDwCl + l] for the P output pixels whose padded positions are base[p].
template <typename T>
inline void dw_cl_fwd_impl(const T* xin, const int64_t* off, int64_t taps, const T* wt, const T* bias,
                           const int64_t* base, int64_t P, T* out) {
    constexpr int PX = kDwClBytes / int(sizeof(T) * kDwCl);
    int64_t p = 0;
    for (; p + PX <= P; p += PX) dw_cl_pixels<T, PX>(xin, off, taps, wt, bias, base + p, out + p * kDwCl);
    for (; p < P; ++p) dw_cl_pixels<T, 1>(xin, off, taps, wt, bias, base + p, out + p * kDwCl);
}

// dst[p*kDwCl + l] = src[l*ss + p] for p < n, l < kc (a block's planes to
// pixel-major lanes), in 8x8 register transposes where AVX2 has them.
template <typename T>
inline void dw_cl_to_lanes(const T* src, int64_t ss, int64_t kc, int64_t n, T* dst) {
    int64_t l0 = 0;
#ifdef __AVX2__
    if constexpr (sizeof(T) == 4) {
        for (; l0 + 8 <= kc; l0 += 8) {
            int64_t p = 0;
            for (; p + 8 <= n; p += 8) transpose8x8_f32(src + l0 * ss + p, ss, dst + p * kDwCl + l0, kDwCl);
            for (; p < n; ++p)
                for (int64_t l = l0; l < l0 + 8; ++l) dst[p * kDwCl + l] = src[l * ss + p];
        }
    }
#endif
    for (int64_t l = l0; l < kc; ++l)
        for (int64_t p = 0; p < n; ++p) dst[p * kDwCl + l] = src[l * ss + p];
}

// The inverse: dst[l*ds + p] = src[p*kDwCl + l] for p < n, l < kc.
template <typename T>
inline void dw_cl_from_lanes(const T* src, int64_t kc, int64_t n, T* dst, int64_t ds) {
    int64_t l0 = 0;
#ifdef __AVX2__
    if constexpr (sizeof(T) == 4) {
        for (; l0 + 8 <= kc; l0 += 8) {
            int64_t p = 0;
            for (; p + 8 <= n; p += 8) transpose8x8_f32(src + p * kDwCl + l0, kDwCl, dst + l0 * ds + p, ds);
            for (; p < n; ++p)
                for (int64_t l = l0; l < l0 + 8; ++l) dst[l * ds + p] = src[p * kDwCl + l];
        }
    }
#endif
    for (int64_t l = l0; l < kc; ++l)
        for (int64_t p = 0; p < n; ++p) dst[l * ds + p] = src[p * kDwCl + l];
}

// The padded pixel-major input of a block of kc <= kDwCl planes (plane
// stride hw, rows of W): its first ih1 rows and iw1 columns to xin (Wp padded
// columns; input (ih, iw) at padded (ih + pt, iw + pl)), through tmp (hw *
// kDwCl). The rest of xin (the zero border) is left as it is.
template <typename T>
inline void dw_cl_fill(const T* x, int64_t hw, int64_t W, int64_t kc, int64_t ih1, int64_t iw1, int64_t pt,
                       int64_t pl, int64_t Wp, T* xin, T* tmp) {
    dw_cl_to_lanes(x, hw, kc, hw, tmp);
    for (int64_t ih = 0; ih < ih1; ++ih) {
        T* __restrict d = xin + ((ih + pt) * Wp + pl) * kDwCl;
        const T* __restrict s = tmp + ih * W * kDwCl;
        for (int64_t i = 0; i < iw1 * kDwCl; ++i) d[i] = s[i];
    }
}

// One block of kc <= kDwCl planes: fills xin (dw_cl_fill), runs the block
// and writes its P outputs per plane (stride P).
template <typename T>
inline void dw_cl_block_impl(const T* x, int64_t hw, int64_t W, int64_t kc, int64_t ih1, int64_t iw1, int64_t pt,
                             int64_t pl, int64_t Wp, const int64_t* off, int64_t taps, const T* wt, const T* bias,
                             const int64_t* base, int64_t P, T* xin, T* tmp, T* out, T* y) {
    dw_cl_fill(x, hw, W, kc, ih1, iw1, pt, pl, Wp, xin, tmp);
    dw_cl_fwd_impl(xin, off, taps, wt, bias, base, P, out);
    dw_cl_from_lanes(out, kc, P, y, P);
}

// Backward weight of one image of a block (the forward's layout): for every
// tap t and lane l, acc[(t*4 + j)*kDwCl + l] += gy(p) * x(base[p] + off[t]) over
// the pixels p, pixel p into partial j = p % 4 (its last P % 4 pixels into
// partials 0, 1, ...), so four chains overlap; the caller adds the partials
// pairwise at the end. gy: the block's P gradients per plane (stride P).
template <typename T>
inline void dw_cl_wgt_block_impl(const T* x, int64_t hw, int64_t W, int64_t kc, int64_t ih1, int64_t iw1,
                                 int64_t pt, int64_t pl, int64_t Wp, const int64_t* off, int64_t taps,
                                 const int64_t* base, int64_t P, const T* gy, T* xin, T* tmp, T* gyl, T* acc) {
    using V = DwClVec<T>;
    dw_cl_fill(x, hw, W, kc, ih1, iw1, pt, pl, Wp, xin, tmp);
    dw_cl_to_lanes(gy, P, kc, P, gyl);
    const V* gv = reinterpret_cast<const V*>(gyl);
    for (int64_t t = 0; t < taps; ++t) {
        V* a = reinterpret_cast<V*>(acc + t * 4 * kDwCl);
        V a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
        const T* xt = xin + off[t] * kDwCl;
#define CONVKIT_DW_CL_X(q) (*reinterpret_cast<const V*>(xt + base[q] * kDwCl))
        int64_t p = 0;
        for (; p + 4 <= P; p += 4) {
            a0 += gv[p] * CONVKIT_DW_CL_X(p);
            a1 += gv[p + 1] * CONVKIT_DW_CL_X(p + 1);
            a2 += gv[p + 2] * CONVKIT_DW_CL_X(p + 2);
            a3 += gv[p + 3] * CONVKIT_DW_CL_X(p + 3);
        }
        if (p < P) a0 += gv[p] * CONVKIT_DW_CL_X(p);
        if (p + 1 < P) a1 += gv[p + 1] * CONVKIT_DW_CL_X(p + 1);
        if (p + 2 < P) a2 += gv[p + 2] * CONVKIT_DW_CL_X(p + 2);
#undef CONVKIT_DW_CL_X
        a[0] = a0; a[1] = a1; a[2] = a2; a[3] = a3;
    }
}

template <typename T, int SW>
inline void dw3_wgt_rows(T* lanes, const T* gy, const T* xp, int64_t ldx, int64_t rows,
                         int64_t OW, int64_t sh) {
    constexpr int L = kDwLanes;
    for (int r = 0; r < 3; ++r) {
        T a0[L], a1[L], a2[L];
        for (int v = 0; v < L; ++v) {
            a0[v] = lanes[(3 * r + 0) * L + v];
            a1[v] = lanes[(3 * r + 1) * L + v];
            a2[v] = lanes[(3 * r + 2) * L + v];
        }
        for (int64_t i = 0; i < rows; ++i) {
            const T* __restrict xr = xp + (i * sh + r) * ldx;
            const T* __restrict g = gy + i * OW;
            int64_t j = 0;
            for (; j + L <= OW; j += L) {
                const T* __restrict xs = xr + j * SW;
                for (int v = 0; v < L; ++v) {
                    const T gv = g[j + v];
                    a0[v] += gv * xs[v * SW];
                    a1[v] += gv * xs[v * SW + 1];
                    a2[v] += gv * xs[v * SW + 2];
                }
            }
            const int64_t rem = OW - j;
            if (rem > 0) {
                const T* __restrict xs = xr + j * SW;
                for (int v = 0; v < L; ++v) {
                    if (v < rem) {
                        const T gv = g[j + v];
                        a0[v] += gv * xs[v * SW];
                        a1[v] += gv * xs[v * SW + 1];
                        a2[v] += gv * xs[v * SW + 2];
                    }
                }
            }
        }
        for (int v = 0; v < L; ++v) {
            lanes[(3 * r + 0) * L + v] = a0[v];
            lanes[(3 * r + 1) * L + v] = a1[v];
            lanes[(3 * r + 2) * L + v] = a2[v];
        }
    }
}

template <typename T>
inline void dw3_wgt_impl(T* lanes, const T* gy, const T* xp, int64_t ldx, int64_t rows,
                         int64_t OW, int64_t sh, int64_t sw) {
    if (sw == 1) dw3_wgt_rows<T, 1>(lanes, gy, xp, ldx, rows, OW, sh);
    else dw3_wgt_rows<T, 2>(lanes, gy, xp, ldx, rows, OW, sh);
}


// Stride-2 backward data, one grad_x row of width W (pl = pad_left). gp[r]
// (nullptr when kernel row r does not reach this row) is the grad_y row read
// through kernel row r, stored with one leading zero and zeros up to
// M + 1 = (W + pl) / 2 + 2 entries: gp[r][m + 1] = grad_y[m]. With
// j = iw + pl: even j = 2m gets w[r,0]*gy[m] + w[r,2]*gy[m-1], odd j = 2m+1
// gets w[r,1]*gy[m]; kernel rows are summed in increasing r. tmp: 2*(M+1).
template <typename T>
inline void dw3s2_bwd_row_impl(T* gx, int64_t W, int64_t pl, const T* const* gp, const T* w,
                               T* tmp) {
    const int64_t M = (W + pl) / 2 + 1;
    T* __restrict E = tmp;
    T* __restrict O = tmp + M + 1;
    for (int64_t m = 0; m < M; ++m) E[m] = T(0);
    for (int64_t m = 0; m < M; ++m) O[m] = T(0);
    for (int r = 0; r < 3; ++r) {
        const T* __restrict g = gp[r];
        if (!g) continue;
        const T w0 = w[3 * r], w1 = w[3 * r + 1], w2 = w[3 * r + 2];
        for (int64_t m = 0; m < M; ++m) E[m] = (E[m] + w0 * g[m + 1]) + w2 * g[m];
        for (int64_t m = 0; m < M; ++m) O[m] = O[m] + w1 * g[m + 1];
    }
    int64_t iw = 0;
    if (pl % 2 == 1 && W > 0) {  // j = iw + pl odd at iw = 0
        gx[0] = O[pl / 2];
        iw = 1;
    }
    // From here j = iw + pl is even: pairs (E[j/2], O[j/2]).
    const int64_t q0 = (iw + pl) / 2;
    const int64_t pairs = (W - iw) / 2;
    T* __restrict d = gx + iw;
    for (int64_t q = 0; q < pairs; ++q) {
        d[2 * q] = E[q0 + q];
        d[2 * q + 1] = O[q0 + q];
    }
    if ((W - iw) % 2) gx[W - 1] = E[q0 + pairs];
}

}  // namespace

// y[i*OW + ow] for band output rows i < rows: bias + sum over taps (r, s) of
// w[r*S+s] * xp[(i*sh + r)*ldx + ow*sw + s], taps row-major; sw is 1 or 2;
// 3x3 has its own unrolled blocks.
template <typename T>
using DwFwdFn = void (*)(const T* xp, int64_t ldx, int64_t R, int64_t S, const T* w, T bias, T* y,
                         int64_t rows, int64_t OW, int64_t sh, int64_t sw);
// lanes[t*kDwLanes + ow % kDwLanes] += gy[i*OW + ow] * xp[(i*sh + r)*ldx + ow*sw + s], t = r*3+s.
template <typename T>
using Dw3WgtFn = void (*)(T* lanes, const T* gy, const T* xp, int64_t ldx, int64_t rows,
                          int64_t OW, int64_t sh, int64_t sw);
// The channels-in-lanes forward (dw_cl_fwd_impl above).
template <typename T>
using DwClFwdFn = void (*)(const T* x, int64_t hw, int64_t W, int64_t kc, int64_t ih1, int64_t iw1, int64_t pt,
                           int64_t pl, int64_t Wp, const int64_t* off, int64_t taps, const T* wt, const T* bias,
                           const int64_t* base, int64_t P, T* xin, T* tmp, T* out, T* y);
// The channels-in-lanes backward weight (dw_cl_wgt_block_impl above).
template <typename T>
using DwClWgtFn = void (*)(const T* x, int64_t hw, int64_t W, int64_t kc, int64_t ih1, int64_t iw1, int64_t pt,
                           int64_t pl, int64_t Wp, const int64_t* off, int64_t taps, const int64_t* base, int64_t P,
                           const T* gy, T* xin, T* tmp, T* gyl, T* acc);
// The flat forward (dw_flat_fwd_impl above).
template <typename T>
using DwFlatFwdFn = void (*)(const T* xp, int64_t Wp, int64_t R, int64_t S, const T* w, T bias, T* vbuf, T* y,
                             int64_t rows, int64_t OW);

#define CONVKIT_DW3_DECLARE(isa)                                                                \
    void dw3s2_bwd_row_##isa##_f32(float*, int64_t, int64_t, const float* const*, const float*,  \
                                   float*);                                                       \
    void dw3s2_bwd_row_##isa##_f64(double*, int64_t, int64_t, const double* const*,              \
                                   const double*, double*);                                       \
    void dw_fwd_##isa##_f32(const float*, int64_t, int64_t, int64_t, const float*, float, float*, \
                            int64_t, int64_t, int64_t, int64_t);                                  \
    void dw_fwd_##isa##_f64(const double*, int64_t, int64_t, int64_t, const double*, double,      \
                            double*, int64_t, int64_t, int64_t, int64_t);                         \
    void dw3_wgt_##isa##_f32(float*, const float*, const float*, int64_t, int64_t, int64_t,      \
                             int64_t, int64_t);                                                   \
    void dw3_wgt_##isa##_f64(double*, const double*, const double*, int64_t, int64_t, int64_t,   \
                             int64_t, int64_t);                                                   \
    void dw_flat_fwd_##isa##_f32(const float*, int64_t, int64_t, int64_t, const float*, float, float*, \
                                 float*, int64_t, int64_t);                                      \
    void dw_flat_fwd_##isa##_f64(const double*, int64_t, int64_t, int64_t, const double*, double,      \
                                 double*, double*, int64_t, int64_t);                            \
    int dw_flat_block_##isa##_f32();                                                             \
    int dw_flat_block_##isa##_f64();                                                             \
    void dw_cl_fwd_##isa##_f32(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,    \
                               int64_t, int64_t, const int64_t*, int64_t, const float*, const float*,  \
                               const int64_t*, int64_t, float*, float*, float*, float*);              \
    void dw_cl_fwd_##isa##_f64(const double*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,   \
                               int64_t, int64_t, const int64_t*, int64_t, const double*, const double*, \
                               const int64_t*, int64_t, double*, double*, double*, double*);                \
    void dw_cl_wgt_##isa##_f32(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,    \
                               int64_t, int64_t, const int64_t*, int64_t, const int64_t*, int64_t,     \
                               const float*, float*, float*, float*, float*);                         \
    void dw_cl_wgt_##isa##_f64(const double*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,   \
                               int64_t, int64_t, const int64_t*, int64_t, const int64_t*, int64_t,     \
                               const double*, double*, double*, double*, double*);
CONVKIT_DW3_DECLARE(generic)
#ifdef CONVKIT_HAVE_AVX2
CONVKIT_DW3_DECLARE(avx2)
#endif
#ifdef CONVKIT_HAVE_AVX512
CONVKIT_DW3_DECLARE(avx512)
#endif
#undef CONVKIT_DW3_DECLARE

#define CONVKIT_DW3_DEFINE(isa)                                                                   \
    void dw3s2_bwd_row_##isa##_f32(float* gx, int64_t W, int64_t pl, const float* const* gp,      \
                                   const float* w, float* tmp) {                                  \
        dw3s2_bwd_row_impl<float>(gx, W, pl, gp, w, tmp);                                         \
    }                                                                                             \
    void dw3s2_bwd_row_##isa##_f64(double* gx, int64_t W, int64_t pl, const double* const* gp,    \
                                   const double* w, double* tmp) {                                \
        dw3s2_bwd_row_impl<double>(gx, W, pl, gp, w, tmp);                                        \
    }                                                                                             \
    void dw_fwd_##isa##_f32(const float* xp, int64_t ldx, int64_t R, int64_t S, const float* w,   \
                            float b, float* y, int64_t rows, int64_t OW, int64_t sh, int64_t sw) { \
        dw_fwd_impl<float>(xp, ldx, R, S, w, b, y, rows, OW, sh, sw);                             \
    }                                                                                             \
    void dw_fwd_##isa##_f64(const double* xp, int64_t ldx, int64_t R, int64_t S, const double* w, \
                            double b, double* y, int64_t rows, int64_t OW, int64_t sh,            \
                            int64_t sw) {                                                         \
        dw_fwd_impl<double>(xp, ldx, R, S, w, b, y, rows, OW, sh, sw);                            \
    }                                                                                             \
    void dw3_wgt_##isa##_f32(float* l, const float* gy, const float* xp, int64_t ldx,             \
                             int64_t rows, int64_t OW, int64_t sh, int64_t sw) {                  \
        dw3_wgt_impl<float>(l, gy, xp, ldx, rows, OW, sh, sw);                                    \
    }                                                                                             \
    void dw3_wgt_##isa##_f64(double* l, const double* gy, const double* xp, int64_t ldx,          \
                             int64_t rows, int64_t OW, int64_t sh, int64_t sw) {                  \
        dw3_wgt_impl<double>(l, gy, xp, ldx, rows, OW, sh, sw);                                   \
    }                                                                                             \
    void dw_flat_fwd_##isa##_f32(const float* xp, int64_t Wp, int64_t R, int64_t S, const float* w, \
                                 float b, float* vbuf, float* y, int64_t rows, int64_t OW) {      \
        dw_flat_fwd_impl<float>(xp, Wp, R, S, w, b, vbuf, y, rows, OW);                           \
    }                                                                                             \
    void dw_flat_fwd_##isa##_f64(const double* xp, int64_t Wp, int64_t R, int64_t S, const double* w, \
                                 double b, double* vbuf, double* y, int64_t rows, int64_t OW) {   \
        dw_flat_fwd_impl<double>(xp, Wp, R, S, w, b, vbuf, y, rows, OW);                          \
    }                                                                                             \
    int dw_flat_block_##isa##_f32() { return dw_flat_block_len<float>(); }                        \
    int dw_flat_block_##isa##_f64() { return dw_flat_block_len<double>(); }                       \
    void dw_cl_fwd_##isa##_f32(const float* x, int64_t hw, int64_t W, int64_t kc, int64_t ih1,     \
                               int64_t iw1, int64_t pt, int64_t pl, int64_t Wp, const int64_t* off, \
                               int64_t taps, const float* wt, const float* bias, const int64_t* base, \
                               int64_t P, float* xin, float* tmp, float* out, float* y) {           \
        dw_cl_block_impl<float>(x, hw, W, kc, ih1, iw1, pt, pl, Wp, off, taps, wt, bias, base, P, xin, tmp, \
                                out, y);                                                          \
    }                                                                                             \
    void dw_cl_fwd_##isa##_f64(const double* x, int64_t hw, int64_t W, int64_t kc, int64_t ih1,    \
                               int64_t iw1, int64_t pt, int64_t pl, int64_t Wp, const int64_t* off, \
                               int64_t taps, const double* wt, const double* bias, const int64_t* base, \
                               int64_t P, double* xin, double* tmp, double* out, double* y) {       \
        dw_cl_block_impl<double>(x, hw, W, kc, ih1, iw1, pt, pl, Wp, off, taps, wt, bias, base, P, xin, tmp, \
                                 out, y);                                                         \
    }                                                                                             \
    void dw_cl_wgt_##isa##_f32(const float* x, int64_t hw, int64_t W, int64_t kc, int64_t ih1,     \
                               int64_t iw1, int64_t pt, int64_t pl, int64_t Wp, const int64_t* off, \
                               int64_t taps, const int64_t* base, int64_t P, const float* gy,      \
                               float* xin, float* tmp, float* gyl, float* acc) {                   \
        dw_cl_wgt_block_impl<float>(x, hw, W, kc, ih1, iw1, pt, pl, Wp, off, taps, base, P, gy, xin, tmp, \
                                    gyl, acc);                                                    \
    }                                                                                             \
    void dw_cl_wgt_##isa##_f64(const double* x, int64_t hw, int64_t W, int64_t kc, int64_t ih1,    \
                               int64_t iw1, int64_t pt, int64_t pl, int64_t Wp, const int64_t* off, \
                               int64_t taps, const int64_t* base, int64_t P, const double* gy,     \
                               double* xin, double* tmp, double* gyl, double* acc) {               \
        dw_cl_wgt_block_impl<double>(x, hw, W, kc, ih1, iw1, pt, pl, Wp, off, taps, base, P, gy, xin, tmp, \
                                     gyl, acc);                                                   \
    }

}  // namespace dw
}  // namespace convkit
