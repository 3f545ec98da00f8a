// Pooling kernels, NCHW, contiguous planes; PyTorch semantics as documented
// in csrc/pool2d.cpp (max rule `val > max || isnan(val)`, first max wins,
// initial index at the first in-range tap; avg divisors; lp formula;
// adaptive windows [floor(o*n/m), ceil((o+1)*n/m))).
//
// Forward: one thread per output (grid-stride). Backward: gather form, one
// thread per input pixel, visiting the outputs whose window contains it in
// ascending (oh, ow) order. No atomics on values: results are deterministic
// and bitwise identical from run to run. Max backward compares the stored
// index with the pixel's own offset; a separate kernel validates the indices
// (atomicMin of the first bad output offset into an integer flag).
#include "common.cuh"

// torch's Tensor.pow(Scalar) special cases; other exponents via pow in double.
__device__ __forceinline__ acc_t torch_pow(acc_t b, double e) {
    if (e == 0.0) return (acc_t)1;
    if (e == 1.0) return b;
    if (e == 2.0) return b * b;
    if (e == 3.0) return b * b * b;
    if (e == 0.5) return sqrt_acc(b);
    if (e == -0.5) return (acc_t)1 / sqrt_acc(b);
    if (e == -1.0) return (acc_t)1 / b;
    if (e == -2.0) return (acc_t)1 / (b * b);
    return (acc_t)pow((double)b, e);
}

__device__ __forceinline__ acc_t torch_sign(acc_t a) {
    return (acc_t)((int)((acc_t)0 < a) - (int)(a < (acc_t)0));
}

// First tap >= 0 of a window starting at `start` with taps every d.
__device__ __forceinline__ i64 first_tap(i64 start, i64 d) {
    return start < 0 ? start + ((-start + d - 1) / d) * d : start;
}

// Outputs o (along one axis) whose window [o*s - p, o*s - p + k) contains i: [lo, hi].
__device__ __forceinline__ void avg_candidates(i64 i, i64 k, i64 s, i64 p, i64 out, i64& lo, i64& hi) {
    const i64 b = i + p - k;  // need o*s - p + k > i  <=>  o*s > b
    lo = b < 0 ? 0 : b / s + 1;
    hi = imin((i + p) / s, out - 1);
}

// Outputs whose dilated window (taps o*s - p + r*d, r < k) may contain i:
// [lo, hi]; a candidate still needs (i + p - o*s) % d == 0.
__device__ __forceinline__ void max_candidates(i64 i, i64 k, i64 s, i64 p, i64 d, i64 out, i64& lo, i64& hi) {
    const i64 a = i + p - (k - 1) * d;  // need o*s >= a
    lo = a <= 0 ? 0 : (a + s - 1) / s;
    hi = imin((i + p) / s, out - 1);
}

// --------------------------------------------------------------- max ----

extern "C" __global__ void max_pool2d_forward(
    const scalar_t* __restrict__ x, scalar_t* __restrict__ y, i64* __restrict__ indices, int write_indices,
    i64 planes, i64 H, i64 W, i64 OH, i64 OW, i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw) {
    const i64 total = planes * OH * OW;
    for (i64 o = grid_first(); o < total; o += grid_step()) {
        const i64 ow = o % OW, t = o / OW, oh = t % OH, p = t / OH;
        const i64 hs = oh * sh - ph, ws = ow * sw - pw;
        const i64 h1 = imin(hs + (kh - 1) * dh + 1, H), w1 = imin(ws + (kw - 1) * dw + 1, W);
        const i64 h0 = first_tap(hs, dh), w0 = first_tap(ws, dw);
        const scalar_t* xp = x + p * H * W;
        acc_t best = neg_inf();
        i64 best_i = h0 * W + w0;
        for (i64 ih = h0; ih < h1; ih += dh)
            for (i64 iw = w0; iw < w1; iw += dw) {
                const acc_t v = to_acc(xp[ih * W + iw]);
                if (v > best || is_nan(v)) {
                    best = v;
                    best_i = ih * W + iw;
                }
            }
        y[o] = from_acc(best);
        if (write_indices) indices[o] = best_i;
    }
}

