// Cache-blocked GEMM driver with packed panels and ISA-specific micro-kernels.
//
//   C[M x N] (=|+=) A[M x K] * B[K x N]
// When not accumulating, an optional bias[i] is the starting value of row i's
// sums (so y = ((bias + a0*b0) + a1*b1) + ...).
//
// The caller supplies packers, so the same driver serves plain matrices and
// implicit im2col (convolution) operands; only A may be read in place.
//   pack_a(i0, mb, p0, kb, dst): rows [i0, i0+mb) and reduction indices
//       [p0, p0+kb) into ceil(mb/mr) panels of kb*mr values, dst[k*mr + i]
//       inside a panel; rows past mb are zero. A packer that returns a
//       const T* instead hands out such a block it packed beforehand (weights
//       packed once per call) and leaves dst alone; one that returns an
//       InPlaceA has the block read where it is (see InPlaceA below).
//   pack_b(p0, kb, j0, nb, dst): reduction indices [p0, p0+kb), columns
//       [j0, j0+nb) into ceil(nb/nr) panels of kb*nr values, dst[k*nr + j];
//       columns past nb are zero.
//
// Determinism: every C element is computed by the same micro-kernel lane
// arithmetic (one chain over k, in fixed kc blocks that depend only on the
// kernel, never on the thread count or on how the caller splits M/N), and
// partial tiles at the edges go through a temporary tile with exactly the same
// arithmetic. So results are bitwise independent of the M/N decomposition.
//
// The driver is single-threaded and allocation-free (scratch comes from the
// caller), so it can run inside an OpenMP region.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "cpu_features.h"

namespace convkit {

namespace {
template <typename T, int NR>
inline void split_row_impl(const T* __restrict row, int64_t nb, int64_t panel_stride,
                           T* __restrict dst) {
    int64_t j = 0;
    for (; j + NR <= nb; j += NR, dst += panel_stride)
        for (int v = 0; v < NR; ++v) dst[v] = row[j + v];
    if (j < nb) {
        const int64_t rem = nb - j;
        for (int64_t v = 0; v < rem; ++v) dst[v] = row[j + v];
        for (int64_t v = rem; v < NR; ++v) dst[v] = T(0);
    }
}
}  // namespace

// Micro-kernel: c[i*ldc + j] (i < mr, j < nr) = start
//   + sum_{k < kc} a[k*mr + i] * b[k*nr + j], summed in increasing k, where
// start = accumulate ? c[i*ldc + j] : init ? init[i] : 0 (init: mr values).
template <typename T>
using GemmMicroKernel = void (*)(int64_t kc, const T* a, const T* b, T* c, int64_t ldc,
                                 int accumulate, const T* init);
// The same with A read in place: from mr rows lda apart, A(i, k) = a[i*lda + k]
// (ukr_rows), or from kc columns lda apart, A(i, k) = a[k*lda + i] (ukr_cols).
template <typename T>
using GemmInPlaceMicroKernel = void (*)(int64_t kc, const T* a, int64_t lda, const T* b, T* c, int64_t ldc,
                                     int accumulate, const T* init);

// Panel transpose: dst[l*rows + j] = src[j*ld + l] for j < rows, l < kb
// (packs `rows` contiguous im2col rows as one B panel of width rows).
template <typename T>
using PanelTransposeFn = void (*)(const T* src, int64_t ld, int64_t rows, int64_t kb, T* dst);

// Row split: row[0..nb) goes to panels of nr columns: value j lands at
// dst[(j / nr) * panel_stride + j % nr]; the last panel is zero padded.
template <typename T>
using RowSplitFn = void (*)(const T* row, int64_t nb, int64_t panel_stride, T* dst);

template <typename T>
struct GemmKernel {
    int mr = 1, nr = 1;      // register tile
    int64_t kc = 256;        // reduction block (fixed per kernel: determines rounding)
    int64_t mc = 128;        // rows of A per packed block
    int64_t nc = 512;        // columns of B per packed block
    GemmMicroKernel<T> ukr = nullptr;
    GemmInPlaceMicroKernel<T> ukr_rows = nullptr;  // nullptr: row-layout A is packed
    GemmInPlaceMicroKernel<T> ukr_cols = nullptr;  // nullptr: column-layout A is packed
    PanelTransposeFn<T> transpose = nullptr;
    RowSplitFn<T> split_row = nullptr;
    Isa isa = Isa::generic;

