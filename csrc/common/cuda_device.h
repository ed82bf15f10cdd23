// Device discovery that is safe on machines without a GPU or driver.
#pragma once

namespace xmodal {

// Number of usable CUDA devices; 0 when the build has no CUDA, there is no driver or no GPU.
int cuda_device_count();

// Makes `device` current for the scope of a CUDA call and restores the previous device, so a
// tensor on cuda:1 is processed on cuda:1 whatever the caller's current device is.
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(int device);
  ~CudaDeviceGuard();
  CudaDeviceGuard(const CudaDeviceGuard&) = delete;
  CudaDeviceGuard& operator=(const CudaDeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace xmodal