// bad[0] = min(bad[0], first output whose index is not a tap of its window);
// a window with no in-range tap accepts only its initial index (routes nothing).
extern "C" __global__ void max_pool2d_check_indices(
    const i64* __restrict__ indices, unsigned long long* __restrict__ bad,
    i64 planes, i64 H, i64 W, i64 OH, i64 OW, i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw) {
    const i64 total = planes * OH * OW;
    for (i64 o = grid_first(); o < total; o += grid_step()) {
        const i64 ow = o % OW, oh = (o / OW) % OH;
        const i64 hs = oh * sh - ph, ws = ow * sw - pw;
        const i64 h1 = imin(hs + (kh - 1) * dh + 1, H), w1 = imin(ws + (kw - 1) * dw + 1, W);
        const i64 h0 = first_tap(hs, dh), w0 = first_tap(ws, dw);
        const i64 idx = indices[o];
        bool ok;
        if (h0 >= h1 || w0 >= w1) {
            ok = idx == h0 * W + w0;
        } else {
            ok = idx >= 0 && idx < H * W;
            if (ok) {
                const i64 row = idx / W, col = idx - row * W;
                ok = row >= h0 && row < h1 && col >= w0 && col < w1 && (row - hs) % dh == 0 && (col - ws) % dw == 0;
            }
        }
        if (!ok) atomicMin(bad, (unsigned long long)o);
    }
}

extern "C" __global__ void max_pool2d_backward(
    const scalar_t* __restrict__ grad_y, const i64* __restrict__ indices, scalar_t* __restrict__ grad_x,
    i64 planes, i64 H, i64 W, i64 OH, i64 OW, i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw) {
    const i64 total = planes * H * W;
    for (i64 e = grid_first(); e < total; e += grid_step()) {
        const i64 iw = e % W, t = e / W, ih = t % H, p = t / H;
        i64 oh0, oh1, ow0, ow1;
        max_candidates(ih, kh, sh, ph, dh, OH, oh0, oh1);
        max_candidates(iw, kw, sw, pw, dw, OW, ow0, ow1);
        const i64 pos = ih * W + iw;
        const i64 base = p * OH * OW;
        acc_t s = 0;
        for (i64 oh = oh0; oh <= oh1; ++oh) {
            if ((ih + ph - oh * sh) % dh != 0) continue;
            for (i64 ow = ow0; ow <= ow1; ++ow) {
                if ((iw + pw - ow * sw) % dw != 0) continue;
                const i64 o = base + oh * OW + ow;
                if (indices[o] == pos) s += to_acc(grad_y[o]);
            }
        }
        grad_x[e] = from_acc(s);
    }
}

// --------------------------------------------------------------- avg ----

__device__ __forceinline__ void avg_axis(i64 o, i64 s, i64 p, i64 k, i64 in, i64& lo, i64& hi, i64& pool) {
    const i64 i0 = o * s - p;
    const i64 i1 = imin(i0 + k, in + p);
    pool = i1 - i0;
    lo = imax(i0, 0);
    hi = imin(i1, in);
}

__device__ __forceinline__ i64 avg_divisor(i64 hlo, i64 hhi, i64 hpool, i64 wlo, i64 whi, i64 wpool,
                                           int count_include_pad, i64 divisor_override) {
    if (divisor_override != 0) return divisor_override;
    if (count_include_pad) return hpool * wpool;
    return (hhi - hlo) * (whi - wlo);
}

extern "C" __global__ void avg_pool2d_forward(
    const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int count_include_pad, i64 divisor_override,
    i64 planes, i64 H, i64 W, i64 OH, i64 OW, i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw) {
    const i64 total = planes * OH * OW;
    for (i64 o = grid_first(); o < total; o += grid_step()) {
        const i64 ow = o % OW, t = o / OW, oh = t % OH, p = t / OH;
        i64 hlo, hhi, hpool, wlo, whi, wpool;
        avg_axis(oh, sh, ph, kh, H, hlo, hhi, hpool);
        avg_axis(ow, sw, pw, kw, W, wlo, whi, wpool);
        if (hlo >= hhi || wlo >= whi) {
            y[o] = from_acc((acc_t)0);
            continue;
        }
        const scalar_t* xp = x + p * H * W;
        acc_t sum = 0;
        for (i64 ih = hlo; ih < hhi; ++ih)
            for (i64 iw = wlo; iw < whi; ++iw) sum += to_acc(xp[ih * W + iw]);
        const i64 div = avg_divisor(hlo, hhi, hpool, wlo, whi, wpool, count_include_pad, divisor_override);
        y[o] = from_acc(sum / (acc_t)div);
    }
}

