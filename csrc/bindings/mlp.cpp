#include "ops/mlp/mlp.h"

#include <nanobind/stl/optional.h>
#include <nanobind/stl/vector.h>

#include <optional>

#include "bindings/arrays.h"
#include "common/cuda_device.h"

namespace xmodal::bindings {
namespace {

// A layer without bias arrives as None.
template <typename Array>
using Biases = std::vector<std::optional<Array>>;

Activation activation_of(int code) {
  XMODAL_CHECK(code >= 0 && code <= static_cast<int>(Activation::sigmoid), "unknown activation code ", code);
  return static_cast<Activation>(code);
}

// One activation code and one LeakyReLU slope per layer, applied to that layer's output.
template <typename Array>
std::vector<LinearLayer> linear_layers(const std::vector<Array>& weights, const Biases<Array>& biases,
                                       const std::vector<int>& activations, const std::vector<float>& slopes,
                                       const char* name) {
  XMODAL_CHECK(
      weights.size() == biases.size() && weights.size() == activations.size() && weights.size() == slopes.size(), name,
      ": ", weights.size(), " weights, ", biases.size(), " biases, ", activations.size(), " activations and ",
      slopes.size(), " slopes; expected one of each per layer");
  std::vector<LinearLayer> layers;
  for (size_t i = 0; i < weights.size(); ++i) {
    require_ndim(weights[i], 2, "weight");
    const float* bias = nullptr;
    if (biases[i]) {
      require_ndim(*biases[i], 1, "bias");
      require_dim(*biases[i], 0, dim(weights[i], 0), "bias");
      bias = biases[i]->data();
    }
    layers.push_back(
        {weights[i].data(), bias, dim(weights[i], 1), dim(weights[i], 0), activation_of(activations[i]), slopes[i]});
  }
  return layers;
}

template <typename In, typename Out>
void check_mlp_io(const In& x, const Out& y, const std::vector<LinearLayer>& layers) {
  require_ndim(x, 2, "x");
  require_ndim(y, 2, "y");
  check_mlp_chain(layers, dim(x, 1), dim(y, 1), "mlp");
  require_dim(y, 0, dim(x, 0), "y");
}

template <typename F, typename M, typename Out>
void check_crossmodal_io(const F& f2d, const F& f3d, const M& mask, const Out& d_2d, const Out& d_3d,
                         const std::vector<LinearLayer>& m23, const std::vector<LinearLayer>& m32) {
  require_ndim(f2d, 2, "f2d");
  require_ndim(f3d, 2, "f3d");
  const int64_t rows = dim(f2d, 0);
  require_dim(f3d, 0, rows, "f3d");
  require_ndim(mask, 1, "mask");
  require_dim(mask, 0, rows, "mask");
  require_dim(d_2d, 0, rows, "d_2d");
  require_dim(d_3d, 0, rows, "d_3d");
  check_mlp_chain(m23, dim(f2d, 1), dim(f3d, 1), "mlp_2d3d");
  check_mlp_chain(m32, dim(f3d, 1), dim(f2d, 1), "mlp_3d2d");
}

using Codes = std::vector<int>;
using Slopes = std::vector<float>;

void mlp_cpu_binding(CpuIn<float> x, std::vector<CpuIn<float>> weights, Biases<CpuIn<float>> biases, Codes activations,
                     Slopes slopes, CpuOut<float> y) {
  const std::vector<LinearLayer> layers = linear_layers(weights, biases, activations, slopes, "mlp");
  check_mlp_io(x, y, layers);
  mlp_forward_cpu(x.data(), dim(x, 0), layers, y.data());
}

void crossmodal_cpu_binding(CpuIn<float> f2d, CpuIn<float> f3d, CpuIn<uint8_t> mask, std::vector<CpuIn<float>> w23,
                            Biases<CpuIn<float>> b23, Codes a23, Slopes s23, std::vector<CpuIn<float>> w32,
                            Biases<CpuIn<float>> b32, Codes a32, Slopes s32, CpuOut<float> d_2d, CpuOut<float> d_3d) {
  const std::vector<LinearLayer> m23 = linear_layers(w23, b23, a23, s23, "mlp_2d3d"),
                                 m32 = linear_layers(w32, b32, a32, s32, "mlp_3d2d");
  check_crossmodal_io(f2d, f3d, mask, d_2d, d_3d, m23, m32);
  crossmodal_discrepancy_cpu(f2d.data(), f3d.data(), dim(f2d, 0), mask.data(), m23, m32, d_2d.data(), d_3d.data());
}

#ifdef XMODAL_WITH_CUDA
void mlp_cuda_binding(CudaIn<float> x, std::vector<CudaIn<float>> weights, Biases<CudaIn<float>> biases,
                      Codes activations, Slopes slopes, CudaOut<float> y, std::uintptr_t stream) {
  const std::vector<LinearLayer> layers = linear_layers(weights, biases, activations, slopes, "mlp");
  check_mlp_io(x, y, layers);
  CudaDeviceGuard guard(x.device_id());
  mlp_forward_cuda(x.data(), dim(x, 0), layers, y.data(), as_stream(stream));
}

void crossmodal_cuda_binding(CudaIn<float> f2d, CudaIn<float> f3d, CudaIn<uint8_t> mask, std::vector<CudaIn<float>> w23,
                             Biases<CudaIn<float>> b23, Codes a23, Slopes s23, std::vector<CudaIn<float>> w32,
                             Biases<CudaIn<float>> b32, Codes a32, Slopes s32, CudaOut<float> d_2d, CudaOut<float> d_3d,
                             std::uintptr_t stream) {
  const std::vector<LinearLayer> m23 = linear_layers(w23, b23, a23, s23, "mlp_2d3d"),
                                 m32 = linear_layers(w32, b32, a32, s32, "mlp_3d2d");
  check_crossmodal_io(f2d, f3d, mask, d_2d, d_3d, m23, m32);
  CudaDeviceGuard guard(f2d.device_id());
  crossmodal_discrepancy_cuda(f2d.data(), f3d.data(), dim(f2d, 0), mask.data(), m23, m32, d_2d.data(), d_3d.data(),
                              as_stream(stream));
}
#endif

}  // namespace

// Array arguments are never converted (.noconvert()): a converted output would be a temporary
// that silently swallows the results.
void bind_mlp(nb::module_& m) {
  m.def("mlp_cpu", &mlp_cpu_binding, nb::arg("x").noconvert(), nb::arg("weights").noconvert(),
        nb::arg("biases").noconvert(), nb::arg("activations"), nb::arg("slopes"), nb::arg("y").noconvert(),
        nb::call_guard<nb::gil_scoped_release>());
  m.def("crossmodal_discrepancy_cpu", &crossmodal_cpu_binding, nb::arg("f2d").noconvert(), nb::arg("f3d").noconvert(),
        nb::arg("mask").noconvert(), nb::arg("w23").noconvert(), nb::arg("b23").noconvert(), nb::arg("a23"),
        nb::arg("s23"), nb::arg("w32").noconvert(), nb::arg("b32").noconvert(), nb::arg("a32"), nb::arg("s32"),
        nb::arg("d_2d").noconvert(), nb::arg("d_3d").noconvert(), nb::call_guard<nb::gil_scoped_release>());
#ifdef XMODAL_WITH_CUDA
  m.def("mlp_cuda", &mlp_cuda_binding, nb::arg("x").noconvert(), nb::arg("weights").noconvert(),
        nb::arg("biases").noconvert(), nb::arg("activations"), nb::arg("slopes"), nb::arg("y").noconvert(),
        nb::arg("stream"), nb::call_guard<nb::gil_scoped_release>());
  m.def("crossmodal_discrepancy_cuda", &crossmodal_cuda_binding, nb::arg("f2d").noconvert(), nb::arg("f3d").noconvert(),
        nb::arg("mask").noconvert(), nb::arg("w23").noconvert(), nb::arg("b23").noconvert(), nb::arg("a23"),
        nb::arg("s23"), nb::arg("w32").noconvert(), nb::arg("b32").noconvert(), nb::arg("a32"), nb::arg("s32"),
        nb::arg("d_2d").noconvert(), nb::arg("d_3d").noconvert(), nb::arg("stream"),
        nb::call_guard<nb::gil_scoped_release>());
#endif
}

}  // namespace xmodal::bindings
