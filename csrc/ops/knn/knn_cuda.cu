// CUDA k-NN: tiled squared distances (shared-memory tiles) into a bounded workspace, a warp
// per query merging each tile into its sorted candidate list, then an exact float64 re-rank.
// Written for review by eye, mirroring knn_cpu.cpp's contract and tie rule. The tiles see the
// inputs times a power of two chosen on the device (ops/knn/screening.h), so their float32
// sums neither overflow nor drown in underflow; the re-rank uses the inputs themselves.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "common/check.h"
#include "common/cuda_buffer.cuh"
#include "common/cuda_check.cuh"
#include "common/half.h"
#include "ops/knn/knn.h"
#include "ops/knn/screening.h"

namespace xmodal {
namespace {

constexpr int kDistTile = 16;         // edge of the shared-memory distance tile
constexpr int kCandidateMargin = 32;  // extra candidates kept beyond k for the exact re-rank
constexpr int64_t kQueryTile = 1024;  // workspace: kQueryTile x kBankTile floats (32 MB)
constexpr int64_t kBankTile = 8192;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr double kUnitRoundoff = 5.9604644775390625e-08;

__device__ __forceinline__ float bank_value(const float* bank, int64_t i) { return bank[i]; }
__device__ __forceinline__ float bank_value(const uint16_t* bank, int64_t i) { return half_bits_to_float(bank[i]); }

// Largest |value| of an array, as float bits (monotone for non-negative floats): atomicMax.
template <typename T>
__global__ void max_abs_bits(const T* values, int64_t n, unsigned* bits) {
  unsigned local = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    local = max(local, __float_as_uint(fabsf(bank_value(values, i))));
  }
  atomicMax(bits, local);
}

// The screening scale from the largest |value| v: every row norm is at most v sqrt(D). Kept
// within float's normal range, where multiplying by it is exact but for underflow.
__global__ void choose_scale(const unsigned* max_bits, int64_t dim, float* scale) {
  const double bound = static_cast<double>(__uint_as_float(*max_bits)) * sqrt(static_cast<double>(dim));
  *scale = static_cast<float>(fmin(fmax(knn_screening_scale(bound), 0x1p-126), 0x1p127));
}

// scores[r * bank_count + c] = sum_d (s query[q0 + r] - s bank[b0 + c])^2 with s = *scale.
template <typename BankT>
__global__ void squared_distance_tile(const float* queries, int64_t q0, int64_t query_count, const BankT* bank,
                                      int64_t b0, int64_t bank_count, int64_t dim, const float* scale_ptr,
                                      float* scores) {
  __shared__ float query_tile[kDistTile][kDistTile + 1];
  __shared__ float bank_tile[kDistTile][kDistTile + 1];
  const float scale = *scale_ptr;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row = static_cast<int64_t>(blockIdx.y) * kDistTile + ty;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kDistTile + tx;
  const int64_t bank_row_loaded = static_cast<int64_t>(blockIdx.x) * kDistTile + ty;
  float acc = 0.0f;
  for (int64_t d0 = 0; d0 < dim; d0 += kDistTile) {
    const int64_t d = d0 + tx;
    // Out-of-range entries load 0 in both tiles, so they add (0 - 0)^2 = 0.
    query_tile[ty][tx] = (row < query_count && d < dim) ? scale * queries[(q0 + row) * dim + d] : 0.0f;
    bank_tile[ty][tx] =
        (bank_row_loaded < bank_count && d < dim) ? scale * bank_value(bank, (b0 + bank_row_loaded) * dim + d) : 0.0f;
    __syncthreads();
#pragma unroll
    for (int t = 0; t < kDistTile; ++t) {
      const float diff = query_tile[ty][t] - bank_tile[tx][t];
      acc += diff * diff;
    }
    __syncthreads();
  }
  if (row < query_count && col < bank_count) scores[row * bank_count + col] = acc;
}

__global__ void init_lists(float* list_scores, int64_t* list_index, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    list_scores[i] = INFINITY;
    list_index[i] = -1;
  }
}