    int64_t a_buffer_size() const { return round_up(mc, mr) * kc; }
    int64_t b_buffer_size() const { return round_up(nc, nr) * kc; }
    static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
};

// Kernel for an instruction set (falls back to narrower ones that this build
// has). gemm_kernel<T>() uses active_isa().
template <typename T>
GemmKernel<T> gemm_kernel_for(Isa isa);
template <typename T>
inline GemmKernel<T> gemm_kernel() { return gemm_kernel_for<T>(active_isa()); }

// Micro-kernels (defined in csrc/kernels/gemm_*_<isa>.cpp).
void gemm_ukr_generic_f32(int64_t, const float*, const float*, float*, int64_t, int, const float*);
void gemm_ukr_generic_f64(int64_t, const double*, const double*, double*, int64_t, int, const double*);
void panel_transpose_generic_f32(const float*, int64_t, int64_t, int64_t, float*);
void split_row_generic_f32(const float*, int64_t, int64_t, float*);
void split_row_generic_f64(const double*, int64_t, int64_t, double*);
void panel_transpose_generic_f64(const double*, int64_t, int64_t, int64_t, double*);
extern const int gemm_generic_f32_mr, gemm_generic_f32_nr, gemm_generic_f64_mr, gemm_generic_f64_nr;
#ifdef CONVKIT_HAVE_AVX2
void gemm_ukr_avx2_f32(int64_t, const float*, const float*, float*, int64_t, int, const float*);
void gemm_ukr_rows_avx2_f32(int64_t, const float*, int64_t, const float*, float*, int64_t, int, const float*);
void gemm_ukr_cols_avx2_f32(int64_t, const float*, int64_t, const float*, float*, int64_t, int, const float*);
void gemm_ukr_avx2_f64(int64_t, const double*, const double*, double*, int64_t, int, const double*);
void panel_transpose_avx2_f32(const float*, int64_t, int64_t, int64_t, float*);
void split_row_avx2_f32(const float*, int64_t, int64_t, float*);
void split_row_avx2_f64(const double*, int64_t, int64_t, double*);
void panel_transpose_avx2_f64(const double*, int64_t, int64_t, int64_t, double*);
extern const int gemm_avx2_f32_mr, gemm_avx2_f32_nr, gemm_avx2_f64_mr, gemm_avx2_f64_nr;
#endif
#ifdef CONVKIT_HAVE_AVX512
void gemm_ukr_avx512_f32(int64_t, const float*, const float*, float*, int64_t, int, const float*);
void gemm_ukr_rows_avx512_f32(int64_t, const float*, int64_t, const float*, float*, int64_t, int, const float*);
void gemm_ukr_cols_avx512_f32(int64_t, const float*, int64_t, const float*, float*, int64_t, int, const float*);
void gemm_ukr_avx512_f64(int64_t, const double*, const double*, double*, int64_t, int, const double*);
void panel_transpose_avx512_f32(const float*, int64_t, int64_t, int64_t, float*);
void split_row_avx512_f32(const float*, int64_t, int64_t, float*);
void split_row_avx512_f64(const double*, int64_t, int64_t, double*);
void panel_transpose_avx512_f64(const double*, int64_t, int64_t, int64_t, double*);
extern const int gemm_avx512_f32_mr, gemm_avx512_f32_nr, gemm_avx512_f64_mr,
    gemm_avx512_f64_nr;
#endif

// Direct-convolution row kernel (depthwise-like layers), compiled per ISA:
//   y[j] = y[j] + w[0]*src[0][j*sw] + w[1]*src[1][j*sw] + ... (taps in order)
// for j in [0, n); every read must be inside the input.
template <typename T>
using DirectRowFn = void (*)(T* y, int64_t n, const T* const* src, const T* w, int64_t taps,
                             int64_t sw);

// The *_impl templates are compiled once per ISA file: internal linkage keeps
// the linker from merging the AVX-512 and portable instantiations.
namespace {
// SW: compile-time input stride (1 or 2).
template <typename T, int V, int SW>
inline int64_t direct_row_chunks(T* __restrict y, int64_t j, int64_t n, const T* const* src,
                                 const T* w, int64_t taps, int64_t) {
    for (; j + V <= n; j += V) {
        T acc[V];
        for (int v = 0; v < V; ++v) acc[v] = y[j + v];
        for (int64_t t = 0; t < taps; ++t) {
            const T wv = w[t];
            const T* __restrict s = src[t] + j * SW;
            for (int v = 0; v < V; ++v) acc[v] += wv * s[v * SW];
        }
        for (int v = 0; v < V; ++v) y[j + v] = acc[v];
    }
    return j;
}

template <typename T, int V, int SW>
inline int64_t direct_row_all_chunks(T* y, int64_t n, const T* const* src, const T* w,
                                     int64_t taps, int64_t sw) {
    int64_t j = direct_row_chunks<T, V, SW>(y, 0, n, src, w, taps, sw);
    if (V >= 8) j = direct_row_chunks<T, (V >= 8 ? V / 2 : 1), SW>(y, j, n, src, w, taps, sw);
    if (V >= 16) j = direct_row_chunks<T, (V >= 16 ? V / 4 : 1), SW>(y, j, n, src, w, taps, sw);
    return j;
}

template <typename T, int V>
inline void direct_row_impl(T* __restrict y, int64_t n, const T* const* src, const T* w,
                            int64_t taps, int64_t sw) {
    int64_t j = 0;
    if (sw == 1) j = direct_row_all_chunks<T, V, 1>(y, n, src, w, taps, sw);
    else if (sw == 2) j = direct_row_all_chunks<T, V, 2>(y, n, src, w, taps, sw);
    for (; j < n; ++j) {
        T a = y[j];
        for (int64_t t = 0; t < taps; ++t) a += w[t] * src[t][j * sw];
        y[j] = a;
    }
}

}  // namespace

void direct_row_generic_f32(float*, int64_t, const float* const*, const float*, int64_t, int64_t);
void direct_row_generic_f64(double*, int64_t, const double* const*, const double*, int64_t, int64_t);
#ifdef CONVKIT_HAVE_AVX2
void direct_row_avx2_f32(float*, int64_t, const float* const*, const float*, int64_t, int64_t);
void direct_row_avx2_f64(double*, int64_t, const double* const*, const double*, int64_t, int64_t);
#endif
#ifdef CONVKIT_HAVE_AVX512
void direct_row_avx512_f32(float*, int64_t, const float* const*, const float*, int64_t, int64_t);
void direct_row_avx512_f64(double*, int64_t, const double* const*, const double*, int64_t, int64_t);
#endif
template <typename T>
DirectRowFn<T> direct_row_kernel_for(Isa isa);

// Multi-row dot kernel for direct backward weight (kDotLanes fixed lanes):
//   lanes[r*L + j % L] += y[j] * col[r*ldcol + j]  for r < nrows, j in [0, n),
// each lane summed in increasing j.
constexpr int kDotLanes = 16;
template <typename T>
using DirectDotFn = void (*)(T* lanes, int64_t nrows, const T* y, const T* col, int64_t ldcol,
                             int64_t n);

namespace {
template <typename T>
inline void direct_dot_impl(T* __restrict lanes, int64_t nrows, const T* __restrict y,
                            const T* __restrict col, int64_t ldcol, int64_t n) {
    constexpr int L = kDotLanes;
    constexpr int RB = 4;
    int64_t r = 0;
    for (; r + RB <= nrows; r += RB) {
        T a0[L], a1[L], a2[L], a3[L];
        for (int v = 0; v < L; ++v) {
            a0[v] = lanes[(r + 0) * L + v];
            a1[v] = lanes[(r + 1) * L + v];
            a2[v] = lanes[(r + 2) * L + v];
            a3[v] = lanes[(r + 3) * L + v];
        }
        const T* c0 = col + r * ldcol;
        const T* c1 = c0 + ldcol;
        const T* c2 = c1 + ldcol;
        const T* c3 = c2 + ldcol;
        int64_t j = 0;
        for (; j + L <= n; j += L) {
            for (int v = 0; v < L; ++v) {
                const T yv = y[j + v];
                a0[v] += yv * c0[j + v];
                a1[v] += yv * c1[j + v];
                a2[v] += yv * c2[j + v];
                a3[v] += yv * c3[j + v];
            }
        }
        for (int v = 0; j < n; ++j, ++v) {
            a0[v] += y[j] * c0[j];
            a1[v] += y[j] * c1[j];
            a2[v] += y[j] * c2[j];
            a3[v] += y[j] * c3[j];
        }
        for (int v = 0; v < L; ++v) {
            lanes[(r + 0) * L + v] = a0[v];
            lanes[(r + 1) * L + v] = a1[v];
            lanes[(r + 2) * L + v] = a2[v];
            lanes[(r + 3) * L + v] = a3[v];
        }
    }
    for (; r < nrows; ++r) {
        T acc[L];
        for (int v = 0; v < L; ++v) acc[v] = lanes[r * L + v];
        const T* c0 = col + r * ldcol;
        int64_t j = 0;
        for (; j + L <= n; j += L)
            for (int v = 0; v < L; ++v) acc[v] += y[j + v] * c0[j + v];
        for (int v = 0; j < n; ++j, ++v) acc[v] += y[j] * c0[j];
        for (int v = 0; v < L; ++v) lanes[r * L + v] = acc[v];
    }
}
}  // namespace

void direct_dot_generic_f32(float*, int64_t, const float*, const float*, int64_t, int64_t);
void direct_dot_generic_f64(double*, int64_t, const double*, const double*, int64_t, int64_t);
#ifdef CONVKIT_HAVE_AVX2
void direct_dot_avx2_f32(float*, int64_t, const float*, const float*, int64_t, int64_t);
void direct_dot_avx2_f64(double*, int64_t, const double*, const double*, int64_t, int64_t);
#endif
#ifdef CONVKIT_HAVE_AVX512
void direct_dot_avx512_f32(float*, int64_t, const float*, const float*, int64_t, int64_t);
void direct_dot_avx512_f64(double*, int64_t, const double*, const double*, int64_t, int64_t);
#endif
template <typename T>
DirectDotFn<T> direct_dot_kernel_for(Isa isa);

namespace dconv {
// How a direct-convolution tile finds each pixel's input (conv_direct_impl.h).
enum class Addressing { unit_stride, strided, per_pixel };
using TileFn = void (*)(int64_t taps, const int64_t* off, const float* in, int64_t sw,
                        const float* const* px, const float* w, const float* init, float* out,
                        bool accumulate);
// Pixel-lane tile (conv_direct_impl.h, lane_tile).
using LaneTileFn = void (*)(int64_t taps, const int64_t* off, const float* in, const float* w, int64_t wld,
                            const float* init, int64_t last, float* y, int64_t ld);
}  // namespace dconv

// Direct-convolution tiles for float (csrc/kernels/conv_direct_<isa>.cpp, see
// conv_direct_impl.h): tile(pw, kv, addressing) returns the kernel for pw
// pixels x kv vectors of `lanes` output channels; 1 <= pw <= max_pw[kv-1] for
// row addressing, pw <= max_px2 (kv == 2; 0: none) for per-pixel addressing.
struct DirectConvKernel {
    int lanes, max_pw1, max_pw2, max_px2;
    dconv::TileFn (*tile)(int pw, int kv, dconv::Addressing addressing);
    // y[j*ystride + p] = acc[p*kb + j] for j < kcount, p < npix.
    void (*store)(const float* acc, int64_t kb, int64_t kcount, int64_t npix, float* y, int64_t ystride);
    // dst[p*kb + j] = j < kcount ? src[j*sstride + p] : 0 for j < kb, p < npix.
    void (*gather)(const float* src, int64_t sstride, int64_t kcount, int64_t kb, int64_t npix, float* dst);
    // Pointwise (1x1, stride 1, no padding) tile of pw_rows output channels x
    // pw_px pixels: y[i*ld + p] = init[i] + sum_c w[c*pw_rows + i] * x[c*ld + p]
    // (init 0 when null; the sum in increasing c, one FMA per term: the GEMM
    // path's chain) for i < rows <= pw_rows, p < pw_px.
    int pw_rows, pw_px;
    void (*pointwise)(int64_t channels, const float* x, int64_t ld, const float* w, const float* init, int64_t rows,
                      float* y);
    // Pixel-lane tile of mr output channels x nv vectors of one output row's
    // pixels (mr * nv <= lane_acc, nv <= 4), the vectors at v*lanes for v <
    // nv - 1 and the last at `last`: y[i*ld + q] = init[i] + sum_t w[t*wld + i]
    // * in[off[t] + q] (init 0 when null; increasing t, one FMA per term).
    int lane_acc;
    dconv::LaneTileFn (*lane_tile)(int mr, int nv);
};
#ifdef CONVKIT_HAVE_AVX2
extern const DirectConvKernel direct_conv_avx2;
#endif
#ifdef CONVKIT_HAVE_AVX512
extern const DirectConvKernel direct_conv_avx512;
#endif
// The kernel for an instruction set, or nullptr (generic builds use the GEMM path).
const DirectConvKernel* direct_conv_kernel_for(Isa isa);

// What a pack_a may return to have A read in place (kernels with ukr_rows or
// ukr_cols, as `cols` asks): A(i, k) = cols ? a[k*lda + i] : a[i*lda + k] for
// the block's rows i and reduction indices k.
template <typename T>
struct InPlaceA {
    const T* a;
    int64_t lda;
    bool cols;
};

template <typename T>
inline void pack_a_strided(const T* a, int64_t rs, int64_t cs, int64_t mr, int64_t i0, int64_t mb, int64_t p0,
                           int64_t kb, T* dst, PanelTransposeFn<T> transpose = nullptr);

// Scratch for one gemm_run call: packed A and B blocks, one tile, bias padding.
template <typename T>
inline int64_t gemm_scratch_size(const GemmKernel<T>& kr) {
    return kr.a_buffer_size() + kr.b_buffer_size() + int64_t(kr.mr) * (kr.nr + 1) + 64;
}

template <typename T, class PackA, class PackB>
void gemm_run(const GemmKernel<T>& kr, int64_t M, int64_t N, int64_t K, PackA&& pack_a,
              PackB&& pack_b, T* C, int64_t ldc, bool accumulate, const T* bias, T* scratch) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int64_t i = 0; i < M; ++i) {
            T* c = C + i * ldc;
            const T add = bias ? bias[i] : T(0);
            if (accumulate) {
                if (bias)
                    for (int64_t j = 0; j < N; ++j) c[j] += add;
            } else {
                for (int64_t j = 0; j < N; ++j) c[j] = add;
            }
        }
        return;
    }
    const int64_t mr = kr.mr, nr = kr.nr;
    T* abuf = scratch;
    T* bbuf = abuf + kr.a_buffer_size();
    T* tile = bbuf + kr.b_buffer_size();
    T* init_pad = tile + mr * nr;  // mr values: bias rows of a partial tile, zero padded
    for (int64_t jc = 0; jc < N; jc += kr.nc) {
        const int64_t nb = std::min(kr.nc, N - jc);
        for (int64_t pc = 0; pc < K; pc += kr.kc) {
            const int64_t kb = std::min(kr.kc, K - pc);
            const bool acc = accumulate || pc > 0;
            pack_b(pc, kb, jc, nb, bbuf);
            for (int64_t ic = 0; ic < M; ic += kr.mc) {
                const int64_t mb = std::min(kr.mc, M - ic);
                // pack_a either packs into abuf, returns its own pre-packed
                // block, or returns A to read in place (InPlaceA: then only a
                // last panel of fewer than mr rows is packed, zero padded).
                const T* ablock = abuf;
                const T* arows = nullptr;
                int64_t a_rs = 0;  // distance between A's rows read in place
                GemmInPlaceMicroKernel<T> ukr_in_place = nullptr;
                int64_t lda = 0;
                using PackAResult = decltype(pack_a(ic, mb, pc, kb, abuf));
                if constexpr (std::is_void_v<PackAResult>) {
                    pack_a(ic, mb, pc, kb, abuf);
                } else if constexpr (std::is_same_v<PackAResult, InPlaceA<T>>) {
                    const InPlaceA<T> ia = pack_a(ic, mb, pc, kb, abuf);
                    lda = ia.lda;
                    a_rs = ia.cols ? 1 : lda;
                    const int64_t a_cs = ia.cols ? lda : 1;
                    ukr_in_place = ia.cols ? kr.ukr_cols : kr.ukr_rows;
                    // Without that kernel, the whole block is packed (the
                    // same arithmetic); with it only a last partial panel.
                    const int64_t ip = ukr_in_place ? mb / mr * mr : 0;
                    if (ukr_in_place) arows = ia.a;
                    if (ip < mb)
                        pack_a_strided<T>(ia.a, a_rs, a_cs, mr, ip, mb - ip, 0, kb, abuf + (ip / mr) * kb * mr,
                                          nullptr);
                } else {
                    ablock = pack_a(ic, mb, pc, kb, abuf);
                }
                for (int64_t jr = 0; jr < nb; jr += nr) {
                    const int64_t nn = std::min(nr, nb - jr);
                    const T* bp = bbuf + (jr / nr) * kb * nr;
                    for (int64_t ir = 0; ir < mb; ir += mr) {
                        const int64_t mm = std::min(mr, mb - ir);
                        const T* ap = ablock + (ir / mr) * kb * mr;
                        T* c = C + (ic + ir) * ldc + jc + jr;
                        const T* init = nullptr;
                        if (!acc && bias) {
                            if (mm == mr) {
                                init = bias + ic + ir;
                            } else {
                                for (int64_t i = 0; i < mr; ++i) init_pad[i] = i < mm ? bias[ic + ir + i] : T(0);
                                init = init_pad;
                            }
                        }
                        const bool in_place = arows && mm == mr;
                        if (mm == mr && nn == nr) {
                            if (in_place)
                                ukr_in_place(kb, arows + ir * a_rs, lda, bp, c, ldc, acc ? 1 : 0, init);
                            else
                                kr.ukr(kb, ap, bp, c, ldc, acc ? 1 : 0, init);
                        } else {
                            if (acc) {
                                for (int64_t i = 0; i < mm; ++i)
                                    for (int64_t j = 0; j < nn; ++j) tile[i * nr + j] = c[i * ldc + j];
                            }
                            if (in_place)
                                ukr_in_place(kb, arows + ir * a_rs, lda, bp, tile, nr, acc ? 1 : 0, init);
                            else
                                kr.ukr(kb, ap, bp, tile, nr, acc ? 1 : 0, init);
                            for (int64_t i = 0; i < mm; ++i)
                                for (int64_t j = 0; j < nn; ++j) c[i * ldc + j] = tile[i * nr + j];
                        }
                    }
                }
            }
        }
    }
}

