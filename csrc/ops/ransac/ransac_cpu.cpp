#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/check.h"
#include "common/parallel.h"
#include "ops/ransac/plane_math.h"
#include "ops/ransac/ransac.h"

namespace xmodal {
namespace {

struct Score {
  int64_t count = 0;
  double error = 0.0;  // sum of squared inlier distances
};

// Structure of arrays in float64: the scoring loop over all points vectorises.
struct Coordinates {
  std::vector<double> x, y, z;
  explicit Coordinates(const float* points, int64_t n) : x(n), y(n), z(n) {
    for (int64_t i = 0; i < n; ++i) {
      x[i] = points[3 * i];
      y[i] = points[3 * i + 1];
      z[i] = points[3 * i + 2];
    }
  }
};

Score score_plane(const Coordinates& c, int64_t n, const double plane[4], double threshold) {
  const double a = plane[0], b = plane[1], cc = plane[2], d = plane[3];
  const double* x = c.x.data();
  const double* y = c.y.data();
  const double* z = c.z.data();
  int64_t count = 0;
  double error = 0.0;
#pragma omp simd reduction(+ : count, error)
  for (int64_t i = 0; i < n; ++i) {
    const double dist = std::fabs(a * x[i] + b * y[i] + cc * z[i] + d);
    const bool in = dist < threshold;
    count += in ? 1 : 0;
    error += in ? dist * dist : 0.0;
  }
  return {count, error};
}

// Least-squares plane of the points selected by `index` (two passes: centroid, then scatter,
// for accuracy with coordinates far from the origin).
template <typename Index>
bool fit_plane(const Coordinates& c, int64_t count, Index index, double plane[4]) {
  double centroid[3] = {0, 0, 0};
  for (int64_t s = 0; s < count; ++s) {
    const int64_t i = index(s);
    centroid[0] += c.x[i];
    centroid[1] += c.y[i];
    centroid[2] += c.z[i];
  }
  for (double& v : centroid) v /= static_cast<double>(count);
  double scatter[6] = {0, 0, 0, 0, 0, 0};
  for (int64_t s = 0; s < count; ++s) {
    const int64_t i = index(s);
    const double dx = c.x[i] - centroid[0], dy = c.y[i] - centroid[1], dz = c.z[i] - centroid[2];
    scatter[0] += dx * dx;
    scatter[1] += dx * dy;
    scatter[2] += dx * dz;
    scatter[3] += dy * dy;
    scatter[4] += dy * dz;
    scatter[5] += dz * dz;
  }
  return plane::plane_from_moments(centroid, scatter, plane);
}

}  // namespace

void ransac_plane_cpu(const float* points, int64_t num_points, double threshold, int64_t sample_size,
                      int64_t iterations, double probability, uint64_t seed, double* plane, bool* inliers) {
  XMODAL_CHECK(threshold > 0 && std::isfinite(threshold), "distance_threshold must be a positive number; got ",
               threshold);
  XMODAL_CHECK(sample_size >= 3 && sample_size <= num_points, "num_points must be in [3, N=", num_points, "]; got ",
               sample_size);
  XMODAL_CHECK(iterations >= 1, "iterations must be >= 1; got ", iterations);
  XMODAL_CHECK(probability > 0 && probability <= 1, "probability must be in (0, 1]; got ", probability);

  const Coordinates coords(points, num_points);
  std::vector<Score> scores(static_cast<size_t>(iterations));
  std::vector<double> planes(static_cast<size_t>(iterations) * 4);
  ParallelErrors errors;
  // A block over fewer points is a few milliseconds of work: not worth waking threads for.
  const bool parallel = num_points >= 262144;
  int64_t best = -1;
  for (int64_t block = 0; block < iterations; block += kRansacBlock) {
    const int64_t block_end = std::min(iterations, block + kRansacBlock);
#pragma omp parallel if (parallel)
    {
      std::vector<int64_t> sample(static_cast<size_t>(sample_size));
#pragma omp for schedule(static)
      for (int64_t it = block; it < block_end; ++it) {
        errors.run([&] {
          plane::Rng rng(seed, static_cast<uint64_t>(it));
          plane::sample_distinct(rng, num_points, sample_size, sample.data());
          double* p = &planes[static_cast<size_t>(it) * 4];
          if (fit_plane(coords, sample_size, [&](int64_t s) { return sample[static_cast<size_t>(s)]; }, p)) {
            scores[static_cast<size_t>(it)] = score_plane(coords, num_points, p, threshold);
          }
        });
      }
    }
    errors.rethrow();
    for (int64_t it = block; it < block_end; ++it) {
      const Score& s = scores[static_cast<size_t>(it)];
      if (s.count == 0) continue;
      if (best < 0 || plane::better_hypothesis(s.count, s.error, scores[best].count, scores[best].error)) best = it;
    }
    if (best >= 0) {
      const double fraction = static_cast<double>(scores[best].count) / static_cast<double>(num_points);
      if (static_cast<double>(block_end) >= plane::required_hypotheses(fraction, sample_size, probability)) break;
    }
  }
  XMODAL_CHECK(best >= 0, "ransac_plane: no hypothesis has a point within distance_threshold=", threshold,
               " (all samples degenerate or the threshold is too small for the data)");

  const double* hypothesis = &planes[static_cast<size_t>(best) * 4];
  std::vector<int64_t> inlier_index;
  inlier_index.reserve(static_cast<size_t>(scores[best].count));
  for (int64_t i = 0; i < num_points; ++i) {
    const double dist = std::fabs(hypothesis[0] * coords.x[i] + hypothesis[1] * coords.y[i] +
                                  hypothesis[2] * coords.z[i] + hypothesis[3]);
    inliers[i] = dist < threshold;
    if (inliers[i]) inlier_index.push_back(i);
  }
  double refit[4];
  const bool ok = fit_plane(
      coords, static_cast<int64_t>(inlier_index.size()),
      [&](int64_t s) { return inlier_index[static_cast<size_t>(s)]; }, refit);
  for (int k = 0; k < 4; ++k) plane[k] = ok ? refit[k] : hypothesis[k];
}

}  // namespace xmodal
