#include <omp.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "common/check.h"
#include "common/parallel.h"
#include "ops/coreset/coreset.h"

namespace xmodal {
namespace {

constexpr double kSelected = -1.0;        // marks chosen points in the running-minimum array
constexpr int64_t kMinRowsPerThread = 2048;  // below this a second thread costs more than it saves

struct alignas(64) Best {  // one cache line per thread: no false sharing between threads
  double value;
  int64_t index;
};

inline double squared_distance(const float* a, const float* b, int64_t dim) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t d = 0; d < dim; ++d) {
    const double diff = static_cast<double>(a[d]) - static_cast<double>(b[d]);
    sum += diff * diff;
  }
  return sum;
}

inline bool better(double value, int64_t index, const Best& than) {
  return value > than.value || (value == than.value && index < than.index);
}

}  // namespace

void greedy_coreset_cpu(const float* x, int64_t num_points, int64_t dim, int64_t n, int64_t start,
                        int64_t* idx) {
  XMODAL_CHECK(num_points >= 1 && dim >= 1, "x must be a non-empty (N, D) matrix; got (", num_points, ", ",
               dim, ")");
  XMODAL_CHECK(n >= 1 && n <= num_points, "n must be in [1, N=", num_points, "]; got ", n);
  XMODAL_CHECK(start >= 0 && start < num_points, "start must be in [0, N=", num_points, "); got ", start);
  idx[0] = start;
  if (n == 1) return;

  std::vector<double> min_distance(static_cast<size_t>(num_points), std::numeric_limits<double>::infinity());
  const int threads = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(num_threads(), num_points / kMinRowsPerThread)));
  std::vector<Best> best(static_cast<size_t>(threads));

  // One parallel region for the whole selection: each thread owns a fixed slice of rows (which
  // stays in its cache) and every step is one fused pass (distance to the new center, running
  // minimum, local argmax) followed by a reduction that all threads compute identically.
#pragma omp parallel num_threads(threads)
  {
    const int thread = omp_get_thread_num();
    int64_t row_begin, row_end;
    chunk_range(num_points, omp_get_num_threads(), thread, row_begin, row_end);
    int64_t center = start;
    for (int64_t step = 1; step < n; ++step) {
      const float* c = x + center * dim;
      Best local{-std::numeric_limits<double>::infinity(), num_points};
      for (int64_t i = row_begin; i < row_end; ++i) {
        double m = min_distance[static_cast<size_t>(i)];
        if (m == kSelected) continue;
        if (i == center) {
          m = kSelected;
        } else {
          m = std::min(m, squared_distance(x + i * dim, c, dim));
          if (m > local.value) local = {m, i};  // rows ascend, so '>' keeps the lowest index on ties
        }
        min_distance[static_cast<size_t>(i)] = m;
      }
      best[static_cast<size_t>(thread)] = local;
#pragma omp barrier
      Best chosen{-std::numeric_limits<double>::infinity(), num_points};
      for (const Best& b : best)
        if (better(b.value, b.index, chosen)) chosen = b;
      center = chosen.index;
      if (thread == 0) idx[step] = center;
#pragma omp barrier  // `best` is rewritten in the next step only after everyone has read it
    }
  }
}

}  // namespace xmodal
