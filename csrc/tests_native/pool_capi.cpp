// C ABI over the pool kernels for csrc/tests_native/pool_torch_check.py
// (ctypes), built by that script; not part of the package.
#include <cstdint>

#include "cpu_features.h"
#include "parallel.h"
#include "pool2d.h"

using namespace convkit;

static PoolGeometry pg(const int64_t* a) {
    PoolGeometry g;
    g.planes = a[0]; g.in_h = a[1]; g.in_w = a[2]; g.out_h = a[3]; g.out_w = a[4];
    g.kernel_h = a[5]; g.kernel_w = a[6]; g.stride_h = a[7]; g.stride_w = a[8];
    g.pad_h = a[9]; g.pad_w = a[10]; g.dilation_h = a[11]; g.dilation_w = a[12];
    return g;
}
static AdaptiveGeometry ag(const int64_t* a) {
    AdaptiveGeometry g;
    g.planes = a[0]; g.in_h = a[1]; g.in_w = a[2]; g.out_h = a[3]; g.out_w = a[4];
    return g;
}

#define DEF(T, S)                                                                                               \
    extern "C" void max_fwd_##S(const int64_t* a, const T* x, T* y, int64_t* i) { max_pool2d_forward(pg(a), x, y, i); } \
    extern "C" int64_t max_bwd_##S(const int64_t* a, const T* gy, const int64_t* i, T* gx) {                     \
        return max_pool2d_backward(pg(a), gy, i, gx);                                                            \
    }                                                                                                             \
    extern "C" void avg_fwd_##S(const int64_t* a, int cip, int64_t d, const T* x, T* y) {                        \
        avg_pool2d_forward(pg(a), cip != 0, d, x, y);                                                            \
    }                                                                                                             \
    extern "C" void avg_bwd_##S(const int64_t* a, int cip, int64_t d, const T* gy, T* gx) {                      \
        avg_pool2d_backward(pg(a), cip != 0, d, gy, gx);                                                         \
    }                                                                                                             \
    extern "C" void lp_fwd_##S(const int64_t* a, double p, const T* x, T* y) { lp_pool2d_forward(pg(a), p, x, y); } \
    extern "C" void lp_bwd_##S(const int64_t* a, double p, const T* gy, const T* x, T* gx) {                     \
        lp_pool2d_backward(pg(a), p, gy, x, gx);                                                                 \
    }                                                                                                             \
    extern "C" void aavg_fwd_##S(const int64_t* a, const T* x, T* y) { adaptive_avg_pool2d_forward(ag(a), x, y); } \
    extern "C" void aavg_bwd_##S(const int64_t* a, const T* gy, T* gx) { adaptive_avg_pool2d_backward(ag(a), gy, gx); } \
    extern "C" void amax_fwd_##S(const int64_t* a, const T* x, T* y, int64_t* i) {                               \
        adaptive_max_pool2d_forward(ag(a), x, y, i);                                                             \
    }                                                                                                             \
    extern "C" int64_t amax_bwd_##S(const int64_t* a, const T* gy, const int64_t* i, T* gx) {                    \
        return adaptive_max_pool2d_backward(ag(a), gy, i, gx);                                                   \
    }

DEF(float, f32)
DEF(double, f64)

extern "C" void set_threads(int n) { set_num_threads(n); }
extern "C" int set_isa(int i) {
    try {
        set_active_isa(static_cast<Isa>(i));
        return 0;
    } catch (...) {
        return -1;
    }
}
