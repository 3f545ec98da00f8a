// Native test harness for csrc/pool2d.cpp (not built by CMake).
// Build and run: csrc/tests_native/build_pool_test.sh [extra flags]
// Compares every pool kernel against naive loops on random geometries, float
// and double, thread counts 1/2/3 (bitwise equal to the naive loops and to
// each other), every ISA path the CPU has, and hostile indices for the max
// backwards (return value and no write outside grad_x).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu_features.h"
#include "parallel.h"
#include "pool2d.h"

using namespace convkit;

static int g_fail = 0;
static int64_t g_checks = 0;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        ++g_checks;                                        \
        if (!(cond)) {                                     \
            if (g_fail < 30) {                             \
                std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
                std::printf(__VA_ARGS__);                  \
                std::printf("\n");                         \
            }                                              \
            ++g_fail;                                      \
        }                                                  \
    } while (0)

template <typename T>
static bool same_bits(T a, T b) {
    if (std::isnan(a) && std::isnan(b)) return true;
    return std::memcmp(&a, &b, sizeof(T)) == 0;
}

template <typename T>
static int64_t first_diff(const std::vector<T>& a, const std::vector<T>& b) {
    if (a.size() != b.size()) return 0;
    for (size_t i = 0; i < a.size(); ++i)
        if (!same_bits(a[i], b[i])) return static_cast<int64_t>(i);
    return -1;
}
static int64_t first_diff_i(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
    if (a.size() != b.size()) return 0;
    for (size_t i = 0; i < a.size(); ++i)
        if (a[i] != b[i]) return static_cast<int64_t>(i);
    return -1;
}

static std::mt19937_64 rng(12345);
static int64_t rnd(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }

template <typename T>
static std::vector<T> rand_values(int64_t n, bool specials) {
    std::vector<T> v(static_cast<size_t>(n));
    const int mode = static_cast<int>(rnd(0, 2));
    for (auto& e : v) {
        if (mode == 0)
            e = static_cast<T>(rnd(-3, 3));  // many ties
        else
            e = static_cast<T>(std::uniform_real_distribution<double>(-2, 2)(rng));
        if (specials) {
            const int64_t r = rnd(0, 60);
            if (r == 0) e = std::numeric_limits<T>::quiet_NaN();
            if (r == 1) e = -std::numeric_limits<T>::infinity();
            if (r == 2) e = std::numeric_limits<T>::infinity();
            if (r == 3) e = T(-0.0);
        }
    }
    // Sometimes a plane full of -inf (initial index case).
    if (specials && rnd(0, 5) == 0)
        for (size_t i = 0; i < v.size() / 2; ++i) v[i] = -std::numeric_limits<T>::infinity();
    return v;
}

static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
    const int64_t num = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    if (num < 0) return 0;
    int64_t out = num / s + 1;
    if (ceil_mode && (out - 1) * s >= in + p) --out;
    return out;
}

static PoolGeometry rand_geometry(bool allow_dil, bool allow_pad, bool& ok) {
    PoolGeometry g;
    g.planes = rnd(0, 12) == 0 ? 0 : rnd(1, 7);
    g.in_h = rnd(1, 19);
    g.in_w = rnd(1, 40);
    g.kernel_h = rnd(1, 5);
    g.kernel_w = rnd(1, 5);
    g.stride_h = rnd(1, 4);
    g.stride_w = rnd(1, 4);
    g.dilation_h = allow_dil ? rnd(1, 3) : 1;
    g.dilation_w = allow_dil ? rnd(1, 3) : 1;
    g.pad_h = allow_pad ? rnd(0, g.kernel_h / 2) : 0;
    g.pad_w = allow_pad ? rnd(0, g.kernel_w / 2) : 0;
    const bool ceil_mode = rnd(0, 1);
    g.out_h = out_size(g.in_h, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h, ceil_mode);
    g.out_w = out_size(g.in_w, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w, ceil_mode);
    ok = g.out_h > 0 && g.out_w > 0;
    return g;
}

// ------------------------------------------------------------ naive refs ----

