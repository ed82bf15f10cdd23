// RANSAC plane fit, with the semantics of open3d's PointCloud::segment_plane as the MVTec 3D-AD
// preprocessing (BTF / M3DM / CFM / G2SF) uses it.
//
//   points       (N, 3) float32, C-contiguous, finite
//   threshold    > 0: a point is an inlier of a plane when |n.p + d| < threshold
//   sample_size  3 <= sample_size <= N points per hypothesis
//   iterations   >= 1: the most hypotheses evaluated
//   probability  in (0, 1]: stop early once this confidence is reached (open3d's rule, below)
//   seed         hypothesis i draws its sample from splitmix64(seed, i) (plane_math.h), so the
//                result does not depend on the number of threads
//   plane        (4,) float64 out: (a, b, c, d), unit normal (a, b, c), signed so that d >= 0
//   inliers      (N,) bool out: inliers of the best hypothesis
//
// Each hypothesis fits a plane to `sample_size` distinct random points by least squares
// (smallest eigenvector of their scatter matrix; open3d does the same for ransac_n > 3) and
// scores it over all points: more inliers win, then the smaller inlier RMSE, then the lower
// hypothesis index. Samples on one line are skipped. The returned plane is the least-squares
// refit on the best hypothesis's inliers, and `inliers` are those of the hypothesis before the
// refit (both as open3d returns them). Distances are evaluated in float64.
//
// Early stop: hypotheses are evaluated in blocks of kRansacBlock; after each block, with w the
// best inlier fraction so far, the search stops once the hypotheses done reach
// log(1 - probability) / log(1 - w^sample_size) (the number needed to draw one all-inlier
// sample with that confidence; open3d's criterion). probability = 1 never stops early. The
// block size is fixed, so the result does not depend on the number of threads.
// Throws std::invalid_argument when no hypothesis has an inlier.
#pragma once

#include <cstdint>

namespace xmodal {

constexpr int64_t kRansacBlock = 32;

void ransac_plane_cpu(const float* points, int64_t num_points, double threshold, int64_t sample_size,
                      int64_t iterations, double probability, uint64_t seed, double* plane, bool* inliers);

}  // namespace xmodal