extern "C" __global__ void avg_pool2d_backward(
    const scalar_t* __restrict__ grad_y, scalar_t* __restrict__ grad_x, int count_include_pad, i64 divisor_override,
    i64 planes, i64 H, i64 W, i64 OH, i64 OW, i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw) {
    const i64 total = planes * H * W;
    for (i64 e = grid_first(); e < total; e += grid_step()) {
        const i64 iw = e % W, t = e / W, ih = t % H, p = t / H;
        i64 oh0, oh1, ow0, ow1;
        avg_candidates(ih, kh, sh, ph, OH, oh0, oh1);
        avg_candidates(iw, kw, sw, pw, OW, ow0, ow1);
        const scalar_t* gp = grad_y + p * OH * OW;
        acc_t s = 0;
        for (i64 oh = oh0; oh <= oh1; ++oh) {
            i64 hlo, hhi, hpool;
            avg_axis(oh, sh, ph, kh, H, hlo, hhi, hpool);
            for (i64 ow = ow0; ow <= ow1; ++ow) {
                i64 wlo, whi, wpool;
                avg_axis(ow, sw, pw, kw, W, wlo, whi, wpool);
                const i64 div = avg_divisor(hlo, hhi, hpool, wlo, whi, wpool, count_include_pad, divisor_override);
                s += to_acc(gp[oh * OW + ow]) / (acc_t)div;
            }
        }
        grad_x[e] = from_acc(s);
    }
}

// ---------------------------------------------------------------- lp ----
// torch: A = avg_pool2d(x.pow(p), k, s, 0, ceil_mode); y = (sign(A)*relu(|A|)).mul(kh*kw).pow(1/p)

__device__ __forceinline__ acc_t lp_avg(const scalar_t* xp, double norm, i64 oh, i64 ow, i64 H, i64 W,
                                        i64 kh, i64 kw, i64 sh, i64 sw, i64& count) {
    i64 hlo, hhi, hpool, wlo, whi, wpool;
    avg_axis(oh, sh, 0, kh, H, hlo, hhi, hpool);
    avg_axis(ow, sw, 0, kw, W, wlo, whi, wpool);
    count = hpool * wpool;
    if (hlo >= hhi || wlo >= whi) return (acc_t)0;
    acc_t sum = 0;
    for (i64 ih = hlo; ih < hhi; ++ih)
        for (i64 iw = wlo; iw < whi; ++iw) sum += torch_pow(to_acc(xp[ih * W + iw]), norm);
    return sum / (acc_t)count;
}

extern "C" __global__ void lp_pool2d_forward(
    const scalar_t* __restrict__ x, scalar_t* __restrict__ y, double norm,
    i64 planes, i64 H, i64 W, i64 OH, i64 OW, i64 kh, i64 kw, i64 sh, i64 sw) {
    const i64 total = planes * OH * OW;
    const acc_t kk = (acc_t)(kh * kw);
    const double inv_p = 1.0 / norm;
    for (i64 o = grid_first(); o < total; o += grid_step()) {
        const i64 ow = o % OW, t = o / OW, oh = t % OH, p = t / OH;
        i64 count;
        const acc_t a = lp_avg(x + p * H * W, norm, oh, ow, H, W, kh, kw, sh, sw, count);
        const acc_t aa = a < 0 ? -a : a;
        const acc_t r = (aa > (acc_t)0 || is_nan(a)) ? aa : (acc_t)0;
        y[o] = from_acc(torch_pow(torch_sign(a) * r * kk, inv_p));
    }
}

