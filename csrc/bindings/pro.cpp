#include "ops/pro/pro.h"

#include <nanobind/stl/pair.h>

#include <utility>

#include "bindings/evaluation.h"
#include "common/cuda_device.h"
#include "ops/pro/curve.h"

namespace xmodal::bindings {
namespace {

using Curve = std::pair<nb::ndarray<nb::numpy, double, nb::ndim<1>>, nb::ndarray<nb::numpy, double, nb::ndim<1>>>;

// maps[i] (count, H, W) float32/float64 and masks[i] (count, H, W) uint8 -> batches.
template <typename Device>
std::vector<MapBatch> to_batches(const std::vector<AnyIn<Device>>& maps, const std::vector<MaskIn<Device>>& masks,
                                 ScoreType& type) {
  XMODAL_CHECK(maps.size() == masks.size(), "maps and masks must hold the same number of arrays; got ", maps.size(),
               " and ", masks.size());
  type = common_score_type(maps, "maps");
  std::vector<MapBatch> batches;
  for (size_t i = 0; i < maps.size(); ++i) {
    require_ndim(maps[i], 3, "maps[i]");
    same_shape(maps[i], masks[i], "maps", "masks", i);
    batches.push_back({maps[i].data(), masks[i].data(), dim(maps[i], 0), dim(maps[i], 1), dim(maps[i], 2)});
  }
  return batches;
}

Curve pro_curve_cpu_binding(std::vector<AnyIn<nb::device::cpu>> maps, std::vector<MaskIn<nb::device::cpu>> masks,
                            int64_t num_thresholds) {
  ScoreType type;
  const std::vector<MapBatch> batches = to_batches(maps, masks, type);
  std::vector<double> fpr, pro;
  {
    nb::gil_scoped_release release;
    pro_curve_cpu(batches, type, num_thresholds, fpr, pro);
  }
  return {to_numpy(std::move(fpr)), to_numpy(std::move(pro))};
}

void aupro_cpu_binding(std::vector<AnyIn<nb::device::cpu>> maps, std::vector<MaskIn<nb::device::cpu>> masks,
                       int64_t num_thresholds, CpuIn<double> limits, CpuOut<double> out) {
  ScoreType type;
  const std::vector<MapBatch> batches = to_batches(maps, masks, type);
  require_ndim(limits, 1, "limits");
  require_ndim(out, 1, "out");
  require_dim(out, 0, dim(limits, 0), "out");
  nb::gil_scoped_release release;
  aupro_cpu(batches, type, num_thresholds, limits.data(), dim(limits, 0), out.data());
}

void aupro_bootstrap_cpu_binding(std::vector<AnyIn<nb::device::cpu>> maps, std::vector<MaskIn<nb::device::cpu>> masks,
                                 int64_t num_thresholds, CpuIn<double> limits, CpuIn<int32_t> multiplicity,
                                 CpuOut<double> out) {
  ScoreType type;
  const std::vector<MapBatch> batches = to_batches(maps, masks, type);
  int64_t num_images = 0;
  for (const MapBatch& b : batches) num_images += b.count;
  require_ndim(limits, 1, "limits");
  require_ndim(multiplicity, 2, "multiplicity");
  require_dim(multiplicity, 1, num_images, "multiplicity");
  require_ndim(out, 2, "out");
  require_dim(out, 0, dim(multiplicity, 0), "out");
  require_dim(out, 1, dim(limits, 0), "out");
  nb::gil_scoped_release release;
  aupro_bootstrap_cpu(batches, type, num_thresholds, limits.data(), dim(limits, 0), multiplicity.data(),
                      dim(multiplicity, 0), out.data());
}

#ifdef XMODAL_WITH_CUDA
std::vector<MapBatch> cuda_batches(const std::vector<AnyIn<nb::device::cuda>>& maps,
                                   const std::vector<MaskIn<nb::device::cuda>>& masks, ScoreType& type, int& device) {
  std::vector<MapBatch> batches = to_batches(maps, masks, type);
  device = maps.front().device_id();
  for (size_t i = 0; i < maps.size(); ++i) {
    require_same_device(maps[i], device, "maps[i]");
    require_same_device(masks[i], device, "masks[i]");
  }
  return batches;
}

Curve pro_curve_cuda_binding(std::vector<AnyIn<nb::device::cuda>> maps, std::vector<MaskIn<nb::device::cuda>> masks,
                             int64_t num_thresholds, std::uintptr_t stream) {
  ScoreType type;
  int device;
  const std::vector<MapBatch> batches = cuda_batches(maps, masks, type, device);
  std::vector<double> fpr, pro;
  {
    nb::gil_scoped_release release;
    CudaDeviceGuard guard(device);
    pro_curve_cuda(batches, type, num_thresholds, fpr, pro, as_stream(stream));
  }
  return {to_numpy(std::move(fpr)), to_numpy(std::move(pro))};
}

void aupro_cuda_binding(std::vector<AnyIn<nb::device::cuda>> maps, std::vector<MaskIn<nb::device::cuda>> masks,
                        int64_t num_thresholds, CpuIn<double> limits, CpuOut<double> out, std::uintptr_t stream) {
  ScoreType type;
  int device;
  const std::vector<MapBatch> batches = cuda_batches(maps, masks, type, device);
  require_ndim(limits, 1, "limits");
  require_ndim(out, 1, "out");
  require_dim(out, 0, dim(limits, 0), "out");
  nb::gil_scoped_release release;
  AuproIntegrator sink(limits.data(), dim(limits, 0));  // validates the limits before the GPU work
  std::vector<double> fpr, pro;
  {
    CudaDeviceGuard guard(device);
    pro_curve_cuda(batches, type, num_thresholds, fpr, pro, as_stream(stream));
  }
  for (size_t i = 0; i < fpr.size() && !sink.add(fpr[i], pro[i]); ++i) {
  }
  sink.end();
  sink.finish(out.data());
}
#endif

}  // namespace

void bind_pro(nb::module_& m) {
  m.def("pro_curve_cpu", &pro_curve_cpu_binding, nb::arg("maps").noconvert(), nb::arg("masks").noconvert(),
        nb::arg("num_thresholds"));
  m.def("aupro_cpu", &aupro_cpu_binding, nb::arg("maps").noconvert(), nb::arg("masks").noconvert(),
        nb::arg("num_thresholds"), nb::arg("limits").noconvert(), nb::arg("out").noconvert());
  m.def("aupro_bootstrap_cpu", &aupro_bootstrap_cpu_binding, nb::arg("maps").noconvert(), nb::arg("masks").noconvert(),
        nb::arg("num_thresholds"), nb::arg("limits").noconvert(), nb::arg("multiplicity").noconvert(),
        nb::arg("out").noconvert());
#ifdef XMODAL_WITH_CUDA
  m.def("pro_curve_cuda", &pro_curve_cuda_binding, nb::arg("maps").noconvert(), nb::arg("masks").noconvert(),
        nb::arg("num_thresholds"), nb::arg("stream"));
  m.def("aupro_cuda", &aupro_cuda_binding, nb::arg("maps").noconvert(), nb::arg("masks").noconvert(),
        nb::arg("num_thresholds"), nb::arg("limits").noconvert(), nb::arg("out").noconvert(), nb::arg("stream"));
#endif
}

}  // namespace xmodal::bindings
