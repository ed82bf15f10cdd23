#include <vector>

#include "common/check.h"
#include "common/parallel.h"
#include "ops/fpfh/fpfh.h"
#include "ops/fpfh/fpfh_math.h"
#include "ops/fpfh/fpfh_neighbours.h"

namespace xmodal {
namespace {

void normals_from_table(const float* points, int64_t num_points, const NeighbourTable& table, Viewpoint viewpoint,
                        float* normals) {
  ParallelErrors errors;
#pragma omp parallel for schedule(dynamic, 256)
  for (int64_t i = 0; i < num_points; ++i)
    errors.run([&] {
      fpfh::point_normal(points, i, table.row(i), table.count[static_cast<size_t>(i)], viewpoint, normals + 3 * i);
    });
  errors.rethrow();
}

void fpfh_from_table(const float* points, const float* normals, int64_t num_points, const NeighbourTable& table,
                     float* features) {
  std::vector<float> counts(static_cast<size_t>(num_points * kFpfhFeatures));
  std::vector<double> increments(static_cast<size_t>(num_points));
  ParallelErrors errors;
#pragma omp parallel
  {
#pragma omp for schedule(dynamic, 256)
    for (int64_t i = 0; i < num_points; ++i)
      errors.run([&] {
        increments[static_cast<size_t>(i)] = fpfh::point_spfh(
            points, normals, i, table.row(i), table.count[static_cast<size_t>(i)], counts.data() + kFpfhFeatures * i);
      });
    // The implicit barrier of the loop above: every SPFH is complete before any FPFH reads it.
#pragma omp for schedule(dynamic, 256)
    for (int64_t i = 0; i < num_points; ++i)
      errors.run([&] {
        fpfh::point_fpfh(points, counts.data(), increments.data(), i, table.row(i), table.count[static_cast<size_t>(i)],
                         features + kFpfhFeatures * i);
      });
  }
  errors.rethrow();
}

}  // namespace

void estimate_normals_cpu(const float* points, int64_t num_points, Neighbourhood neighbourhood, Viewpoint viewpoint,
                          float* normals) {
  check_fpfh_arguments(num_points, neighbourhood, "estimate_normals");
  const auto tables = find_neighbourhoods(points, num_points, {neighbourhood});
  normals_from_table(points, num_points, tables[0], viewpoint, normals);
}

void fpfh_cpu(const float* points, const float* normals, int64_t num_points, Neighbourhood neighbourhood,
              float* features) {
  check_fpfh_arguments(num_points, neighbourhood, "fpfh");
  const auto tables = find_neighbourhoods(points, num_points, {neighbourhood});
  fpfh_from_table(points, normals, num_points, tables[0], features);
}

void fpfh_with_normals_cpu(const float* points, int64_t num_points, Neighbourhood neighbourhood,
                           Neighbourhood normal_neighbourhood, Viewpoint viewpoint, float* normals, float* features) {
  check_fpfh_arguments(num_points, neighbourhood, "fpfh");
  check_fpfh_arguments(num_points, normal_neighbourhood, "fpfh (normals)");
  const bool same =
      neighbourhood.max_nn == normal_neighbourhood.max_nn && neighbourhood.radius == normal_neighbourhood.radius;
  auto tables = same ? find_neighbourhoods(points, num_points, {neighbourhood})
                     : find_neighbourhoods(points, num_points, {neighbourhood, normal_neighbourhood});
  normals_from_table(points, num_points, tables.back(), viewpoint, normals);
  tables.resize(1);  // the normals' table is not needed any more
  fpfh_from_table(points, normals, num_points, tables.front(), features);
}

}  // namespace xmodal
