// nanobind array types shared by the op bindings. Inputs are C-contiguous and are never
// converted: the Python layer (xmodal/_arrays.py) converts explicitly and documents it, and
// allocates the outputs in the caller's framework so numpy in gives numpy out, torch gives torch.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <utility>

#include "common/check.h"

namespace xmodal::bindings {

namespace nb = nanobind;

template <typename T>
using CpuIn = nb::ndarray<const T, nb::c_contig, nb::device::cpu>;
template <typename T>
using CpuOut = nb::ndarray<T, nb::c_contig, nb::device::cpu>;
template <typename T>
using CudaIn = nb::ndarray<const T, nb::c_contig, nb::device::cuda>;
template <typename T>
using CudaOut = nb::ndarray<T, nb::c_contig, nb::device::cuda>;

// A wrong dtype is a TypeError (as nanobind's own argument errors), not a ValueError.
template <typename... Parts>
[[noreturn]] void fail_dtype(Parts&&... parts) {
  std::ostringstream message;
  (message << ... << std::forward<Parts>(parts));
  throw nb::type_error(message.str().c_str());
}

// "float32", "int64", ... for messages.
inline std::string dtype_name(nb::dlpack::dtype dtype) {
  const char* kinds[] = {"int", "uint", "float", "opaque", "bfloat", "complex", "bool"};
  const std::string kind = dtype.code < 7 ? kinds[dtype.code] : "unknown";
  return kind == "bool" ? kind : kind + std::to_string(dtype.bits);
}

// Shape checks that name the argument (the Python layer checks first; this is the backstop).
template <typename Array>
void require_ndim(const Array& a, size_t ndim, const char* name) {
  XMODAL_CHECK(a.ndim() == ndim, name, " must have ", ndim, " dimensions; got ", a.ndim());
}

template <typename Array>
void require_dim(const Array& a, size_t axis, int64_t expected, const char* name) {
  XMODAL_CHECK(static_cast<int64_t>(a.shape(axis)) == expected, name, ".shape[", axis, "] must be ", expected, "; got ",
               a.shape(axis));
}

template <typename Array>
int64_t dim(const Array& a, size_t axis) {
  return static_cast<int64_t>(a.shape(axis));
}

// The caller's CUDA stream arrives as an integer (torch.cuda.current_stream().cuda_stream).
inline void* as_stream(std::uintptr_t stream) { return reinterpret_cast<void*>(stream); }

template <typename Array>
void require_same_device(const Array& a, int device_id, const char* name) {
  XMODAL_CHECK(a.device_id() == device_id, name, " is on cuda:", a.device_id(),
               " but the other inputs are on cuda:", device_id);
}

}  // namespace xmodal::bindings
