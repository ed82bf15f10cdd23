// The neighbour table of ops/fpfh/fpfh_neighbours.h by a bucketed exact search: the queries of
// one KD-tree leaf share one candidate set, so the tree is walked about once per leaf instead
// of once per point (k ~ 100 neighbours on surfaces: ~4x faster than per-point searches).
//
// For a leaf with bounding box B, anchor a (its point nearest the box centre), spread
// s = max |q - a| over its points, and r0 = the distance of a's k-th nearest point (capped by
// the radius), every query q in B has its neighbourhood within |q - a| + r0 <= s + r0 of q (the
// k points around a are that close to q). The candidates are the points within reach R >= s + r0
// of B; r0 itself is found among the candidates, R growing from a guess (the previous leaf's
// r0) until the ball around a that R covers holds k points. Each query then ranks only the
// candidates closer than its own bound with the exact arithmetic of common/point_math.h and
// keeps the first k in (distance, index) order: the same set as a per-point search. Every bound
// is widened by a relative 1e-5, far above the rounding of the distances, so that rounding can
// only add candidates, never lose one.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/check.h"
#include "common/parallel.h"
#include "common/point_math.h"
#include "common/point_tree.h"
#include "ops/fpfh/fpfh_neighbours.h"

namespace xmodal {
namespace {

constexpr int kLeafSize = 32;
constexpr double kWidening = 1.0 + 1e-5;
// A query's k-th distance is usually within a few per cent of its leaf anchor's.
constexpr double kLikelyWidening = 1.05;
// Largest number of surplus candidates dropped one by one (beyond it: std::nth_element).
constexpr size_t kMaxSurplus = 24;

struct Box {
  double lo[3], hi[3];
};

// Squared gap between a box and a point or another box, in float64 (0 when they overlap).
double gap2(const Box& box, const float lo[3], const float hi[3]) {
  double sum = 0.0;
  for (int d = 0; d < 3; ++d) {
    const double g = std::max({0.0, lo[d] - box.hi[d], box.lo[d] - hi[d]});
    sum += g * g;
  }
  return sum;
}

double distance(const float* x, const float* y, const float* z, int32_t a, int32_t b) {
  return std::sqrt(squared_distance3(x[a], y[a], z[a], x[b], y[b], z[b]));
}

class LeafSearch {
 public:
  LeafSearch(const PointTree& tree, int64_t width, double radius, double first_guess)
      : tree_(tree), width_(width), radius_(radius), guess_(first_guess) {}

  // Fills the table rows of every point in `leaf`.
  void run(const PointTree::Node& leaf, NeighbourTable& table) {
    Box box;
    double centre[3];
    for (int d = 0; d < 3; ++d) {
      box.lo[d] = leaf.lo[d];
      box.hi[d] = leaf.hi[d];
      centre[d] = 0.5 * (box.lo[d] + box.hi[d]);
    }
    const float *x = tree_.x(), *y = tree_.y(), *z = tree_.z();
    int32_t anchor = leaf.begin;
    double best = std::numeric_limits<double>::infinity();
    for (int32_t pos = leaf.begin; pos < leaf.end; ++pos) {
      const double dx = x[pos] - centre[0], dy = y[pos] - centre[1], dz = z[pos] - centre[2];
      const double d2 = dx * dx + dy * dy + dz * dz;
      if (d2 < best) {
        best = d2;
        anchor = pos;
      }
    }
    double spread = 0.0;
    for (int32_t pos = leaf.begin; pos < leaf.end; ++pos) spread = std::max(spread, distance(x, y, z, pos, anchor));
    const double r0 = gather_around(box, x[anchor], y[anchor], z[anchor], spread);
    if (r0 > 0.0) guess_ = r0;
    for (int32_t pos = leaf.begin; pos < leaf.end; ++pos) {
      const double bound = (distance(x, y, z, pos, anchor) + r0) * kWidening;
      const double likely = r0 * kLikelyWidening;
      select(x[pos], y[pos], z[pos], tree_.index()[pos], bound * bound, likely * likely, table);
    }
  }

