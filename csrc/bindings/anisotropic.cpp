#include "ops/anisotropic/anisotropic.h"

#include "bindings/arrays.h"
#include "common/cuda_device.h"

namespace xmodal::bindings {
namespace {

// Checks every shape against qa_img (Q, H) and w1 (H1, 2H); returns the filled arguments.
template <template <typename> class In, template <typename> class Out>
AnisotropicArgs anisotropic_args(const In<float>& qa_img, const In<float>& qa_pcd, const In<float>& bank_img,
                                 const In<float>& bank_pcd, const In<int64_t>& idx_img, const In<int64_t>& idx_pcd,
                                 const In<float>& dist_img, const In<float>& dist_pcd, const In<uint8_t>& foreground,
                                 const In<float>& b_a, const In<float>& b_b, const In<float>& w1, const In<float>& b1,
                                 const In<float>& w2, const In<float>& b2, const In<float>& coef, bool joint,
                                 Out<float>& out_min, Out<float>& out_all, bool write_all) {
  require_ndim(qa_img, 2, "qa_img");
  const int64_t queries = dim(qa_img, 0), hidden = dim(qa_img, 1);
  require_ndim(w1, 2, "w1");
  const int64_t head = dim(w1, 0);
  require_dim(w1, 1, 2 * hidden, "w1");
  require_ndim(qa_pcd, 2, "qa_pcd");
  require_dim(qa_pcd, 0, queries, "qa_pcd");
  require_dim(qa_pcd, 1, hidden, "qa_pcd");
  require_ndim(bank_img, 2, "bank_img");
  require_dim(bank_img, 1, 2 * hidden, "bank_img");
  require_ndim(bank_pcd, 2, "bank_pcd");
  require_dim(bank_pcd, 1, 2 * hidden, "bank_pcd");
  require_ndim(idx_img, 2, "idx_img");
  require_dim(idx_img, 0, queries, "idx_img");
  const int64_t k = dim(idx_img, 1);
  XMODAL_CHECK(k >= 1, "idx_img must have k >= 1 columns; got 0");
  require_ndim(idx_pcd, 2, "idx_pcd");
  require_dim(idx_pcd, 0, queries, "idx_pcd");
  require_dim(idx_pcd, 1, k, "idx_pcd");
  require_ndim(dist_img, 2, "dist_img");
  require_dim(dist_img, 0, queries, "dist_img");
  require_dim(dist_img, 1, k, "dist_img");
  require_ndim(dist_pcd, 2, "dist_pcd");
  require_dim(dist_pcd, 0, queries, "dist_pcd");
  require_dim(dist_pcd, 1, k, "dist_pcd");
  require_ndim(foreground, 1, "foreground");
  require_dim(foreground, 0, queries, "foreground");
  require_ndim(b_a, 1, "b_a");
  require_dim(b_a, 0, hidden, "b_a");
  require_ndim(b_b, 1, "b_b");
  require_dim(b_b, 0, hidden, "b_b");
  require_ndim(b1, 1, "b1");
  require_dim(b1, 0, head, "b1");
  require_ndim(w2, 2, "w2");
  require_dim(w2, 0, 2, "w2");
  require_dim(w2, 1, head, "w2");
  require_ndim(b2, 1, "b2");
  require_dim(b2, 0, 2, "b2");
  require_ndim(coef, 1, "coef");
  require_dim(coef, 0, 2, "coef");
  require_ndim(out_min, 1, "out_min");
  require_dim(out_min, 0, queries, "out_min");
  if (write_all) {
    require_ndim(out_all, 2, "out_all");
    require_dim(out_all, 0, queries, "out_all");
    require_dim(out_all, 1, k, "out_all");
  }
  return AnisotropicArgs{qa_img.data(),
                         qa_pcd.data(),
                         bank_img.data(),
                         bank_pcd.data(),
                         idx_img.data(),
                         idx_pcd.data(),
                         dist_img.data(),
                         dist_pcd.data(),
                         foreground.data(),
                         b_a.data(),
                         b_b.data(),
                         w1.data(),
                         b1.data(),
                         w2.data(),
                         b2.data(),
                         coef.data(),
                         queries,
                         k,
                         hidden,
                         head,
                         dim(bank_img, 0),
                         dim(bank_pcd, 0),
                         joint,
                         out_min.data(),
                         write_all ? out_all.data() : nullptr};
}

void anisotropic_min_cpu_binding(CpuIn<float> qa_img, CpuIn<float> qa_pcd, CpuIn<float> bank_img, CpuIn<float> bank_pcd,
                                 CpuIn<int64_t> idx_img, CpuIn<int64_t> idx_pcd, CpuIn<float> dist_img,
                                 CpuIn<float> dist_pcd, CpuIn<uint8_t> foreground, CpuIn<float> b_a, CpuIn<float> b_b,
                                 CpuIn<float> w1, CpuIn<float> b1, CpuIn<float> w2, CpuIn<float> b2, CpuIn<float> coef,
                                 bool joint, CpuOut<float> out_min, CpuOut<float> out_all, bool write_all) {
  const AnisotropicArgs args =
      anisotropic_args<CpuIn, CpuOut>(qa_img, qa_pcd, bank_img, bank_pcd, idx_img, idx_pcd, dist_img, dist_pcd,
                                      foreground, b_a, b_b, w1, b1, w2, b2, coef, joint, out_min, out_all, write_all);
  anisotropic_min_cpu(args);
}

#ifdef XMODAL_WITH_CUDA
void anisotropic_min_cuda_binding(CudaIn<float> qa_img, CudaIn<float> qa_pcd, CudaIn<float> bank_img,
                                  CudaIn<float> bank_pcd, CudaIn<int64_t> idx_img, CudaIn<int64_t> idx_pcd,
                                  CudaIn<float> dist_img, CudaIn<float> dist_pcd, CudaIn<uint8_t> foreground,
                                  CudaIn<float> b_a, CudaIn<float> b_b, CudaIn<float> w1, CudaIn<float> b1,
                                  CudaIn<float> w2, CudaIn<float> b2, CudaIn<float> coef, bool joint,
                                  CudaOut<float> out_min, CudaOut<float> out_all, bool write_all,
                                  CudaOut<int32_t> status, std::uintptr_t stream) {
  const AnisotropicArgs args =
      anisotropic_args<CudaIn, CudaOut>(qa_img, qa_pcd, bank_img, bank_pcd, idx_img, idx_pcd, dist_img, dist_pcd,
                                        foreground, b_a, b_b, w1, b1, w2, b2, coef, joint, out_min, out_all, write_all);
  const int device = qa_img.device_id();
  require_same_device(bank_img, device, "bank_img");
  require_same_device(bank_pcd, device, "bank_pcd");
  require_same_device(idx_img, device, "idx_img");
  require_same_device(idx_pcd, device, "idx_pcd");
  require_same_device(out_min, device, "out_min");
  require_same_device(status, device, "status");
  CudaDeviceGuard guard(device);
  anisotropic_min_cuda(args, status.data(), as_stream(stream));
}
#endif

}  // namespace

void bind_anisotropic(nb::module_& m) {
  m.def("anisotropic_min_cpu", &anisotropic_min_cpu_binding, nb::arg("qa_img").noconvert(),
        nb::arg("qa_pcd").noconvert(), nb::arg("bank_img").noconvert(), nb::arg("bank_pcd").noconvert(),
        nb::arg("idx_img").noconvert(), nb::arg("idx_pcd").noconvert(), nb::arg("dist_img").noconvert(),
        nb::arg("dist_pcd").noconvert(), nb::arg("foreground").noconvert(), nb::arg("b_a").noconvert(),
        nb::arg("b_b").noconvert(), nb::arg("w1").noconvert(), nb::arg("b1").noconvert(), nb::arg("w2").noconvert(),
        nb::arg("b2").noconvert(), nb::arg("coef").noconvert(), nb::arg("joint"), nb::arg("out_min").noconvert(),
        nb::arg("out_all").noconvert(), nb::arg("write_all"), nb::call_guard<nb::gil_scoped_release>());
#ifdef XMODAL_WITH_CUDA
  m.def("anisotropic_min_cuda", &anisotropic_min_cuda_binding, nb::arg("qa_img").noconvert(),
        nb::arg("qa_pcd").noconvert(), nb::arg("bank_img").noconvert(), nb::arg("bank_pcd").noconvert(),
        nb::arg("idx_img").noconvert(), nb::arg("idx_pcd").noconvert(), nb::arg("dist_img").noconvert(),
        nb::arg("dist_pcd").noconvert(), nb::arg("foreground").noconvert(), nb::arg("b_a").noconvert(),
        nb::arg("b_b").noconvert(), nb::arg("w1").noconvert(), nb::arg("b1").noconvert(), nb::arg("w2").noconvert(),
        nb::arg("b2").noconvert(), nb::arg("coef").noconvert(), nb::arg("joint"), nb::arg("out_min").noconvert(),
        nb::arg("out_all").noconvert(), nb::arg("write_all"), nb::arg("status").noconvert(), nb::arg("stream"),
        nb::call_guard<nb::gil_scoped_release>());
#endif
}

}  // namespace xmodal::bindings
