#include <algorithm>
#include <limits>
#include <vector>

#include "common/check.h"
#include "common/parallel.h"
#include "common/point_knn.h"
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
  const int64_t k = std::min(kMaxNeighbours, num_centers);
  PointTree tree;
  tree.build(centers, num_centers, nullptr, kLeafSize);

  using Search = TreeKnn<PointMetric>;
  ParallelErrors errors;
#pragma omp parallel
  {
    Search search(tree, k);
    Search::Neighbour found[kMaxNeighbours];
    int64_t previous[kMaxNeighbours];
    bool have_previous = false;
    std::vector<double> row(static_cast<size_t>(channels));
    // Contiguous chunks: organized clouds list neighbouring pixels one after another, so the
    // previous point's centers bound the search from the start.
#pragma omp for schedule(static)
    for (int64_t i = 0; i < num_points; ++i) errors.run([&] {
      const float* p = points + 3 * i;
      double bound = std::numeric_limits<double>::infinity();
      if (have_previous) {
        bound = 0.0;
        for (int64_t j = 0; j < k; ++j) {
          const float* c = centers + 3 * previous[j];
          bound = std::max(bound, squared_distance3(p[0], p[1], p[2], c[0], c[1], c[2]));
        }
      }
      search.search(p[0], p[1], p[2], bound, found);
      double weight[kMaxNeighbours], total = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        weight[j] = 1.0 / (found[j].distance + kInterpolationEpsilon);
        total += weight[j];
        previous[j] = found[j].index;
      }
      have_previous = true;
      std::fill(row.begin(), row.end(), 0.0);
      for (int64_t j = 0; j < k; ++j) {
        const double w = weight[j] / total;
        const float* f = center_features + found[j].index * channels;
        for (int64_t c = 0; c < channels; ++c) row[static_cast<size_t>(c)] += w * f[c];
      }
      float* o = out + i * channels;
      for (int64_t c = 0; c < channels; ++c) o[c] = static_cast<float>(row[static_cast<size_t>(c)]);
    });
  }
  errors.rethrow();
}

}  // namespace xmodal
