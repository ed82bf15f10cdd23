#include "bindings/arrays.h"
#include "common/cuda_device.h"
#include "ops/fps/fps.h"

namespace xmodal::bindings {
namespace {

template <typename Points, typename Idx>
void check_fps_shapes(const Points& points, int64_t n, const Idx& idx) {
  require_ndim(points, 2, "points");
  require_dim(points, 1, 3, "points");
  require_ndim(idx, 1, "idx");
  require_dim(idx, 0, n, "idx");
}

void fps_cpu_binding(CpuIn<float> points, int64_t n, int64_t start, bool reference, CpuOut<int64_t> idx) {
  check_fps_shapes(points, n, idx);
  farthest_point_sample_cpu(points.data(), dim(points, 0), n, start, reference, idx.data());
}

#ifdef XMODAL_WITH_CUDA
void fps_cuda_binding(CudaIn<float> points, int64_t n, int64_t start, bool reference, CudaOut<int64_t> idx,
                      std::uintptr_t stream) {
  check_fps_shapes(points, n, idx);
  require_same_device(idx, points.device_id(), "idx");
  CudaDeviceGuard guard(points.device_id());
  farthest_point_sample_cuda(points.data(), dim(points, 0), n, start, reference, idx.data(), as_stream(stream));
}
#endif

}  // namespace

void bind_pointcloud(nb::module_& m) {
  m.def("farthest_point_sample_cpu", &fps_cpu_binding, nb::arg("points"), nb::arg("n"), nb::arg("start"),
        nb::arg("reference"), nb::arg("idx"), nb::call_guard<nb::gil_scoped_release>());
  m.def("pointnet2_log2_threads", &pointnet2_log2_threads, nb::arg("num_points"));
#ifdef XMODAL_WITH_CUDA
  m.def("farthest_point_sample_cuda", &fps_cuda_binding, nb::arg("points"), nb::arg("n"), nb::arg("start"),
        nb::arg("reference"), nb::arg("idx"), nb::arg("stream"), nb::call_guard<nb::gil_scoped_release>());
#endif
}

}  // namespace xmodal::bindings
