#include "common/cuda_device.h"

#ifdef XMODAL_WITH_CUDA
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#endif

namespace xmodal {

int cuda_device_count() {
#ifdef XMODAL_WITH_CUDA
  int count = 0;
  // Without a driver this returns an error (statically linked cudart loads libcuda lazily).
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls report their own
    return 0;
  }
  return count;
#else
  return 0;
#endif
}

#ifdef XMODAL_WITH_CUDA
CudaDeviceGuard::CudaDeviceGuard(int device) {
  if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
  if (device != previous_ && cudaSetDevice(device) != cudaSuccess) {
    throw std::runtime_error("cannot select CUDA device " + std::to_string(device));
  }
}

CudaDeviceGuard::~CudaDeviceGuard() {
  int current = -1;
  if (previous_ >= 0 && cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
}
#else
CudaDeviceGuard::CudaDeviceGuard(int) {}
CudaDeviceGuard::~CudaDeviceGuard() = default;
#endif

}  // namespace xmodal
