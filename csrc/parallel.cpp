#include "parallel.h"

#include <atomic>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace convkit {
namespace {
std::atomic<int>& setting() {
#ifdef _OPENMP
    // omp_get_max_threads() honours OMP_NUM_THREADS.
    static std::atomic<int> value{omp_get_max_threads() > 0 ? omp_get_max_threads() : 1};
#else
    static std::atomic<int> value{1};
#endif
    return value;
}
}  // namespace

int num_threads() { return setting().load(std::memory_order_relaxed); }
void set_num_threads(int n) { setting().store(n < 1 ? 1 : n, std::memory_order_relaxed); }

}  // namespace convkit
