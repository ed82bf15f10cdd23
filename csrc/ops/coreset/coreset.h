// Greedy k-center (farthest-first) coreset selection, as PatchCore / anomalib KCenterGreedy /
// M3DM use it on (projected) patch features.
//
//   x      (N, D) float32, C-contiguous
//   n      1 <= n <= N points to select
//   start  0 <= start < N, the first selected point
//   idx    (n,) int64 out: idx[0] = start; idx[i] = the point whose squared Euclidean distance
//          to its nearest already-selected point is largest among the points not yet selected
//          (ties: lowest index). Indices are therefore always distinct, even with duplicate
//          points (then the remaining points all sit at distance 0 and go in index order).
//
// CPU: squared distances are accumulated in float64 (in the one order common/distance.h fixes,
// the same bits on every CPU level), so the selection equals a plain float64 loop
// (xmodal.reference.greedy_coreset) up to float64 summation order. One fused pass over x per
// selected point updates the running minimum and finds the argmax; no per-step allocation.
#pragma once

#include <cstdint>

namespace xmodal {

void greedy_coreset_cpu(const float* x, int64_t num_points, int64_t dim, int64_t n, int64_t start, int64_t* idx);

// CUDA version (device pointers, queued on `stream`). Distances are accumulated in float32
// (float64 is 1/32-1/64 rate on most GPUs), so near-ties within float32 rounding may resolve
// differently from the CPU path: each pick's true (float64) distance is within a relative
// 2 D 2^-24 of the largest. Rows whose float32 sum overflows (coordinates beyond ~1e19) or is
// below 2^-100 (where float32 underflow dominates) are summed in float64 instead, so this holds
// for any finite input.
void greedy_coreset_cuda(const float* x, int64_t num_points, int64_t dim, int64_t n, int64_t start, int64_t* idx,
                         void* stream);

}  // namespace xmodal
