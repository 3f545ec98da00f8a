// libFuzzer target for the native kernels (not built by CMake).
//
// Decodes the fuzzer's bytes into a ConvGeometry / PoolGeometry /
// AdaptiveGeometry (mostly small fields, sometimes extreme ones: 0, negative,
// 2**31, 2**40, 2**62, INT64_MAX, ...), runs convkit::validate() exactly as the
// Python binding does, and when the geometry passes (and the buffers are
// small enough to allocate) calls one kernel on exactly-sized heap buffers, so
// AddressSanitizer flags any read or write outside them. Also checked:
//   * every output element is written (outputs are prefilled with a NaN
//     payload that the kernels cannot produce from the finite inputs);
//   * max-pool backward (regular and adaptive) with arbitrary int64 indices
//     returns -1 exactly when every index is one of its window's taps, and
//     otherwise the position of an index that is not;
//   * indices from a forward pass (all windows non-empty) pass the backward;
//   * conv2d_forward matches a naive loop on small cases.
// Thread count (1..3) and ISA path (up to the best the CPU has) come from the
// input too. A failed check aborts (libFuzzer reports it as a crash).
//
// Build (clang with libFuzzer; libgomp, as the package uses):
//   csrc/tests_native/fuzz_build.sh [OUT]       (default /tmp/convkit_fuzz)
// Run, e.g. for two minutes (stops at the first crash; artifacts go to the cwd).
// The ASan options let an absurd allocation fail (std::bad_alloc, which the
// Python binding turns into MemoryError) instead of reserving terabytes:
//   mkdir -p /tmp/fuzz_corpus && ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=2048 \
//       /tmp/convkit_fuzz /tmp/fuzz_corpus -max_total_time=120 -timeout=20 -rss_limit_mb=4096 -max_len=256
// To keep going past crashes and collect them all, add
//   -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1
// Replay one input, printing its geometry: CONVKIT_FUZZ_PRINT=1 /tmp/convkit_fuzz crash-<sha1>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "conv2d.h"
#include "cpu_features.h"
#include "geometry.h"
#include "parallel.h"
#include "pool2d.h"

using namespace convkit;

