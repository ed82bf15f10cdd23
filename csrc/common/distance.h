// Squared Euclidean distance of float32 vectors accumulated in float64: the definition the
// exact kernels (kNN re-ranking, greedy coreset) and their float64 references share.
#pragma once

#include <cstdint>

namespace xmodal {

inline double squared_distance_f64(const float* a, const float* b, int64_t dim) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t d = 0; d < dim; ++d) {
    const double diff = static_cast<double>(a[d]) - static_cast<double>(b[d]);
    sum += diff * diff;
  }
  return sum;
}

}  // namespace xmodal