template <typename T>
static void naive_max(const PoolGeometry& g, const T* x, T* y, int64_t* ind) {
    for (int64_t p = 0; p < g.planes; ++p)
        for (int64_t oh = 0; oh < g.out_h; ++oh)
            for (int64_t ow = 0; ow < g.out_w; ++ow) {
                const int64_t hs = oh * g.stride_h - g.pad_h, ws = ow * g.stride_w - g.pad_w;
                int64_t ih0 = hs, iw0 = ws;
                while (ih0 < 0) ih0 += g.dilation_h;
                while (iw0 < 0) iw0 += g.dilation_w;
                int64_t best = ih0 * g.in_w + iw0;
                T m = -std::numeric_limits<T>::infinity();
                for (int64_t r = 0; r < g.kernel_h; ++r)
                    for (int64_t c = 0; c < g.kernel_w; ++c) {
                        const int64_t ih = hs + r * g.dilation_h, iw = ws + c * g.dilation_w;
                        if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) continue;
                        const T v = x[p * g.in_h * g.in_w + ih * g.in_w + iw];
                        if (v > m || std::isnan(v)) {
                            m = v;
                            best = ih * g.in_w + iw;
                        }
                    }
                const int64_t o = (p * g.out_h + oh) * g.out_w + ow;
                y[o] = m;
                ind[o] = best;
            }
}

template <typename T>
static void naive_avg(const PoolGeometry& g, bool cip, int64_t dov, const T* x, T* y) {
    for (int64_t p = 0; p < g.planes; ++p)
        for (int64_t oh = 0; oh < g.out_h; ++oh)
            for (int64_t ow = 0; ow < g.out_w; ++ow) {
                const int64_t hs = oh * g.stride_h - g.pad_h, ws = ow * g.stride_w - g.pad_w;
                const int64_t he = std::min(hs + g.kernel_h, g.in_h + g.pad_h);
                const int64_t we = std::min(ws + g.kernel_w, g.in_w + g.pad_w);
                const int64_t pool = (he - hs) * (we - ws);
                T sum = 0;
                int64_t cnt = 0;
                for (int64_t ih = hs; ih < he; ++ih)
                    for (int64_t iw = ws; iw < we; ++iw) {
                        if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) continue;
                        sum += x[p * g.in_h * g.in_w + ih * g.in_w + iw];
                        ++cnt;
                    }
                const int64_t o = (p * g.out_h + oh) * g.out_w + ow;
                if (cnt == 0) {
                    y[o] = 0;
                    continue;
                }
                const int64_t div = dov ? dov : (cip ? pool : cnt);
                y[o] = sum / static_cast<T>(div);
            }
}

// torch's avg backward: scatter grad/divisor in (oh, ow) order.
template <typename T>
static void naive_avg_bwd(const PoolGeometry& g, bool cip, int64_t dov, const T* gy, T* gx) {
    std::fill(gx, gx + g.x_size(), T(0));
    for (int64_t p = 0; p < g.planes; ++p)
        for (int64_t oh = 0; oh < g.out_h; ++oh)
            for (int64_t ow = 0; ow < g.out_w; ++ow) {
                int64_t ih0 = oh * g.stride_h - g.pad_h, iw0 = ow * g.stride_w - g.pad_w;
                int64_t ih1 = std::min(ih0 + g.kernel_h, g.in_h + g.pad_h);
                int64_t iw1 = std::min(iw0 + g.kernel_w, g.in_w + g.pad_w);
                const int64_t pool = (ih1 - ih0) * (iw1 - iw0);
                ih0 = std::max<int64_t>(ih0, 0);
                iw0 = std::max<int64_t>(iw0, 0);
                ih1 = std::min(ih1, g.in_h);
                iw1 = std::min(iw1, g.in_w);
                if (ih0 >= ih1 || iw0 >= iw1) continue;
                const int64_t div = dov ? dov : (cip ? pool : (ih1 - ih0) * (iw1 - iw0));
                const T d = gy[(p * g.out_h + oh) * g.out_w + ow] / static_cast<T>(div);
                for (int64_t ih = ih0; ih < ih1; ++ih)
                    for (int64_t iw = iw0; iw < iw1; ++iw) gx[p * g.in_h * g.in_w + ih * g.in_w + iw] += d;
            }
}

static int64_t ad_start(int64_t o, int64_t m, int64_t n) {
    return static_cast<int64_t>(std::floor(static_cast<double>(o * n) / m));
}
static int64_t ad_end(int64_t o, int64_t m, int64_t n) {
    return static_cast<int64_t>(std::ceil(static_cast<double>((o + 1) * n) / m));
}

