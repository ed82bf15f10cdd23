// Exact k-nearest-neighbour search in a PointTree (3D, or fewer dimensions padded with 0).
//
// The metric supplies the distance of a query to a point, a lower bound of it over a node's
// box, and the rank that orders neighbours (ties: lower original index). A node is skipped
// only when the rank of its lower bound is strictly worse than the current k-th rank, so the
// result is exactly the first k points in (rank, index) order, provided the metric's lower
// bound never exceeds its distance (both metrics below are monotone roundings of the same
// formula, so it holds with no margin).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/check.h"
#include "common/parallel.h"
#include "common/point_math.h"
#include "common/point_tree.h"

namespace xmodal {

// The arithmetic of the point-cloud kernels (common/point_math.h); rank = squared distance.
struct PointMetric {
  using Rank = double;
  static double distance(float qx, float qy, float qz, float px, float py, float pz) {
    return squared_distance3(px, py, pz, qx, qy, qz);
  }
  static double lower_bound(const PointTree& tree, const PointTree::Node& node, float qx, float qy, float qz) {
    return tree.lower_bound(node, qx, qy, qz);
  }
  static Rank rank(double d) { return d; }
};

// xmodal.knn's contract: float64 differences, the Euclidean distance rounded to float32 ranks.
// The sum is written with explicit fma so that it is the same function wherever the compiler
// inlines it (no contraction choice left to it) and stays monotone for the box bound.
struct KnnMetric {
  using Rank = float;
  static double sum3(double dx, double dy, double dz) { return std::fma(dz, dz, std::fma(dy, dy, dx * dx)); }
  static double distance(float qx, float qy, float qz, float px, float py, float pz) {
    return sum3(static_cast<double>(qx) - px, static_cast<double>(qy) - py, static_cast<double>(qz) - pz);
  }
  static double gap(float lo, float hi, float c) {
    if (c < lo) return static_cast<double>(lo) - c;
    if (c > hi) return static_cast<double>(c) - hi;
    return 0.0;
  }
  static double lower_bound(const PointTree&, const PointTree::Node& node, float qx, float qy, float qz) {
    return sum3(gap(node.lo[0], node.hi[0], qx), gap(node.lo[1], node.hi[1], qy), gap(node.lo[2], node.hi[2], qz));
  }
  static Rank rank(double d) { return static_cast<float>(std::sqrt(d)); }
};

template <typename Metric>
class TreeKnn {
 public:
  using Rank = typename Metric::Rank;
  struct Neighbour {
    Rank rank;
    int64_t index;
    double distance;
  };

  TreeKnn(const PointTree& tree, int64_t k)
      : tree_(tree), k_(k), capacity_(static_cast<size_t>(std::max<int64_t>(2 * k, 32))) {
    found_.reserve(capacity_);
  }

  // The k nearest points of q, ascending by (rank, index), into out[0..k). `bound` is a rank
  // known to be >= the true k-th rank (e.g. from k points near q), or +inf.
  void search(float qx, float qy, float qz, Rank bound, Neighbour* out) {
    found_.clear();
    qx_ = qx;
    qy_ = qy;
    qz_ = qz;
    limit_ = bound;
    limited_ = false;
    if (tree_.size() > 0) visit(0, Metric::lower_bound(tree_, tree_.nodes()[0], qx, qy, qz));
    // Cannot fail when `bound` is valid and k <= N; a backstop before touching memory.
    XMODAL_CHECK(static_cast<int64_t>(found_.size()) >= k_, "point kNN: internal error, ", found_.size(),
                 " candidates for k=", k_);
    const auto kth = found_.begin() + k_;
    std::nth_element(found_.begin(), kth - 1, found_.end(), ranks_before);
    std::sort(found_.begin(), kth, ranks_before);
    std::copy(found_.begin(), kth, out);
  }

 private:
  static bool ranks_before(const Neighbour& a, const Neighbour& b) {
    return a.rank < b.rank || (a.rank == b.rank && a.index < b.index);
  }

  // Candidates accumulate unsorted; when the buffer is full, everything ranked after the k-th
  // is dropped and the k-th rank becomes the limit (amortised O(1) per candidate, unlike a
  // heap). Points ranked equal to the limit are still accepted: a lower index may win.
  void compact() {
    std::nth_element(found_.begin(), found_.begin() + (k_ - 1), found_.end(), ranks_before);
    found_.resize(static_cast<size_t>(k_));
    limit_ = found_.back().rank;
    for (const Neighbour& n : found_) limit_ = std::max(limit_, n.rank);
  }

