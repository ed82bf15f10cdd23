// CUDA points_to_grid: a pixel -> point map (scatter), then a thread per output element sums
// its input rectangle with the separable tap weights shared with the CPU kernel.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/check.h"
#include "common/cuda_buffer.cuh"
#include "common/cuda_check.cuh"
#include "ops/grid/points_to_grid.h"

namespace xmodal {
namespace {

constexpr int kThreads = 256;

// The caller validated pixel_index; the range test only keeps a bad direct call in bounds.
__global__ void scatter_points(const int64_t* pixel_index, int64_t num_points, int64_t num_pixels, int32_t* point_at) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < num_points;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t pixel = pixel_index[i];
    if (pixel >= 0 && pixel < num_pixels) point_at[pixel] = static_cast<int32_t>(i);
  }
}

__global__ void pool_grid(const float* features, int64_t channels, const int32_t* point_at, int64_t height,
                          int64_t width, int64_t out_height, int64_t out_width, bool channels_last, float* out) {
  const int64_t plane = out_height * out_width, total = plane * channels;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t c, pixel;
    if (channels_last) {
      c = e % channels;
      pixel = e / channels;
    } else {
      c = e / plane;
      pixel = e % plane;
    }
    const int64_t oy = pixel / out_width, ox = pixel % out_width;
    int64_t y0, y1, x0, x1;
    adaptive_window(oy, height - 2, out_height, y0, y1);
    adaptive_window(ox, width - 2, out_width, x0, x1);
    float sum = 0.0f;
    for (int64_t y = y0; y < y1 + 2; ++y) {
      const float wy = pooled_tap_weight(y, y0, y1);
      float row = 0.0f;
      for (int64_t x = x0; x < x1 + 2; ++x) {
        const int32_t point = point_at[y * width + x];
        if (point >= 0) row += pooled_tap_weight(x, x0, x1) * features[static_cast<int64_t>(point) * channels + c];
      }
      sum += wy * row;
    }
    out[e] = sum;
  }
}

}  // namespace

void points_to_grid_cuda(const float* features, int64_t num_points, int64_t channels, const int64_t* pixel_index,
                         int64_t height, int64_t width, int64_t out_height, int64_t out_width, bool channels_last,
                         float* out, void* stream_handle) {
  XMODAL_CHECK(height >= 3 && width >= 3, "height and width must be >= 3 (3x3 pooling); got ", height, "x", width);
  XMODAL_CHECK(out_height >= 1 && out_width >= 1, "out_size must be positive; got ", out_height, "x", out_width);
  XMODAL_CHECK(num_points >= 0 && channels >= 0 && num_points <= height * width,
               "points_to_grid: invalid shapes N=", num_points, " C=", channels);
  if (channels == 0) return;
  cudaStream_t stream = as_stream(stream_handle);
  DeviceBuffer<int32_t> point_at(height * width, stream);
  XMODAL_CUDA_CHECK(cudaMemsetAsync(point_at.get(), 0xFF, sizeof(int32_t) * height * width, stream));  // all -1
  if (num_points > 0) {
    scatter_points<<<grid_for(num_points, kThreads), kThreads, 0, stream>>>(pixel_index, num_points, height * width,
                                                                            point_at.get());
    XMODAL_CUDA_LAUNCH_CHECK("scatter_points");
  }
  pool_grid<<<grid_for(out_height * out_width * channels, kThreads), kThreads, 0, stream>>>(
      features, channels, point_at.get(), height, width, out_height, out_width, channels_last, out);
  XMODAL_CUDA_LAUNCH_CHECK("pool_grid");
}

}  // namespace xmodal
