// Every CUDA API call and kernel launch goes through these checks; a failure becomes a
// RuntimeError in Python naming the call, never a crash.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace xmodal {

inline void cuda_check(cudaError_t status, const char* what, const char* file, int line) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) +
                             "): " + cudaGetErrorString(status));
  }
}

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

// Grid size for `n` items at `block` threads each, capped so huge inputs use grid-stride loops.
inline unsigned int grid_for(long long n, int block, long long cap = 65535LL * 8) {
  long long g = (n + block - 1) / block;
  if (g < 1) g = 1;
  if (g > cap) g = cap;
  return static_cast<unsigned int>(g);
}

}  // namespace xmodal

#define XMODAL_CUDA_CHECK(expr) ::xmodal::cuda_check((expr), #expr, __FILE__, __LINE__)
#define XMODAL_CUDA_LAUNCH_CHECK(kernel_name) \
  ::xmodal::cuda_check(cudaGetLastError(), "launch of " kernel_name, __FILE__, __LINE__)
