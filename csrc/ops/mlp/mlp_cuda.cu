// CUDA MLP: a register-blocked shared-memory SGEMM with the bias + activation fused into its
// epilogue (the toolkit here has no cuBLAS, and cuBLASLt's GELU epilogue is the tanh form
// anyway), run over bounded row chunks. The crossmodal scorer compacts the foreground rows with
// CUB, gathers them per chunk, runs both MLPs and reduces each row to its discrepancy with a warp.
// Row counts stay on the device: no host synchronisation. Every device allocation is a
// DeviceBuffer, so a failed launch check frees what was allocated.
#include <cuda_runtime.h>

#include <algorithm>
#include <cub/device/device_select.cuh>
#include <vector>

#include "common/check.h"
#include "common/cuda_buffer.cuh"
#include "common/cuda_check.cuh"
#include "ops/mlp/mlp.h"

namespace xmodal {
namespace {

constexpr int kTileM = 64, kTileN = 64, kTileK = 16, kThreadM = 4, kThreadN = 4;
constexpr int64_t kChunkRows = 8192;  // activation memory: chunk x widest layer x 2 buffers
constexpr unsigned kFullMask = 0xffffffffu;
static_assert(kTileM == kTileN && kTileM * kTileK == 4 * 256, "tile loads assume 256 threads, square tiles");

// Rows of this chunk that exist: the whole chunk, or fewer when the (device-side) foreground
// count ends inside it.
__device__ __forceinline__ int64_t valid_rows(int64_t chunk_first, int64_t chunk_rows, const int64_t* total) {
  if (total == nullptr) return chunk_rows;
  const int64_t left = *total - chunk_first;
  return left < chunk_rows ? (left > 0 ? left : 0) : chunk_rows;
}

// out[r, j] = act(bias[j] + sum_k in[r, k] * weight[j, k]) for a 64 x 64 output tile per block.
__global__ void linear_kernel(const float* in, int64_t chunk_first, int64_t chunk_rows, const int64_t* total_rows,
                              int64_t in_dim, const float* weight, const float* bias, int64_t out_dim, Activation act,
                              float negative_slope, float* out) {
  __shared__ float in_tile[kTileK][kTileM];
  __shared__ float weight_tile[kTileK][kTileN];
  const int64_t rows = valid_rows(chunk_first, chunk_rows, total_rows);
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTileM, col0 = static_cast<int64_t>(blockIdx.x) * kTileN;
  if (row0 >= rows) return;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[kThreadM][kThreadN] = {};
  for (int64_t k0 = 0; k0 < in_dim; k0 += kTileK) {
    // 256 threads load the 64x16 slices of `in` and `weight`, four values each.
    for (int e = threadIdx.x; e < kTileM * kTileK; e += blockDim.x) {
      const int r = e / kTileK, k = e % kTileK;
      const int64_t gr = row0 + r, gk = k0 + k, gc = col0 + r;
      in_tile[k][r] = (gr < rows && gk < in_dim) ? in[gr * in_dim + gk] : 0.0f;
      weight_tile[k][r] = (gc < out_dim && gk < in_dim) ? weight[gc * in_dim + gk] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTileK; ++k) {
      float a[kThreadM], w[kThreadN];
#pragma unroll
      for (int i = 0; i < kThreadM; ++i) a[i] = in_tile[k][ty * kThreadM + i];
#pragma unroll
      for (int j = 0; j < kThreadN; ++j) w[j] = weight_tile[k][tx * kThreadN + j];
#pragma unroll
      for (int i = 0; i < kThreadM; ++i)
#pragma unroll
        for (int j = 0; j < kThreadN; ++j) acc[i][j] += a[i] * w[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kThreadM; ++i) {
    const int64_t r = row0 + ty * kThreadM + i;
    if (r >= rows) continue;
#pragma unroll
    for (int j = 0; j < kThreadN; ++j) {
      const int64_t c = col0 + tx * kThreadN + j;
      if (c >= out_dim) continue;
      const float v = acc[i][j] + (bias != nullptr ? bias[c] : 0.0f);
      out[r * out_dim + c] = activate(v, act, negative_slope);
    }
  }
}

__global__ void gather_rows(const float* source, int64_t dim, const int64_t* row_ids, int64_t chunk_first,
                            int64_t chunk_rows, const int64_t* total_rows, float* out) {
  const int64_t rows = valid_rows(chunk_first, chunk_rows, total_rows);
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < rows * dim;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / dim, d = e % dim;
    out[e] = source[row_ids[chunk_first + r] * dim + d];
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(kFullMask, v, offset);
  return __shfl_sync(kFullMask, v, 0);
}

// One warp per row: || p/max(|p|,eps) - t/max(|t|,eps) || written at the row's original index.
__global__ void normalized_distance_rows(const float* predicted, const float* target, int64_t dim,
                                         const int64_t* row_ids, int64_t chunk_first, int64_t chunk_rows,
                                         const int64_t* total_rows, float* out) {
  const int64_t rows = valid_rows(chunk_first, chunk_rows, total_rows);
  const int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const int64_t row = row_ids[chunk_first + r];
  const float* p = predicted + r * dim;
  const float* t = target + row * dim;
  float pp = 0.0f, tt = 0.0f;
  for (int64_t d = lane; d < dim; d += 32) {
    pp += p[d] * p[d];
    tt += t[d] * t[d];
  }
  const float ip = 1.0f / fmaxf(sqrtf(warp_sum(pp)), 1e-12f), it = 1.0f / fmaxf(sqrtf(warp_sum(tt)), 1e-12f);
  float sum = 0.0f;
  for (int64_t d = lane; d < dim; d += 32) {
    const float diff = p[d] * ip - t[d] * it;
    sum += diff * diff;
  }
  sum = warp_sum(sum);
  if (lane == 0) out[row] = sqrtf(sum);
}

__global__ void mask_to_flags(const uint8_t* mask, int64_t rows, int64_t* row_ids, char* flags) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    row_ids[i] = i;
    flags[i] = mask == nullptr || mask[i] != 0;
  }
}

int64_t widest_output(const std::vector<LinearLayer>& layers) {
  int64_t width = 0;
  for (const LinearLayer& layer : layers) width = std::max(width, layer.out);
  return width;
}

// Runs a chunk through all layers; returns the buffer holding the output.
float* run_chunk(const float* in, int64_t chunk_first, int64_t chunk_rows, const int64_t* total_rows,
                 const std::vector<LinearLayer>& layers, float* buffer_a, float* buffer_b, float* final_out,
                 cudaStream_t stream) {
  const float* current = in;
  float* target = nullptr;
  for (size_t i = 0; i < layers.size(); ++i) {
    const bool last = i + 1 == layers.size();
    target = (last && final_out != nullptr) ? final_out : (i % 2 == 0 ? buffer_a : buffer_b);
    const LinearLayer& layer = layers[i];
    const dim3 grid(static_cast<unsigned>((layer.out + kTileN - 1) / kTileN),
                    static_cast<unsigned>((chunk_rows + kTileM - 1) / kTileM));
    linear_kernel<<<grid, 256, 0, stream>>>(current, chunk_first, chunk_rows, total_rows, layer.in, layer.weight,
                                            layer.bias, layer.out, layer.activation, layer.negative_slope, target);
    XMODAL_CUDA_LAUNCH_CHECK("linear_kernel");
    current = target;
  }
  return target;
}

}  // namespace

void mlp_forward_cuda(const float* x, int64_t rows, const std::vector<LinearLayer>& layers, float* y,
                      void* stream_handle) {
  check_mlp_chain(layers, -1, -1, "mlp");
  if (rows == 0) return;
  cudaStream_t stream = as_stream(stream_handle);
  const int64_t in = layers.front().in, out = layers.back().out, width = widest_output(layers);
  const int64_t chunk = std::min(kChunkRows, rows);
  DeviceBuffer<float> buffer_a(chunk * width, stream), buffer_b(chunk * width, stream);
  for (int64_t first = 0; first < rows; first += chunk) {
    const int64_t count = std::min(chunk, rows - first);
    run_chunk(x + first * in, 0, count, nullptr, layers, buffer_a.get(), buffer_b.get(), y + first * out, stream);
  }
}

void crossmodal_discrepancy_cuda(const float* f2d, const float* f3d, int64_t rows, const uint8_t* mask,
                                 const std::vector<LinearLayer>& mlp_2d3d, const std::vector<LinearLayer>& mlp_3d2d,
                                 float* d_2d, float* d_3d, void* stream_handle) {
  check_mlp_chain(mlp_2d3d, -1, -1, "mlp_2d3d");
  const int64_t dim_2d = mlp_2d3d.front().in, dim_3d = mlp_2d3d.back().out;
  check_mlp_chain(mlp_3d2d, dim_3d, dim_2d, "mlp_3d2d");
  if (rows == 0) return;
  cudaStream_t stream = as_stream(stream_handle);
  XMODAL_CUDA_CHECK(cudaMemsetAsync(d_2d, 0, sizeof(float) * rows, stream));
  XMODAL_CUDA_CHECK(cudaMemsetAsync(d_3d, 0, sizeof(float) * rows, stream));

  // Foreground row ids, compacted on the device; their count stays on the device.
  DeviceBuffer<int64_t> all_ids(rows, stream), ids(rows, stream), count(1, stream);
  DeviceBuffer<char> flags(rows, stream);
  mask_to_flags<<<grid_for(rows, 256), 256, 0, stream>>>(mask, rows, all_ids.get(), flags.get());
  XMODAL_CUDA_LAUNCH_CHECK("mask_to_flags");
  cub_run(
      [&](void* temp, size_t& bytes) {
        return cub::DeviceSelect::Flagged(temp, bytes, all_ids.get(), flags.get(), ids.get(), count.get(), rows,
                                          stream);
      },
      stream, "cub::DeviceSelect::Flagged");

  const int64_t chunk = std::min(kChunkRows, rows);
  const int64_t width = std::max(widest_output(mlp_2d3d), widest_output(mlp_3d2d));
  DeviceBuffer<float> gathered(chunk * std::max(dim_2d, dim_3d), stream), buffer_a(chunk * width, stream),
      buffer_b(chunk * width, stream);
  const unsigned warp_blocks = static_cast<unsigned>((chunk * 32 + 255) / 256);
  // Chunks past the device-side foreground count exit at once.
  for (int64_t first = 0; first < rows; first += chunk) {
    const int64_t span = std::min(chunk, rows - first);
    gather_rows<<<grid_for(span * dim_2d, 256), 256, 0, stream>>>(f2d, dim_2d, ids.get(), first, span, count.get(),
                                                                  gathered.get());
    XMODAL_CUDA_LAUNCH_CHECK("gather_rows");
    float* predicted =
        run_chunk(gathered.get(), first, span, count.get(), mlp_2d3d, buffer_a.get(), buffer_b.get(), nullptr, stream);
    normalized_distance_rows<<<warp_blocks, 256, 0, stream>>>(predicted, f3d, dim_3d, ids.get(), first, span,
                                                              count.get(), d_3d);
    XMODAL_CUDA_LAUNCH_CHECK("normalized_distance_rows");
    gather_rows<<<grid_for(span * dim_3d, 256), 256, 0, stream>>>(f3d, dim_3d, ids.get(), first, span, count.get(),
                                                                  gathered.get());
    XMODAL_CUDA_LAUNCH_CHECK("gather_rows");
    predicted =
        run_chunk(gathered.get(), first, span, count.get(), mlp_3d2d, buffer_a.get(), buffer_b.get(), nullptr, stream);
    normalized_distance_rows<<<warp_blocks, 256, 0, stream>>>(predicted, f2d, dim_2d, ids.get(), first, span,
                                                              count.get(), d_2d);
    XMODAL_CUDA_LAUNCH_CHECK("normalized_distance_rows");
  }
}

}  // namespace xmodal