template <typename T>
static void naive_adaptive_avg(const AdaptiveGeometry& g, const T* x, T* y) {
    for (int64_t p = 0; p < g.planes; ++p)
        for (int64_t oh = 0; oh < g.out_h; ++oh)
            for (int64_t ow = 0; ow < g.out_w; ++ow) {
                const int64_t h0 = ad_start(oh, g.out_h, g.in_h), h1 = ad_end(oh, g.out_h, g.in_h);
                const int64_t w0 = ad_start(ow, g.out_w, g.in_w), w1 = ad_end(ow, g.out_w, g.in_w);
                T s = 0;
                for (int64_t ih = h0; ih < h1; ++ih)
                    for (int64_t iw = w0; iw < w1; ++iw) s += x[p * g.in_h * g.in_w + ih * g.in_w + iw];
                y[(p * g.out_h + oh) * g.out_w + ow] = s / static_cast<T>(h1 - h0) / static_cast<T>(w1 - w0);
            }
}

template <typename T>
static void naive_adaptive_avg_bwd(const AdaptiveGeometry& g, const T* gy, T* gx) {
    std::fill(gx, gx + g.x_size(), T(0));
    for (int64_t p = 0; p < g.planes; ++p)
        for (int64_t oh = 0; oh < g.out_h; ++oh)
            for (int64_t ow = 0; ow < g.out_w; ++ow) {
                const int64_t h0 = ad_start(oh, g.out_h, g.in_h), h1 = ad_end(oh, g.out_h, g.in_h);
                const int64_t w0 = ad_start(ow, g.out_w, g.in_w), w1 = ad_end(ow, g.out_w, g.in_w);
                const T d = gy[(p * g.out_h + oh) * g.out_w + ow] / static_cast<T>(h1 - h0) / static_cast<T>(w1 - w0);
                for (int64_t ih = h0; ih < h1; ++ih)
                    for (int64_t iw = w0; iw < w1; ++iw) gx[p * g.in_h * g.in_w + ih * g.in_w + iw] += d;
            }
}

template <typename T>
static void naive_adaptive_max(const AdaptiveGeometry& g, const T* x, T* y, int64_t* ind) {
    for (int64_t p = 0; p < g.planes; ++p)
        for (int64_t oh = 0; oh < g.out_h; ++oh)
            for (int64_t ow = 0; ow < g.out_w; ++ow) {
                const int64_t h0 = ad_start(oh, g.out_h, g.in_h), h1 = ad_end(oh, g.out_h, g.in_h);
                const int64_t w0 = ad_start(ow, g.out_w, g.in_w), w1 = ad_end(ow, g.out_w, g.in_w);
                int64_t best = h0 * g.in_w + w0;
                T m = -std::numeric_limits<T>::infinity();
                for (int64_t ih = h0; ih < h1; ++ih)
                    for (int64_t iw = w0; iw < w1; ++iw) {
                        const T v = x[p * g.in_h * g.in_w + ih * g.in_w + iw];
                        if (v > m || std::isnan(v)) {
                            m = v;
                            best = ih * g.in_w + iw;
                        }
                    }
                y[(p * g.out_h + oh) * g.out_w + ow] = m;
                ind[(p * g.out_h + oh) * g.out_w + ow] = best;
            }
}

// Scatter with validation via a window-membership predicate.
template <typename T, typename InWin>
static int64_t naive_max_bwd(int64_t planes, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, const T* gy,
                             const int64_t* ind, T* gx, InWin in_win) {
    std::fill(gx, gx + planes * in_h * in_w, T(0));
    int64_t bad = -1;
    for (int64_t p = 0; p < planes; ++p)
        for (int64_t oh = 0; oh < out_h; ++oh)
            for (int64_t ow = 0; ow < out_w; ++ow) {
                const int64_t o = (p * out_h + oh) * out_w + ow;
                const int64_t i = ind[o];
                const int ok = in_win(oh, ow, i);  // 0 bad, 1 add, 2 accepted without gradient
                if (ok == 0) {
                    if (bad < 0) bad = o;
                    continue;
                }
                if (ok == 1) gx[p * in_h * in_w + i] += gy[o];
            }
    return bad;
}

template <typename T>
static bool max_tap_in_window(const PoolGeometry& g, int64_t oh, int64_t ow, int64_t row, int64_t col) {
    for (int64_t r = 0; r < g.kernel_h; ++r)
        for (int64_t c = 0; c < g.kernel_w; ++c)
            if (oh * g.stride_h - g.pad_h + r * g.dilation_h == row &&
                ow * g.stride_w - g.pad_w + c * g.dilation_w == col)
                return true;
    return false;
}

