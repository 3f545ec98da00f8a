#include "peak.h"

#include <chrono>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_features.h"
#include "parallel.h"

namespace convkit {

double measure_fma_peak_gflops(int64_t iterations) {
    const int threads = num_threads();
    const Isa isa = active_isa();
    std::vector<float> sinks(static_cast<size_t>(threads) * 16, 0.f);
    std::vector<int64_t> flops(static_cast<size_t>(threads), 0);
    auto start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        float* sink = &sinks[static_cast<size_t>(t) * 16];
        int64_t done = 0;
#ifdef CONVKIT_HAVE_AVX512
        if (isa == Isa::avx512) done = kernels::fma_loop_avx512(iterations, sink);
#endif
#ifdef CONVKIT_HAVE_AVX2
        if (isa == Isa::avx2) done = kernels::fma_loop_avx2(iterations, sink);
#endif
        if (done == 0) done = kernels::fma_loop_generic(iterations, sink);
        flops[static_cast<size_t>(t)] = done;
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    double total = 0;
    for (int64_t f : flops) total += static_cast<double>(f);
    return seconds > 0 ? total / seconds * 1e-9 : 0.0;
}

}  // namespace convkit
