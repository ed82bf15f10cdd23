#include <vector>

#include "common/check.h"
#include "common/parallel.h"
#include "ops/fpfh/fpfh.h"
#include "ops/fpfh/fpfh_math.h"
#include "ops/fpfh/fpfh_neighbours.h"

namespace xmodal {

void estimate_normals_cpu(const float* points, int64_t num_points, Neighbourhood neighbourhood, Viewpoint viewpoint,
                          float* normals) {
  check_fpfh_arguments(num_points, neighbourhood, "estimate_normals");
  const NeighbourTable table = find_neighbourhoods(points, num_points, neighbourhood);
  ParallelErrors errors;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < num_points; ++i) errors.run([&] {
    fpfh::point_normal(points, i, table.row(i), table.count[static_cast<size_t>(i)], viewpoint, normals + 3 * i);
  });
  errors.rethrow();
}

void fpfh_cpu(const float* points, const float* normals, int64_t num_points, Neighbourhood neighbourhood,
              float* features) {
  check_fpfh_arguments(num_points, neighbourhood, "fpfh");
  const NeighbourTable table = find_neighbourhoods(points, num_points, neighbourhood);
  std::vector<float> counts(static_cast<size_t>(num_points * kFpfhFeatures));
  std::vector<double> increments(static_cast<size_t>(num_points));
  ParallelErrors errors;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < num_points; ++i) errors.run([&] {
      increments[static_cast<size_t>(i)] = fpfh::point_spfh(points, normals, i, table.row(i),
                                                            table.count[static_cast<size_t>(i)],
                                                            counts.data() + kFpfhFeatures * i);
    });
    // The implicit barrier of the loop above: every SPFH is complete before any FPFH reads it.
#pragma omp for schedule(static)
    for (int64_t i = 0; i < num_points; ++i) errors.run([&] {
      fpfh::point_fpfh(points, counts.data(), increments.data(), i, table.row(i), table.count[static_cast<size_t>(i)],
                       features + kFpfhFeatures * i);
    });
  }
  errors.rethrow();
}

}  // namespace xmodal
