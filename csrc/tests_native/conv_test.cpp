// Standalone test + benchmark for the conv2d kernels (not built by CMake).
//
// Build (from the repo root): csrc/tests_native/build.sh [OUT] [extra flags]
// It compiles csrc/kernels/gemm_*_avx2.cpp with -mavx2 -mfma and
// gemm_*_avx512.cpp with -mavx512f/vl/bw/dq (as CMake does), everything else
// portably, all with -O3 -fopenmp -DCONVKIT_HAVE_AVX2 -DCONVKIT_HAVE_AVX512.
// Sanitizers: csrc/tests_native/build.sh /tmp/conv_test_asan -g -fsanitize=address,undefined
// Usage: conv_test [test [iterations] | bench [reps [isa [layer-substring]]]]
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "conv2d.h"
#include "cpu_features.h"
#include "gemm.h"
#include "parallel.h"

using namespace convkit;

namespace {

struct Ref {
    std::vector<double> val, mag;  // value and sum of |terms| per element
};

inline bool in_range(int64_t v, int64_t n) { return v >= 0 && v < n; }

template <typename T>
void ref_forward(const ConvGeometry& g, const std::vector<T>& x, const std::vector<T>& w,
                 const T* bias, Ref& out) {
    const int64_t Cg = g.in_channels / g.groups, Kg = g.out_channels / g.groups;
    out.val.assign(g.y_size(), 0.0);
    out.mag.assign(g.y_size(), 0.0);
    for (int64_t n = 0; n < g.batch; ++n)
        for (int64_t k = 0; k < g.out_channels; ++k)
            for (int64_t oh = 0; oh < g.out_h; ++oh)
                for (int64_t ow = 0; ow < g.out_w; ++ow) {
                    double s = bias ? double(bias[k]) : 0.0, m = std::fabs(s);
                    const int64_t gi = k / Kg;
                    for (int64_t c = 0; c < Cg; ++c)
                        for (int64_t r = 0; r < g.kernel_h; ++r)
                            for (int64_t q = 0; q < g.kernel_w; ++q) {
                                const int64_t ih = oh * g.stride_h - g.pad_top + r * g.dilation_h;
                                const int64_t iw = ow * g.stride_w - g.pad_left + q * g.dilation_w;
                                if (!in_range(ih, g.in_h) || !in_range(iw, g.in_w)) continue;
                                const double a = x[((n * g.in_channels + gi * Cg + c) * g.in_h + ih) * g.in_w + iw];
                                const double b = w[((k * Cg + c) * g.kernel_h + r) * g.kernel_w + q];
                                s += a * b;
                                m += std::fabs(a * b);
                            }
                    const int64_t idx = ((n * g.out_channels + k) * g.out_h + oh) * g.out_w + ow;
                    out.val[idx] = s;
                    out.mag[idx] = m;
                }
}

// Backward data and weight from the same loop nest (adjoints of the forward).
template <typename T>
void ref_backward(const ConvGeometry& g, const std::vector<T>& x, const std::vector<T>& w,
                  const std::vector<T>& gy, Ref& gx, Ref& gw, Ref& gb) {
    const int64_t Cg = g.in_channels / g.groups, Kg = g.out_channels / g.groups;
    gx.val.assign(g.x_size(), 0.0); gx.mag.assign(g.x_size(), 0.0);
    gw.val.assign(g.w_size(), 0.0); gw.mag.assign(g.w_size(), 0.0);
    gb.val.assign(g.out_channels, 0.0); gb.mag.assign(g.out_channels, 0.0);
    for (int64_t n = 0; n < g.batch; ++n)
        for (int64_t k = 0; k < g.out_channels; ++k)
            for (int64_t oh = 0; oh < g.out_h; ++oh)
                for (int64_t ow = 0; ow < g.out_w; ++ow) {
                    const int64_t yi = ((n * g.out_channels + k) * g.out_h + oh) * g.out_w + ow;
                    const double dy = gy[yi];
                    gb.val[k] += dy;
                    gb.mag[k] += std::fabs(dy);
                    const int64_t gi = k / Kg;
                    for (int64_t c = 0; c < Cg; ++c)
                        for (int64_t r = 0; r < g.kernel_h; ++r)
                            for (int64_t q = 0; q < g.kernel_w; ++q) {
                                const int64_t ih = oh * g.stride_h - g.pad_top + r * g.dilation_h;
                                const int64_t iw = ow * g.stride_w - g.pad_left + q * g.dilation_w;
                                if (!in_range(ih, g.in_h) || !in_range(iw, g.in_w)) continue;
                                const int64_t xi = ((n * g.in_channels + gi * Cg + c) * g.in_h + ih) * g.in_w + iw;
                                const int64_t wi = ((k * Cg + c) * g.kernel_h + r) * g.kernel_w + q;
                                gx.val[xi] += dy * double(w[wi]);
                                gx.mag[xi] += std::fabs(dy * double(w[wi]));
                                gw.val[wi] += dy * double(x[xi]);
                                gw.mag[wi] += std::fabs(dy * double(x[xi]));
                            }
                }
}

template <typename T>
bool compare(const char* what, const ConvGeometry& g, const std::vector<T>& got, const Ref& ref,
             const char* ctx) {
    const double eps = std::is_same<T, float>::value ? 1e-4 : 1e-12;
    for (size_t i = 0; i < got.size(); ++i) {
        const double err = std::fabs(double(got[i]) - ref.val[i]);
        const double tol = eps * (ref.mag[i] + 1e-3);
        if (!(err <= tol)) {
            std::printf(
                "FAIL %s %s [%s] at %zu: got %.9g want %.9g (tol %.3g)\n"
                "  N=%lld C=%lld H=%lld W=%lld K=%lld R=%lld S=%lld OH=%lld OW=%lld st=%lld,%lld "
                "pad=%lld,%lld dil=%lld,%lld G=%lld\n",
                what, std::is_same<T, float>::value ? "f32" : "f64", ctx, i, double(got[i]),
                ref.val[i], tol, (long long)g.batch, (long long)g.in_channels, (long long)g.in_h,
                (long long)g.in_w, (long long)g.out_channels, (long long)g.kernel_h,
                (long long)g.kernel_w, (long long)g.out_h, (long long)g.out_w,
                (long long)g.stride_h, (long long)g.stride_w, (long long)g.pad_top,
                (long long)g.pad_left, (long long)g.dilation_h, (long long)g.dilation_w,
                (long long)g.groups);
            return false;
        }
    }
    return true;
}

template <typename T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

template <typename T>
struct Outputs {
    std::vector<T> y, yb, gx, gw, gb;
};

template <typename T>
Outputs<T> run_all(const ConvGeometry& g, const std::vector<T>& x, const std::vector<T>& w,
                   const std::vector<T>& bias, const std::vector<T>& gy) {
    const T nan = std::numeric_limits<T>::quiet_NaN();
    Outputs<T> o;
    o.y.assign(g.y_size(), nan);
    o.yb.assign(g.y_size(), nan);
    o.gx.assign(g.x_size(), nan);
    o.gw.assign(g.w_size(), nan);
    o.gb.assign(g.out_channels, nan);
    conv2d_forward<T>(g, x.data(), w.data(), nullptr, o.y.data());
    conv2d_forward<T>(g, x.data(), w.data(), bias.data(), o.yb.data());
    conv2d_backward_data<T>(g, gy.data(), w.data(), o.gx.data());
    conv2d_backward_weight<T>(g, gy.data(), x.data(), o.gw.data());
    conv2d_backward_bias<T>(g, gy.data(), o.gb.data());
    return o;
}

template <typename T>
bool check_geometry(const ConvGeometry& g, std::mt19937_64& rng, const std::vector<Isa>& isas,
                    const std::vector<int>& thread_counts = {1, 2, 3}) {
    std::uniform_real_distribution<double> U(-1.0, 1.0);
    std::vector<T> x(g.x_size()), w(g.w_size()), bias(g.out_channels), gy(g.y_size());
    for (auto& v : x) v = T(U(rng));
    for (auto& v : w) v = T(U(rng));
    for (auto& v : bias) v = T(U(rng));
    for (auto& v : gy) v = T(U(rng));
    Ref ry, ryb, rgx, rgw, rgb;
    ref_forward(g, x, w, static_cast<const T*>(nullptr), ry);
    ref_forward(g, x, w, bias.data(), ryb);
    ref_backward(g, x, w, gy, rgx, rgw, rgb);
    bool ok = true;
    for (Isa isa : isas) {
        set_active_isa(isa);
        Outputs<T> base;
        for (int threads : thread_counts) {
            set_num_threads(threads);
            Outputs<T> o = run_all(g, x, w, bias, gy);
            char ctx[64];
            std::snprintf(ctx, sizeof ctx, "%s, %d threads", isa_name(isa), threads);
            if (threads == 1) {
                ok = ok && compare("forward", g, o.y, ry, ctx);
                ok = ok && compare("forward+bias", g, o.yb, ryb, ctx);
                ok = ok && compare("backward_data", g, o.gx, rgx, ctx);
                ok = ok && compare("backward_weight", g, o.gw, rgw, ctx);
                ok = ok && compare("backward_bias", g, o.gb, rgb, ctx);
                base = o;
            } else if (!(bitwise_equal(o.y, base.y) && bitwise_equal(o.yb, base.yb) &&
                         bitwise_equal(o.gx, base.gx) && bitwise_equal(o.gw, base.gw) &&
                         bitwise_equal(o.gb, base.gb))) {
                std::printf("FAIL not bitwise identical across thread counts [%s]\n", ctx);
                ok = false;
            }
            if (!ok) return false;
        }
    }
    return ok;
}

ConvGeometry random_geometry(std::mt19937_64& rng) {
    auto ri = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
    ConvGeometry g;
    const int kind = int(ri(0, 9));
    g.batch = ri(0, 3);
    g.groups = ri(1, 3);
    int64_t Cg = ri(0, 4), Kg = ri(0, 4);
    if (kind == 0) { Cg = 1; Kg = 1; g.groups = ri(1, 6); }  // depthwise
    if (ri(0, 9) != 0) { Cg = std::max<int64_t>(Cg, 1); Kg = std::max<int64_t>(Kg, 1); }
    g.in_channels = Cg * g.groups;
    g.out_channels = Kg * g.groups;
    g.in_h = ri(0, 9);
    g.in_w = ri(0, 9);
    g.kernel_h = ri(1, 5);
    g.kernel_w = ri(1, 5);
    g.stride_h = ri(1, 3);
    g.stride_w = ri(1, 3);
    g.dilation_h = ri(1, 3);
    g.dilation_w = ri(1, 3);
    g.pad_top = ri(0, 3);
    g.pad_left = ri(0, 3);
    if (kind == 1) {  // pointwise
        g.kernel_h = g.kernel_w = 1;
        g.stride_h = g.stride_w = 1;
        g.pad_top = g.pad_left = 0;
    }
    if (kind <= 6) {
        const int64_t pb = ri(0, 3), pr = ri(0, 3);
        const int64_t eh = g.in_h + g.pad_top + pb - g.dilation_h * (g.kernel_h - 1) - 1;
        const int64_t ew = g.in_w + g.pad_left + pr - g.dilation_w * (g.kernel_w - 1) - 1;
        g.out_h = eh < 0 ? 0 : eh / g.stride_h + 1;
        g.out_w = ew < 0 ? 0 : ew / g.stride_w + 1;
    } else {  // arbitrary output size (reads past the input are zeros)
        g.out_h = ri(0, 6);
        g.out_w = ri(0, 6);
    }
    if (kind == 1 && ri(0, 1)) { g.out_h = g.in_h; g.out_w = g.in_w; }
    return g;
}

ConvGeometry make(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S,
                  int64_t stride, int64_t pad, int64_t dil, int64_t groups) {
    ConvGeometry g;
    g.batch = N; g.in_channels = C; g.in_h = H; g.in_w = W; g.out_channels = K;
    g.kernel_h = R; g.kernel_w = S; g.stride_h = g.stride_w = stride;
    g.pad_top = g.pad_left = pad; g.dilation_h = g.dilation_w = dil; g.groups = groups;
    const int64_t eh = H + 2 * pad - dil * (R - 1) - 1, ew = W + 2 * pad - dil * (S - 1) - 1;
    g.out_h = eh < 0 ? 0 : eh / stride + 1;
    g.out_w = ew < 0 ? 0 : ew / stride + 1;
    return g;
}

std::vector<Isa> runnable_isas() {
    std::vector<Isa> v{Isa::generic};
    if (int(best_supported_isa()) >= int(Isa::avx2)) v.push_back(Isa::avx2);
    if (int(best_supported_isa()) >= int(Isa::avx512)) v.push_back(Isa::avx512);
    return v;
}

int run_tests(int iterations) {
    std::mt19937_64 rng(12345);
    const auto isas = runnable_isas();
    std::printf("ISAs:");
    for (Isa i : isas) std::printf(" %s", isa_name(i));
    std::printf("\n");
    // Fixed geometries that exercise blocking (kc/mc/nc, column blocks, batch chunks).
    std::vector<ConvGeometry> fixed = {
        make(2, 70, 25, 23, 130, 3, 3, 1, 1, 1, 1),   // CRS > kc, K > mc, P > nc
        make(1, 300, 9, 9, 20, 1, 1, 1, 0, 1, 1),     // pointwise, C > kc
        make(20, 3, 7, 6, 5, 3, 2, 2, 1, 1, 1),       // many batch chunks
        make(3, 8, 30, 30, 8, 3, 3, 1, 1, 2, 2),      // P > nc, groups, dilation
        make(2, 6, 12, 12, 6, 3, 3, 1, 1, 1, 6),      // depthwise
        make(2, 4, 5, 5, 12, 7, 7, 1, 3, 1, 2),       // kernel bigger than input
        make(1, 2, 40, 40, 3, 1, 1, 1, 0, 1, 1),      // pointwise, P > nc
        make(2, 16, 3, 3, 1, 3, 3, 1, 1, 1, 1),       // K = 1
        make(0, 4, 5, 5, 6, 3, 3, 1, 1, 1, 2),        // batch 0
        make(1, 2, 1, 1, 2, 1, 1, 3, 2, 1, 1),        // tiny with big padding
        make(3, 5, 11, 9, 5, 3, 3, 2, 1, 1, 5),       // depthwise stride 2
        make(2, 3, 9, 9, 6, 3, 3, 2, 1, 1, 3),        // depth multiplier 2
        make(9, 1, 12, 12, 8, 3, 3, 1, 1, 1, 1),      // MNIST-like (direct backward weight)
        make(2, 6, 9, 9, 4, 1, 1, 2, 0, 1, 1),        // 1x1 stride 2
        make(1, 600, 23, 23, 4, 3, 3, 1, 1, 1, 1),    // many col rows (backward-data row blocks)
    };
    int failures = 0;
    for (const auto& g : fixed) {
        if (!check_geometry<float>(g, rng, isas, {1, 2, 3, 8})) ++failures;
        if (!check_geometry<double>(g, rng, isas, {1, 2, 3, 8})) ++failures;
    }
    for (int it = 0; it < iterations; ++it) {
        ConvGeometry g = random_geometry(rng);
        if (!check_geometry<float>(g, rng, isas)) ++failures;
        if (!check_geometry<double>(g, rng, isas)) ++failures;
        if (failures > 5) break;
    }
    std::printf("%s: %d failures (%zu fixed + %d random geometries, f32+f64, threads 1/2/3 (+8 on fixed))\n",
                failures ? "FAILED" : "OK", failures, fixed.size(), iterations);
    return failures ? 1 : 0;
}

template <typename T>
void bench_layer(const char* name, const ConvGeometry& g, int reps) {
    std::mt19937_64 rng(1);
    std::uniform_real_distribution<double> U(-1.0, 1.0);
    std::vector<T> x(g.x_size()), w(g.w_size()), b(g.out_channels), y(g.y_size()), gy(g.y_size()),
        gx(g.x_size()), gw(g.w_size());
    for (auto& v : x) v = T(U(rng));
    for (auto& v : w) v = T(U(rng));
    for (auto& v : gy) v = T(U(rng));
    const double flops = 2.0 * g.batch * g.out_channels * g.out_h * g.out_w *
                         (g.in_channels / g.groups) * g.kernel_h * g.kernel_w;
    // Wall time (best of reps) and process CPU time per thread (best of reps):
    // on a busy shared machine the latter shows what the kernels would reach
    // with their cores to themselves (run with OMP_WAIT_POLICY=passive so
    // that waiting threads do not burn CPU time).
    double cpu_best = 1e30;
    auto cpu_now = [] {
        timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return ts.tv_sec + ts.tv_nsec * 1e-9;
    };
    auto time = [&](auto&& f) {
        f();  // warm-up
        double best = 1e30;
        cpu_best = 1e30;
        for (int i = 0; i < reps; ++i) {
            const double c0 = cpu_now();
            auto t0 = std::chrono::steady_clock::now();
            f();
            auto t1 = std::chrono::steady_clock::now();
            cpu_best = std::min(cpu_best, (cpu_now() - c0) / num_threads());
            best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
        }
        return best;
    };
    const double tf = time([&] { conv2d_forward<T>(g, x.data(), w.data(), b.data(), y.data()); });
    const double cf = cpu_best;
    const double td = time([&] { conv2d_backward_data<T>(g, gy.data(), w.data(), gx.data()); });
    const double cd = cpu_best;
    const double tw = time([&] { conv2d_backward_weight<T>(g, gy.data(), x.data(), gw.data()); });
    const double cw = cpu_best;
    std::printf("  %-32s %s %-7s thr=%d  fwd %6.1f GF/s (%7.3f ms)  bwd_data %6.1f  bwd_w %6.1f"
                "  | per-thread-CPU-time GF/s: %6.1f %6.1f %6.1f\n",
                name, std::is_same<T, float>::value ? "f32" : "f64", isa_name(active_isa()),
                num_threads(), flops / tf * 1e-9, tf * 1e3, flops / td * 1e-9, flops / tw * 1e-9,
                flops / cf * 1e-9, flops / cd * 1e-9, flops / cw * 1e-9);
}

// Micro-kernel alone on L1-resident panels: the practical single-core peak.
template <typename T>
double microkernel_peak() {
    const GemmKernel<T> k = gemm_kernel<T>();
    const int64_t kc = k.kc;
    std::vector<T> a(kc * k.mr, T(1e-3)), b(kc * k.nr, T(1e-3)), c(int64_t(k.mr) * k.nr, T(0));
    double best = 0;
    for (int rep = 0; rep < 5; ++rep) {
        const int64_t iters = 20000;
        auto t0 = std::chrono::steady_clock::now();
        for (int64_t i = 0; i < iters; ++i) k.ukr(kc, a.data(), b.data(), c.data(), k.nr, 1, nullptr);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, 2.0 * kc * k.mr * k.nr * iters / s * 1e-9);
    }
    return best;
}

