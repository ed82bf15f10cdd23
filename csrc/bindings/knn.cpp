#include "ops/knn/knn.h"

#include "bindings/arrays.h"
#include "common/cuda_device.h"

namespace xmodal::bindings {
namespace {

using AnyBank = nb::ndarray<nb::ro, nb::c_contig>;

BankType bank_type_of(const AnyBank& bank) {
  if (bank.dtype() == nb::dtype<float>()) return BankType::f32;
  const nb::dlpack::dtype half{static_cast<uint8_t>(nb::dlpack::dtype_code::Float), 16, 1};
  if (bank.dtype() != half) fail_dtype("bank must be float32 or float16; got ", dtype_name(bank.dtype()));
  return BankType::f16;
}

template <typename Queries, typename Dist, typename Index>
void check_knn_shapes(const Queries& queries, const AnyBank& bank, int64_t k, const Dist& dist, const Index& idx) {
  require_ndim(queries, 2, "queries");
  require_ndim(bank, 2, "bank");
  require_dim(bank, 1, dim(queries, 1), "bank");
  XMODAL_CHECK(k >= 1 && k <= dim(bank, 0), "k must be in [1, N=", dim(bank, 0), "]; got ", k);
  require_ndim(dist, 2, "dist");
  require_dim(dist, 0, dim(queries, 0), "dist");
  require_dim(dist, 1, k, "dist");
  require_ndim(idx, 2, "idx");
  require_dim(idx, 0, dim(queries, 0), "idx");
  require_dim(idx, 1, k, "idx");
}

void knn_cpu_binding(CpuIn<float> queries, AnyBank bank, int64_t k, CpuOut<float> dist, CpuOut<int64_t> idx) {
  XMODAL_CHECK(bank.device_type() == nb::device::cpu::value, "bank must be on the CPU like queries");
  check_knn_shapes(queries, bank, k, dist, idx);
  knn_cpu(queries.data(), dim(queries, 0), bank.data(), bank_type_of(bank), dim(bank, 0), dim(queries, 1), k,
          dist.data(), idx.data());
}

#ifdef XMODAL_WITH_CUDA
void knn_cuda_binding(CudaIn<float> queries, AnyBank bank, int64_t k, CudaOut<float> dist, CudaOut<int64_t> idx,
                      CudaOut<int32_t> status, std::uintptr_t stream) {
  XMODAL_CHECK(bank.device_type() == nb::device::cuda::value, "bank must be on the GPU like queries");
  const int device = queries.device_id();
  require_same_device(bank, device, "bank");
  require_same_device(dist, device, "dist");
  require_same_device(idx, device, "idx");
  require_same_device(status, device, "status");
  check_knn_shapes(queries, bank, k, dist, idx);
  require_ndim(status, 1, "status");
  require_dim(status, 0, 1, "status");
  CudaDeviceGuard guard(device);
  knn_cuda(queries.data(), dim(queries, 0), bank.data(), bank_type_of(bank), dim(bank, 0), dim(queries, 1), k,
           dist.data(), idx.data(), status.data(), as_stream(stream));
}
#endif

}  // namespace

void bind_knn(nb::module_& m) {
  m.def("knn_cpu", &knn_cpu_binding, nb::arg("queries").noconvert(), nb::arg("bank").noconvert(), nb::arg("k"),
        nb::arg("dist").noconvert(), nb::arg("idx").noconvert(), nb::call_guard<nb::gil_scoped_release>());
#ifdef XMODAL_WITH_CUDA
  m.def("knn_cuda", &knn_cuda_binding, nb::arg("queries").noconvert(), nb::arg("bank").noconvert(), nb::arg("k"),
        nb::arg("dist").noconvert(), nb::arg("idx").noconvert(), nb::arg("status").noconvert(), nb::arg("stream"),
        nb::call_guard<nb::gil_scoped_release>());
#endif
}

}  // namespace xmodal::bindings
