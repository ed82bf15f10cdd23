// Order-preserving integer keys for floating-point scores, and the few scalar formulas of the
// evaluation kernels that the CPU and CUDA paths must evaluate identically.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/hostdevice.h"

namespace xmodal {

// Element type of score arrays handed to the evaluation kernels.
enum class ScoreType { f32, f64 };

// Unsigned key whose ascending order is the DESCENDING order of the score: sorting keys
// ascending walks scores from the highest down, the order every curve here is built in.
// -0.0 and +0.0 get the same key (they compare equal, so they must tie); NaN never reaches
// these functions (inputs are validated first).
XMODAL_HD uint32_t descending_key(float v) {
  v += 0.0f;  // -0.0 + 0.0 = +0.0; every other value is unchanged
  uint32_t bits;
  memcpy(&bits, &v, sizeof(bits));
  // Ascending key: flip all bits of negatives, only the sign bit of positives (branch-free).
  const uint32_t flip = static_cast<uint32_t>(static_cast<int32_t>(bits) >> 31) | 0x80000000u;
  return ~(bits ^ flip);
}

XMODAL_HD uint64_t descending_key(double v) {
  v += 0.0;
  uint64_t bits;
  memcpy(&bits, &v, sizeof(bits));
  const uint64_t flip = static_cast<uint64_t>(static_cast<int64_t>(bits) >> 63) | 0x8000000000000000ull;
  return ~(bits ^ flip);
}

// 1 when v is NaN or infinite (an all-ones exponent), else 0, as the key type.
XMODAL_HD uint32_t not_finite_bit(float v) {
  uint32_t bits;
  memcpy(&bits, &v, sizeof(bits));
  return (bits & 0x7f800000u) == 0x7f800000u;
}

XMODAL_HD uint64_t not_finite_bit(double v) {
  uint64_t bits;
  memcpy(&bits, &v, sizeof(bits));
  return (bits & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
}

template <typename Score>
struct KeyOf;
template <>
struct KeyOf<float> {
  using type = uint32_t;
};
template <>
struct KeyOf<double> {
  using type = uint64_t;
};

// Rank of threshold i of T in the sorted OK scores: numpy's
// linspace(0, n_ok - 1, num=T, dtype=int)[i], i.e. floor(i * step) with step = (n_ok - 1) /
// (T - 1) in float64 and the last rank pinned to n_ok - 1 (T >= 2).
XMODAL_HD int64_t threshold_rank(int64_t i, int64_t num_thresholds, int64_t n_ok) {
  if (i == num_thresholds - 1) return n_ok - 1;
  const double step = static_cast<double>(n_ok - 1) / static_cast<double>(num_thresholds - 1);
  const double y = static_cast<double>(i) * step;
  return static_cast<int64_t>(y);  // y >= 0: truncation is floor
}

// FPR of the sampled curve at OK rank `rank`: 1 - (rank + 1) / n_ok, from the rank alone.
XMODAL_HD double sampled_fpr(int64_t rank, int64_t n_ok) {
  return 1.0 - static_cast<double>(rank + 1) / static_cast<double>(n_ok);
}

// FPR of the exact curve after `false_positives` OK pixels: the MVTec AD code casts the
// running count to float32, divides by the OK-pixel count and stores float32. (Dividing in
// float64 and rounding once to float32 is identical to a float32 division whenever
// n_ok <= 2^24, and is what current numpy computes for larger counts.)
XMODAL_HD double exact_fpr(int64_t false_positives, int64_t n_ok) {
  const double count = static_cast<double>(static_cast<float>(false_positives));
  return static_cast<double>(static_cast<float>(count / static_cast<double>(n_ok)));
}

}  // namespace xmodal