int run_bench(int reps, const char* only_isa, const char* only_layer) {
    struct L { const char* name; ConvGeometry g; };
    std::vector<L> layers = {
        {"N8 C=K=64 56x56 3x3 p1", make(8, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1)},
        {"N1 C=K=256 14x14 3x3 p1", make(1, 256, 14, 14, 256, 3, 3, 1, 1, 1, 1)},
        {"N1 1x1 C=256 K=64 56x56", make(1, 256, 56, 56, 64, 1, 1, 1, 0, 1, 1)},
        {"MNIST N128 C=1 K=8 28x28 3x3 p1", make(128, 1, 28, 28, 8, 3, 3, 1, 1, 1, 1)},
        {"dw N1 C=K=G=144 56x56 3x3 p1", make(1, 144, 56, 56, 144, 3, 3, 1, 1, 1, 144)},
        {"vgg N1 C=K=128 112x112 3x3 p1", make(1, 128, 112, 112, 128, 3, 3, 1, 1, 1, 1)},
        {"keras N64 C=32 K=64 14x14 5x5 p2", make(64, 32, 14, 14, 64, 5, 5, 1, 2, 1, 1)},
        {"mnist2 N128 C=8 K=16 14x14 3x3 p1", make(128, 8, 14, 14, 16, 3, 3, 1, 1, 1, 1)},
        {"r50l4 N1 C=K=512 7x7 3x3 p1", make(1, 512, 7, 7, 512, 3, 3, 1, 1, 1, 1)},
        {"r50l3 1x1 N2 C=1024 K=256 14x14", make(2, 1024, 14, 14, 256, 1, 1, 1, 0, 1, 1)},
        {"r50l2s2 N1 C=K=128 56x56 3x3 s2", make(1, 128, 56, 56, 128, 3, 3, 2, 1, 1, 1)},
        {"r50l4b N8 C=K=512 7x7 3x3 p1", make(8, 512, 7, 7, 512, 3, 3, 1, 1, 1, 1)},
        {"r50l3b N8 C=K=256 14x14 3x3 p1", make(8, 256, 14, 14, 256, 3, 3, 1, 1, 1, 1)},
        {"r50l2b N8 C=K=128 28x28 3x3 p1", make(8, 128, 28, 28, 128, 3, 3, 1, 1, 1, 1)},
    };
    const int threads0 = num_threads();
    for (Isa isa : runnable_isas()) {
        if (only_isa && std::strcmp(only_isa, isa_name(isa)) != 0) continue;
        set_active_isa(isa);
        std::printf("%s: micro-kernel peak (1 thread, L1) f32 %.1f GF/s, f64 %.1f GF/s\n",
                    isa_name(isa), microkernel_peak<float>(), microkernel_peak<double>());
        for (const auto& l : layers) {
            if (only_layer && !std::strstr(l.name, only_layer)) continue;
            for (int t : {1, threads0}) {
                set_num_threads(t);
                bench_layer<float>(l.name, l.g, reps);
                if (t == threads0) break;
            }
        }
        set_num_threads(threads0);
        if (!only_layer) bench_layer<double>(layers[0].name, layers[0].g, reps);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "test";
    if (mode == "bench") return run_bench(argc > 2 ? std::atoi(argv[2]) : 5, argc > 3 ? argv[3] : nullptr,
                         argc > 4 ? argv[4] : nullptr);
    return run_tests(argc > 2 ? std::atoi(argv[2]) : 300);
}
