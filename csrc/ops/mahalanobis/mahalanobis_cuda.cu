// CUDA Mahalanobis distances: one warp per (position, image) runs the forward substitution row
// by row; the lanes split each row's dot product (float64, butterfly-summed so every lane holds
// the same y_i) and the solution lives in shared memory. The warps of a block take consecutive
// images of one position, so they read the same factor rows. Full and shared factors run the
// same kernel (a shared factor has stride 0 and stays in L2). No device allocations.
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cstdint>

#include "common/check.h"
#include "common/cuda_check.cuh"
#include "ops/mahalanobis/mahalanobis.h"

namespace xmodal {
namespace {

constexpr int kMaxWarpsPerBlock = 4;
constexpr int64_t kSharedBytes = 48 * 1024;  // the default dynamic shared memory limit
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__global__ void mahalanobis_kernel(const float* x, int64_t batch, int64_t positions, int64_t dim, const float* mean,
                                   const float* factors, int64_t factor_stride, float* dist, int32_t* status) {
  extern __shared__ double solutions[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t p = blockIdx.x;
  const int64_t b = static_cast<int64_t>(blockIdx.y) * (blockDim.x / 32) + warp;
  if (b >= batch) return;
  double* y = solutions + warp * dim;
  const float* xr = x + (b * positions + p) * dim;
  const float* mr = mean + p * dim;
  for (int64_t i = lane; i < dim; i += 32) y[i] = static_cast<double>(xr[i]) - static_cast<double>(mr[i]);
  __syncwarp();
  const float* factor = factors + p * factor_stride;
  double squared = 0.0;
  bool valid = true;
  for (int64_t i = 0; i < dim; ++i) {
    const float* l = factor + packed_row_offset(i);
    double s = 0.0;
    for (int64_t j = lane; j < i; j += 32) s += static_cast<double>(l[j]) * y[j];
    s = warp_sum(s);
    const float diagonal = l[i];
    valid = valid && diagonal > 0.0f && diagonal <= FLT_MAX;
    const double yi = (y[i] - s) / static_cast<double>(diagonal);
    __syncwarp();  // every lane has read y[i] before lane 0 replaces it
    if (lane == 0) y[i] = yi;
    __syncwarp();
    squared += yi * yi;
  }
  if (lane == 0) {
    if (!valid || !isfinite(squared)) atomicCAS(status, 0, static_cast<int32_t>(p < INT_MAX - 1 ? p + 1 : INT_MAX));
    dist[b * positions + p] = static_cast<float>(sqrt(squared));
  }
}

}  // namespace

void mahalanobis_cuda(const float* x, int64_t batch, int64_t positions, int64_t dim, const float* mean,
                      const float* factors, bool shared, float* dist, int32_t* status, void* stream) {
  XMODAL_CHECK(batch >= 0 && positions >= 0 && dim >= 1, "mahalanobis: bad sizes B=", batch, " P=", positions,
               " d=", dim);
  const int64_t row_bytes = dim * static_cast<int64_t>(sizeof(double));
  XMODAL_CHECK(row_bytes <= kSharedBytes, "mahalanobis on CUDA supports d <= ", kSharedBytes / sizeof(double),
               "; got d=", dim);
  if (batch == 0 || positions == 0) return;
  const int warps = static_cast<int>(std::min<int64_t>({kMaxWarpsPerBlock, kSharedBytes / row_bytes, batch}));
  const int64_t image_blocks = (batch + warps - 1) / warps;
  XMODAL_CHECK(positions <= INT_MAX && image_blocks <= 65535,
               "mahalanobis on CUDA supports P < 2^31 and B <= ", 65535 * warps, "; got P=", positions, " B=", batch);
  const dim3 grid(static_cast<unsigned>(positions), static_cast<unsigned>(image_blocks));
  const size_t shared_bytes = static_cast<size_t>(warps * row_bytes);
  mahalanobis_kernel<<<grid, warps * 32, shared_bytes, as_stream(stream)>>>(
      x, batch, positions, dim, mean, factors, shared ? 0 : packed_row_offset(dim), dist, status);
  XMODAL_CUDA_LAUNCH_CHECK("mahalanobis_kernel");
}

}  // namespace xmodal