  void visit(int32_t id, double lower_bound) {
    if (Metric::rank(lower_bound) > limit_) return;
    const PointTree::Node& node = tree_.nodes()[static_cast<size_t>(id)];
    if (node.leaf()) {
      const float *x = tree_.x(), *y = tree_.y(), *z = tree_.z();
      const int64_t* index = tree_.index();
      for (int32_t p0 = node.begin; p0 < node.end; p0 += kChunk) {
        const int32_t count = std::min<int32_t>(kChunk, node.end - p0);
        double d[kChunk];
        Rank r[kChunk];
        for (int32_t j = 0; j < count; ++j) {  // vectorised
          d[j] = Metric::distance(qx_, qy_, qz_, x[p0 + j], y[p0 + j], z[p0 + j]);
          r[j] = Metric::rank(d[j]);
        }
        for (int32_t j = 0; j < count; ++j) {
          if (r[j] > limit_) continue;
          found_.push_back({r[j], index[p0 + j], d[j]});
          if (found_.size() == static_cast<size_t>(k_) && !limited_) {
            // The first k candidates already bound the k-th rank.
            Rank largest = found_.front().rank;
            for (const Neighbour& n : found_) largest = std::max(largest, n.rank);
            limit_ = std::min(limit_, largest);
            limited_ = true;
          } else if (found_.size() >= capacity_) {
            compact();
          }
        }
      }
      return;
    }
    const PointTree::Node& left = tree_.nodes()[static_cast<size_t>(node.left)];
    const PointTree::Node& right = tree_.nodes()[static_cast<size_t>(node.right)];
    const double lb_left = Metric::lower_bound(tree_, left, qx_, qy_, qz_);
    const double lb_right = Metric::lower_bound(tree_, right, qx_, qy_, qz_);
    if (lb_left <= lb_right) {
      visit(node.left, lb_left);
      visit(node.right, lb_right);
    } else {
      visit(node.right, lb_right);
      visit(node.left, lb_left);
    }
  }

  static constexpr int32_t kChunk = 32;
  const PointTree& tree_;
  int64_t k_;
  size_t capacity_;
  std::vector<Neighbour> found_;
  float qx_ = 0, qy_ = 0, qz_ = 0;
  Rank limit_ = std::numeric_limits<Rank>::infinity();
  bool limited_ = false;
};

// The k nearest tree points of every query (rows of `queries`, (Q, 3)), in parallel.
// `points` (N, 3) are the tree's points by original index. Queries are split into contiguous
// chunks: consecutive queries are often close (organized clouds in raster order), so for small
// k the previous query's neighbours bound the next search from the start (for large k the
// k extra distances cost more than the bound saves). `emit(q, found)` receives each query's
// neighbours, ascending by (rank, index).
constexpr int64_t kMaxSeededK = 16;

template <typename Metric, typename Emit>
void search_all(const PointTree& tree, const float* points, const float* queries, int64_t num_queries, int64_t k,
                Emit emit) {
  using Search = TreeKnn<Metric>;
  using Rank = typename Metric::Rank;
  ParallelErrors errors;
#pragma omp parallel
  {
    Search search(tree, k);
    std::vector<typename Search::Neighbour> found(static_cast<size_t>(k));
    std::vector<int64_t> previous;
#pragma omp for schedule(static)
    for (int64_t q = 0; q < num_queries; ++q)
      errors.run([&] {
        const float* query = queries + 3 * q;
        Rank bound = std::numeric_limits<Rank>::infinity();
        if (!previous.empty()) {
          bound = Rank(0);
          for (int64_t row : previous) {
            const float* p = points + 3 * row;
            bound = std::max(bound, Metric::rank(Metric::distance(query[0], query[1], query[2], p[0], p[1], p[2])));
          }
        }
        search.search(query[0], query[1], query[2], bound, found.data());
        emit(q, found.data());
        previous.clear();
        if (k <= kMaxSeededK)
          for (const auto& n : found) previous.push_back(n.index);
      });
  }
  errors.rethrow();
}

}  // namespace xmodal