// One warp per query. The list (ascending score, then index) lives in global memory between
// tiles. Tiles arrive in increasing bank order and a candidate must be strictly below the
// current worst entry, so equal scores keep the lower bank index.
__global__ void merge_tile_into_lists(const float* scores, int64_t q0, int64_t query_count, int64_t b0,
                                      int64_t bank_count, int width, float* list_scores, int64_t* list_index) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= query_count) return;
  float* best = list_scores + (q0 + warp) * width;
  int64_t* best_index = list_index + (q0 + warp) * width;
  const float* row = scores + warp * bank_count;
  float limit = best[width - 1];
  for (int64_t j0 = 0; j0 < bank_count; j0 += 32) {
    const int64_t j = j0 + lane;
    const float s = j < bank_count ? row[j] : INFINITY;
    unsigned pending = __ballot_sync(kFullMask, s < limit);
    while (pending) {
      const int source = __ffs(pending) - 1;
      pending &= pending - 1;
      const float candidate = __shfl_sync(kFullMask, s, source);
      if (lane == 0 && candidate < best[width - 1]) {
        int pos = width - 1;
        while (pos > 0 && best[pos - 1] > candidate) {
          best[pos] = best[pos - 1];
          best_index[pos] = best_index[pos - 1];
          --pos;
        }
        best[pos] = candidate;
        best_index[pos] = b0 + j0 + source;
      }
      __syncwarp();
      limit = __shfl_sync(kFullMask, lane == 0 ? best[width - 1] : 0.0f, 0);
    }
  }
}

// One thread per query: replaces screening scores by exact float64 distances rounded to
// float32, sorts by (distance, index) and writes the first k. Then checks that the candidate
// margin was wide enough: a row outside the list has a screening score >= the list's last,
// so its exact distance is at least `floor` below; if that floor could still round to the
// k-th distance (near-ties, float32 subnormal or infinite distances), a row outside the list
// might tie with or beat the k-th, and `status` is set.
template <typename BankT>
__global__ void exact_rerank(const float* queries, const BankT* bank, int64_t query_count, int64_t bank_size,
                             int64_t dim, int64_t k, int width, double score_rel, const float* scale_ptr,
                             float* list_scores, int64_t* list_index, float* dist, int64_t* idx, int32_t* status) {
  const int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (q >= query_count) return;
  float* keys = list_scores + q * width;
  int64_t* index = list_index + q * width;
  const double scale = *scale_ptr;
  const double last_score = keys[width - 1];
  const double floor_sq = fmax(0.0, last_score * (1.0 - score_rel) - 1e-30) / (scale * scale) * (1.0 - 0x1p-40);
  const float* query = queries + q * dim;
  for (int i = 0; i < width; ++i) {
    if (index[i] < 0) {  // cannot happen for finite inputs; never read outside the bank
      atomicExch(status, 1);
      return;
    }
    double sum = 0.0;
    for (int64_t d = 0; d < dim; ++d) {
      const double diff = static_cast<double>(query[d]) - static_cast<double>(bank_value(bank, index[i] * dim + d));
      sum += diff * diff;
    }
    keys[i] = static_cast<float>(sqrt(sum));
  }
  for (int i = 1; i < width; ++i) {
    const float key = keys[i];
    const int64_t at = index[i];
    int pos = i;
    while (pos > 0 && (keys[pos - 1] > key || (keys[pos - 1] == key && index[pos - 1] > at))) {
      keys[pos] = keys[pos - 1];
      index[pos] = index[pos - 1];
      --pos;
    }
    keys[pos] = key;
    index[pos] = at;
  }
  if (width < bank_size && static_cast<float>(sqrt(floor_sq)) <= keys[k - 1]) atomicExch(status, 1);
  for (int64_t j = 0; j < k; ++j) {
    dist[q * k + j] = keys[j];
    idx[q * k + j] = index[j];
  }
}

