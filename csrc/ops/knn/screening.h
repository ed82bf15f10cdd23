// The float32 screening of the kNN kernels (CPU sgemm / direct differences, CUDA tiles) only
// works in a bounded range: a squared norm above FLT_MAX overflows, and tiny values lose
// their relative precision to underflow. Rows are therefore screened in a scaled copy when
// the data lies outside that range; the scale is a power of two, so scaling is exact except
// for components that underflow, whose effect the screening bands bound. Re-ranking always
// uses the unscaled inputs, so results do not depend on the scale.
#pragma once

#include <cmath>

#include "common/hostdevice.h"

namespace xmodal {

// Scaled row norms stay below 2^62: |q - b|^2 <= (|q| + |b|)^2 < 2^126 < FLT_MAX, and the
// partial sums of an sgemm dot product are bounded by |q| |b| < 2^124.
constexpr double kScreenMaxNorm = 0x1p62;
// Below this largest norm a copy is worth it: screening would lose everything to underflow.
constexpr double kScreenMinNorm = 0x1p-20;

// The power of two that brings `max_norm` (an upper bound of every query and bank row norm)
// into [2^61, 2^62), or 1 when it already lies in [kScreenMinNorm, kScreenMaxNorm] (or is 0).
XMODAL_HD double knn_screening_scale(double max_norm) {
  if (max_norm == 0.0 || (max_norm >= kScreenMinNorm && max_norm <= kScreenMaxNorm)) return 1.0;
  return ldexp(1.0, 61 - ilogb(max_norm));
}

}  // namespace xmodal
