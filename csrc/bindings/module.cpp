#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "bindings/ops.h"
#include "common/blas.h"
#include "common/cuda_device.h"
#include "common/isa.h"
#include "common/parallel.h"

namespace nb = nanobind;

namespace {

nb::dict build_info() {
  nb::dict info;
  info["version"] = XMODAL_VERSION;
#ifdef XMODAL_WITH_CUDA
  info["cuda"] = true;
  info["cuda_version"] = XMODAL_CUDA_VERSION;
  info["cuda_archs"] = XMODAL_CUDA_ARCHS;
#else
  info["cuda"] = false;
  info["cuda_version"] = nb::none();
  info["cuda_archs"] = nb::none();
#endif
  info["compiler"] = XMODAL_CXX_COMPILER;
  info["openmp"] = xmodal::openmp_enabled();
  info["blas"] = xmodal::blas::name();
  // The CPU variant actually loaded (the library answers, not the loader's intent) and the
  // variants this build has.
  info["isa"] = xmodal::isa_name();
  info["isa_variants"] = XMODAL_ISA_VARIANTS;
  return info;
}

}  // namespace

NB_MODULE(_C, m) {
  m.doc() = "xmodal native kernels (use the xmodal.ops functions, not this module)";
  m.def("build_info", &build_info);
  m.def("cuda_device_count", &xmodal::cuda_device_count);
  m.def("num_threads", &xmodal::num_threads);
  m.def("set_num_threads", &xmodal::set_num_threads, nb::arg("threads"));

  xmodal::bindings::bind_knn(m);
  xmodal::bindings::bind_coreset(m);
  xmodal::bindings::bind_mlp(m);
  xmodal::bindings::bind_ransac(m);
  xmodal::bindings::bind_dbscan(m);
  xmodal::bindings::bind_pointcloud(m);
  xmodal::bindings::bind_ccl(m);
  xmodal::bindings::bind_pro(m);
  xmodal::bindings::bind_auroc(m);
  xmodal::bindings::bind_fpfh(m);
  xmodal::bindings::bind_mahalanobis(m);
  xmodal::bindings::bind_anisotropic(m);
}