// Randomly corrupt some indices; returns the expected first bad position via naive_max_bwd.
static void corrupt(std::vector<int64_t>& ind, int64_t plane_in, int64_t in_w) {
    if (ind.empty()) return;
    const int64_t n = rnd(1, 3);
    for (int64_t k = 0; k < n; ++k) {
        const size_t pos = static_cast<size_t>(rnd(0, static_cast<int64_t>(ind.size()) - 1));
        switch (rnd(0, 6)) {
            case 0: ind[pos] = -1; break;
            case 1: ind[pos] = plane_in; break;
            case 2: ind[pos] = std::numeric_limits<int64_t>::max(); break;
            case 3: ind[pos] = std::numeric_limits<int64_t>::min(); break;
            case 4: ind[pos] = rnd(0, std::max<int64_t>(plane_in - 1, 0)); break;  // maybe outside window
            case 5: ind[pos] = static_cast<int64_t>(static_cast<uint64_t>(ind[pos]) + 1); break;
            default: ind[pos] = static_cast<int64_t>(static_cast<uint64_t>(ind[pos]) + static_cast<uint64_t>(in_w)); break;
        }
    }
}

static const int kThreads[] = {1, 2, 3};

static std::vector<Isa> isas() {
    std::vector<Isa> v{Isa::generic};
    if (static_cast<int>(best_supported_isa()) >= 1) v.push_back(Isa::avx2);
    if (static_cast<int>(best_supported_isa()) >= 2) v.push_back(Isa::avx512);
    return v;
}

// Canary-guarded buffer.
template <typename T>
struct Guarded {
    std::vector<T> buf;
    int64_t n;
    static constexpr int64_t G = 16;
    explicit Guarded(int64_t n_) : buf(static_cast<size_t>(n_ + 2 * G), T(12345.0)), n(n_) {}
    T* data() { return buf.data() + G; }
    bool intact() const {
        for (int64_t i = 0; i < G; ++i)
            if (buf[i] != T(12345.0) || buf[G + n + i] != T(12345.0)) return false;
        return true;
    }
    std::vector<T> body() const { return std::vector<T>(buf.begin() + G, buf.begin() + G + n); }
};