template <typename BankT>
void run_knn(const float* queries, int64_t num_queries, const BankT* bank, int64_t bank_size, int64_t dim, int64_t k,
             float* dist, int64_t* idx, int32_t* status, cudaStream_t stream) {
  const int width = static_cast<int>(std::min<int64_t>(bank_size, k + kCandidateMargin));
  const int64_t list_count = num_queries * width;
  DeviceBuffer<float> list_scores(list_count, stream);
  DeviceBuffer<int64_t> list_index(list_count, stream);
  DeviceBuffer<float> scores(kQueryTile * kBankTile, stream);
  DeviceBuffer<unsigned> max_bits(1, stream);
  DeviceBuffer<float> scale(1, stream);

  XMODAL_CUDA_CHECK(cudaMemsetAsync(max_bits.get(), 0, sizeof(unsigned), stream));
  max_abs_bits<<<grid_for(num_queries * dim, 256, 1024), 256, 0, stream>>>(queries, num_queries * dim, max_bits.get());
  XMODAL_CUDA_LAUNCH_CHECK("max_abs_bits");
  max_abs_bits<<<grid_for(bank_size * dim, 256, 1024), 256, 0, stream>>>(bank, bank_size * dim, max_bits.get());
  XMODAL_CUDA_LAUNCH_CHECK("max_abs_bits");
  choose_scale<<<1, 1, 0, stream>>>(max_bits.get(), dim, scale.get());
  XMODAL_CUDA_LAUNCH_CHECK("choose_scale");
  init_lists<<<grid_for(list_count, 256), 256, 0, stream>>>(list_scores.get(), list_index.get(), list_count);
  XMODAL_CUDA_LAUNCH_CHECK("init_lists");
  for (int64_t q0 = 0; q0 < num_queries; q0 += kQueryTile) {
    const int64_t query_count = std::min(kQueryTile, num_queries - q0);
    for (int64_t b0 = 0; b0 < bank_size; b0 += kBankTile) {
      const int64_t bank_count = std::min(kBankTile, bank_size - b0);
      const dim3 block(kDistTile, kDistTile);
      const dim3 grid(static_cast<unsigned>((bank_count + kDistTile - 1) / kDistTile),
                      static_cast<unsigned>((query_count + kDistTile - 1) / kDistTile));
      squared_distance_tile<<<grid, block, 0, stream>>>(queries, q0, query_count, bank, b0, bank_count, dim,
                                                        scale.get(), scores.get());
      XMODAL_CUDA_LAUNCH_CHECK("squared_distance_tile");
      const int threads = 256;
      const unsigned blocks = static_cast<unsigned>((query_count * 32 + threads - 1) / threads);
      merge_tile_into_lists<<<blocks, threads, 0, stream>>>(scores.get(), q0, query_count, b0, bank_count, width,
                                                            list_scores.get(), list_index.get());
      XMODAL_CUDA_LAUNCH_CHECK("merge_tile_into_lists");
    }
  }
  // One-sided relative error of a float32 sum of D squared differences of scaled values (the
  // extra u: underflow of the scaled copy).
  const double score_rel = 1.01 * (2.0 * dim + 5.0) * kUnitRoundoff;
  exact_rerank<<<grid_for(num_queries, 128), 128, 0, stream>>>(queries, bank, num_queries, bank_size, dim, k, width,
                                                               score_rel, scale.get(), list_scores.get(),
                                                               list_index.get(), dist, idx, status);
  XMODAL_CUDA_LAUNCH_CHECK("exact_rerank");
}

}  // namespace

void knn_cuda(const float* queries, int64_t num_queries, const void* bank, BankType bank_type, int64_t bank_size,
              int64_t dim, int64_t k, float* dist, int64_t* idx, int32_t* status, void* stream) {
  XMODAL_CHECK(num_queries >= 0 && dim >= 1, "knn: invalid shapes Q=", num_queries, " D=", dim);
  XMODAL_CHECK(k >= 1 && k <= bank_size, "k must be in [1, N=", bank_size, "]; got ", k);
  if (num_queries == 0) return;
  if (bank_type == BankType::f32) {
    run_knn(queries, num_queries, static_cast<const float*>(bank), bank_size, dim, k, dist, idx, status,
            as_stream(stream));
  } else {
    run_knn(queries, num_queries, static_cast<const uint16_t*>(bank), bank_size, dim, k, dist, idx, status,
            as_stream(stream));
  }
}

}  // namespace xmodal
