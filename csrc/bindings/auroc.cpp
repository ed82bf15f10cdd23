#include "ops/auroc/auroc.h"

#include "bindings/evaluation.h"
#include "common/cuda_device.h"

namespace xmodal::bindings {
namespace {

template <typename Device>
std::vector<ScoreChunk> to_chunks(const std::vector<AnyIn<Device>>& scores, const std::vector<MaskIn<Device>>& labels,
                                  ScoreType& type) {
  XMODAL_CHECK(scores.size() == labels.size(), "scores and labels must hold the same number of arrays; got ",
               scores.size(), " and ", labels.size());
  type = common_score_type(scores, "scores");
  std::vector<ScoreChunk> chunks;
  for (size_t i = 0; i < scores.size(); ++i) {
    chunks.push_back({scores[i].data(), labels[i].data(), same_shape(scores[i], labels[i], "scores", "labels", i)});
  }
  return chunks;
}

double auroc_cpu_binding(std::vector<AnyIn<nb::device::cpu>> scores, std::vector<MaskIn<nb::device::cpu>> labels) {
  ScoreType type;
  const std::vector<ScoreChunk> chunks = to_chunks(scores, labels, type);
  nb::gil_scoped_release release;
  return auroc_cpu(chunks, type);
}

#ifdef XMODAL_WITH_CUDA
double auroc_cuda_binding(std::vector<AnyIn<nb::device::cuda>> scores, std::vector<MaskIn<nb::device::cuda>> labels,
                          std::uintptr_t stream) {
  ScoreType type;
  const std::vector<ScoreChunk> chunks = to_chunks(scores, labels, type);
  const int device = scores.front().device_id();
  for (size_t i = 0; i < scores.size(); ++i) {
    require_same_device(scores[i], device, "scores[i]");
    require_same_device(labels[i], device, "labels[i]");
  }
  nb::gil_scoped_release release;
  CudaDeviceGuard guard(device);
  return auroc_cuda(chunks, type, as_stream(stream));
}
#endif

}  // namespace

void bind_auroc(nb::module_& m) {
  m.def("auroc_cpu", &auroc_cpu_binding, nb::arg("scores").noconvert(), nb::arg("labels").noconvert());
#ifdef XMODAL_WITH_CUDA
  m.def("auroc_cuda", &auroc_cuda_binding, nb::arg("scores").noconvert(), nb::arg("labels").noconvert(),
        nb::arg("stream"));
#endif
}

}  // namespace xmodal::bindings
