// Stream-ordered device memory owned by a scope, and a helper for CUB's two-call temporary
// storage protocol. Freed on every exit path, so an error half-way never leaks device memory.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "common/check.h"
#include "common/cuda_check.cuh"

// Grid-stride loop over [0, n) for kernels launched with grid_for().
#define XMODAL_GRID_STRIDE(i, n)                                                             \
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<long long>(gridDim.x) * blockDim.x)

namespace xmodal {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer(size_t count, cudaStream_t stream) : stream_(stream) {
    XMODAL_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&ptr_), (count > 0 ? count : 1) * sizeof(T), stream));
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
  cudaStream_t stream_;
};

// Runs a CUB device algorithm: call(temp, bytes) is invoked once to size the temporary
// storage and once to do the work.
template <typename Call>
void cub_run(Call call, cudaStream_t stream, const char* what) {
  size_t bytes = 0;
  cuda_check(call(nullptr, bytes), what, __FILE__, __LINE__);
  DeviceBuffer<unsigned char> temp(bytes, stream);
  cuda_check(call(temp.get(), bytes), what, __FILE__, __LINE__);
}

// CUB counts items in int here; larger inputs are refused with a clear message.
inline int cub_count(long long n, const char* what) {
  XMODAL_CHECK(n >= 0 && n < (1LL << 31), what, " on CUDA supports fewer than 2^31 elements per call; got ", n);
  return static_cast<int>(n);
}

template <typename Kernel, typename... Args>
void launch(Kernel kernel, long long n, cudaStream_t stream, const char* name, Args... args) {
  constexpr int kThreads = 256;
  kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(args...);
  cuda_check(cudaGetLastError(), name, __FILE__, __LINE__);
}

}  // namespace xmodal