// delta[o] = d loss / d A[o] / count (what the avg-pool backward spreads).
extern "C" __global__ void lp_pool2d_backward_delta(
    const scalar_t* __restrict__ grad_y, const scalar_t* __restrict__ x, acc_t* __restrict__ delta, double norm,
    i64 planes, i64 H, i64 W, i64 OH, i64 OW, i64 kh, i64 kw, i64 sh, i64 sw) {
    const i64 total = planes * OH * OW;
    const acc_t kk = (acc_t)(kh * kw);
    const double inv_p = 1.0 / norm;
    const acc_t inv_p_t = (acc_t)inv_p;
    for (i64 o = grid_first(); o < total; o += grid_step()) {
        const i64 ow = o % OW, t = o / OW, oh = t % OH, p = t / OH;
        i64 count;
        const acc_t a = lp_avg(x + p * H * W, norm, oh, ow, H, W, kh, kw, sh, sw, count);
        const acc_t sg = torch_sign(a);
        const acc_t aa = a < 0 ? -a : a;
        const acc_t r = (aa > (acc_t)0 || is_nan(a)) ? aa : (acc_t)0;
        const acc_t b = (sg * r) * kk;
        const acc_t gy = to_acc(grad_y[o]);
        const acc_t gb = inv_p == 0.0 ? (acc_t)0 * gy : gy * (inv_p_t * torch_pow(b, inv_p - 1.0));
        const acc_t gc = gb * kk;
        const acc_t gabs = (r <= (acc_t)0) ? (acc_t)0 : gc * sg;
        const acc_t ga = gabs * sg;
        delta[o] = count > 0 ? ga / (acc_t)count : (acc_t)0;
    }
}

extern "C" __global__ void lp_pool2d_backward_gather(
    const acc_t* __restrict__ delta, const scalar_t* __restrict__ x, scalar_t* __restrict__ grad_x, double norm,
    i64 planes, i64 H, i64 W, i64 OH, i64 OW, i64 kh, i64 kw, i64 sh, i64 sw) {
    const i64 total = planes * H * W;
    const acc_t p_t = (acc_t)norm;
    for (i64 e = grid_first(); e < total; e += grid_step()) {
        const i64 iw = e % W, t = e / W, ih = t % H, p = t / H;
        i64 oh0, oh1, ow0, ow1;
        avg_candidates(ih, kh, sh, 0, OH, oh0, oh1);
        avg_candidates(iw, kw, sw, 0, OW, ow0, ow1);
        const acc_t* dp = delta + p * OH * OW;
        acc_t s = 0;
        for (i64 oh = oh0; oh <= oh1; ++oh)
            for (i64 ow = ow0; ow <= ow1; ++ow) s += dp[oh * OW + ow];
        const acc_t xv = to_acc(x[e]);
        grad_x[e] = from_acc(norm == 0.0 ? (acc_t)0 * s : s * (p_t * torch_pow(xv, norm - 1.0)));
    }
}

// ---------------------------------------------------------- adaptive ----

__device__ __forceinline__ i64 adaptive_start(i64 o, i64 m, i64 n) { return (o / m) * n + ((o % m) * n) / m; }
__device__ __forceinline__ i64 adaptive_end(i64 o, i64 m, i64 n) { return 1 + ((o + 1) * n - 1) / m; }

// Outputs o (of m) whose window contains input i (of n): [lo, hi].
__device__ __forceinline__ void adaptive_candidates(i64 i, i64 n, i64 m, i64& lo, i64& hi) {
    lo = (i * m) / n;
    hi = imin(((i + 1) * m - 1) / n, m - 1);
}

extern "C" __global__ void adaptive_avg_pool2d_forward(
    const scalar_t* __restrict__ x, scalar_t* __restrict__ y, i64 planes, i64 H, i64 W, i64 OH, i64 OW) {
    const i64 total = planes * OH * OW;
    for (i64 o = grid_first(); o < total; o += grid_step()) {
        const i64 ow = o % OW, t = o / OW, oh = t % OH, p = t / OH;
        const i64 h0 = adaptive_start(oh, OH, H), h1 = adaptive_end(oh, OH, H);
        const i64 w0 = adaptive_start(ow, OW, W), w1 = adaptive_end(ow, OW, W);
        const scalar_t* xp = x + p * H * W;
        acc_t sum = 0;
        for (i64 ih = h0; ih < h1; ++ih)
            for (i64 iw = w0; iw < w1; ++iw) sum += to_acc(xp[ih * W + iw]);
        y[o] = from_acc(sum / (acc_t)(h1 - h0) / (acc_t)(w1 - w0));
    }
}

