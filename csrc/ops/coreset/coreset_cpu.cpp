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

// Tournament tree over clusters: the root is the global farthest point; updating one cluster
// costs O(log clusters) instead of a scan of all clusters per step.
class FarthestTree {
 public:
  explicit FarthestTree(int64_t leaves) {
    size_ = 1;
    while (size_ < leaves) size_ *= 2;
    nodes_.assign(static_cast<size_t>(2 * size_), Farthest{});
  }

  void set(int64_t leaf, const Farthest& value) {
    size_t node = static_cast<size_t>(size_ + leaf);
    nodes_[node] = value;
    for (node /= 2; node >= 1; node /= 2) {
      const Farthest& left = nodes_[2 * node];
      const Farthest& right = nodes_[2 * node + 1];
      nodes_[node] = right.beats(left) ? right : left;
    }
  }

  const Farthest& best() const { return nodes_[1]; }

 private:
  int64_t size_;
  std::vector<Farthest> nodes_;
};

}  // namespace

void greedy_coreset_cpu(const float* x, int64_t num_points, int64_t dim, int64_t n, int64_t start,
                        int64_t* idx) {
  XMODAL_CHECK(num_points >= 1 && dim >= 1, "x must be a non-empty (N, D) matrix; got (", num_points, ", ",
               dim, ")");
  XMODAL_CHECK(n >= 1 && n <= num_points, "n must be in [1, N=", num_points, "]; got ", n);
  XMODAL_CHECK(start >= 0 && start < num_points, "start must be in [0, N=", num_points, "); got ", start);
  idx[0] = start;
  if (n == 1) return;

  const int threads = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(num_threads(), num_points / kMinRowsPerThread)));
  // Per point: running minimum and owning cluster (cluster id = selection step of its center).
  std::vector<double> min_distance(static_cast<size_t>(num_points), std::numeric_limits<double>::infinity());
  std::vector<int64_t> owner(static_cast<size_t>(num_points), -1);
  // Per cluster: its farthest member (R^2 and index) and whether the newest center forces a rescan.
  std::vector<Farthest> farthest(static_cast<size_t>(n));
  std::vector<unsigned char> rescan(static_cast<size_t>(n), 0);
  std::vector<int64_t> rescan_list;
  rescan_list.reserve(static_cast<size_t>(n));
  std::vector<std::vector<Farthest>> local(static_cast<size_t>(threads), std::vector<Farthest>(static_cast<size_t>(n)));
  FarthestTree tree(n);
  int64_t center = start;

#pragma omp parallel num_threads(threads)
  {
    const int thread = omp_get_thread_num();
    int64_t row_begin, row_end;
    chunk_range(num_points, omp_get_num_threads(), thread, row_begin, row_end);
    std::vector<Farthest>& mine = local[static_cast<size_t>(thread)];

    for (int64_t step = 1; step < n; ++step) {
      const int64_t newest = step - 1;  // cluster of `center`, the point selected last
      const float* z = x + center * dim;

      // 1. Clusters the newest center may take points from.
#pragma omp for schedule(static)
      for (int64_t j = 0; j < newest; ++j) {
        const Farthest& f = farthest[static_cast<size_t>(j)];
        const double gap = squared_distance_f64(x + idx[j] * dim, z, dim);
        rescan[static_cast<size_t>(j)] = !(gap > 4.0 * f.value * kPruneMargin);
      }
#pragma omp single
      {
        rescan_list.clear();
        for (int64_t j = 0; j < newest; ++j)
          if (rescan[static_cast<size_t>(j)]) rescan_list.push_back(j);
        rescan_list.push_back(newest);
        rescan[static_cast<size_t>(newest)] = 1;
      }
      for (int64_t j : rescan_list) mine[static_cast<size_t>(j)] = Farthest{};

      // 2. One fused pass over the rows of the rescanned clusters: distance to the newest
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
        Farthest& f = mine[static_cast<size_t>(o)];
        if (m > f.value) f = {m, i};  // rows ascend, so '>' keeps the lowest index on ties
      }
#pragma omp barrier

      // 3. Merge the threads' farthest members of the rescanned clusters.
#pragma omp for schedule(static)
      for (size_t t = 0; t < rescan_list.size(); ++t) {
        const int64_t j = rescan_list[t];
        Farthest best;
        for (const std::vector<Farthest>& other : local)
          if (other[static_cast<size_t>(j)].beats(best)) best = other[static_cast<size_t>(j)];
        farthest[static_cast<size_t>(j)] = best;
      }
#pragma omp single
      {
        for (int64_t j : rescan_list) tree.set(j, farthest[static_cast<size_t>(j)]);
        center = tree.best().index;
        idx[step] = center;
      }
    }
  }
}

}  // namespace xmodal
