// Farthest point sampling of a 3D point cloud.
//
//   points     (N, 3) float32, C-contiguous, finite (the caller rejects NaN/inf), every
//              coordinate below 2^127 in magnitude (common/point_range.h; invalid_argument otherwise)
//   n          1 <= n <= N points to select
//   start      0 <= start < N: idx[0]
//   reference  false: exact FPS. Each further index is the not-yet-selected point whose
//                squared distance to its nearest selected point is largest; ties go to the
//                lowest index. Indices are distinct (duplicate points: the remaining ones sit
//                at distance 0 and follow in index order).
//              true: the selection rules of pointnet2_ops' furthest_point_sample (the CUDA
//                kernel M3DM / CFM / G2SF use): start must be 0; points with |p|^2 <= 1e-3 are
//                never selected (they still count for the thread layout); running distances
//                start at 1e10; selected points are not excluded (they sit at distance 0,
//                so they come back only once every eligible point is at 0, as there); ties
//                follow its block reduction (common/point_math.h: pointnet2_tie_key).
//   idx        (n,) int64 out
//
// Distances use the exact, contraction-proof arithmetic of common/point_math.h (float32
// differences, float64 squares and sums); xmodal.reference.farthest_point_sample reproduces it
// bit for bit. pointnet2_ops itself works in float32, so on real data a near-tie within
// float32 rounding can still resolve differently from it; exactly representable clouds (grids)
// select the same points.
//
// CPU: bucket FPS on a KD-tree (QuickFPS-style): every node keeps the largest running distance
// of its points; a new center updates only the nodes whose box lower bound is below that
// maximum, and skipping a node is exact (no point in it can change). The result is identical
// to the plain O(N n) loop.
#pragma once

#include <cstdint>

namespace xmodal {

// Threads pointnet2_ops launches for a cloud of N points, as log2 (power of two <= 512,
// computed with its floating-point log formula).
int pointnet2_log2_threads(int64_t num_points);

void farthest_point_sample_cpu(const float* points, int64_t num_points, int64_t n, int64_t start, bool reference,
                               int64_t* idx);

// CUDA version (device pointers, queued on `stream`): same contract and the same arithmetic,
// so it selects exactly what the CPU selects. One kernel launch per selected point.
void farthest_point_sample_cuda(const float* points, int64_t num_points, int64_t n, int64_t start, bool reference,
                                int64_t* idx, void* stream);

}  // namespace xmodal