 private:
  // Gathers the candidates of the leaf and returns r0 (module comment): reach R grows from
  // spread + the guess until the anchor's ball of radius (R - spread) / widening, which R
  // covers entirely, holds k candidates, or covers the whole radius.
  double gather_around(const Box& box, float ax, float ay, float az, double spread) {
    double r = guess_ > 0.0 ? guess_ * 1.25 : 1e-30;
    for (;;) {
      gather(box, (spread + r) * kWidening);
      const double covered = std::min(r, radius_);
      anchor_d2_.clear();
      for (size_t c = 0; c < cindex_.size(); ++c) {
        const double d2 = squared_distance3(cx_[c], cy_[c], cz_[c], ax, ay, az);
        if (d2 <= covered * covered && d2 < radius_ * radius_) anchor_d2_.push_back(d2);
      }
      if (static_cast<int64_t>(anchor_d2_.size()) >= width_) {
        std::nth_element(anchor_d2_.begin(), anchor_d2_.begin() + (width_ - 1), anchor_d2_.end());
        return std::sqrt(anchor_d2_[static_cast<size_t>(width_ - 1)]);
      }
      if (r >= radius_) return radius_;  // fewer than k points within the radius of the anchor
      r = std::max(2.0 * r, 1e-30);
      // Every point is a candidate once the reach exceeds the cloud's extent: k <= N of them
      // are then in the anchor's ball, so the loop ends.
    }
  }

  // Candidates: every tree point within `reach` of the box.
  void gather(const Box& box, double reach) {
    const double reach2 = reach * reach;
    cx_.clear();
    cy_.clear();
    cz_.clear();
    cindex_.clear();
    stack_.assign(1, 0);
    const float *x = tree_.x(), *y = tree_.y(), *z = tree_.z();
    while (!stack_.empty()) {
      const PointTree::Node& node = tree_.nodes()[static_cast<size_t>(stack_.back())];
      stack_.pop_back();
      if (gap2(box, node.lo, node.hi) > reach2) continue;
      if (!node.leaf()) {
        stack_.push_back(node.left);
        stack_.push_back(node.right);
        continue;
      }
      for (int32_t p = node.begin; p < node.end; ++p) {
        const float c[3] = {x[p], y[p], z[p]};
        if (gap2(box, c, c) > reach2) continue;
        cx_.push_back(c[0]);
        cy_.push_back(c[1]);
        cz_.push_back(c[2]);
        cindex_.push_back(static_cast<int32_t>(tree_.index()[p]));
      }
    }
  }

  // The row of one query: its first `width` candidates in (distance, index) order within the
  // radius, with the nearest (the point itself, or a coincident point of lower index) first.
  // `bound2` (>= the query's k-th squared distance) and `likely2` (a probable one) only thin
  // the candidates ranked: the likely bound is used when at least k candidates fall below it,
  // which proves that the k nearest do.
  void select(float qx, float qy, float qz, int64_t query, double bound2, double likely2, NeighbourTable& table) {
    const size_t n = cindex_.size();
    d2_.resize(n);
    kept_.resize(n);
    for (size_t c = 0; c < n; ++c) d2_[c] = squared_distance3(cx_[c], cy_[c], cz_[c], qx, qy, qz);  // vectorised
    const double certain = std::min(radius_ * radius_, std::nextafter(bound2, std::numeric_limits<double>::infinity()));
    const double likely = std::min(certain, likely2);
    size_t m = keep_below(likely);
    if (static_cast<int64_t>(m) < width_ && likely < certain) m = keep_below(certain);
    if (m > static_cast<size_t>(width_)) drop_farthest(m - static_cast<size_t>(width_), m);
    const size_t count = std::min(m, static_cast<size_t>(width_));
    XMODAL_CHECK(count > 0, "fpfh neighbours: internal error, the point itself is not a candidate");
    // The nearest first (distance 0: the query itself, or a coincident point of lower index).
    size_t first = 0;
    for (size_t j = 1; j < count; ++j)
      if (before(kept_[j], kept_[first])) first = j;
    std::swap(kept_[0], kept_[first]);
    int32_t* row = table.rows.data() + query * table.width;
    for (size_t j = 0; j < count; ++j) row[j] = cindex_[static_cast<size_t>(kept_[j])];
    table.count[static_cast<size_t>(query)] = static_cast<int32_t>(count);
  }

  // Branch-free compaction into kept_ of the candidates with d2 < limit; returns their number.
  size_t keep_below(double limit) {
    size_t m = 0;
    for (size_t c = 0; c < d2_.size(); ++c) {
      kept_[m] = static_cast<int32_t>(c);
      m += d2_[c] < limit;
    }
    return m;
  }

