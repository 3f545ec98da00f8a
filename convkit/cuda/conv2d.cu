// Convolution kernels, NCHW, contiguous; geometry as convkit._params.ConvGeometry
// (input row of output row oh and kernel row r: oh*sh - pt + r*dh).
//
// GEMM kernels (implicit GEMM, no im2col buffer in global memory): a block
// computes a BM x BN tile of C = A * B with BK-deep slices of A and B gathered
// straight from the tensors into shared memory (converted to acc_t), 256
// threads, 4x4 outputs per thread (rows ty + 16*i, columns tx + 16*j), the
// next slice prefetched into registers while the current one is multiplied.
//   forward:         per group, A = w (Kg x CRS), B = x gathered (CRS x N*P)
//   backward data:   per group, A = w^T (Cg x Kg*R*S), B = grad_y gathered
//                    (Kg*R*S x N*H*W): each grad_x element sums exactly the
//                    (k, r, s) that reach it -- gather form, no atomics
//   backward weight: per group and K-split, A = grad_y (Kg x N*P),
//                    B = x gathered (N*P x CRS); each split writes its own
//                    partial buffer, conv2d_reduce_splits sums them in split
//                    order (deterministic; no float atomics)
// Every sum runs in a fixed order, so results are bitwise reproducible.
// Direct kernels (one thread per output) serve groups with few channels
// (depthwise), where a 64-row tile would be mostly idle.
// All loops over tiles are grid-stride in every grid dimension, so any grid
// is correct.
#include "common.cuh"

#define BM 64
#define BN 64
#define BK 16
#define NTHREADS 256

// Shared tiles: As[kk][m] (padded), Bs[kk][n].
struct Tiles {
    acc_t a[BK][BM + 1];
    acc_t b[BK][BN];
};

__device__ __forceinline__ void tile_multiply(const Tiles& t, acc_t acc[4][4], int tx, int ty) {
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
        acc_t av[4], bv[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) av[i] = t.a[kk][ty + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; ++j) bv[j] = t.b[kk][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
    }
}

// ------------------------------------------------------------ forward ----

