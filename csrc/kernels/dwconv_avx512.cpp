// Depthwise 3x3 kernels, avx512 build; see dwconv_impl.h.
#include "dwconv_impl.h"

namespace convkit {
namespace dw {
CONVKIT_DW3_DEFINE(avx512)
}  // namespace dw
}  // namespace convkit