template <typename T>
static void test_max(int iters) {
    for (int it = 0; it < iters; ++it) {
        bool ok;
        PoolGeometry g = rand_geometry(true, true, ok);
        if (!ok) continue;
        auto x = rand_values<T>(g.x_size(), true);
        std::vector<T> yr(g.y_size());
        std::vector<int64_t> ir(g.y_size());
        naive_max(g, x.data(), yr.data(), ir.data());
        auto gy = rand_values<T>(g.y_size(), false);
        std::vector<T> gxr(g.x_size());
        auto in_win = [&](int64_t oh, int64_t ow, int64_t i) -> int {
            bool any = false;
            for (int64_t r = 0; r < g.kernel_h; ++r)
                for (int64_t c = 0; c < g.kernel_w; ++c) {
                    const int64_t ih = oh * g.stride_h - g.pad_h + r * g.dilation_h;
                    const int64_t iw = ow * g.stride_w - g.pad_w + c * g.dilation_w;
                    any |= ih >= 0 && ih < g.in_h && iw >= 0 && iw < g.in_w;
                }
            if (!any) {  // padding-only window: accept exactly the forward's index
                int64_t ih0 = oh * g.stride_h - g.pad_h, iw0 = ow * g.stride_w - g.pad_w;
                while (ih0 < 0) ih0 += g.dilation_h;
                while (iw0 < 0) iw0 += g.dilation_w;
                return i == ih0 * g.in_w + iw0 ? 2 : 0;
            }
            if (i < 0 || i >= g.in_h * g.in_w) return 0;
            return max_tap_in_window<T>(g, oh, ow, i / g.in_w, i % g.in_w) ? 1 : 0;
        };
        int64_t badr = naive_max_bwd(g.planes, g.in_h, g.in_w, g.out_h, g.out_w, gy.data(), ir.data(), gxr.data(), in_win);
        // Windows with no tap inside the input (possible with dilation, e.g.
        // k=2 p=1 d=3 on width 2) give -inf and an index outside the window;
        // torch corrupts memory on their backward, we report them as bad.
        bool has_empty = false;
        for (int64_t oh = 0; oh < g.out_h; ++oh)
            for (int64_t ow = 0; ow < g.out_w; ++ow) {
                bool any = false;
                for (int64_t r = 0; r < g.kernel_h; ++r)
                    for (int64_t c = 0; c < g.kernel_w; ++c) {
                        const int64_t ih = oh * g.stride_h - g.pad_h + r * g.dilation_h;
                        const int64_t iw = ow * g.stride_w - g.pad_w + c * g.dilation_w;
                        any |= ih >= 0 && ih < g.in_h && iw >= 0 && iw < g.in_w;
                    }
                has_empty |= !any;
            }
        CHECK(badr == -1, "naive max backward rejects own forward indices (empty=%d)", (int)has_empty);
        auto ih = ir;
        corrupt(ih, g.in_h * g.in_w, g.in_w);
        std::vector<T> gxh(g.x_size());
        const int64_t badh =
            naive_max_bwd(g.planes, g.in_h, g.in_w, g.out_h, g.out_w, gy.data(), ih.data(), gxh.data(), in_win);
        for (Isa isa : isas()) {
            set_active_isa(isa);
            for (int nt : kThreads) {
                set_num_threads(nt);
                std::vector<T> y(g.y_size(), T(777));
                std::vector<int64_t> ind(g.y_size(), 777);
                max_pool2d_forward(g, x.data(), y.data(), ind.data());
                int64_t d = first_diff(y, yr), di = first_diff_i(ind, ir);
                CHECK(d < 0 && di < 0, "max fwd isa=%d nt=%d P=%lld %lldx%lld k%lldx%lld s%lldx%lld p%lldx%lld d%lldx%lld at %lld/%lld",
                      (int)isa, nt, (long long)g.planes, (long long)g.in_h, (long long)g.in_w, (long long)g.kernel_h,
                      (long long)g.kernel_w, (long long)g.stride_h, (long long)g.stride_w, (long long)g.pad_h,
                      (long long)g.pad_w, (long long)g.dilation_h, (long long)g.dilation_w, (long long)d, (long long)di);
                std::vector<T> y2(g.y_size(), T(777));
                max_pool2d_forward<T>(g, x.data(), y2.data(), nullptr);
                CHECK(first_diff(y2, yr) < 0, "max fwd without indices");
                Guarded<T> gx(g.x_size());
                int64_t bad = max_pool2d_backward(g, gy.data(), ir.data(), gx.data());
                CHECK(bad == badr && gx.intact(), "max bwd nt=%d bad=%lld", nt, (long long)bad);
                if (badr < 0) CHECK(first_diff(gx.body(), gxr) < 0, "max bwd values nt=%d", nt);
                Guarded<T> gx2(g.x_size());
                bad = max_pool2d_backward(g, gy.data(), ih.data(), gx2.data());
                CHECK(bad == badh && gx2.intact(), "max bwd hostile: got %lld want %lld", (long long)bad,
                      (long long)badh);
                if (badh < 0) CHECK(first_diff(gx2.body(), gxh) < 0, "max bwd hostile-but-valid values");
            }
        }
    }
}

template <typename T>
static void test_avg(int iters) {
    for (int it = 0; it < iters; ++it) {
        bool ok;
        PoolGeometry g = rand_geometry(false, true, ok);
        if (!ok) continue;
        const bool cip = rnd(0, 1);
        const int64_t dov = rnd(0, 3) == 0 ? rnd(-3, 7) : 0;
        auto x = rand_values<T>(g.x_size(), rnd(0, 3) == 0);
        auto gy = rand_values<T>(g.y_size(), false);
        std::vector<T> yr(g.y_size()), gxr(g.x_size());
        naive_avg(g, cip, dov, x.data(), yr.data());
        naive_avg_bwd(g, cip, dov, gy.data(), gxr.data());
        for (Isa isa : isas()) {
            set_active_isa(isa);
            for (int nt : kThreads) {
                set_num_threads(nt);
                std::vector<T> y(g.y_size(), T(777));
                avg_pool2d_forward(g, cip, dov, x.data(), y.data());
                int64_t d = first_diff(y, yr);
                CHECK(d < 0, "avg fwd isa=%d nt=%d cip=%d dov=%lld P=%lld %lldx%lld k%lldx%lld s%lldx%lld p%lldx%lld at %lld",
                      (int)isa, nt, (int)cip, (long long)dov, (long long)g.planes, (long long)g.in_h, (long long)g.in_w,
                      (long long)g.kernel_h, (long long)g.kernel_w, (long long)g.stride_h, (long long)g.stride_w,
                      (long long)g.pad_h, (long long)g.pad_w, (long long)d);
                Guarded<T> gx(g.x_size());
                avg_pool2d_backward(g, cip, dov, gy.data(), gx.data());
                d = first_diff(gx.body(), gxr);
                CHECK(d < 0 && gx.intact(), "avg bwd nt=%d at %lld", nt, (long long)d);
            }
        }
    }
}

