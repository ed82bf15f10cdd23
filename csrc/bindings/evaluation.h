// Conversions shared by the evaluation bindings (PRO, AUROC): lists of score arrays of
// float32 or float64 with uint8 masks/labels of the same shape.
#pragma once

#include <nanobind/stl/vector.h>

#include <vector>

#include "bindings/arrays.h"
#include "common/sort_keys.h"

namespace xmodal::bindings {

template <typename Device>
using AnyIn = nb::ndarray<nb::ro, nb::c_contig, Device>;
template <typename Device>
using MaskIn = nb::ndarray<const uint8_t, nb::c_contig, Device>;

// The common score dtype of a list of arrays (all float32 or all float64).
template <typename Array>
ScoreType common_score_type(const std::vector<Array>& scores, const char* name) {
  XMODAL_CHECK(!scores.empty(), name, " must hold at least one array");
  const bool f32 = scores.front().dtype() == nb::dtype<float>();
  for (const auto& s : scores) {
    const bool is_f32 = s.dtype() == nb::dtype<float>(), is_f64 = s.dtype() == nb::dtype<double>();
    if (!is_f32 && !is_f64) fail_dtype(name, " must be float32 or float64 arrays; got ", dtype_name(s.dtype()));
    if (is_f32 != f32) fail_dtype("all ", name, " must share one dtype (float32 or float64)");
  }
  return f32 ? ScoreType::f32 : ScoreType::f64;
}

// Both arrays of pair i must have the same shape; returns the element count.
template <typename A, typename B>
int64_t same_shape(const A& a, const B& b, const char* name_a, const char* name_b, size_t i) {
  XMODAL_CHECK(a.ndim() == b.ndim(), name_a, "[", i, "] and ", name_b, "[", i, "] must have the same shape");
  int64_t size = 1;
  for (size_t d = 0; d < a.ndim(); ++d) {
    XMODAL_CHECK(a.shape(d) == b.shape(d), name_a, "[", i, "] and ", name_b, "[", i, "] must have the same shape");
    size *= static_cast<int64_t>(a.shape(d));
  }
  return size;
}

// A double array owned by a numpy array (moves the vector to the heap).
inline nb::ndarray<nb::numpy, double, nb::ndim<1>> to_numpy(std::vector<double>&& values) {
  auto* heap = new std::vector<double>(std::move(values));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<double>*>(p); });
  return nb::ndarray<nb::numpy, double, nb::ndim<1>>(heap->data(), {heap->size()}, owner);
}

}  // namespace xmodal::bindings
