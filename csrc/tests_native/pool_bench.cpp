// Micro-benchmark of the pool kernels (not built by CMake): median ms of the
// bench suite's quick pooling shapes, float32, reused buffers.
// Build: see build_pool_test.sh (same flags, this file instead of pool_test.cpp).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "parallel.h"
#include "pool2d.h"

using namespace convkit;

template <typename F>
static double med_ms(F f, int reps = 15) {
    std::vector<double> t;
    f();
    for (int i = 0; i < reps; ++i) {
        auto a = std::chrono::steady_clock::now();
        f();
        auto b = std::chrono::steady_clock::now();
        t.push_back(std::chrono::duration<double, std::milli>(b - a).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

static PoolGeometry geo(int64_t planes, int64_t h, int64_t k, int64_t s, int64_t p) {
    PoolGeometry g;
    g.planes = planes;
    g.in_h = g.in_w = h;
    g.kernel_h = g.kernel_w = k;
    g.stride_h = g.stride_w = s;
    g.pad_h = g.pad_w = p;
    g.out_h = g.out_w = (h + 2 * p - k) / s + 1;
    return g;
}

int main(int argc, char** argv) {
    set_num_threads(argc > 1 ? std::atoi(argv[1]) : 1);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> U(-1, 1);
    struct Case { const char* name; bool max; PoolGeometry g; };
    Case cases[] = {{"max3x3s2p1 2x64x112", true, geo(128, 112, 3, 2, 1)},
                    {"max2x2s2 1x128x112", true, geo(128, 112, 2, 2, 0)},
                    {"avg2x2s2 4x128x56", false, geo(512, 56, 2, 2, 0)},
                    {"avg3x3s1p1 4x192x35", false, geo(768, 35, 3, 1, 1)}};
    for (auto& c : cases) {
        const PoolGeometry& g = c.g;
        std::vector<float> x(g.x_size()), y(g.y_size()), gy(g.y_size()), gx(g.x_size());
        std::vector<int64_t> ind(g.y_size());
        for (auto& v : x) v = U(rng);
        for (auto& v : gy) v = U(rng);
        double f, b;
        if (c.max) {
            f = med_ms([&] { max_pool2d_forward(g, x.data(), y.data(), ind.data()); });
            b = med_ms([&] { max_pool2d_backward(g, gy.data(), ind.data(), gx.data()); });
        } else {
            f = med_ms([&] { avg_pool2d_forward(g, true, 0, x.data(), y.data()); });
            b = med_ms([&] { avg_pool2d_backward(g, true, 0, gy.data(), gx.data()); });
        }
        // Floor of a backward: read grad_y (and indices), write grad_x once.
        volatile int64_t sink = 0;
        const double fl = med_ms([&] {
            int64_t s = 0;
            for (size_t i = 0; i < ind.size(); ++i) s += c.max ? ind[i] : 0;
            uint32_t t = 0;
            const uint32_t* gb = reinterpret_cast<const uint32_t*>(gy.data());
            for (size_t i = 0; i < gy.size(); ++i) t ^= gb[i];
            std::fill(gx.begin(), gx.end(), static_cast<float>(t & 1));
            sink = s;
        });
        (void)sink;
        std::printf("%-24s fwd %7.3f ms  bwd %7.3f ms  (bwd floor %.3f ms)\n", c.name, f, b, fl);
    }
    AdaptiveGeometry a;
    a.planes = 16 * 2048;
    a.in_h = a.in_w = 7;
    a.out_h = a.out_w = 1;
    std::vector<float> x(a.x_size()), y(a.y_size()), gx(a.x_size());
    for (auto& v : x) v = U(rng);
    double f = med_ms([&] { adaptive_avg_pool2d_forward(a, x.data(), y.data()); });
    double b = med_ms([&] { adaptive_avg_pool2d_backward(a, y.data(), gx.data()); });
    std::printf("%-24s fwd %7.3f ms  bwd %7.3f ms\n", "globalavg 16x2048x7", f, b);
}
