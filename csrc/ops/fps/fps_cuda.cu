// CUDA farthest point sampling: one launch per selected point. Each launch first reduces the
// previous launch's per-block winners to the current center (every block does it alike, so no
// host synchronisation is needed), lowers the running distances against that center and
// writes its own per-block winner. Same arithmetic (common/point_math.h) and tie keys as the
// CPU, hence the same selection.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/check.h"
#include "common/cuda_buffer.cuh"
#include "common/cuda_check.cuh"
#include "common/point_math.h"
#include "common/point_range.h"
#include "ops/fps/fps.h"

namespace xmodal {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxBlocks = 512;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr double kSelected = -1.0;    // exact FPS: already selected
constexpr double kIneligible = -2.0;  // reference: |p|^2 <= 1e-3, never selected
constexpr double kPointnet2Init = 1e10;

struct Best {
  double value;
  uint64_t key;
  int64_t index;
};

__device__ __forceinline__ Best better_of(Best a, Best b) {
  return (b.value > a.value || (b.value == a.value && b.key < a.key)) ? b : a;
}

__device__ __forceinline__ Best warp_best(Best b) {
  for (int offset = 16; offset > 0; offset /= 2) {
    Best other{__shfl_down_sync(kFullMask, b.value, offset),
               static_cast<uint64_t>(__shfl_down_sync(kFullMask, static_cast<unsigned long long>(b.key), offset)),
               static_cast<int64_t>(__shfl_down_sync(kFullMask, static_cast<long long>(b.index), offset))};
    b = better_of(b, other);
  }
  return b;
}

__device__ __forceinline__ Best no_best() { return Best{-INFINITY, ~uint64_t{0}, -1}; }

__global__ void init_distances(const float* points, int64_t num_points, bool reference, double* distance) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < num_points;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float* p = points + 3 * i;
    if (reference) {
      distance[i] = squared_norm3(p[0], p[1], p[2]) <= 1e-3 ? kIneligible : kPointnet2Init;
    } else {
      distance[i] = INFINITY;
    }
  }
}

// Reduces `count` block winners with one warp; lane 0 gets the result.
__device__ Best reduce_winners(const Best* winners, int count) {
  Best b = no_best();
  for (int i = threadIdx.x; i < count; i += 32) b = better_of(b, winners[i]);
  return warp_best(b);
}

__global__ void fps_step(const float* points, int64_t num_points, double* distance, const Best* previous,
                         int previous_count, int64_t start, bool reference, int log2_threads, int64_t step,
                         int64_t* idx, Best* winners) {
  __shared__ int64_t center_shared;
  __shared__ Best warp_results[kWarps];
  if (threadIdx.x < 32) {
    int64_t center = start;
    if (previous != nullptr) {
      const Best b = reduce_winners(previous, previous_count);
      center = b.index >= 0 ? b.index : start;  // no winner cannot happen after validation
    }
    if (threadIdx.x == 0) {
      center_shared = center;
      if (blockIdx.x == 0) idx[step - 1] = center;
    }
  }
  __syncthreads();
  const int64_t center = center_shared;
  const float cx = points[3 * center], cy = points[3 * center + 1], cz = points[3 * center + 2];
  Best local = no_best();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < num_points;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double m = distance[i];
    if (!reference && i == center) {
      m = kSelected;
    } else {
      const float* p = points + 3 * i;
      m = fmin(m, squared_distance3(p[0], p[1], p[2], cx, cy, cz));  // sentinels (< 0) stay
    }
    distance[i] = m;
    const uint64_t key = reference ? pointnet2_tie_key(i, log2_threads) : static_cast<uint64_t>(i);
    local = better_of(local, Best{m, key, i});
  }
  local = warp_best(local);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_results[warp] = local;
  __syncthreads();
  if (warp == 0) {
    Best b = lane < kWarps ? warp_results[lane] : no_best();
    b = warp_best(b);
    if (lane == 0) winners[blockIdx.x] = b;
  }
}

__global__ void fps_last(const Best* previous, int previous_count, int64_t start, int64_t last, int64_t* idx) {
  const Best b = reduce_winners(previous, previous_count);
  if (threadIdx.x == 0) idx[last] = b.index >= 0 ? b.index : start;
}

}  // namespace

void farthest_point_sample_cuda(const float* points, int64_t num_points, int64_t n, int64_t start, bool reference,
                                int64_t* idx, void* stream_handle) {
  XMODAL_CHECK(num_points >= 1, "points must hold at least one point; got N=", num_points);
  XMODAL_CHECK(n >= 1 && n <= num_points, "n must be in [1, N=", num_points, "]; got ", n);
  XMODAL_CHECK(start >= 0 && start < num_points, "start must be in [0, N=", num_points, "); got ", start);
  XMODAL_CHECK(!reference || start == 0, "reference=True always starts at index 0; got start=", start);
  check_point_range_cuda(points, num_points, "points", stream_handle);
  cudaStream_t stream = as_stream(stream_handle);
  const int blocks = static_cast<int>(grid_for(num_points, kThreads, kMaxBlocks));
  const int log2_threads = reference ? pointnet2_log2_threads(num_points) : 0;
  DeviceBuffer<double> distance(num_points, stream);
  DeviceBuffer<Best> winners(2 * blocks, stream);  // two halves: launch s writes one while reading the other
  init_distances<<<blocks, kThreads, 0, stream>>>(points, num_points, reference, distance.get());
  XMODAL_CUDA_LAUNCH_CHECK("init_distances");
  const Best* previous = nullptr;
  for (int64_t step = 1; step < n; ++step) {
    Best* current = winners.get() + (step % 2) * blocks;
    fps_step<<<blocks, kThreads, 0, stream>>>(points, num_points, distance.get(), previous, blocks, start, reference,
                                              log2_threads, step, idx, current);
    XMODAL_CUDA_LAUNCH_CHECK("fps_step");
    previous = current;
  }
  if (n == 1) {
    XMODAL_CUDA_CHECK(cudaMemcpyAsync(idx, &start, sizeof(int64_t), cudaMemcpyHostToDevice, stream));
    XMODAL_CUDA_CHECK(cudaStreamSynchronize(stream));  // `start` is a stack variable
  } else {
    fps_last<<<1, 32, 0, stream>>>(previous, blocks, start, n - 1, idx);
    XMODAL_CUDA_LAUNCH_CHECK("fps_last");
  }
}

}  // namespace xmodal
