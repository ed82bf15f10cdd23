// CUDA greedy coreset: per step, one kernel updates the running minimum against the newest
// center and reduces a per-block argmax; a one-block kernel picks the global argmax and
// records it. The center index stays on the device, so steps need no host synchronisation.
// Distances are float32 sums, except for rows whose float32 sum overflowed or fell where
// underflow dominates it: those are recomputed in float64, so every pick is within float32
// rounding of the farthest point for any finite input.
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>

#include "common/check.h"
#include "common/cuda_buffer.cuh"
#include "common/cuda_check.cuh"
#include "ops/coreset/coreset.h"

namespace xmodal {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxBlocks = 1024;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr double kSelected = -1.0;
// Below this a float32 sum of squares may be mostly underflow error (up to 2^-150 per term).
constexpr float kUnderflowFloor = 0x1p-100f;

struct Best {
  double value;
  int64_t index;
};

__device__ __forceinline__ Best better_of(Best a, Best b) {
  return (b.value > a.value || (b.value == a.value && b.index < a.index)) ? b : a;
}

__device__ __forceinline__ Best warp_best(Best b) {
  for (int offset = 16; offset > 0; offset /= 2) {
    Best other{__shfl_down_sync(kFullMask, b.value, offset), __shfl_down_sync(kFullMask, b.index, offset)};
    b = better_of(b, other);
  }
  return b;
}

// Sum over the warp, the result in every lane.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__global__ void start_selection(double* min_distance, int64_t num_points, int64_t start, int64_t* center,
                                int64_t* idx) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < num_points;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    min_distance[i] = INFINITY;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    *center = start;
    idx[0] = start;
  }
}

// A warp per row: lanes stride over the dimensions (coalesced), then the warp reduces.
__global__ void update_min_distance(const float* x, int64_t num_points, int64_t dim, const int64_t* center_ptr,
                                    double* min_distance, Best* block_best) {
  __shared__ Best warp_results[kWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t center = *center_ptr;
  const float* c = x + center * dim;
  Best local{-INFINITY, num_points};
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp; row < num_points;
       row += static_cast<int64_t>(gridDim.x) * kWarps) {
    double m = min_distance[row];
    if (m == kSelected) continue;
    float partial = 0.0f;
    for (int64_t d = lane; d < dim; d += 32) {
      const float diff = x[row * dim + d] - c[d];
      partial += diff * diff;
    }
    const float sum = warp_sum(partial);
    double distance = sum;
    if (!(sum >= kUnderflowFloor && sum <= FLT_MAX)) {  // warp-uniform: every lane holds the same sum
      double exact = 0.0;
      for (int64_t d = lane; d < dim; d += 32) {
        const double diff = static_cast<double>(x[row * dim + d]) - static_cast<double>(c[d]);
        exact += diff * diff;
      }
      distance = warp_sum(exact);
    }
    if (lane == 0) {
      m = (row == center) ? kSelected : fmin(m, distance);
      min_distance[row] = m;
      if (m != kSelected) local = better_of(local, Best{m, row});
    }
  }
  if (lane == 0) warp_results[warp] = local;
  __syncthreads();
  if (warp == 0) {
    Best b = lane < kWarps ? warp_results[lane] : Best{-INFINITY, num_points};
    b = warp_best(b);
    if (lane == 0) block_best[blockIdx.x] = b;
  }
}

__global__ void pick_center(const Best* block_best, int blocks, int64_t num_points, int64_t step, int64_t* center,
                            int64_t* idx) {
  Best b{-INFINITY, num_points};
  for (int i = threadIdx.x; i < blocks; i += 32) b = better_of(b, block_best[i]);
  b = warp_best(b);
  if (threadIdx.x == 0) {
    *center = b.index;
    idx[step] = b.index;
  }
}

}  // namespace

void greedy_coreset_cuda(const float* x, int64_t num_points, int64_t dim, int64_t n, int64_t start, int64_t* idx,
                         void* stream_handle) {
  XMODAL_CHECK(num_points >= 1 && dim >= 1, "x must be a non-empty (N, D) matrix; got (", num_points, ", ", dim, ")");
  XMODAL_CHECK(n >= 1 && n <= num_points, "n must be in [1, N=", num_points, "]; got ", n);
  XMODAL_CHECK(start >= 0 && start < num_points, "start must be in [0, N=", num_points, "); got ", start);
  cudaStream_t stream = as_stream(stream_handle);
  const int blocks = static_cast<int>(std::min<int64_t>(kMaxBlocks, (num_points + kWarps - 1) / kWarps));
  DeviceBuffer<double> min_distance(num_points, stream);
  DeviceBuffer<int64_t> center(1, stream);
  DeviceBuffer<Best> block_best(blocks, stream);
  start_selection<<<grid_for(num_points, kThreads), kThreads, 0, stream>>>(min_distance.get(), num_points, start,
                                                                           center.get(), idx);
  XMODAL_CUDA_LAUNCH_CHECK("start_selection");
  for (int64_t step = 1; step < n; ++step) {
    update_min_distance<<<blocks, kThreads, 0, stream>>>(x, num_points, dim, center.get(), min_distance.get(),
                                                         block_best.get());
    XMODAL_CUDA_LAUNCH_CHECK("update_min_distance");
    pick_center<<<1, 32, 0, stream>>>(block_best.get(), blocks, num_points, step, center.get(), idx);
    XMODAL_CUDA_LAUNCH_CHECK("pick_center");
  }
}

}  // namespace xmodal
