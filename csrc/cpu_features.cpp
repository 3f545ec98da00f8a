#include "cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace convkit {
namespace {

Isa detect() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
#if defined(CONVKIT_EMULATE_AVX512)
    // Test builds: the AVX-512 kernels run on emulated registers (AVX2 code).
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx512;
#elif defined(CONVKIT_HAVE_AVX512)
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("fma"))
        return Isa::avx512;
#endif
#if defined(CONVKIT_HAVE_AVX2)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
#endif
    return Isa::generic;
}

Isa initial() {
    Isa best = detect();
    const char* env = std::getenv("CONVKIT_ISA");
    if (!env || !*env) return best;
    Isa wanted = best;
    if (!std::strcmp(env, "generic")) wanted = Isa::generic;
    else if (!std::strcmp(env, "avx2")) wanted = Isa::avx2;
    else if (!std::strcmp(env, "avx512")) wanted = Isa::avx512;
    // An unknown or too-wide request falls back to the best path: the import
    // must not fail; convkit.info() shows what runs.
    return static_cast<int>(wanted) <= static_cast<int>(best) ? wanted : best;
}

std::atomic<int>& active() {
    static std::atomic<int> value{static_cast<int>(initial())};
    return value;
}

}  // namespace

Isa best_supported_isa() {
    static const Isa best = detect();
    return best;
}

Isa active_isa() { return static_cast<Isa>(active().load(std::memory_order_relaxed)); }

void set_active_isa(Isa isa) {
    if (static_cast<int>(isa) > static_cast<int>(best_supported_isa()))
        throw std::invalid_argument(std::string("set_isa: '") + isa_name(isa) +
                                    "' is not supported by this CPU/build (best: " +
                                    isa_name(best_supported_isa()) + ")");
    active().store(static_cast<int>(isa), std::memory_order_relaxed);
}

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        default: return "generic";
    }
}

}  // namespace convkit