// lp: compare threads/ISAs against each other (bitwise) and against a naive
// formula evaluation (tolerance; torch itself is checked from Python).
template <typename T>
static void test_lp(int iters) {
    const double ps[] = {1.0, 2.0, 3.0, 1.5, 0.5, 4.0};
    for (int it = 0; it < iters; ++it) {
        bool ok;
        PoolGeometry g = rand_geometry(false, false, ok);
        if (!ok) continue;
        const double p = ps[rnd(0, 5)];
        auto x = rand_values<T>(g.x_size(), false);
        if (p != 1.0 && p != 2.0 && p != 3.0 && p != 4.0)
            for (auto& v : x) v = std::abs(v) + T(0.25);
        auto gy = rand_values<T>(g.y_size(), false);
        std::vector<T> y0, gx0;
        // naive: per output A, y = (A*kk)^(1/p); grad per formula
        std::vector<T> yn(g.y_size()), gxn(g.x_size(), T(0));
        const double kk = double(g.kernel_h * g.kernel_w);
        for (int64_t pl = 0; pl < g.planes; ++pl)
            for (int64_t oh = 0; oh < g.out_h; ++oh)
                for (int64_t ow = 0; ow < g.out_w; ++ow) {
                    const int64_t h0 = oh * g.stride_h, h1 = std::min(h0 + g.kernel_h, g.in_h);
                    const int64_t w0 = ow * g.stride_w, w1 = std::min(w0 + g.kernel_w, g.in_w);
                    double s = 0;
                    for (int64_t ih = h0; ih < h1; ++ih)
                        for (int64_t iw = w0; iw < w1; ++iw)
                            s += std::pow(double(x[pl * g.in_h * g.in_w + ih * g.in_w + iw]), p);
                    const double cnt = double((h1 - h0) * (w1 - w0));
                    const double A = s / cnt;
                    const int64_t o = (pl * g.out_h + oh) * g.out_w + ow;
                    yn[o] = static_cast<T>(std::pow(A * kk, 1.0 / p));
                    const double gA = A == 0 ? 0.0 : double(gy[o]) * (1.0 / p) * std::pow(A * kk, 1.0 / p - 1.0) * kk;
                    for (int64_t ih = h0; ih < h1; ++ih)
                        for (int64_t iw = w0; iw < w1; ++iw) {
                            const int64_t i = pl * g.in_h * g.in_w + ih * g.in_w + iw;
                            gxn[i] = static_cast<T>(double(gxn[i]) + gA / cnt * p * std::pow(double(x[i]), p - 1.0));
                        }
                }
        for (Isa isa : isas()) {
            set_active_isa(isa);
            for (int nt : kThreads) {
                set_num_threads(nt);
                std::vector<T> y(g.y_size(), T(777));
                lp_pool2d_forward(g, p, x.data(), y.data());
                Guarded<T> gx(g.x_size());
                lp_pool2d_backward(g, p, gy.data(), x.data(), gx.data());
                CHECK(gx.intact(), "lp bwd guard");
                if (y0.empty() && gx0.empty() && nt == 1 && isa == Isa::generic) {
                    y0 = y;
                    gx0 = gx.body();
                    const double tol = sizeof(T) == 4 ? 2e-4 : 1e-10;
                    for (size_t i = 0; i < y.size(); ++i) {
                        const bool both_nan = std::isnan(double(y[i])) && std::isnan(double(yn[i]));
                        CHECK(both_nan || std::abs(double(y[i]) - double(yn[i])) <= tol * (1 + std::abs(double(yn[i]))),
                              "lp fwd p=%g i=%zu got %g want %g", p, i, double(y[i]), double(yn[i]));
                    }
                    for (size_t i = 0; i < gx0.size(); ++i) {
                        const bool fin = std::isfinite(double(gxn[i]));
                        CHECK(!fin || std::abs(double(gx0[i]) - double(gxn[i])) <= tol * 10 * (1 + std::abs(double(gxn[i]))),
                              "lp bwd p=%g i=%zu got %g want %g", p, i, double(gx0[i]), double(gxn[i]));
                    }
                } else {
                    CHECK(first_diff(y, y0) < 0 && first_diff(gx.body(), gx0) < 0, "lp nt/isa bitwise");
                }
            }
        }
    }
}