  // (distance, index) order of two candidates.
  bool before(int32_t a, int32_t b) const {
    const size_t i = static_cast<size_t>(a), j = static_cast<size_t>(b);
    return d2_[i] < d2_[j] || (d2_[i] == d2_[j] && cindex_[i] < cindex_[j]);
  }

  // Moves the `surplus` last candidates of kept_[0..m) in (distance, index) order to its end.
  void drop_farthest(size_t surplus, size_t m) {
    const auto order = [this](int32_t a, int32_t b) { return before(a, b); };
    if (surplus > kMaxSurplus) {
      std::nth_element(kept_.begin(), kept_.begin() + static_cast<std::ptrdiff_t>(m - surplus),
                       kept_.begin() + static_cast<std::ptrdiff_t>(m), order);
      return;
    }
    // One pass keeping the `surplus` farthest seen so far in farthest_ (ascending): after the
    // first few, a candidate rarely beats the nearest of them, so the branch predicts well.
    farthest_.assign(kept_.begin(), kept_.begin() + static_cast<std::ptrdiff_t>(surplus));
    std::sort(farthest_.begin(), farthest_.end(), order);
    for (size_t j = surplus; j < m; ++j) {
      const int32_t c = kept_[j];
      if (!before(farthest_[0], c)) continue;
      size_t slot = 0;
      while (slot + 1 < surplus && before(farthest_[slot + 1], c)) {
        farthest_[slot] = farthest_[slot + 1];
        ++slot;
      }
      farthest_[slot] = c;
    }
    // Keep the others, in any order.
    const int32_t nearest_dropped = farthest_[0];
    size_t kept = 0;
    for (size_t j = 0; j < m; ++j)
      if (before(kept_[j], nearest_dropped)) kept_[kept++] = kept_[j];
  }

  const PointTree& tree_;
  int64_t width_;
  double radius_;
  double guess_;  // r0 of the previous leaf this thread searched (leaves come in tree order)
  std::vector<float> cx_, cy_, cz_;
  std::vector<int32_t> cindex_, kept_, farthest_, stack_;
  std::vector<double> d2_, anchor_d2_;
};

}  // namespace

void check_fpfh_arguments(int64_t num_points, Neighbourhood neighbourhood, const char* op) {
  XMODAL_CHECK(num_points >= 0 && num_points < (int64_t{1} << 31), op,
               ": points must hold fewer than 2^31 points; got N=", num_points);
  XMODAL_CHECK(neighbourhood.max_nn >= 1, op, ": max_nn must be >= 1; got ", neighbourhood.max_nn);
  XMODAL_CHECK(neighbourhood.radius > 0.0, op, ": radius must be > 0 (+inf for plain kNN); got ",
               neighbourhood.radius);
}

NeighbourTable find_neighbourhoods(const float* points, int64_t num_points, Neighbourhood neighbourhood) {
  NeighbourTable table;
  if (num_points == 0) return table;
  table.width = std::min(neighbourhood.max_nn, num_points);
  table.rows.resize(static_cast<size_t>(num_points * table.width));
  table.count.resize(static_cast<size_t>(num_points));
  PointTree tree;
  tree.build(points, num_points, nullptr, kLeafSize);
  std::vector<int32_t> leaves;
  for (size_t id = 0; id < tree.nodes().size(); ++id)
    if (tree.nodes()[id].leaf()) leaves.push_back(static_cast<int32_t>(id));
  // First guess of r0: the radius holding k of N points spread over the root box's largest
  // face (or along its longest side, for clouds on a line).
  const PointTree::Node& root = tree.nodes()[0];
  double extent[3];
  for (int d = 0; d < 3; ++d) extent[d] = static_cast<double>(root.hi[d]) - root.lo[d];
  std::sort(extent, extent + 3);
  const double share = static_cast<double>(table.width) / static_cast<double>(num_points);
  const double first_guess = std::max(std::sqrt(extent[1] * extent[2] * share), extent[2] * share);
  ParallelErrors errors;
#pragma omp parallel
  {
    LeafSearch search(tree, table.width, neighbourhood.radius, first_guess);
#pragma omp for schedule(dynamic, 8)
    for (size_t l = 0; l < leaves.size(); ++l)
      errors.run([&] { search.run(tree.nodes()[static_cast<size_t>(leaves[l])], table); });
  }
  errors.rethrow();
  return table;
}

}  // namespace xmodal
