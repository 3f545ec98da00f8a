// Cache-blocked GEMM driver with packed panels and ISA-specific micro-kernels.
//
//   C[M x N] (=|+=) A[M x K] * B[K x N]   (+ bias[i] on row i)
//
// A and B are never read directly: the caller supplies packers, so the same
// driver serves plain matrices and implicit im2col (convolution) operands.
//   pack_a(i0, mb, p0, kb, dst): rows [i0, i0+mb) and reduction indices
//       [p0, p0+kb) into ceil(mb/mr) panels of kb*mr values, dst[k*mr + i]
//       inside a panel; rows past mb are zero.
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

#include "cpu_features.h"

namespace convkit {

// Micro-kernel: c[i*ldc + j] (i < mr, j < nr) = (accumulate ? c : 0)
//   + sum_{k < kc} a[k*mr + i] * b[k*nr + j], summed in increasing k.
template <typename T>
using GemmMicroKernel = void (*)(int64_t kc, const T* a, const T* b, T* c, int64_t ldc,
                                 int accumulate);

template <typename T>
struct GemmKernel {
    int mr = 1, nr = 1;      // register tile
    int64_t kc = 256;        // reduction block (fixed per kernel: determines rounding)
    int64_t mc = 128;        // rows of A per packed block
    int64_t nc = 512;        // columns of B per packed block
    GemmMicroKernel<T> ukr = nullptr;
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
void gemm_ukr_generic_f32(int64_t, const float*, const float*, float*, int64_t, int);
void gemm_ukr_generic_f64(int64_t, const double*, const double*, double*, int64_t, int);
extern const int gemm_generic_f32_mr, gemm_generic_f32_nr, gemm_generic_f64_mr, gemm_generic_f64_nr;
#ifdef CONVKIT_HAVE_AVX2
void gemm_ukr_avx2_f32(int64_t, const float*, const float*, float*, int64_t, int);
void gemm_ukr_avx2_f64(int64_t, const double*, const double*, double*, int64_t, int);
extern const int gemm_avx2_f32_mr, gemm_avx2_f32_nr, gemm_avx2_f64_mr, gemm_avx2_f64_nr;
#endif
#ifdef CONVKIT_HAVE_AVX512
void gemm_ukr_avx512_f32(int64_t, const float*, const float*, float*, int64_t, int);
void gemm_ukr_avx512_f64(int64_t, const double*, const double*, double*, int64_t, int);
extern const int gemm_avx512_f32_mr, gemm_avx512_f32_nr, gemm_avx512_f64_mr,
    gemm_avx512_f64_nr;
#endif

// Direct-convolution row kernel (depthwise-like layers), compiled per ISA:
//   y[j] = y[j] + w[0]*src[0][j*sw] + w[1]*src[1][j*sw] + ... (taps in order)
// for j in [0, n); every read must be inside the input.
template <typename T>
using DirectRowFn = void (*)(T* y, int64_t n, const T* const* src, const T* w, int64_t taps,
                             int64_t sw);

template <typename T, int V>
inline void direct_row_impl(T* __restrict y, int64_t n, const T* const* src, const T* w,
                            int64_t taps, int64_t sw) {
    int64_t j = 0;
    if (sw == 1) {
        for (; j + V <= n; j += V) {
            T acc[V];
            for (int v = 0; v < V; ++v) acc[v] = y[j + v];
            for (int64_t t = 0; t < taps; ++t) {
                const T wv = w[t];
                const T* __restrict s = src[t] + j;
                for (int v = 0; v < V; ++v) acc[v] += wv * s[v];
            }
            for (int v = 0; v < V; ++v) y[j + v] = acc[v];
        }
    }
    for (; j < n; ++j) {
        T a = y[j];
        for (int64_t t = 0; t < taps; ++t) a += w[t] * src[t][j * sw];
        y[j] = a;
    }
}

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

// Scratch for one gemm_run call: a_buffer_size() + b_buffer_size() + mr*nr.
template <typename T>
inline int64_t gemm_scratch_size(const GemmKernel<T>& kr) {
    return kr.a_buffer_size() + kr.b_buffer_size() + int64_t(kr.mr) * kr.nr + 64;
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
    for (int64_t jc = 0; jc < N; jc += kr.nc) {
        const int64_t nb = std::min(kr.nc, N - jc);
        for (int64_t pc = 0; pc < K; pc += kr.kc) {
            const int64_t kb = std::min(kr.kc, K - pc);
            const bool acc = accumulate || pc > 0;
            const bool last = pc + kb >= K;
            pack_b(pc, kb, jc, nb, bbuf);
            for (int64_t ic = 0; ic < M; ic += kr.mc) {
                const int64_t mb = std::min(kr.mc, M - ic);
                pack_a(ic, mb, pc, kb, abuf);
                for (int64_t jr = 0; jr < nb; jr += nr) {
                    const int64_t nn = std::min(nr, nb - jr);
                    const T* bp = bbuf + (jr / nr) * kb * nr;
                    for (int64_t ir = 0; ir < mb; ir += mr) {
                        const int64_t mm = std::min(mr, mb - ir);
                        const T* ap = abuf + (ir / mr) * kb * mr;
                        T* c = C + (ic + ir) * ldc + jc + jr;
                        if (mm == mr && nn == nr) {
                            kr.ukr(kb, ap, bp, c, ldc, acc ? 1 : 0);
                        } else {
                            if (acc) {
                                for (int64_t i = 0; i < mm; ++i)
                                    for (int64_t j = 0; j < nn; ++j) tile[i * nr + j] = c[i * ldc + j];
                            }
                            kr.ukr(kb, ap, bp, tile, nr, acc ? 1 : 0);
                            for (int64_t i = 0; i < mm; ++i)
                                for (int64_t j = 0; j < nn; ++j) c[i * ldc + j] = tile[i * nr + j];
                        }
                        if (last && bias) {
                            for (int64_t i = 0; i < mm; ++i) {
                                const T add = bias[ic + ir + i];
                                T* cr = c + i * ldc;
                                for (int64_t j = 0; j < nn; ++j) cr[j] += add;
                            }
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
                           int64_t p0, int64_t kb, T* dst) {
    for (int64_t ip = 0; ip < mb; ip += mr) {
        const int64_t mm = std::min(mr, mb - ip);
        T* d = dst + (ip / mr) * kb * mr;
        if (cs == 1) {
            for (int64_t i = 0; i < mm; ++i) {
                const T* src = a + (i0 + ip + i) * rs + p0;
                for (int64_t k = 0; k < kb; ++k) d[k * mr + i] = src[k];
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