// operator new as malloc + throw std::bad_alloc on failure. ASan's own
// operator new reports a failed allocation as a fatal error even with
// allocator_may_return_null=1, but in the package a kernel's bad_alloc is an
// ordinary MemoryError (pybind11 translates it), so the harness must be able
// to catch it: see kernel_call() below. malloc stays ASan's (red zones,
// use-after-free and overflow checks are unchanged).
void* operator new(size_t n) {
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
void* operator new(size_t n, const std::nothrow_t&) noexcept { return std::malloc(n ? n : 1); }
void* operator new[](size_t n, const std::nothrow_t&) noexcept { return std::malloc(n ? n : 1); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace {

long long g_bad_alloc = 0;  // kernel calls refused for memory (printed at exit)

// Runs one kernel call; a std::bad_alloc is the MemoryError the Python layer
// would raise, not a crash. Anything else escapes and aborts.
template <typename F>
bool kernel_call(F&& f) {
    try {
        f();
        return true;
    } catch (const std::bad_alloc&) {
        ++g_bad_alloc;
        if (std::getenv("CONVKIT_FUZZ_PRINT")) std::fprintf(stderr, "std::bad_alloc (MemoryError in Python)\n");
        return false;
    }
}

// Caps that keep each run fast; geometry fields themselves are not capped.
constexpr int64_t kMaxElems = int64_t(1) << 18;  // per buffer
constexpr int64_t kMaxWork = int64_t(1) << 22;   // multiply-adds / window taps

#define FUZZ_CHECK(cond, ...)                                              \
    do {                                                                   \
        if (!(cond)) {                                                     \
            std::fprintf(stderr, "FUZZ CHECK FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            std::fprintf(stderr, __VA_ARGS__);                             \
            std::fprintf(stderr, "\n");                                    \
            std::abort();                                                  \
        }                                                                  \
    } while (0)

struct Reader {
    const uint8_t* p;
    size_t n;
    uint8_t byte() {
        if (!n) return 0;
        --n;
        return *p++;
    }
    uint64_t u64() {
        uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v = (v << 8) | byte();
        return v;
    }
    // Mostly in [0, small_max]; sometimes small negative; sometimes extreme.
    int64_t field(int64_t small_max) {
        static const int64_t extremes[] = {0,
                                           -1,
                                           1,
                                           2,
                                           int64_t(1) << 31,
                                           (int64_t(1) << 31) - 1,
                                           int64_t(1) << 32,
                                           int64_t(1) << 40,
                                           int64_t(1) << 60,
                                           int64_t(1) << 62,
                                           std::numeric_limits<int64_t>::max(),
                                           std::numeric_limits<int64_t>::min(),
                                           -(int64_t(1) << 40),
                                           3037000500,  // ~sqrt(2**63)
                                           1 << 20,
                                           65537};
        const uint8_t m = byte();
        if (m < 216) return m % (small_max + 1);
        if (m < 232) return -int64_t(m % 4) - 1;
        if (m < 248) return extremes[m % (sizeof extremes / sizeof extremes[0])];
        return static_cast<int64_t>(u64());
    }
};

template <typename T>
T poison() {
    if constexpr (std::is_same_v<T, float>) {
        uint32_t b = 0x7fa5a5a5u;  // quiet NaN with a payload no kernel makes
        T v;
        std::memcpy(&v, &b, sizeof v);
        return v;
    } else {
        uint64_t b = 0x7ffa5a5a5a5a5a5aull;
        T v;
        std::memcpy(&v, &b, sizeof v);
        return v;
    }
}

template <typename T>
bool is_poison(T v) {
    T p = poison<T>();
    return std::memcmp(&v, &p, sizeof v) == 0;
}

template <typename T>
std::vector<T> finite_input(Reader& r, int64_t n) {
    std::vector<T> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[i] = static_cast<T>(static_cast<int8_t>(r.byte() ^ (i * 37))) / T(16);
    return v;
}

template <typename T>
std::vector<T> poisoned(int64_t n) {
    return std::vector<T>(static_cast<size_t>(n), poison<T>());
}

template <typename T>
void check_written(const std::vector<T>& out, const char* what) {
    for (size_t i = 0; i < out.size(); ++i)
        FUZZ_CHECK(!is_poison(out[i]), "%s: element %zu of %zu not written", what, i, out.size());
}

bool fits(int64_t a) { return a >= 0 && a <= kMaxElems; }

// in_h * in_w, saturated: validate() bounds the product with planes, which
// says nothing about the plane size when planes == 0.
int64_t plane_size(int64_t h, int64_t w) {
    int64_t p;
    return __builtin_mul_overflow(h, w, &p) ? std::numeric_limits<int64_t>::max() : p;
}

// a * b * ... without overflow, saturating at kMaxWork + 1.
int64_t work(std::initializer_list<int64_t> f) {
    int64_t p = 1;
    for (int64_t v : f) {
        if (v <= 0) return 0;
        if (__builtin_mul_overflow(p, v, &p) || p > kMaxWork) return kMaxWork + 1;
    }
    return p;
}

// Number of window taps of output o that fall inside [0, n), capped at 2
// (computed, not looped: kernels and paddings may be 2^40).
int64_t taps_inside(int64_t o, int64_t n, int64_t k, int64_t s, int64_t d, int64_t pad) {
    const int64_t start = o * s - pad;  // validate(): fits in 2**60
    const int64_t t0 = start < 0 ? (-start + d - 1) / d : 0;  // first tap at or after 0
    if (t0 >= k) return 0;
    const int64_t i = start + t0 * d;
    if (i >= n) return 0;
    return std::min<int64_t>({2, k - t0, (n - 1 - i) / d + 1});
}

// Is coordinate i one of the taps start + t*d (0 <= t < k) inside [0, n)?
bool on_tap(int64_t i, int64_t o, int64_t n, int64_t k, int64_t s, int64_t d, int64_t pad) {
    if (i < 0 || i >= n) return false;
    const int64_t off = i - (o * s - pad);
    return off >= 0 && off % d == 0 && off / d < k;
}

// ------------------------------------------------------------------ conv --

template <typename T>
void naive_conv(const ConvGeometry& g, const T* x, const T* w, const T* b, std::vector<double>& y) {
    const int64_t Cg = g.in_channels / g.groups, Kg = g.out_channels / g.groups;
    y.assign(static_cast<size_t>(g.y_size()), 0.0);
    if (g.y_size() == 0) return;  // out_h may be 2^40 with out_w == 0
    for (int64_t n = 0; n < g.batch; ++n)
        for (int64_t k = 0; k < g.out_channels; ++k)
            for (int64_t oh = 0; oh < g.out_h; ++oh)
                for (int64_t ow = 0; ow < g.out_w; ++ow) {
                    double acc = b ? b[k] : 0.0;
                    const int64_t grp = k / Kg;
                    for (int64_t c = 0; c < Cg; ++c)
                        for (int64_t r = 0; r < g.kernel_h; ++r)
                            for (int64_t s = 0; s < g.kernel_w; ++s) {
                                const int64_t ih = oh * g.stride_h - g.pad_top + r * g.dilation_h;
                                const int64_t iw = ow * g.stride_w - g.pad_left + s * g.dilation_w;
                                if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) continue;
                                acc += double(x[((n * g.in_channels + grp * Cg + c) * g.in_h + ih) * g.in_w + iw]) *
                                       double(w[((k * Cg + c) * g.kernel_h + r) * g.kernel_w + s]);
                            }
                    y[((n * g.out_channels + k) * g.out_h + oh) * g.out_w + ow] = acc;
                }
}

template <typename T>
void fuzz_conv(Reader& r, int op) {
    ConvGeometry g;
    g.groups = r.field(4);
    g.batch = r.field(3);
    // Channel counts as multiples of small group counts (so validate() passes
    // often); extreme fields stay as drawn.
    const int64_t gm = g.groups > 0 && g.groups < 9 ? g.groups : 1;
    g.in_channels = r.field(4);
    g.out_channels = r.field(4);
    if (g.in_channels > 0 && g.in_channels <= 8) g.in_channels *= gm;
    if (g.out_channels > 0 && g.out_channels <= 8) g.out_channels *= gm;
    g.in_h = r.field(12);
    g.in_w = r.field(12);
    g.kernel_h = r.field(5);
    g.kernel_w = r.field(5);
    g.out_h = r.field(12);
    g.out_w = r.field(12);
    g.stride_h = r.field(4);
    g.stride_w = r.field(4);
    g.pad_top = r.field(4);
    g.pad_left = r.field(4);
    g.dilation_h = r.field(3);
    g.dilation_w = r.field(3);
    try {
        validate(g, "fuzz");
    } catch (const std::invalid_argument&) {
        return;
    }
    // (The bias has out_channels elements even when the weight is empty.)
    if (!fits(g.x_size()) || !fits(g.y_size()) || !fits(g.w_size()) || !fits(g.out_channels)) return;
    if (std::getenv("CONVKIT_FUZZ_PRINT"))  // replaying a crash: say which geometry
        std::fprintf(stderr,
                     "conv op %d: batch %lld in_channels %lld in %lldx%lld out_channels %lld kernel %lldx%lld "
                     "out %lldx%lld stride %lldx%lld pad_top %lld pad_left %lld dilation %lldx%lld groups %lld\n",
                     op, (long long)g.batch, (long long)g.in_channels, (long long)g.in_h, (long long)g.in_w,
                     (long long)g.out_channels, (long long)g.kernel_h, (long long)g.kernel_w, (long long)g.out_h,
                     (long long)g.out_w, (long long)g.stride_h, (long long)g.stride_w, (long long)g.pad_top,
                     (long long)g.pad_left, (long long)g.dilation_h, (long long)g.dilation_w, (long long)g.groups);
    const int64_t Cg = g.in_channels / g.groups;
    if (work({g.y_size(), std::max<int64_t>(1, Cg * g.kernel_h * g.kernel_w)}) > kMaxWork) return;
    if (work({g.x_size(), std::max<int64_t>(1, g.out_channels / g.groups * g.kernel_h * g.kernel_w)}) > kMaxWork)
        return;

    auto w = finite_input<T>(r, g.w_size());
    switch (op) {
        case 0: {  // forward (+ bias), checked against the naive loop
            auto x = finite_input<T>(r, g.x_size());
            auto b = finite_input<T>(r, g.out_channels);
            const bool with_bias = r.byte() & 1;
            auto y = poisoned<T>(g.y_size());
            if (!kernel_call([&] { conv2d_forward<T>(g, x.data(), w.data(), with_bias ? b.data() : nullptr, y.data()); }))
                return;
            check_written(y, "conv2d_forward");
            if (work({g.y_size(), std::max<int64_t>(1, Cg * g.kernel_h * g.kernel_w)}) <= (1 << 16)) {
                std::vector<double> ref;
                naive_conv<T>(g, x.data(), w.data(), with_bias ? b.data() : nullptr, ref);
                const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-10;
                for (size_t i = 0; i < ref.size(); ++i) {
                    const double scale = 1.0 + std::abs(ref[i]) + Cg * g.kernel_h * g.kernel_w * 8.0;
                    FUZZ_CHECK(std::abs(double(y[i]) - ref[i]) <= tol * scale, "conv2d_forward y[%zu]=%g, naive %g",
                               i, double(y[i]), ref[i]);
                }
            }
            break;
        }
        case 1: {
            auto gy = finite_input<T>(r, g.y_size());
            auto gx = poisoned<T>(g.x_size());
            if (!kernel_call([&] { conv2d_backward_data<T>(g, gy.data(), w.data(), gx.data()); })) return;
            check_written(gx, "conv2d_backward_data");
            break;
        }
        case 2: {
            auto gy = finite_input<T>(r, g.y_size());
            auto x = finite_input<T>(r, g.x_size());
            auto gw = poisoned<T>(g.w_size());
            if (!kernel_call([&] { conv2d_backward_weight<T>(g, gy.data(), x.data(), gw.data()); })) return;
            check_written(gw, "conv2d_backward_weight");
            break;
        }
        default: {
            auto gy = finite_input<T>(r, g.y_size());
            auto gb = poisoned<T>(g.out_channels);
            if (!kernel_call([&] { conv2d_backward_bias<T>(g, gy.data(), gb.data()); })) return;
            check_written(gb, "conv2d_backward_bias");
            break;
        }
    }
}

// ------------------------------------------------------------------ pool --

std::vector<int64_t> fuzz_indices(Reader& r, int64_t n, int64_t plane) {
    std::vector<int64_t> idx(static_cast<size_t>(n));
    const uint8_t mode = r.byte();
    for (int64_t i = 0; i < n; ++i) {
        const uint8_t b = r.byte();
        if (mode & 1)
            idx[i] = (b < 240) ? (plane > 0 ? int64_t(b) % plane : 0) : r.field(4);
        else
            idx[i] = (b < 200) ? int64_t(b) % (plane + 2) - 1 : r.field(64);
    }
    return idx;
}

template <typename T>
void fuzz_pool(Reader& r, int op) {
    PoolGeometry g;
    g.planes = r.field(5);
    g.in_h = r.field(12);
    g.in_w = r.field(12);
    g.out_h = r.field(12);
    g.out_w = r.field(12);
    g.kernel_h = r.field(6);
    g.kernel_w = r.field(6);
    g.stride_h = r.field(4);
    g.stride_w = r.field(4);
    g.pad_h = r.field(3);
    g.pad_w = r.field(3);
    g.dilation_h = r.field(3);
    g.dilation_w = r.field(3);
    try {
        validate(g, "fuzz");
    } catch (const std::invalid_argument&) {
        return;
    }
    if (!fits(g.x_size()) || !fits(g.y_size())) return;
    if (work({g.y_size(), std::min(g.kernel_h, g.in_h), std::min(g.kernel_w, g.in_w)}) > kMaxWork) return;
    if (std::getenv("CONVKIT_FUZZ_PRINT"))
        std::fprintf(stderr,
                     "pool op %d: planes %lld in %lldx%lld out %lldx%lld kernel %lldx%lld stride %lldx%lld "
                     "pad %lldx%lld dilation %lldx%lld\n",
                     op, (long long)g.planes, (long long)g.in_h, (long long)g.in_w, (long long)g.out_h,
                     (long long)g.out_w, (long long)g.kernel_h, (long long)g.kernel_w, (long long)g.stride_h,
                     (long long)g.stride_w, (long long)g.pad_h, (long long)g.pad_w, (long long)g.dilation_h,
                     (long long)g.dilation_w);
    const int64_t plane = plane_size(g.in_h, g.in_w);

    bool all_windows_nonempty = g.y_size() > 0;  // (out_h may be 2^31 with no planes)
    for (int64_t o = 0; o < g.out_h && all_windows_nonempty; ++o)
        all_windows_nonempty = taps_inside(o, g.in_h, g.kernel_h, g.stride_h, g.dilation_h, g.pad_h) > 0;
    for (int64_t o = 0; o < g.out_w && all_windows_nonempty; ++o)
        all_windows_nonempty = taps_inside(o, g.in_w, g.kernel_w, g.stride_w, g.dilation_w, g.pad_w) > 0;

    // First tap at or after 0 of window o on one axis, and whether the window
    // holds no input on that axis.
    auto first_tap = [](int64_t o, int64_t n, int64_t k, int64_t s, int64_t d, int64_t pad, bool& empty) {
        const int64_t start = o * s - pad;
        const int64_t lo = start < 0 ? start + (-start + d - 1) / d * d : start;
        empty = lo >= std::min(start + (k - 1) * d + 1, n);
        return lo;
    };
    auto valid_index = [&](int64_t flat_out, int64_t idx) {
        const int64_t o = flat_out % (g.out_h * g.out_w), oh = o / g.out_w, ow = o % g.out_w;
        // A window of padding only has the forward's index (its first tap
        // row * in_w + first tap column, maybe past the plane); the backward
        // takes it and adds nothing.
        bool empty_h, empty_w;
        const int64_t lo_h = first_tap(oh, g.in_h, g.kernel_h, g.stride_h, g.dilation_h, g.pad_h, empty_h);
        const int64_t lo_w = first_tap(ow, g.in_w, g.kernel_w, g.stride_w, g.dilation_w, g.pad_w, empty_w);
        if (empty_h || empty_w) return idx == lo_h * g.in_w + lo_w;
        if (idx < 0 || idx >= plane) return false;
        return on_tap(idx / g.in_w, oh, g.in_h, g.kernel_h, g.stride_h, g.dilation_h, g.pad_h) &&
               on_tap(idx % g.in_w, ow, g.in_w, g.kernel_w, g.stride_w, g.dilation_w, g.pad_w);
    };

    switch (op) {
        case 0: {  // max forward, then its indices through the backward
            auto x = finite_input<T>(r, g.x_size());
            auto y = poisoned<T>(g.y_size());
            std::vector<int64_t> idx(static_cast<size_t>(g.y_size()), std::numeric_limits<int64_t>::min());
            const bool with_idx = r.byte() & 1;
            if (!kernel_call([&] { max_pool2d_forward<T>(g, x.data(), y.data(), with_idx ? idx.data() : nullptr); }))
                return;
            check_written(y, "max_pool2d_forward");
            if (with_idx && all_windows_nonempty) {
                for (int64_t i = 0; i < g.y_size(); ++i)
                    FUZZ_CHECK(valid_index(i, idx[i]), "max_pool2d_forward index %lld at %lld not in its window",
                               (long long)idx[i], (long long)i);
                auto gy = finite_input<T>(r, g.y_size());
                auto gx = poisoned<T>(g.x_size());
                int64_t bad = -1;
                if (!kernel_call([&] { bad = max_pool2d_backward<T>(g, gy.data(), idx.data(), gx.data()); })) return;
                FUZZ_CHECK(bad == -1, "backward rejected forward index at %lld", (long long)bad);
                check_written(gx, "max_pool2d_backward");
            }
            break;
        }
        case 1: {  // max backward with arbitrary indices
            auto gy = finite_input<T>(r, g.y_size());
            auto idx = fuzz_indices(r, g.y_size(), plane);
            auto gx = poisoned<T>(g.x_size());
            int64_t bad = -1;
            if (!kernel_call([&] { bad = max_pool2d_backward<T>(g, gy.data(), idx.data(), gx.data()); })) return;
            int64_t first_bad = -1;
            for (int64_t i = 0; i < g.y_size() && first_bad < 0; ++i)
                if (!valid_index(i, idx[i])) first_bad = i;
            FUZZ_CHECK((bad < 0) == (first_bad < 0), "max_pool2d_backward returned %lld, first bad index at %lld",
                       (long long)bad, (long long)first_bad);
            if (bad >= 0) {
                FUZZ_CHECK(bad < g.y_size() && !valid_index(bad, idx[bad]), "reported position %lld is valid",
                           (long long)bad);
            } else {
                check_written(gx, "max_pool2d_backward");
            }
            break;
        }
        case 2:
        case 3: {  // avg forward / backward
            const bool include_pad = r.byte() & 1;
            int64_t divisor = r.field(9);
            if (divisor > (int64_t(1) << 62) || divisor < -(int64_t(1) << 62)) divisor = 0;  // binding refuses
            if (op == 2) {
                auto x = finite_input<T>(r, g.x_size());
                auto y = poisoned<T>(g.y_size());
                if (!kernel_call([&] { avg_pool2d_forward<T>(g, include_pad, divisor, x.data(), y.data()); })) return;
                check_written(y, "avg_pool2d_forward");
            } else {
                auto gy = finite_input<T>(r, g.y_size());
                auto gx = poisoned<T>(g.x_size());
                if (!kernel_call([&] { avg_pool2d_backward<T>(g, include_pad, divisor, gy.data(), gx.data()); }))
                    return;
                check_written(gx, "avg_pool2d_backward");
            }
            break;
        }
        default: {  // lp forward / backward
            static const double norms[] = {1.0, 2.0, 3.0, 0.5, 1.5, 4.0, 1e-3, 1e300, 7.25};
            const double p = norms[r.byte() % 9];
            auto x = finite_input<T>(r, g.x_size());
            if (op == 4) {
                auto y = poisoned<T>(g.y_size());
                if (!kernel_call([&] { lp_pool2d_forward<T>(g, p, x.data(), y.data()); })) return;
                check_written(y, "lp_pool2d_forward");
            } else {
                auto gy = finite_input<T>(r, g.y_size());
                auto gx = poisoned<T>(g.x_size());
                if (!kernel_call([&] { lp_pool2d_backward<T>(g, p, gy.data(), x.data(), gx.data()); })) return;
                check_written(gx, "lp_pool2d_backward");
            }
            break;
        }
    }
}

template <typename T>
void fuzz_adaptive(Reader& r, int op) {
    AdaptiveGeometry g;
    g.planes = r.field(5);
    g.in_h = r.field(12);
    g.in_w = r.field(12);
    g.out_h = r.field(12);
    g.out_w = r.field(12);
    try {
        validate(g, "fuzz");
    } catch (const std::invalid_argument&) {
        return;
    }
    if (!fits(g.x_size()) || !fits(g.y_size())) return;
    if (work({g.y_size(), g.in_h / g.out_h + 2, g.in_w / g.out_w + 2}) > kMaxWork) return;
    const int64_t plane = plane_size(g.in_h, g.in_w);
    auto in_window = [](int64_t i, int64_t o, int64_t m, int64_t n) {
        const int64_t a = (o * n) / m, b = ((o + 1) * n + m - 1) / m;  // validate(): (m+1)*n fits
        return i >= a && i < b;
    };
    auto valid_index = [&](int64_t flat_out, int64_t idx) {
        const int64_t o = flat_out % (g.out_h * g.out_w), oh = o / g.out_w, ow = o % g.out_w;
        if (idx < 0 || idx >= plane) return false;
        return in_window(idx / g.in_w, oh, g.out_h, g.in_h) && in_window(idx % g.in_w, ow, g.out_w, g.in_w);
    };
    switch (op) {
        case 0: {
            auto x = finite_input<T>(r, g.x_size());
            auto y = poisoned<T>(g.y_size());
            if (!kernel_call([&] { adaptive_avg_pool2d_forward<T>(g, x.data(), y.data()); })) return;
            check_written(y, "adaptive_avg_pool2d_forward");
            break;
        }
        case 1: {
            auto gy = finite_input<T>(r, g.y_size());
            auto gx = poisoned<T>(g.x_size());
            if (!kernel_call([&] { adaptive_avg_pool2d_backward<T>(g, gy.data(), gx.data()); })) return;
            check_written(gx, "adaptive_avg_pool2d_backward");
            break;
        }
        case 2: {
            auto x = finite_input<T>(r, g.x_size());
            auto y = poisoned<T>(g.y_size());
            std::vector<int64_t> idx(static_cast<size_t>(g.y_size()), -7);
            if (!kernel_call([&] { adaptive_max_pool2d_forward<T>(g, x.data(), y.data(), idx.data()); })) return;
            check_written(y, "adaptive_max_pool2d_forward");
            for (int64_t i = 0; i < g.y_size(); ++i)
                FUZZ_CHECK(valid_index(i, idx[i]), "adaptive max index %lld at %lld not in its window",
                           (long long)idx[i], (long long)i);
            auto gy = finite_input<T>(r, g.y_size());
            auto gx = poisoned<T>(g.x_size());
            int64_t bad = -1;
            if (!kernel_call([&] { bad = adaptive_max_pool2d_backward<T>(g, gy.data(), idx.data(), gx.data()); }))
                return;
            FUZZ_CHECK(bad == -1, "adaptive backward rejected forward indices");
            check_written(gx, "adaptive_max_pool2d_backward");
            break;
        }
        default: {
            auto gy = finite_input<T>(r, g.y_size());
            auto idx = fuzz_indices(r, g.y_size(), plane);
            auto gx = poisoned<T>(g.x_size());
            int64_t bad = -1;
            if (!kernel_call([&] { bad = adaptive_max_pool2d_backward<T>(g, gy.data(), idx.data(), gx.data()); }))
                return;
            int64_t first_bad = -1;
            for (int64_t i = 0; i < g.y_size() && first_bad < 0; ++i)
                if (!valid_index(i, idx[i])) first_bad = i;
            FUZZ_CHECK((bad < 0) == (first_bad < 0), "adaptive_max_pool2d_backward returned %lld, first bad %lld",
                       (long long)bad, (long long)first_bad);
            if (bad >= 0)
                FUZZ_CHECK(bad < g.y_size() && !valid_index(bad, idx[bad]), "reported position %lld is valid",
                           (long long)bad);
            else
                check_written(gx, "adaptive_max_pool2d_backward");
            break;
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    std::atexit([] { std::fprintf(stderr, "convkit fuzz: %lld kernel calls raised std::bad_alloc\n", g_bad_alloc); });
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Reader r{data, size};
    const uint8_t head = r.byte();
    const uint8_t cfg = r.byte();
    set_num_threads(1 + cfg % 3);
    const int isa = std::min<int>((cfg / 3) % 3, static_cast<int>(best_supported_isa()));
    set_active_isa(static_cast<Isa>(isa));
    const bool dbl = cfg & 0x80;
    const int family = head % 3, op = (head / 3) % 6;
    if (family == 0) {
        dbl ? fuzz_conv<double>(r, op % 4) : fuzz_conv<float>(r, op % 4);
    } else if (family == 1) {
        dbl ? fuzz_pool<double>(r, op) : fuzz_pool<float>(r, op);
    } else {
        dbl ? fuzz_adaptive<double>(r, op % 4) : fuzz_adaptive<float>(r, op % 4);
    }
    return 0;
}