extern "C" __global__ void __launch_bounds__(NTHREADS) conv2d_forward_gemm(
    const scalar_t* __restrict__ x, const scalar_t* __restrict__ w, const scalar_t* __restrict__ bias, int has_bias,
    scalar_t* __restrict__ y, i64 N, i64 C, i64 H, i64 W, i64 K, i64 R, i64 S, i64 OH, i64 OW,
    i64 sh, i64 sw, i64 pt, i64 pl, i64 dh, i64 dw, i64 groups) {
    __shared__ Tiles tiles;
    const int t = threadIdx.x, tx = t % 16, ty = t / 16;
    const int a_k = t % BK, a_m = t / BK;    // A loads: rows a_m + 16*i, column a_k
    const int b_n = t % BN, b_k = t / BN;    // B loads: rows b_k + 4*i, column b_n
    const i64 Kg = K / groups, Cg = C / groups, RS = R * S, CRS = Cg * RS, P = OH * OW, NP = N * P, HW = H * W;
    const i64 tiles_n = (NP + BN - 1) / BN, tiles_m = (Kg + BM - 1) / BM;
    for (i64 gi = blockIdx.z; gi < groups; gi += gridDim.z)
    for (i64 tm = blockIdx.y; tm < tiles_m; tm += gridDim.y)
    for (i64 tn = blockIdx.x; tn < tiles_n; tn += gridDim.x) {
        const i64 m0 = tm * BM, n0 = tn * BN;
        // This thread's B column: one output pixel.
        const i64 q = n0 + b_n;
        const bool q_ok = q < NP;
        i64 ih0 = 0, iw0 = 0;
        const scalar_t* xq = x;
        if (q_ok) {
            const i64 img = q / P, pq = q - img * P, oh = pq / OW, ow = pq - oh * OW;
            ih0 = oh * sh - pt;
            iw0 = ow * sw - pl;
            xq = x + (img * C + gi * Cg) * HW;
        }
        const scalar_t* wg = w + (gi * Kg + m0) * CRS;
        acc_t ra[4], rb[4];
        auto load = [&](i64 k0) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const i64 m = m0 + a_m + 16 * i, kd = k0 + a_k;
                ra[i] = (m < Kg && kd < CRS) ? to_acc(wg[(a_m + 16 * i) * CRS + kd]) : (acc_t)0;
            }
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const i64 kd = k0 + b_k + 4 * i;
                acc_t v = 0;
                if (q_ok && kd < CRS) {
                    const i64 c = kd / RS, rs = kd - c * RS, r = rs / S, s = rs - r * S;
                    const i64 ih = ih0 + r * dh, iw = iw0 + s * dw;
                    if (ih >= 0 && ih < H && iw >= 0 && iw < W) v = to_acc(xq[c * HW + ih * W + iw]);
                }
                rb[i] = v;
            }
        };
        auto store = [&]() {
#pragma unroll
            for (int i = 0; i < 4; ++i) tiles.a[a_k][a_m + 16 * i] = ra[i];
#pragma unroll
            for (int i = 0; i < 4; ++i) tiles.b[b_k + 4 * i][b_n] = rb[i];
        };
        acc_t acc[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = 0;
        load(0);
        store();
        __syncthreads();
        for (i64 k0 = 0; k0 < CRS; k0 += BK) {
            const bool more = k0 + BK < CRS;
            if (more) load(k0 + BK);
            tile_multiply(tiles, acc, tx, ty);
            __syncthreads();
            if (more) {
                store();
                __syncthreads();
            }
        }
        __syncthreads();
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const i64 qq = n0 + tx + 16 * j;
            if (qq >= NP) continue;
            const i64 img = qq / P, pq = qq - img * P;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const i64 m = m0 + ty + 16 * i;
                if (m >= Kg) continue;
                const i64 k = gi * Kg + m;
                acc_t v = acc[i][j];
                if (has_bias) v += to_acc(bias[k]);
                y[(img * K + k) * P + pq] = from_acc(v);
            }
        }
    }
}

// One thread per output; sums (c, r, s) in the same order as the GEMM kernel.
extern "C" __global__ void conv2d_forward_direct(
    const scalar_t* __restrict__ x, const scalar_t* __restrict__ w, const scalar_t* __restrict__ bias, int has_bias,
    scalar_t* __restrict__ y, i64 N, i64 C, i64 H, i64 W, i64 K, i64 R, i64 S, i64 OH, i64 OW,
    i64 sh, i64 sw, i64 pt, i64 pl, i64 dh, i64 dw, i64 groups) {
    const i64 Kg = K / groups, Cg = C / groups, HW = H * W, P = OH * OW;
    const i64 total = N * K * P;
    for (i64 o = grid_first(); o < total; o += grid_step()) {
        const i64 pq = o % P, t = o / P, k = t % K, img = t / K;
        const i64 oh = pq / OW, ow = pq - oh * OW, gi = k / Kg;
        const i64 ih0 = oh * sh - pt, iw0 = ow * sw - pl;
        const scalar_t* xg = x + (img * C + gi * Cg) * HW;
        const scalar_t* wk = w + k * Cg * R * S;
        acc_t acc = 0;
        for (i64 c = 0; c < Cg; ++c)
            for (i64 r = 0; r < R; ++r) {
                const i64 ih = ih0 + r * dh;
                if (ih < 0 || ih >= H) continue;
                for (i64 s = 0; s < S; ++s) {
                    const i64 iw = iw0 + s * dw;
                    if (iw < 0 || iw >= W) continue;
                    acc += to_acc(wk[(c * R + r) * S + s]) * to_acc(xg[c * HW + ih * W + iw]);
                }
            }
        if (has_bias) acc += to_acc(bias[k]);
        y[o] = from_acc(acc);
    }
}