template <typename T>
static void test_adaptive(int iters) {
    for (int it = 0; it < iters; ++it) {
        AdaptiveGeometry g;
        g.planes = rnd(0, 12) == 0 ? 0 : rnd(1, 11);
        g.in_h = rnd(1, 20);
        g.in_w = rnd(1, 33);
        const int64_t mode = rnd(0, 3);
        if (mode == 0) {
            g.out_h = rnd(1, 2);
            g.out_w = g.out_h == 1 ? 2 : 1;
        } else if (mode == 1) {  // divisible
            g.out_h = g.in_h / rnd(1, g.in_h);
            g.out_w = g.in_w / rnd(1, g.in_w);
            while (g.in_h % g.out_h) --g.out_h;
            while (g.in_w % g.out_w) --g.out_w;
        } else {
            g.out_h = rnd(1, 25);
            g.out_w = rnd(1, 25);
        }
        if (g.out_h == 1 && g.out_w == 1) continue;  // mean() semantics: test_global
        auto x = rand_values<T>(g.x_size(), true);
        auto xa = rand_values<T>(g.x_size(), false);
        auto gy = rand_values<T>(g.y_size(), false);
        std::vector<T> yr(g.y_size()), ymr(g.y_size()), gxr(g.x_size()), gxm(g.x_size());
        std::vector<int64_t> ir(g.y_size());
        naive_adaptive_avg(g, xa.data(), yr.data());
        naive_adaptive_avg_bwd(g, gy.data(), gxr.data());
        naive_adaptive_max(g, x.data(), ymr.data(), ir.data());
        auto in_win = [&](int64_t oh, int64_t ow, int64_t i) -> int {
            if (i < 0 || i >= g.in_h * g.in_w) return 0;
            const int64_t r = i / g.in_w, c = i % g.in_w;
            return r >= ad_start(oh, g.out_h, g.in_h) && r < ad_end(oh, g.out_h, g.in_h) &&
                   c >= ad_start(ow, g.out_w, g.in_w) && c < ad_end(ow, g.out_w, g.in_w);
        };
        CHECK(naive_max_bwd(g.planes, g.in_h, g.in_w, g.out_h, g.out_w, gy.data(), ir.data(), gxm.data(), in_win) == -1,
              "naive adaptive max bwd");
        auto ih = ir;
        corrupt(ih, g.in_h * g.in_w, g.in_w);
        std::vector<T> gxh(g.x_size());
        const int64_t badh =
            naive_max_bwd(g.planes, g.in_h, g.in_w, g.out_h, g.out_w, gy.data(), ih.data(), gxh.data(), in_win);
        for (Isa isa : isas()) {
            set_active_isa(isa);
            for (int nt : kThreads) {
                set_num_threads(nt);
                std::vector<T> y(g.y_size(), T(777));
                adaptive_avg_pool2d_forward(g, xa.data(), y.data());
                int64_t d = first_diff(y, yr);
                CHECK(d < 0, "adaptive avg fwd nt=%d P=%lld %lldx%lld -> %lldx%lld at %lld", nt, (long long)g.planes,
                      (long long)g.in_h, (long long)g.in_w, (long long)g.out_h, (long long)g.out_w, (long long)d);
                Guarded<T> gx(g.x_size());
                adaptive_avg_pool2d_backward(g, gy.data(), gx.data());
                CHECK(first_diff(gx.body(), gxr) < 0 && gx.intact(), "adaptive avg bwd nt=%d", nt);
                std::vector<T> ym(g.y_size(), T(777));
                std::vector<int64_t> ind(g.y_size(), 777);
                adaptive_max_pool2d_forward(g, x.data(), ym.data(), ind.data());
                CHECK(first_diff(ym, ymr) < 0 && first_diff_i(ind, ir) < 0,
                      "adaptive max fwd isa=%d nt=%d P=%lld %lldx%lld -> %lldx%lld", (int)isa, nt, (long long)g.planes,
                      (long long)g.in_h, (long long)g.in_w, (long long)g.out_h, (long long)g.out_w);
                Guarded<T> gm(g.x_size());
                int64_t bad = adaptive_max_pool2d_backward(g, gy.data(), ir.data(), gm.data());
                CHECK(bad == -1 && first_diff(gm.body(), gxm) < 0 && gm.intact(), "adaptive max bwd");
                Guarded<T> gm2(g.x_size());
                bad = adaptive_max_pool2d_backward(g, gy.data(), ih.data(), gm2.data());
                CHECK(bad == badh && gm2.intact(), "adaptive max bwd hostile got %lld want %lld", (long long)bad,
                      (long long)badh);
                if (badh < 0) CHECK(first_diff(gm2.body(), gxh) < 0, "adaptive max hostile-valid values");
            }
        }
    }
}

