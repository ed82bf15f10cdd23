// Which CPU variant of the kernels library is running (cmake/XmodalIsa.cmake builds one copy
// of libxmodal_kernels.so per x86-64 level; the loader or xmodal/_backend.py picks one).
#pragma once

namespace xmodal {

// "baseline" (x86-64-v2), "avx2" (x86-64-v3), "avx512" (x86-64-v4) or "native" (XMODAL_NATIVE).
const char* isa_name();

}  // namespace xmodal
