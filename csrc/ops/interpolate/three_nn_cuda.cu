// CUDA 3-NN interpolation: a thread per point scans every center (shared-memory tiles) keeping
// its 3 nearest in (distance, index) order, then a thread per output element forms the
// weighted sum. Same distance arithmetic (common/point_math.h), weights and float64 sums as
// the CPU kernel.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/check.h"
#include "common/cuda_buffer.cuh"
#include "common/cuda_check.cuh"
#include "common/point_math.h"
#include "common/point_range.h"
#include "ops/interpolate/three_nn.h"

namespace xmodal {
namespace {

constexpr int kThreads = 256;
constexpr int kNeighbours = 3;

// Centers are scanned in ascending index, so a later center replaces a kept one only when
// strictly nearer: equal distances keep the lower index.
__global__ void three_nn_search(const float* points, int64_t num_points, const float* centers, int64_t num_centers,
                                int32_t* nearest, double* weight) {
  __shared__ float tile[kThreads * 3];
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  float px = 0, py = 0, pz = 0;
  if (i < num_points) {
    px = points[3 * i];
    py = points[3 * i + 1];
    pz = points[3 * i + 2];
  }
  double best_d[kNeighbours] = {INFINITY, INFINITY, INFINITY};
  int32_t best_i[kNeighbours] = {-1, -1, -1};
  for (int64_t t0 = 0; t0 < num_centers; t0 += kThreads) {
    const int64_t count = min(static_cast<int64_t>(kThreads), num_centers - t0);
    __syncthreads();
    for (int64_t j = threadIdx.x; j < 3 * count; j += blockDim.x) tile[j] = centers[3 * t0 + j];
    __syncthreads();
    for (int64_t j = 0; j < count; ++j) {
      const double d = squared_distance3(tile[3 * j], tile[3 * j + 1], tile[3 * j + 2], px, py, pz);
      if (d < best_d[2]) {
        int slot = 2;
        while (slot > 0 && d < best_d[slot - 1]) {
          best_d[slot] = best_d[slot - 1];
          best_i[slot] = best_i[slot - 1];
          --slot;
        }
        best_d[slot] = d;
        best_i[slot] = static_cast<int32_t>(t0 + j);
      }
    }
  }
  if (i >= num_points) return;
  double w[kNeighbours], total = 0.0;
  for (int j = 0; j < kNeighbours; ++j) {
    w[j] = best_i[j] >= 0 ? 1.0 / (best_d[j] + kInterpolationEpsilon) : 0.0;
    total += w[j];
  }
  for (int j = 0; j < kNeighbours; ++j) {
    nearest[3 * i + j] = best_i[j];
    weight[3 * i + j] = w[j] / total;
  }
}

__global__ void three_nn_gather(const int32_t* nearest, const double* weight, const float* features, int64_t num_points,
                                int64_t channels, float* out) {
  const int64_t total = num_points * channels;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / channels, c = e % channels;
    double sum = 0.0;
    for (int j = 0; j < kNeighbours; ++j) {
      const int32_t center = nearest[3 * i + j];
      if (center >= 0) sum += weight[3 * i + j] * features[center * channels + c];
    }
    out[e] = static_cast<float>(sum);
  }
}

}  // namespace

void three_nn_interpolate_cuda(const float* points, int64_t num_points, const float* centers, int64_t num_centers,
                               const float* center_features, int64_t channels, float* out, void* stream_handle) {
  XMODAL_CHECK(num_points >= 0 && channels >= 0, "three_nn_interpolate: invalid shapes N=", num_points,
               " C=", channels);
  XMODAL_CHECK(num_centers >= 1 && num_centers < (int64_t{1} << 31),
               "centers must hold between 1 and 2^31 - 1 points; got G=", num_centers);
  if (num_points == 0 || channels == 0) return;
  check_point_range_cuda(points, num_points, "points", stream_handle);
  check_point_range_cuda(centers, num_centers, "centers", stream_handle);
  cudaStream_t stream = as_stream(stream_handle);
  DeviceBuffer<int32_t> nearest(kNeighbours * num_points, stream);
  DeviceBuffer<double> weight(kNeighbours * num_points, stream);
  const unsigned int search_blocks = static_cast<unsigned int>((num_points + kThreads - 1) / kThreads);
  three_nn_search<<<search_blocks, kThreads, 0, stream>>>(points, num_points, centers, num_centers, nearest.get(),
                                                          weight.get());
  XMODAL_CUDA_LAUNCH_CHECK("three_nn_search");
  three_nn_gather<<<grid_for(num_points * channels, kThreads), kThreads, 0, stream>>>(
      nearest.get(), weight.get(), center_features, num_points, channels, out);
  XMODAL_CUDA_LAUNCH_CHECK("three_nn_gather");
}

}  // namespace xmodal
