#include <omp.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "common/check.h"
#include "common/distance.h"
#include "common/parallel.h"
#include "ops/coreset/coreset.h"

// Exact greedy k-center with triangle-inequality pruning.
//
// Every point belongs to the cluster of its nearest selected center (the one that set its
// running minimum m(x) = d(x, c)^2) and every cluster keeps R^2 = max m over its members. When
// a new center z arrives, a cluster whose center c satisfies d(c, z) >= 2R cannot contain a
// point that z would bring closer: d(x, z) >= d(c, z) - d(x, c) >= 2R - R >= d(x, c). Such
// clusters are skipped without reading their rows. Everything that is scanned uses exactly the
// plain loop's arithmetic and comparisons, and the pruning test keeps a relative margin far
// above float64 rounding, so the selection is the plain loop's selection, not an
// approximation. Patch features have low intrinsic dimension, so late steps skip most of x.

namespace xmodal {
namespace {

constexpr double kSelected = -1.0;           // running minimum of points already chosen
constexpr double kPruneMargin = 1.0 + 1e-6;  // >> float64 rounding of the squared distances
constexpr int64_t kMinRowsPerThread = 2048;  // below this a second thread costs more than it saves

// The farthest unselected point of a cluster: largest running minimum, then lowest index.
struct Farthest {
  double value = -std::numeric_limits<double>::infinity();
  int64_t index = std::numeric_limits<int64_t>::max();

  bool beats(const Farthest& other) const {
    return value > other.value || (value == other.value && index < other.index);
  }
};

// A thread's partial farthest member of one cluster during one step; entries of other steps
// count as empty, so nothing has to be reset between steps.
struct StampedFarthest {
  Farthest farthest;
  int64_t step = -1;
};

struct alignas(64) ThreadBest {  // one cache line per thread: no false sharing
  Farthest farthest;
};

}  // namespace

void greedy_coreset_cpu(const float* x, int64_t num_points, int64_t dim, int64_t n, int64_t start, int64_t* idx) {
  XMODAL_CHECK(num_points >= 1 && dim >= 1, "x must be a non-empty (N, D) matrix; got (", num_points, ", ", dim, ")");
  XMODAL_CHECK(n >= 1 && n <= num_points, "n must be in [1, N=", num_points, "]; got ", n);
  XMODAL_CHECK(start >= 0 && start < num_points, "start must be in [0, N=", num_points, "); got ", start);
  idx[0] = start;
  if (n == 1) return;

  const int threads =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), num_points / kMinRowsPerThread)));
  // Per point: running minimum and owning cluster (cluster id = selection step of its center).
  std::vector<double> min_distance(static_cast<size_t>(num_points), std::numeric_limits<double>::infinity());
  std::vector<int64_t> owner(static_cast<size_t>(num_points), -1);
  // Per cluster: its farthest member (R^2 and index) and whether the newest center forces a rescan.
  std::vector<Farthest> farthest(static_cast<size_t>(n));
  std::vector<unsigned char> rescan(static_cast<size_t>(n), 0);
  std::vector<std::vector<StampedFarthest>> local(static_cast<size_t>(threads),
                                                  std::vector<StampedFarthest>(static_cast<size_t>(n)));
  std::vector<ThreadBest> thread_best(static_cast<size_t>(threads));
  // Each thread's copy of the newest center in float64 (exact): converted once per step, not
  // once per row in the innermost loop.
  std::vector<double> center64(static_cast<size_t>(threads * dim));

  // One parallel region for the whole selection and three barriers per step. Rows are split
  // into fixed contiguous slices (each stays in its thread's cache); clusters are dealt out
  // cyclically (j = thread, thread + T, ...), and the thread that decides whether cluster j is
  // rescanned is also the one that merges its farthest member afterwards.
#pragma omp parallel num_threads(threads)
  {
    const int thread = omp_get_thread_num(), team = omp_get_num_threads();
    int64_t row_begin, row_end;
    chunk_range(num_points, team, thread, row_begin, row_end);
    std::vector<StampedFarthest>& mine = local[static_cast<size_t>(thread)];
    double* z = center64.data() + thread * dim;
    int64_t center = start;

    for (int64_t step = 1; step < n; ++step) {
      const int64_t newest = step - 1;  // cluster of `center`, the point selected last
      std::copy(x + center * dim, x + (center + 1) * dim, z);

      // 1. Which of my clusters may the newest center take points from?
      for (int64_t j = thread; j <= newest; j += team) {
        if (j == newest) {
          rescan[static_cast<size_t>(j)] = 1;
          continue;
        }
        const double gap = squared_distance_f64(x + idx[j] * dim, z, dim);
        rescan[static_cast<size_t>(j)] = !(gap > 4.0 * farthest[static_cast<size_t>(j)].value * kPruneMargin);
      }
#pragma omp barrier

      // 2. One fused pass over my rows of the rescanned clusters: distance to the newest
      //    center, running minimum, ownership, and each cluster's farthest member.
      for (int64_t i = row_begin; i < row_end; ++i) {
        int64_t o = owner[static_cast<size_t>(i)];
        if (o >= 0 && !rescan[static_cast<size_t>(o)]) continue;
        double m = min_distance[static_cast<size_t>(i)];
        if (m == kSelected) continue;
        if (i == center) {
          min_distance[static_cast<size_t>(i)] = kSelected;
          owner[static_cast<size_t>(i)] = newest;
          continue;
        }
        const double d = squared_distance_f64(x + i * dim, z, dim);
        if (d < m) {
          m = d;
          o = newest;
          min_distance[static_cast<size_t>(i)] = m;
          owner[static_cast<size_t>(i)] = o;
        }
        StampedFarthest& f = mine[static_cast<size_t>(o)];
        if (f.step != step) f = {Farthest{}, step};
        if (m > f.farthest.value) f.farthest = {m, i};  // rows ascend: '>' keeps the lowest index on ties
      }
#pragma omp barrier

      // 3. Merge the threads' partial results for my rescanned clusters, then my clusters' best.
      Farthest best;
      for (int64_t j = thread; j <= newest; j += team) {
        Farthest& cluster = farthest[static_cast<size_t>(j)];
        if (rescan[static_cast<size_t>(j)]) {
          cluster = Farthest{};
          for (const std::vector<StampedFarthest>& other : local) {
            const StampedFarthest& part = other[static_cast<size_t>(j)];
            if (part.step == step && part.farthest.beats(cluster)) cluster = part.farthest;
          }
        }
        if (cluster.beats(best)) best = cluster;
      }
      thread_best[static_cast<size_t>(thread)].farthest = best;
#pragma omp barrier

      // 4. Every thread reduces the same T values identically: no further synchronisation.
      Farthest chosen;
      for (const ThreadBest& b : thread_best)
        if (b.farthest.beats(chosen)) chosen = b.farthest;
      center = chosen.index;
      if (thread == 0) idx[step] = center;
    }
  }
}

}  // namespace xmodal
