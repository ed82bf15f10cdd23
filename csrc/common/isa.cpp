#include "common/isa.h"

// Compiled once per variant, with that variant's flags and name (CMakeLists.txt).
#ifndef XMODAL_ISA_NAME
#define XMODAL_ISA_NAME "unknown"
#endif

namespace xmodal {

const char* isa_name() { return XMODAL_ISA_NAME; }

}  // namespace xmodal
