#include "bindings/arrays.h"
#include "common/cuda_device.h"
#include "ops/fps/fps.h"
#include "ops/grid/points_to_grid.h"
#include "ops/interpolate/three_nn.h"

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

template <typename Points, typename Features, typename Out>
void check_three_nn_shapes(const Points& points, const Points& centers, const Features& features, const Out& out) {
  require_ndim(points, 2, "points");
  require_dim(points, 1, 3, "points");
  require_ndim(centers, 2, "centers");
  require_dim(centers, 1, 3, "centers");
  require_ndim(features, 2, "center_features");
  require_dim(features, 0, dim(centers, 0), "center_features");
  require_ndim(out, 2, "out");
  require_dim(out, 0, dim(points, 0), "out");
  require_dim(out, 1, dim(features, 1), "out");
}

void three_nn_cpu_binding(CpuIn<float> points, CpuIn<float> centers, CpuIn<float> features, CpuOut<float> out) {
  check_three_nn_shapes(points, centers, features, out);
  three_nn_interpolate_cpu(points.data(), dim(points, 0), centers.data(), dim(centers, 0), features.data(),
                           dim(features, 1), out.data());
}

template <typename Features, typename Index, typename Out>
void check_grid_shapes(const Features& features, const Index& pixel_index, int64_t out_height, int64_t out_width,
                       bool channels_last, const Out& out) {
  require_ndim(features, 2, "features");
  require_ndim(pixel_index, 1, "pixel_index");
  require_dim(pixel_index, 0, dim(features, 0), "pixel_index");
  require_ndim(out, 3, "out");
  const int64_t channels = dim(features, 1);
  require_dim(out, 0, channels_last ? out_height : channels, "out");
  require_dim(out, 1, channels_last ? out_width : out_height, "out");
  require_dim(out, 2, channels_last ? channels : out_width, "out");
}

void grid_cpu_binding(CpuIn<float> features, CpuIn<int64_t> pixel_index, int64_t height, int64_t width,
                      int64_t out_height, int64_t out_width, bool channels_last, CpuOut<float> out) {
  check_grid_shapes(features, pixel_index, out_height, out_width, channels_last, out);
  points_to_grid_cpu(features.data(), dim(features, 0), dim(features, 1), pixel_index.data(), height, width, out_height,
                     out_width, channels_last, out.data());
}

#ifdef XMODAL_WITH_CUDA
void three_nn_cuda_binding(CudaIn<float> points, CudaIn<float> centers, CudaIn<float> features, CudaOut<float> out,
                           std::uintptr_t stream) {
  check_three_nn_shapes(points, centers, features, out);
  const int device = points.device_id();
  require_same_device(centers, device, "centers");
  require_same_device(features, device, "center_features");
  require_same_device(out, device, "out");
  CudaDeviceGuard guard(device);
  three_nn_interpolate_cuda(points.data(), dim(points, 0), centers.data(), dim(centers, 0), features.data(),
                            dim(features, 1), out.data(), as_stream(stream));
}

void grid_cuda_binding(CudaIn<float> features, CudaIn<int64_t> pixel_index, int64_t height, int64_t width,
                       int64_t out_height, int64_t out_width, bool channels_last, CudaOut<float> out,
                       std::uintptr_t stream) {
  check_grid_shapes(features, pixel_index, out_height, out_width, channels_last, out);
  const int device = features.device_id();
  require_same_device(pixel_index, device, "pixel_index");
  require_same_device(out, device, "out");
  CudaDeviceGuard guard(device);
  points_to_grid_cuda(features.data(), dim(features, 0), dim(features, 1), pixel_index.data(), height, width,
                      out_height, out_width, channels_last, out.data(), as_stream(stream));
}
#endif

}  // namespace

void bind_pointcloud(nb::module_& m) {
  m.def("farthest_point_sample_cpu", &fps_cpu_binding, nb::arg("points").noconvert(), nb::arg("n"), nb::arg("start"),
        nb::arg("reference"), nb::arg("idx").noconvert(), nb::call_guard<nb::gil_scoped_release>());
  m.def("pointnet2_log2_threads", &pointnet2_log2_threads, nb::arg("num_points"));
  m.def("three_nn_interpolate_cpu", &three_nn_cpu_binding, nb::arg("points").noconvert(),
        nb::arg("centers").noconvert(), nb::arg("center_features").noconvert(), nb::arg("out").noconvert(),
        nb::call_guard<nb::gil_scoped_release>());
  m.def("points_to_grid_cpu", &grid_cpu_binding, nb::arg("features").noconvert(), nb::arg("pixel_index").noconvert(),
        nb::arg("height"), nb::arg("width"), nb::arg("out_height"), nb::arg("out_width"), nb::arg("channels_last"),
        nb::arg("out").noconvert(), nb::call_guard<nb::gil_scoped_release>());
#ifdef XMODAL_WITH_CUDA
  m.def("three_nn_interpolate_cuda", &three_nn_cuda_binding, nb::arg("points").noconvert(),
        nb::arg("centers").noconvert(), nb::arg("center_features").noconvert(), nb::arg("out").noconvert(),
        nb::arg("stream"), nb::call_guard<nb::gil_scoped_release>());
  m.def("points_to_grid_cuda", &grid_cuda_binding, nb::arg("features").noconvert(), nb::arg("pixel_index").noconvert(),
        nb::arg("height"), nb::arg("width"), nb::arg("out_height"), nb::arg("out_width"), nb::arg("channels_last"),
        nb::arg("out").noconvert(), nb::arg("stream"), nb::call_guard<nb::gil_scoped_release>());
  m.def("farthest_point_sample_cuda", &fps_cuda_binding, nb::arg("points").noconvert(), nb::arg("n"), nb::arg("start"),
        nb::arg("reference"), nb::arg("idx").noconvert(), nb::arg("stream"), nb::call_guard<nb::gil_scoped_release>());
#endif
}

}  // namespace xmodal::bindings
