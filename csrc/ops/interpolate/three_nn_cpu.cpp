#include <algorithm>
#include <vector>

#include "common/check.h"
#include "common/point_knn.h"
#include "common/point_range.h"
#include "common/point_tree.h"
#include "ops/interpolate/three_nn.h"

namespace xmodal {
namespace {

constexpr int kLeafSize = 8;
constexpr int64_t kMaxNeighbours = 3;

}  // namespace

void three_nn_interpolate_cpu(const float* points, int64_t num_points, const float* centers, int64_t num_centers,
                              const float* center_features, int64_t channels, float* out) {
  XMODAL_CHECK(num_points >= 0 && channels >= 0, "three_nn_interpolate: invalid shapes N=", num_points,
               " C=", channels);
  XMODAL_CHECK(num_centers >= 1 && num_centers < (int64_t{1} << 31),
               "centers must hold between 1 and 2^31 - 1 points; got G=", num_centers);
  if (num_points == 0 || channels == 0) return;
  check_point_range_cpu(points, num_points, "points");
  check_point_range_cpu(centers, num_centers, "centers");
  const int64_t k = std::min(kMaxNeighbours, num_centers);
  PointTree tree;
  tree.build(centers, num_centers, nullptr, kLeafSize);

  search_all<PointMetric>(tree, centers, points, num_points, k, [&](int64_t i, const auto* found) {
    // Weights and sum in float64, rounded once.
    double weight[kMaxNeighbours], total = 0.0;
    for (int64_t j = 0; j < k; ++j) {
      weight[j] = 1.0 / (found[j].distance + kInterpolationEpsilon);
      total += weight[j];
    }
    thread_local std::vector<double> row;
    row.assign(static_cast<size_t>(channels), 0.0);
    for (int64_t j = 0; j < k; ++j) {
      const double w = weight[j] / total;
      const float* f = center_features + found[j].index * channels;
      for (int64_t c = 0; c < channels; ++c) row[static_cast<size_t>(c)] += w * f[c];
    }
    float* o = out + i * channels;
    for (int64_t c = 0; c < channels; ++c) o[c] = static_cast<float>(row[static_cast<size_t>(c)]);
  });
}

}  // namespace xmodal
