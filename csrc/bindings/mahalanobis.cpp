#include "ops/mahalanobis/mahalanobis.h"

#include <cmath>

#include "bindings/arrays.h"
#include "common/cuda_device.h"

namespace xmodal::bindings {
namespace {

// Returns whether the factors are shared (one for every position).
template <typename In, typename Out>
bool check_mahalanobis_shapes(const In& x, const In& mean, const In& factors, const Out& dist) {
  require_ndim(x, 3, "x");
  require_ndim(mean, 2, "mean");
  require_ndim(factors, 2, "factors");
  require_ndim(dist, 2, "dist");
  const int64_t positions = dim(x, 1), features = dim(x, 2);
  XMODAL_CHECK(features >= 1, "x must have at least one feature; got d=", features);
  require_dim(mean, 0, positions, "mean");
  require_dim(mean, 1, features, "mean");
  require_dim(factors, 1, packed_row_offset(features), "factors");
  XMODAL_CHECK(dim(factors, 0) == positions || dim(factors, 0) == 1, "factors.shape[0] must be P=", positions,
               " or 1 (shared); got ", dim(factors, 0));
  require_dim(dist, 0, dim(x, 0), "dist");
  require_dim(dist, 1, positions, "dist");
  return dim(factors, 0) == 1;
}

void mahalanobis_cpu_binding(CpuIn<float> x, CpuIn<float> mean, CpuIn<float> factors, CpuOut<float> dist) {
  const bool shared = check_mahalanobis_shapes(x, mean, factors, dist);
  mahalanobis_cpu(x.data(), dim(x, 0), dim(x, 1), dim(x, 2), mean.data(), factors.data(), shared, dist.data());
}

#ifdef XMODAL_WITH_CUDA
void mahalanobis_cuda_binding(CudaIn<float> x, CudaIn<float> mean, CudaIn<float> factors, CudaOut<float> dist,
                              CudaOut<int32_t> status, std::uintptr_t stream) {
  const bool shared = check_mahalanobis_shapes(x, mean, factors, dist);
  const int device = x.device_id();
  require_same_device(mean, device, "mean");
  require_same_device(factors, device, "factors");
  require_same_device(dist, device, "dist");
  require_same_device(status, device, "status");
  require_ndim(status, 1, "status");
  require_dim(status, 0, 1, "status");
  CudaDeviceGuard guard(device);
  mahalanobis_cuda(x.data(), dim(x, 0), dim(x, 1), dim(x, 2), mean.data(), factors.data(), shared, dist.data(),
                   status.data(), as_stream(stream));
}
#endif

// Returns the first position whose matrix is not positive definite, or -1.
int64_t gaussian_factors_cpu_binding(CpuIn<double> packed, double scale, double regularization, CpuOut<float> factors) {
  require_ndim(packed, 2, "packed");
  require_ndim(factors, 2, "factors");
  require_dim(factors, 0, dim(packed, 0), "factors");
  require_dim(factors, 1, dim(packed, 1), "factors");
  const int64_t size = dim(packed, 1);
  const auto features = static_cast<int64_t>((std::sqrt(8.0 * static_cast<double>(size) + 1.0) - 1.0) / 2.0 + 0.5);
  XMODAL_CHECK(features >= 1 && packed_row_offset(features) == size, "packed.shape[1] must be d*(d+1)/2; got ", size);
  return gaussian_factors_cpu(packed.data(), dim(packed, 0), features, scale, regularization, factors.data());
}

void gaussian_accumulate_cpu_binding(CpuIn<double> rows, CpuOut<double> scatter) {
  require_ndim(rows, 3, "rows");
  require_ndim(scatter, 2, "scatter");
  require_dim(scatter, 0, dim(rows, 0), "scatter");
  XMODAL_CHECK(dim(rows, 2) >= 1, "rows must have at least one feature; got d=0");
  require_dim(scatter, 1, packed_row_offset(dim(rows, 2)), "scatter");
  gaussian_accumulate_cpu(rows.data(), dim(rows, 0), dim(rows, 1), dim(rows, 2), scatter.data());
}

}  // namespace

void bind_mahalanobis(nb::module_& m) {
  m.def("gaussian_accumulate_cpu", &gaussian_accumulate_cpu_binding, nb::arg("rows").noconvert(),
        nb::arg("scatter").noconvert(), nb::call_guard<nb::gil_scoped_release>());
  m.def("gaussian_factors_cpu", &gaussian_factors_cpu_binding, nb::arg("packed").noconvert(), nb::arg("scale"),
        nb::arg("regularization"), nb::arg("factors").noconvert(), nb::call_guard<nb::gil_scoped_release>());
  m.def("mahalanobis_cpu", &mahalanobis_cpu_binding, nb::arg("x").noconvert(), nb::arg("mean").noconvert(),
        nb::arg("factors").noconvert(), nb::arg("dist").noconvert(), nb::call_guard<nb::gil_scoped_release>());
#ifdef XMODAL_WITH_CUDA
  m.def("mahalanobis_cuda", &mahalanobis_cuda_binding, nb::arg("x").noconvert(), nb::arg("mean").noconvert(),
        nb::arg("factors").noconvert(), nb::arg("dist").noconvert(), nb::arg("status").noconvert(), nb::arg("stream"),
        nb::call_guard<nb::gil_scoped_release>());
#endif
}

}  // namespace xmodal::bindings