// ------------------------------------------------------ backward data ----

extern "C" __global__ void __launch_bounds__(NTHREADS) conv2d_backward_data_gemm(
    const scalar_t* __restrict__ grad_y, const scalar_t* __restrict__ w, scalar_t* __restrict__ grad_x,
    i64 N, i64 C, i64 H, i64 W, i64 K, i64 R, i64 S, i64 OH, i64 OW,
    i64 sh, i64 sw, i64 pt, i64 pl, i64 dh, i64 dw, i64 groups) {
    __shared__ Tiles tiles;
    const int t = threadIdx.x, tx = t % 16, ty = t / 16;
    const int a_k = t % BK, a_m = t / BK;
    const int b_n = t % BN, b_k = t / BN;
    const i64 Kg = K / groups, Cg = C / groups, RS = R * S, CRS = Cg * RS, KRS = Kg * RS;
    const i64 P = OH * OW, HW = H * W, NHW = N * HW;
    const i64 tiles_n = (NHW + BN - 1) / BN, tiles_m = (Cg + BM - 1) / BM;
    for (i64 gi = blockIdx.z; gi < groups; gi += gridDim.z)
    for (i64 tm = blockIdx.y; tm < tiles_m; tm += gridDim.y)
    for (i64 tn = blockIdx.x; tn < tiles_n; tn += gridDim.x) {
        const i64 m0 = tm * BM, n0 = tn * BN;
        // This thread's B column: one input pixel (img, ih, iw).
        const i64 q = n0 + b_n;
        const bool q_ok = q < NHW;
        i64 th0 = 0, tw0 = 0;
        const scalar_t* gq = grad_y;
        if (q_ok) {
            const i64 img = q / HW, pq = q - img * HW, ih = pq / W, iw = pq - ih * W;
            th0 = ih + pt;
            tw0 = iw + pl;
            gq = grad_y + (img * K + gi * Kg) * P;
        }
        const scalar_t* wg = w + gi * Kg * CRS;
        acc_t ra[4], rb[4];
        auto load = [&](i64 k0) {
            {
                const i64 kd = k0 + a_k;  // (k, r, s)
                const i64 k = kd / RS, rs = kd - k * RS;
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const i64 c = m0 + a_m + 16 * i;
                    ra[i] = (c < Cg && kd < KRS) ? to_acc(wg[k * CRS + c * RS + rs]) : (acc_t)0;
                }
            }
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const i64 kd = k0 + b_k + 4 * i;
                acc_t v = 0;
                if (q_ok && kd < KRS) {
                    const i64 k = kd / RS, rs = kd - k * RS, r = rs / S, s = rs - r * S;
                    const i64 th = th0 - r * dh, tw = tw0 - s * dw;  // = oh*sh, ow*sw
                    if (th >= 0 && tw >= 0 && th % sh == 0 && tw % sw == 0) {
                        const i64 oh = th / sh, ow = tw / sw;
                        if (oh < OH && ow < OW) v = to_acc(gq[k * P + oh * OW + ow]);
                    }
                }
                rb[i] = v;
            }
        };
        auto store = [&]() {
#pragma unroll
            for (int i = 0; i < 4; ++i) tiles.a[a_k][a_m + 16 * i] = ra[i];
#pragma unroll
            for (int i = 0; i < 4; ++i) tiles.b[b_k + 4 * i][b_n] = rb[i];
        };
        acc_t acc[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = 0;
        load(0);
        store();
        __syncthreads();
        for (i64 k0 = 0; k0 < KRS; k0 += BK) {
            const bool more = k0 + BK < KRS;
            if (more) load(k0 + BK);
            tile_multiply(tiles, acc, tx, ty);
            __syncthreads();
            if (more) {
                store();
                __syncthreads();
            }
        }
        __syncthreads();
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const i64 qq = n0 + tx + 16 * j;
            if (qq >= NHW) continue;
            const i64 img = qq / HW, pq = qq - img * HW;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const i64 c = m0 + ty + 16 * i;
                if (c >= Cg) continue;
                grad_x[(img * C + gi * Cg + c) * HW + pq] = from_acc(acc[i][j]);
            }
        }
    }
}

