// CUDA: one block per (patch, pair). The block builds the pair's 2H input in shared memory,
// each thread computes head rows of z = relu(w1 · h + b1), a block reduction gives the two
// outputs, thread 0 writes l_j. A second kernel takes the min over the k pairs of each patch.
// A foreground index outside its bank sets *status (the host raises) and the pair is skipped.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "common/check.h"
#include "common/cuda_buffer.cuh"
#include "common/cuda_check.cuh"
#include "ops/anisotropic/anisotropic.h"

namespace xmodal {
namespace {

constexpr int kThreads = 256;

__global__ void anisotropic_pairs_kernel(AnisotropicArgs a, float* all, int32_t* status) {
  extern __shared__ float shared[];
  float* h = shared;                  // 2H
  float* partial = h + 2 * a.hidden;  // 2 x kThreads
  const int64_t pair = blockIdx.x;
  const int64_t q = pair / a.k;
  const float s_img = a.dist_img[pair], s_pcd = a.dist_pcd[pair];
  if (a.foreground[q] == 0) {
    if (threadIdx.x == 0) all[pair] = a.coef[0] * s_img + a.coef[1] * s_pcd;
    return;
  }
  const int64_t i = a.idx_img[pair], p = a.idx_pcd[pair];
  if (i < 0 || i >= a.n_img || p < 0 || p >= a.n_pcd) {
    if (threadIdx.x == 0) {
      atomicExch(status, 1);
      all[pair] = 0.0f;
    }
    return;
  }
  float c_img, c_pcd;
  direction_coefficients(s_img, s_pcd, a.joint, &c_img, &c_pcd);
  const float* row_img = a.bank_img + i * 2 * a.hidden;
  const float* row_pcd = a.bank_pcd + p * 2 * a.hidden;
  for (int64_t d = threadIdx.x; d < a.hidden; d += blockDim.x) {
    const float va = c_img * (a.qa_img[q * a.hidden + d] - row_img[d]) +
                     c_pcd * (a.qa_pcd[q * a.hidden + d] - row_pcd[d]) + a.b_a[d];
    const float vb = row_img[a.hidden + d] + row_pcd[a.hidden + d] + a.b_b[d];
    h[d] = va > 0.0f ? va : 0.0f;
    h[a.hidden + d] = vb > 0.0f ? vb : 0.0f;
  }
  __syncthreads();
  float o_img = 0.0f, o_pcd = 0.0f;
  for (int64_t r = threadIdx.x; r < a.head; r += blockDim.x) {
    const float* w = a.w1 + r * 2 * a.hidden;
    float z = a.b1[r];
    for (int64_t d = 0; d < 2 * a.hidden; ++d) z += w[d] * h[d];
    z = z > 0.0f ? z : 0.0f;
    o_img += a.w2[r] * z;
    o_pcd += a.w2[a.head + r] * z;
  }
  partial[threadIdx.x] = o_img;
  partial[kThreads + threadIdx.x] = o_pcd;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride) {
      partial[threadIdx.x] += partial[threadIdx.x + stride];
      partial[kThreads + threadIdx.x] += partial[kThreads + threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    all[pair] =
        anisotropic_metric(partial[0] + a.b2[0], partial[kThreads] + a.b2[1], s_img, s_pcd, a.coef[0], a.coef[1]);
  }
}

__global__ void min_over_pairs_kernel(const float* all, int64_t queries, int64_t k, float* out_min) {
  XMODAL_GRID_STRIDE(q, queries) {
    float best = all[q * k];
    for (int64_t j = 1; j < k; ++j) best = fminf(best, all[q * k + j]);
    out_min[q] = best;
  }
}

}  // namespace

void anisotropic_min_cuda(const AnisotropicArgs& a, int32_t* status, void* stream) {
  XMODAL_CHECK(a.queries >= 0 && a.k >= 1 && a.hidden >= 1 && a.head >= 1, "anisotropic_min: bad sizes Q=", a.queries,
               " k=", a.k, " H=", a.hidden, " H1=", a.head);
  const int64_t pairs = a.queries * a.k;
  if (pairs == 0) return;
  XMODAL_CHECK(pairs <= INT_MAX, "anisotropic_min on CUDA supports Q*k < 2^31 pairs; got ", pairs);
  const size_t shared_bytes = static_cast<size_t>(2 * a.hidden + 2 * kThreads) * sizeof(float);
  XMODAL_CHECK(shared_bytes <= 48 * 1024, "anisotropic_min on CUDA supports H <= ", (48 * 1024 / 4 - 2 * kThreads) / 2,
               "; got H=", a.hidden);
  auto s = static_cast<cudaStream_t>(stream);
  DeviceBuffer<float> scratch(a.out_all == nullptr ? static_cast<size_t>(pairs) : 0, s);
  float* all = a.out_all != nullptr ? a.out_all : scratch.get();
  anisotropic_pairs_kernel<<<static_cast<unsigned>(pairs), kThreads, shared_bytes, s>>>(a, all, status);
  XMODAL_CUDA_LAUNCH_CHECK("anisotropic_pairs_kernel");
  min_over_pairs_kernel<<<grid_for(a.queries, kThreads), kThreads, 0, s>>>(all, a.queries, a.k, a.out_min);
  XMODAL_CUDA_LAUNCH_CHECK("min_over_pairs_kernel");
}

}  // namespace xmodal
