#include "ops/ransac/ransac.h"

#include "bindings/arrays.h"

namespace xmodal::bindings {
namespace {

void ransac_plane_cpu_binding(CpuIn<float> points, double threshold, int64_t sample_size, int64_t iterations,
                              double probability, uint64_t seed, CpuOut<double> plane, CpuOut<bool> inliers) {
  require_ndim(points, 2, "points");
  require_dim(points, 1, 3, "points");
  require_ndim(plane, 1, "plane");
  require_dim(plane, 0, 4, "plane");
  require_ndim(inliers, 1, "inliers");
  require_dim(inliers, 0, dim(points, 0), "inliers");
  ransac_plane_cpu(points.data(), dim(points, 0), threshold, sample_size, iterations, probability, seed, plane.data(),
                   inliers.data());
}

}  // namespace

void bind_ransac(nb::module_& m) {
  m.def("ransac_plane_cpu", &ransac_plane_cpu_binding, nb::arg("points").noconvert(), nb::arg("threshold"),
        nb::arg("sample_size"), nb::arg("iterations"), nb::arg("probability"), nb::arg("seed"),
        nb::arg("plane").noconvert(), nb::arg("inliers").noconvert(), nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace xmodal::bindings
