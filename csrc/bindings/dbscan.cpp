#include "ops/dbscan/dbscan.h"

#include "bindings/arrays.h"

namespace xmodal::bindings {
namespace {

void dbscan_cpu_binding(CpuIn<float> points, double eps, int64_t min_points, CpuOut<int64_t> labels) {
  require_ndim(points, 2, "points");
  require_dim(points, 1, 3, "points");
  require_ndim(labels, 1, "labels");
  require_dim(labels, 0, dim(points, 0), "labels");
  dbscan_cpu(points.data(), dim(points, 0), eps, min_points, labels.data());
}

}  // namespace

void bind_dbscan(nb::module_& m) {
  m.def("dbscan_cpu", &dbscan_cpu_binding, nb::arg("points").noconvert(), nb::arg("eps"), nb::arg("min_points"),
        nb::arg("labels").noconvert(), nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace xmodal::bindings