// One thread per grad_x element; sums (k, r, s) in the GEMM kernel's order.
extern "C" __global__ void conv2d_backward_data_direct(
    const scalar_t* __restrict__ grad_y, const scalar_t* __restrict__ w, scalar_t* __restrict__ grad_x,
    i64 N, i64 C, i64 H, i64 W, i64 K, i64 R, i64 S, i64 OH, i64 OW,
    i64 sh, i64 sw, i64 pt, i64 pl, i64 dh, i64 dw, i64 groups) {
    const i64 Kg = K / groups, Cg = C / groups, HW = H * W, P = OH * OW, RS = R * S;
    const i64 total = N * C * HW;
    for (i64 e = grid_first(); e < total; e += grid_step()) {
        const i64 pq = e % HW, t = e / HW, cc = t % C, img = t / C;
        const i64 ih = pq / W, iw = pq - ih * W, gi = cc / Cg, c = cc - gi * Cg;
        const scalar_t* gg = grad_y + (img * K + gi * Kg) * P;
        const scalar_t* wg = w + (gi * Kg * Cg + c) * RS;
        acc_t acc = 0;
        for (i64 k = 0; k < Kg; ++k)
            for (i64 r = 0; r < R; ++r) {
                const i64 th = ih + pt - r * dh;
                if (th < 0 || th % sh != 0 || th / sh >= OH) continue;
                const i64 oh = th / sh;
                for (i64 s = 0; s < S; ++s) {
                    const i64 tw = iw + pl - s * dw;
                    if (tw < 0 || tw % sw != 0 || tw / sw >= OW) continue;
                    acc += to_acc(wg[k * Cg * RS + r * S + s]) * to_acc(gg[k * P + oh * OW + tw / sw]);
                }
            }
        grad_x[e] = from_acc(acc);
    }
}

// ---------------------------------------------------- backward weight ----

