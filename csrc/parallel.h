// Thread count shared by every kernel. Kernels pass num_threads() in the
// num_threads clause of each parallel region, so set_num_threads() applies to
// calls from any Python thread (omp_set_num_threads is per calling thread).
#pragma once
#include <cstdint>

namespace convkit {
int num_threads();            // current setting, >= 1
void set_num_threads(int n);  // n >= 1 (checked by the caller)

// Threads worth waking for `work` units (a double: products of sizes must not overflow) (multiply-adds, or elements for
// memory-bound loops): 1 below `serial_below`, where starting a parallel
// region costs more than it saves (tens of microseconds when idle, far more
// on a loaded machine). Work partitions never change results, so this is
// purely a speed choice.
inline int threads_for_work(double work, double serial_below = 1 << 20) {
    return work < serial_below ? 1 : num_threads();
}
}  // namespace convkit
