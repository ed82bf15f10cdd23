// Inverse-distance interpolation of per-center features at every point from its 3 nearest
// centers (Point-MAE features back to the points, PointNet++ feature propagation).
//
//   points           (N, 3) float32, finite, coordinates below 2^127 in magnitude
//   centers          (G, 3) float32, finite, G >= 1, coordinates below 2^127 in magnitude
//                    (common/point_range.h: invalid_argument otherwise)
//   center_features  (G, C) float32
//   out              (N, C) float32: sum_j w_j * center_features[c_j], over the k = min(3, G)
//                    nearest centers c_j of the point, w_j = 1 / (d_j + 1e-8) / sum_i 1 / (d_i + 1e-8)
//                    where d is the squared distance.
//
// Nearest means smallest squared distance in the arithmetic of common/point_math.h, ties to
// the lower center index (found exactly: KD-tree search on the CPU, a full scan on CUDA; no
// sort of all G distances). Weights and the weighted sum are computed in float64 and rounded
// once to float32, so the result is the float64 reference rounded (the reference code's
// float32 weights lose digits when d is comparable to 1e-8, i.e. millimetre-scale clouds).
#pragma once

#include <cstdint>

namespace xmodal {

constexpr double kInterpolationEpsilon = 1e-8;

void three_nn_interpolate_cpu(const float* points, int64_t num_points, const float* centers, int64_t num_centers,
                              const float* center_features, int64_t channels, float* out);

void three_nn_interpolate_cuda(const float* points, int64_t num_points, const float* centers, int64_t num_centers,
                               const float* center_features, int64_t channels, float* out, void* stream);

}  // namespace xmodal