// partial[split][k][c*R*S + r*S + s] over the split's range of (img, pixel).
extern "C" __global__ void __launch_bounds__(NTHREADS) conv2d_backward_weight_gemm(
    const scalar_t* __restrict__ grad_y, const scalar_t* __restrict__ x, acc_t* __restrict__ partial,
    i64 N, i64 C, i64 H, i64 W, i64 K, i64 R, i64 S, i64 OH, i64 OW,
    i64 sh, i64 sw, i64 pt, i64 pl, i64 dh, i64 dw, i64 groups, i64 splits, i64 split_len) {
    __shared__ Tiles tiles;
    const int t = threadIdx.x, tx = t % 16, ty = t / 16;
    const int a_k = t % BK, a_m = t / BK;
    const int b_n = t % BN, b_k = t / BN;
    const i64 Kg = K / groups, Cg = C / groups, RS = R * S, CRS = Cg * RS;
    const i64 P = OH * OW, NP = N * P;
    const i64 tiles_n = (CRS + BN - 1) / BN, tiles_m = (Kg + BM - 1) / BM;
    for (i64 z = blockIdx.z; z < groups * splits; z += gridDim.z)
    for (i64 tm = blockIdx.y; tm < tiles_m; tm += gridDim.y)
    for (i64 tn = blockIdx.x; tn < tiles_n; tn += gridDim.x) {
        const i64 gi = z / splits, split = z - gi * splits;
        const i64 kbeg = split * split_len, kend = imin(kbeg + split_len, NP);
        const i64 m0 = tm * BM, n0 = tn * BN;
        // This thread's B column: one weight tap (c, r, s).
        const i64 col = n0 + b_n;
        const bool col_ok = col < CRS;
        i64 c = 0, roff = 0, soff = 0;
        if (col_ok) {
            c = col / RS;
            const i64 rs = col - c * RS, r = rs / S, s = rs - r * S;
            roff = r * dh - pt;
            soff = s * dw - pl;
        }
        acc_t ra[4], rb[4];
        auto load = [&](i64 k0) {
            {
                const i64 kd = k0 + a_k;  // (img, pixel)
                const bool ok = kd < kend;
                const i64 img = ok ? kd / P : 0, pq = ok ? kd - img * P : 0;
                const scalar_t* gp = grad_y + (img * K + gi * Kg + m0) * P + pq;
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const i64 m = m0 + a_m + 16 * i;
                    ra[i] = (ok && m < Kg) ? to_acc(gp[(a_m + 16 * i) * P]) : (acc_t)0;
                }
            }
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const i64 kd = k0 + b_k + 4 * i;
                acc_t v = 0;
                if (col_ok && kd < kend) {
                    const i64 img = kd / P, pq = kd - img * P, oh = pq / OW, ow = pq - oh * OW;
                    const i64 ih = oh * sh + roff, iw = ow * sw + soff;
                    if (ih >= 0 && ih < H && iw >= 0 && iw < W) v = to_acc(x[((img * C + gi * Cg + c) * H + ih) * W + iw]);
                }
                rb[i] = v;
            }
        };
        auto store = [&]() {
#pragma unroll
            for (int i = 0; i < 4; ++i) tiles.a[a_k][a_m + 16 * i] = ra[i];
#pragma unroll
            for (int i = 0; i < 4; ++i) tiles.b[b_k + 4 * i][b_n] = rb[i];
        };
        acc_t acc[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = 0;
        if (kbeg < kend) {
            load(kbeg);
            store();
            __syncthreads();
            for (i64 k0 = kbeg; k0 < kend; k0 += BK) {
                const bool more = k0 + BK < kend;
                if (more) load(k0 + BK);
                tile_multiply(tiles, acc, tx, ty);
                __syncthreads();
                if (more) {
                    store();
                    __syncthreads();
                }
            }
        }
        __syncthreads();
        acc_t* out = partial + (split * K + gi * Kg) * CRS;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const i64 m = m0 + ty + 16 * i;
            if (m >= Kg) continue;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const i64 cc = n0 + tx + 16 * j;
                if (cc < CRS) out[m * CRS + cc] = acc[i][j];
            }
        }
    }
}

// out[e] = sum over splits (in order) of partial[split][e].
extern "C" __global__ void conv2d_reduce_splits(const acc_t* __restrict__ partial, scalar_t* __restrict__ out,
                                                i64 count, i64 splits) {
    for (i64 e = grid_first(); e < count; e += grid_step()) {
        acc_t s = 0;
        for (i64 sp = 0; sp < splits; ++sp) s += partial[sp * count + e];
        out[e] = from_acc(s);
    }
}

// ------------------------------------------------------- bias gradient ----

// One block per output channel (grid-stride): each thread sums a fixed
// strided subset of the pixels of every image, then a fixed-shape tree in shared memory.
extern "C" __global__ void __launch_bounds__(NTHREADS) conv2d_backward_bias(
    const scalar_t* __restrict__ grad_y, scalar_t* __restrict__ grad_bias, i64 N, i64 K, i64 P) {
    __shared__ acc_t red[NTHREADS];
    const int t = threadIdx.x;
    for (i64 k = blockIdx.x; k < K; k += gridDim.x) {
        acc_t s = 0;
        for (i64 img = 0; img < N; ++img) {
            const scalar_t* gp = grad_y + (img * K + k) * P;
            for (i64 pq = t; pq < P; pq += NTHREADS) s += to_acc(gp[pq]);
        }
        red[t] = s;
        __syncthreads();
        for (int h = NTHREADS / 2; h > 0; h >>= 1) {
            if (t < h) red[t] += red[t + h];
            __syncthreads();
        }
        if (t == 0) grad_bias[k] = from_acc(red[0]);
        __syncthreads();
    }
}
