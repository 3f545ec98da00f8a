// Depthwise 3x3 kernels, generic build; see dwconv_impl.h.
#include "dwconv_impl.h"

namespace convkit {
namespace dw {
CONVKIT_DW3_DEFINE(generic)
}  // namespace dw
}  // namespace convkit
