#include "ops/coreset/coreset.h"

#include "bindings/arrays.h"
#include "common/cuda_device.h"

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
#ifdef XMODAL_WITH_CUDA
  m.def("greedy_coreset_cuda", &greedy_coreset_cuda_binding, nb::arg("x").noconvert(), nb::arg("n"), nb::arg("start"),
        nb::arg("idx").noconvert(), nb::arg("stream"), nb::call_guard<nb::gil_scoped_release>());
#endif
}

}  // namespace xmodal::bindings