// Packers for strided matrices: A(i, k) = a[i*rs + k*cs], B(k, j) = b[k*rs + j*cs].
template <typename T>
inline void pack_a_strided(const T* a, int64_t rs, int64_t cs, int64_t mr, int64_t i0, int64_t mb,
                           int64_t p0, int64_t kb, T* dst,
                           PanelTransposeFn<T> transpose) {
    for (int64_t ip = 0; ip < mb; ip += mr) {
        const int64_t mm = std::min(mr, mb - ip);
        T* d = dst + (ip / mr) * kb * mr;
        if (cs == 1 && mm == mr && transpose) {
            transpose(a + (i0 + ip) * rs + p0, rs, mr, kb, d);
            continue;
        }
        if (cs == 1) {
            for (int64_t i = 0; i < mm; ++i) {
                const T* src = a + (i0 + ip + i) * rs + p0;
                for (int64_t k = 0; k < kb; ++k) d[k * mr + i] = src[k];
            }
        } else if (rs == 1) {
            for (int64_t k = 0; k < kb; ++k) {
                const T* src = a + (i0 + ip) + (p0 + k) * cs;
                for (int64_t i = 0; i < mm; ++i) d[k * mr + i] = src[i];
            }
        } else {
            for (int64_t i = 0; i < mm; ++i) {
                const T* src = a + (i0 + ip + i) * rs + p0 * cs;
                for (int64_t k = 0; k < kb; ++k) d[k * mr + i] = src[k * cs];
            }
        }
        for (int64_t i = mm; i < mr; ++i)
            for (int64_t k = 0; k < kb; ++k) d[k * mr + i] = T(0);
    }
}

template <typename T>
inline void pack_b_strided(const T* b, int64_t rs, int64_t cs, int64_t nr, int64_t p0, int64_t kb,
                           int64_t j0, int64_t nb, T* dst) {
    for (int64_t jp = 0; jp < nb; jp += nr) {
        const int64_t nn = std::min(nr, nb - jp);
        T* d = dst + (jp / nr) * kb * nr;
        for (int64_t k = 0; k < kb; ++k) {
            const T* src = b + (p0 + k) * rs + (j0 + jp) * cs;
            T* dk = d + k * nr;
            if (cs == 1) {
                for (int64_t j = 0; j < nn; ++j) dk[j] = src[j];
            } else {
                for (int64_t j = 0; j < nn; ++j) dk[j] = src[j * cs];
            }
            for (int64_t j = nn; j < nr; ++j) dk[j] = T(0);
        }
    }
}

}  // namespace convkit