// 1x1 adaptive average = torch's mean: accurate sum / (h*w); backward gy/(h*w).
template <typename T>
static void test_global() {
    for (int it = 0; it < 50; ++it) {
        AdaptiveGeometry g;
        g.planes = rnd(1, 20);
        g.in_h = rnd(1, 40);
        g.in_w = rnd(1, 40);
        g.out_h = g.out_w = 1;
        auto x = rand_values<T>(g.x_size(), false);
        auto gy = rand_values<T>(g.y_size(), false);
        std::vector<T> y0;
        for (int nt : kThreads) {
            set_num_threads(nt);
            std::vector<T> y(g.y_size());
            adaptive_avg_pool2d_forward(g, x.data(), y.data());
            Guarded<T> gx(g.x_size());
            adaptive_avg_pool2d_backward(g, gy.data(), gx.data());
            CHECK(gx.intact(), "global bwd guard");
            auto b = gx.body();
            for (int64_t p = 0; p < g.planes; ++p) {
                long double s = 0;
                for (int64_t i = 0; i < g.in_h * g.in_w; ++i) s += x[p * g.in_h * g.in_w + i];
                const long double want = s / (g.in_h * g.in_w);
                CHECK(std::abs((long double)y[p] - want) <= (sizeof(T) == 4 ? 1e-6L : 1e-14L) * (2 + std::abs(want)),
                      "global fwd");
                const T d = gy[p] / static_cast<T>(g.in_h * g.in_w);
                for (int64_t i = 0; i < g.in_h * g.in_w; ++i) CHECK(same_bits(b[p * g.in_h * g.in_w + i], d), "global bwd");
            }
            if (y0.empty()) y0 = y;
            CHECK(first_diff(y, y0) < 0, "global threads bitwise");
        }
    }
}

// A few fixed larger shapes (threaded paths with interior chunks > 256).
template <typename T>
static void test_large() {
    PoolGeometry g;
    g.planes = 3;
    g.in_h = 37;
    g.in_w = 700;
    g.kernel_h = 3;
    g.kernel_w = 3;
    g.stride_h = 2;
    g.stride_w = 2;
    g.pad_h = 1;
    g.pad_w = 1;
    g.out_h = out_size(g.in_h, 3, 2, 1, 1, true);
    g.out_w = out_size(g.in_w, 3, 2, 1, 1, true);
    for (int sw = 1; sw <= 3; ++sw) {
        g.stride_w = sw;
        g.out_w = out_size(g.in_w, 3, sw, 1, 1, false);
        auto x = rand_values<T>(g.x_size(), true);
        std::vector<T> yr(g.y_size()), ya(g.y_size());
        std::vector<int64_t> ir(g.y_size());
        naive_max(g, x.data(), yr.data(), ir.data());
        auto xa = rand_values<T>(g.x_size(), false);
        naive_avg(g, true, 0, xa.data(), ya.data());
        for (Isa isa : isas()) {
            set_active_isa(isa);
            for (int nt : kThreads) {
                set_num_threads(nt);
                std::vector<T> y(g.y_size());
                std::vector<int64_t> ind(g.y_size());
                max_pool2d_forward(g, x.data(), y.data(), ind.data());
                CHECK(first_diff(y, yr) < 0 && first_diff_i(ind, ir) < 0, "large max sw=%d", sw);
                avg_pool2d_forward(g, true, 0, xa.data(), y.data());
                CHECK(first_diff(y, ya) < 0, "large avg sw=%d", sw);
            }
        }
    }
}

int main(int argc, char** argv) {
    const int iters = argc > 1 ? std::atoi(argv[1]) : 400;
    test_large<float>();
    test_large<double>();
    test_max<float>(iters);
    test_max<double>(iters);
    test_avg<float>(iters);
    test_avg<double>(iters);
    test_lp<float>(iters / 2);
    test_lp<double>(iters / 2);
    test_global<float>();
    test_global<double>();
    test_adaptive<float>(iters);
    test_adaptive<double>(iters);
    std::printf("%s: %lld checks, %d failures\n", g_fail ? "FAILED" : "OK", (long long)g_checks, g_fail);
    return g_fail ? 1 : 0;
}
