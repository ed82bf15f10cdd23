#include "ops/coreset/coreset.h"

#include <nanobind/stl/pair.h>

#include <utility>

#include "bindings/arrays.h"
#include "common/cuda_device.h"
#include "ops/coreset/projection.h"

namespace xmodal::bindings {
namespace {

template <typename X, typename Idx>
void check_coreset_shapes(const X& x, int64_t n, const Idx& idx) {
  require_ndim(x, 2, "x");
  require_ndim(idx, 1, "idx");
  require_dim(idx, 0, n, "idx");
}

void greedy_coreset_cpu_binding(CpuIn<float> x, int64_t n, int64_t start, CpuOut<int64_t> idx) {
  check_coreset_shapes(x, n, idx);
  greedy_coreset_cpu(x.data(), dim(x, 0), dim(x, 1), n, start, idx.data());
}

void sparse_project_cpu_binding(CpuIn<float> x, CpuIn<int64_t> indptr, CpuIn<int32_t> indices, CpuIn<float> values,
                                CpuOut<float> y) {
  require_ndim(x, 2, "x");
  require_ndim(indptr, 1, "indptr");
  require_ndim(indices, 1, "indices");
  require_ndim(values, 1, "values");
  require_ndim(y, 2, "y");
  XMODAL_CHECK(indptr.shape(0) >= 1, "indptr must have at least one entry");
  const int64_t out = dim(indptr, 0) - 1;
  require_dim(y, 0, dim(x, 0), "y");
  require_dim(y, 1, out, "y");
  require_dim(values, 0, dim(indices, 0), "values");
  XMODAL_CHECK(indptr.data()[out] == dim(indices, 0), "indptr[-1] must be the number of nonzeros ", dim(indices, 0),
               "; got ", indptr.data()[out]);
  sparse_project_cpu(x.data(), dim(x, 0), dim(x, 1), indptr.data(), indices.data(), values.data(), out, y.data());
}

std::pair<double, double> sum_squares_cpu_binding(CpuIn<float> x) {
  double sum = 0.0, squares = 0.0;
  sum_squares_cpu(x.data(), static_cast<int64_t>(x.size()), &sum, &squares);
  return {sum, squares};
}

#ifdef XMODAL_WITH_CUDA
void greedy_coreset_cuda_binding(CudaIn<float> x, int64_t n, int64_t start, CudaOut<int64_t> idx,
                                 std::uintptr_t stream) {
  check_coreset_shapes(x, n, idx);
  require_same_device(idx, x.device_id(), "idx");
  CudaDeviceGuard guard(x.device_id());
  greedy_coreset_cuda(x.data(), dim(x, 0), dim(x, 1), n, start, idx.data(), as_stream(stream));
}
#endif

}  // namespace

void bind_coreset(nb::module_& m) {
  m.def("greedy_coreset_cpu", &greedy_coreset_cpu_binding, nb::arg("x").noconvert(), nb::arg("n"), nb::arg("start"),
        nb::arg("idx").noconvert(), nb::call_guard<nb::gil_scoped_release>());
  m.def("sparse_project_cpu", &sparse_project_cpu_binding, nb::arg("x").noconvert(), nb::arg("indptr").noconvert(),
        nb::arg("indices").noconvert(), nb::arg("values").noconvert(), nb::arg("y").noconvert(),
        nb::call_guard<nb::gil_scoped_release>());
  m.def("sum_squares_cpu", &sum_squares_cpu_binding, nb::arg("x").noconvert(),
        nb::call_guard<nb::gil_scoped_release>());
#ifdef XMODAL_WITH_CUDA
  m.def("greedy_coreset_cuda", &greedy_coreset_cuda_binding, nb::arg("x").noconvert(), nb::arg("n"), nb::arg("start"),
        nb::arg("idx").noconvert(), nb::arg("stream"), nb::call_guard<nb::gil_scoped_release>());
#endif
}

}  // namespace xmodal::bindings
