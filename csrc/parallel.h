// Thread count shared by every kernel. Kernels pass num_threads() in the
// num_threads clause of each parallel region, so set_num_threads() applies to
// calls from any Python thread (omp_set_num_threads is per calling thread).
#pragma once

namespace convkit {
int num_threads();            // current setting, >= 1
void set_num_threads(int n);  // n >= 1 (checked by the caller)
}  // namespace convkit