extern "C" __global__ void adaptive_avg_pool2d_backward(
    const scalar_t* __restrict__ grad_y, scalar_t* __restrict__ grad_x, i64 planes, i64 H, i64 W, i64 OH, i64 OW) {
    const i64 total = planes * H * W;
    for (i64 e = grid_first(); e < total; e += grid_step()) {
        const i64 iw = e % W, t = e / W, ih = t % H, p = t / H;
        i64 oh0, oh1, ow0, ow1;
        adaptive_candidates(ih, H, OH, oh0, oh1);
        adaptive_candidates(iw, W, OW, ow0, ow1);
        const scalar_t* gp = grad_y + p * OH * OW;
        acc_t s = 0;
        for (i64 oh = oh0; oh <= oh1; ++oh) {
            const i64 h0 = adaptive_start(oh, OH, H), h1 = adaptive_end(oh, OH, H);
            if (ih < h0 || ih >= h1) continue;
            for (i64 ow = ow0; ow <= ow1; ++ow) {
                const i64 w0 = adaptive_start(ow, OW, W), w1 = adaptive_end(ow, OW, W);
                if (iw < w0 || iw >= w1) continue;
                s += to_acc(gp[oh * OW + ow]) / (acc_t)(h1 - h0) / (acc_t)(w1 - w0);
            }
        }
        grad_x[e] = from_acc(s);
    }
}

extern "C" __global__ void adaptive_max_pool2d_forward(
    const scalar_t* __restrict__ x, scalar_t* __restrict__ y, i64* __restrict__ indices, int write_indices,
    i64 planes, i64 H, i64 W, i64 OH, i64 OW) {
    const i64 total = planes * OH * OW;
    for (i64 o = grid_first(); o < total; o += grid_step()) {
        const i64 ow = o % OW, t = o / OW, oh = t % OH, p = t / OH;
        const i64 h0 = adaptive_start(oh, OH, H), h1 = adaptive_end(oh, OH, H);
        const i64 w0 = adaptive_start(ow, OW, W), w1 = adaptive_end(ow, OW, W);
        const scalar_t* xp = x + p * H * W;
        acc_t best = neg_inf();
        i64 best_i = h0 * W + w0;
        for (i64 ih = h0; ih < h1; ++ih)
            for (i64 iw = w0; iw < w1; ++iw) {
                const acc_t v = to_acc(xp[ih * W + iw]);
                if (v > best || is_nan(v)) {
                    best = v;
                    best_i = ih * W + iw;
                }
            }
        y[o] = from_acc(best);
        if (write_indices) indices[o] = best_i;
    }
}

extern "C" __global__ void adaptive_max_pool2d_check_indices(
    const i64* __restrict__ indices, unsigned long long* __restrict__ bad, i64 planes, i64 H, i64 W, i64 OH, i64 OW) {
    const i64 total = planes * OH * OW;
    for (i64 o = grid_first(); o < total; o += grid_step()) {
        const i64 ow = o % OW, oh = (o / OW) % OH;
        const i64 h0 = adaptive_start(oh, OH, H), h1 = adaptive_end(oh, OH, H);
        const i64 w0 = adaptive_start(ow, OW, W), w1 = adaptive_end(ow, OW, W);
        const i64 idx = indices[o];
        bool ok = idx >= 0 && idx < H * W;
        if (ok) {
            const i64 row = idx / W, col = idx - row * W;
            ok = row >= h0 && row < h1 && col >= w0 && col < w1;
        }
        if (!ok) atomicMin(bad, (unsigned long long)o);
    }
}

extern "C" __global__ void adaptive_max_pool2d_backward(
    const scalar_t* __restrict__ grad_y, const i64* __restrict__ indices, scalar_t* __restrict__ grad_x,
    i64 planes, i64 H, i64 W, i64 OH, i64 OW) {
    const i64 total = planes * H * W;
    for (i64 e = grid_first(); e < total; e += grid_step()) {
        const i64 iw = e % W, t = e / W, ih = t % H, p = t / H;
        i64 oh0, oh1, ow0, ow1;
        adaptive_candidates(ih, H, OH, oh0, oh1);
        adaptive_candidates(iw, W, OW, ow0, ow1);
        const i64 pos = ih * W + iw;
        const i64 base = p * OH * OW;
        acc_t s = 0;
        for (i64 oh = oh0; oh <= oh1; ++oh)
            for (i64 ow = ow0; ow <= ow1; ++ow) {
                const i64 o = base + oh * OW + ow;
                if (indices[o] == pos) s += to_acc(grad_y[o]);
            }
        grad_x[e] = from_acc(s);
    }
}
