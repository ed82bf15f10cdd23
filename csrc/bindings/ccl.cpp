#include "ops/ccl/ccl.h"

#include "bindings/arrays.h"
#include "common/cuda_device.h"

namespace xmodal::bindings {
namespace {

template <typename Masks, typename Labels, typename Num>
void check_ccl_shapes(const Masks& masks, const Labels& labels, const Num& num) {
  require_ndim(masks, 3, "masks");
  require_ndim(labels, 3, "labels");
  require_ndim(num, 1, "num");
  for (size_t a = 0; a < 3; ++a) require_dim(labels, a, dim(masks, a), "labels");
  require_dim(num, 0, dim(masks, 0), "num");
}

void ccl_cpu_binding(CpuIn<uint8_t> masks, CpuOut<int32_t> labels, CpuOut<int64_t> num) {
  check_ccl_shapes(masks, labels, num);
  connected_components_cpu(masks.data(), dim(masks, 0), dim(masks, 1), dim(masks, 2), labels.data(), num.data());
}

#ifdef XMODAL_WITH_CUDA
void ccl_cuda_binding(CudaIn<uint8_t> masks, CudaOut<int32_t> labels, CudaOut<int64_t> num, std::uintptr_t stream) {
  check_ccl_shapes(masks, labels, num);
  const int device = masks.device_id();
  require_same_device(labels, device, "labels");
  require_same_device(num, device, "num");
  CudaDeviceGuard guard(device);
  connected_components_cuda(masks.data(), dim(masks, 0), dim(masks, 1), dim(masks, 2), labels.data(), num.data(),
                            as_stream(stream));
}
#endif

}  // namespace

void bind_ccl(nb::module_& m) {
  m.def("connected_components_cpu", &ccl_cpu_binding, nb::arg("masks").noconvert(), nb::arg("labels").noconvert(),
        nb::arg("num").noconvert(), nb::call_guard<nb::gil_scoped_release>());
#ifdef XMODAL_WITH_CUDA
  m.def("connected_components_cuda", &ccl_cuda_binding, nb::arg("masks").noconvert(), nb::arg("labels").noconvert(),
        nb::arg("num").noconvert(), nb::arg("stream"), nb::call_guard<nb::gil_scoped_release>());
#endif
}

}  // namespace xmodal::bindings
