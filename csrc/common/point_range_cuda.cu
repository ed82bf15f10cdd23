#include <cuda_runtime.h>

#include "common/cuda_buffer.cuh"
#include "common/point_range.h"

namespace xmodal {
namespace {

__global__ void flag_out_of_range(const float* values, long long n, int* flag) {
  XMODAL_GRID_STRIDE(i, n) {
    if (!coordinate_in_range(values[i])) *flag = 1;
  }
}

}  // namespace

void check_point_range_cuda(const float* xyz, int64_t count, const char* name, void* stream_handle) {
  if (count == 0) return;
  cudaStream_t stream = as_stream(stream_handle);
  DeviceBuffer<int> flag(1, stream);
  XMODAL_CUDA_CHECK(cudaMemsetAsync(flag.get(), 0, sizeof(int), stream));
  launch(flag_out_of_range, 3 * count, stream, "flag_out_of_range", xyz, static_cast<long long>(3 * count), flag.get());
  int host = 0;
  XMODAL_CUDA_CHECK(cudaMemcpyAsync(&host, flag.get(), sizeof(int), cudaMemcpyDeviceToHost, stream));
  XMODAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  XMODAL_CHECK(host == 0, name, kPointRangeError);
}

}  // namespace xmodal
