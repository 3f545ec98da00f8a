// Run-time choice of the instruction set for ISA-specific inner loops.
// Files in csrc/kernels/ named *_avx2.cpp are compiled with -mavx2 -mfma and
// *_avx512.cpp with -mavx512f/vl/bw/dq -mfma; everything else is portable.
// CONVKIT_ISA=generic|avx2|avx512 forces a path no wider than the CPU has.
#pragma once

namespace convkit {
enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };
Isa best_supported_isa();   // what the CPU (and this build) can run
Isa active_isa();           // what the kernels use now
void set_active_isa(Isa isa);  // throws std::invalid_argument if unsupported
const char* isa_name(Isa isa);
}  // namespace convkit
