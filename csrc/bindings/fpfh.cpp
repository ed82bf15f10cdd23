#include "ops/fpfh/fpfh.h"

#include "bindings/arrays.h"
#include "common/cuda_device.h"

namespace xmodal::bindings {
namespace {

template <typename Points, typename Out>
void check_cloud_and_output(const Points& points, const Out& out, int64_t columns, const char* out_name) {
  require_ndim(points, 2, "points");
  require_dim(points, 1, 3, "points");
  require_ndim(out, 2, out_name);
  require_dim(out, 0, dim(points, 0), out_name);
  require_dim(out, 1, columns, out_name);
}

template <typename Points, typename Normals, typename Features>
void check_fpfh_shapes(const Points& points, const Normals& normals, const Features& features) {
  check_cloud_and_output(points, features, kFpfhFeatures, "features");
  require_ndim(normals, 2, "normals");
  require_dim(normals, 0, dim(points, 0), "normals");
  require_dim(normals, 1, 3, "normals");
}

void estimate_normals_cpu_binding(CpuIn<float> points, int64_t max_nn, double radius, bool orient, double vx, double vy,
                                  double vz, CpuOut<float> normals) {
  check_cloud_and_output(points, normals, 3, "normals");
  estimate_normals_cpu(points.data(), dim(points, 0), {max_nn, radius}, {orient, vx, vy, vz}, normals.data());
}

void fpfh_cpu_binding(CpuIn<float> points, CpuIn<float> normals, int64_t max_nn, double radius,
                      CpuOut<float> features) {
  check_fpfh_shapes(points, normals, features);
  fpfh_cpu(points.data(), normals.data(), dim(points, 0), {max_nn, radius}, features.data());
}

void fpfh_with_normals_cpu_binding(CpuIn<float> points, int64_t max_nn, double radius, int64_t normal_max_nn,
                                   double normal_radius, bool orient, double vx, double vy, double vz,
                                   CpuOut<float> normals, CpuOut<float> features) {
  check_fpfh_shapes(points, normals, features);
  fpfh_with_normals_cpu(points.data(), dim(points, 0), {max_nn, radius}, {normal_max_nn, normal_radius},
                        {orient, vx, vy, vz}, normals.data(), features.data());
}

#ifdef XMODAL_WITH_CUDA
void estimate_normals_cuda_binding(CudaIn<float> points, int64_t max_nn, double radius, bool orient, double vx,
                                   double vy, double vz, CudaOut<float> normals, std::uintptr_t stream) {
  check_cloud_and_output(points, normals, 3, "normals");
  require_same_device(normals, points.device_id(), "normals");
  CudaDeviceGuard guard(points.device_id());
  estimate_normals_cuda(points.data(), dim(points, 0), {max_nn, radius}, {orient, vx, vy, vz}, normals.data(),
                        as_stream(stream));
}

void fpfh_cuda_binding(CudaIn<float> points, CudaIn<float> normals, int64_t max_nn, double radius,
                       CudaOut<float> features, std::uintptr_t stream) {
  check_fpfh_shapes(points, normals, features);
  require_same_device(normals, points.device_id(), "normals");
  require_same_device(features, points.device_id(), "features");
  CudaDeviceGuard guard(points.device_id());
  fpfh_cuda(points.data(), normals.data(), dim(points, 0), {max_nn, radius}, features.data(), as_stream(stream));
}

void fpfh_with_normals_cuda_binding(CudaIn<float> points, int64_t max_nn, double radius, int64_t normal_max_nn,
                                    double normal_radius, bool orient, double vx, double vy, double vz,
                                    CudaOut<float> normals, CudaOut<float> features, std::uintptr_t stream) {
  check_fpfh_shapes(points, normals, features);
  require_same_device(normals, points.device_id(), "normals");
  require_same_device(features, points.device_id(), "features");
  CudaDeviceGuard guard(points.device_id());
  fpfh_with_normals_cuda(points.data(), dim(points, 0), {max_nn, radius}, {normal_max_nn, normal_radius},
                         {orient, vx, vy, vz}, normals.data(), features.data(), as_stream(stream));
}
#endif

}  // namespace

void bind_fpfh(nb::module_& m) {
  m.def("estimate_normals_cpu", &estimate_normals_cpu_binding, nb::arg("points").noconvert(), nb::arg("max_nn"),
        nb::arg("radius"), nb::arg("orient"), nb::arg("vx"), nb::arg("vy"), nb::arg("vz"),
        nb::arg("normals").noconvert(), nb::call_guard<nb::gil_scoped_release>());
  m.def("fpfh_cpu", &fpfh_cpu_binding, nb::arg("points").noconvert(), nb::arg("normals").noconvert(), nb::arg("max_nn"),
        nb::arg("radius"), nb::arg("features").noconvert(), nb::call_guard<nb::gil_scoped_release>());
  m.def("fpfh_with_normals_cpu", &fpfh_with_normals_cpu_binding, nb::arg("points").noconvert(), nb::arg("max_nn"),
        nb::arg("radius"), nb::arg("normal_max_nn"), nb::arg("normal_radius"), nb::arg("orient"), nb::arg("vx"),
        nb::arg("vy"), nb::arg("vz"), nb::arg("normals").noconvert(), nb::arg("features").noconvert(),
        nb::call_guard<nb::gil_scoped_release>());
#ifdef XMODAL_WITH_CUDA
  m.def("estimate_normals_cuda", &estimate_normals_cuda_binding, nb::arg("points").noconvert(), nb::arg("max_nn"),
        nb::arg("radius"), nb::arg("orient"), nb::arg("vx"), nb::arg("vy"), nb::arg("vz"),
        nb::arg("normals").noconvert(), nb::arg("stream"), nb::call_guard<nb::gil_scoped_release>());
  m.def("fpfh_cuda", &fpfh_cuda_binding, nb::arg("points").noconvert(), nb::arg("normals").noconvert(),
        nb::arg("max_nn"), nb::arg("radius"), nb::arg("features").noconvert(), nb::arg("stream"),
        nb::call_guard<nb::gil_scoped_release>());
  m.def("fpfh_with_normals_cuda", &fpfh_with_normals_cuda_binding, nb::arg("points").noconvert(), nb::arg("max_nn"),
        nb::arg("radius"), nb::arg("normal_max_nn"), nb::arg("normal_radius"), nb::arg("orient"), nb::arg("vx"),
        nb::arg("vy"), nb::arg("vz"), nb::arg("normals").noconvert(), nb::arg("features").noconvert(),
        nb::arg("stream"), nb::call_guard<nb::gil_scoped_release>());
#endif
}

}  // namespace xmodal::bindings
