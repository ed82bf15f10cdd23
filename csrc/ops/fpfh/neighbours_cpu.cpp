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
#include <utility>
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
constexpr double kLikelyWidening = 1.02;
// Largest number of surplus candidates dropped one by one (beyond it: std::nth_element).
constexpr size_t kMaxSurplus = 24;
constexpr int kRings = 16;

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

// One neighbourhood being searched: its table and its running guess of r0.
struct Target {
  int64_t width;
  double radius;
  NeighbourTable* table;
  double guess;  // r0 of the previous leaf this thread searched (leaves come in tree order)
  double r0 = 0.0;
};

class LeafSearch {
 public:
  LeafSearch(const PointTree& tree, std::vector<Target> targets) : tree_(tree), targets_(std::move(targets)) {}

  // Fills the rows of every point in `leaf`, in every table.
  void run(const PointTree::Node& leaf) {
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
    gather_around(box, x[anchor], y[anchor], z[anchor], spread);
    sort_into_rings();
    for (int32_t pos = leaf.begin; pos < leaf.end; ++pos) {
      qx_ = x[pos];
      qy_ = y[pos];
      qz_ = z[pos];
      computed_ = 0;
      const double offset = distance(x, y, z, pos, anchor);
      for (Target& target : targets_) {
        const double bound = (offset + target.r0) * kWidening;
        const double likely = target.r0 * kLikelyWidening;
        select(target, tree_.index()[pos], offset, bound * bound, likely * likely);
      }
    }
  }

 private:
  // Gathers the candidates of the leaf and sets every target's r0 (module comment): the reach
  // spread + r grows from the guesses until, for every target, the anchor's ball of radius r
  // (which that reach covers entirely) holds its k candidates, or r covers its whole radius.
  void gather_around(const Box& box, float ax, float ay, float az, double spread) {
    double r = 0.0;
    for (const Target& target : targets_) r = std::max(r, target.guess * 1.25);
    for (;;) {
      reach_ = (spread + std::max(r, 1e-30)) * kWidening;
      gather(box, reach_);
      anchor_d2_.resize(cindex_.size());
      for (size_t c = 0; c < cindex_.size(); ++c) anchor_d2_[c] = squared_distance3(cx_[c], cy_[c], cz_[c], ax, ay, az);
      bool all_found = true;
      for (Target& target : targets_) all_found &= find_r0(target, r);
      if (all_found) break;
      // Every point is a candidate once the reach exceeds the cloud's extent: k <= N of them
      // are then in the anchor's ball, so the loop ends.
      r = std::max(2.0 * r, 1e-30);
    }
    for (Target& target : targets_)
      if (target.r0 > 0.0) target.guess = target.r0;
  }

  // r0 of one target from the anchor's distances, if the ball of radius r decides it.
  bool find_r0(Target& target, double r) {
    const double covered = std::min(r, target.radius);
    within_.clear();
    for (const double d2 : anchor_d2_)
      if (d2 <= covered * covered && d2 < target.radius * target.radius) within_.push_back(d2);
    if (static_cast<int64_t>(within_.size()) >= target.width) {
      std::nth_element(within_.begin(), within_.begin() + (target.width - 1), within_.end());
      target.r0 = std::sqrt(within_[static_cast<size_t>(target.width - 1)]);
      return true;
    }
    target.r0 = target.radius;  // fewer than k points within the radius of the anchor...
    return r >= target.radius;  // ...which is decided once the ball covers the radius
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

  // Orders the candidates by distance to the anchor in kRings rings of equal width (a counting
  // sort), so that a query only ranks the inner rings that can hold points close enough.
  void sort_into_rings() {
    const size_t n = cindex_.size();
    ring_width_ = reach_ / kRings;
    ring_.resize(n);
    std::fill(ring_end_, ring_end_ + kRings, size_t{0});
    for (size_t c = 0; c < n; ++c) {
      const double ring = std::sqrt(anchor_d2_[c]) / ring_width_;  // NaN or inf for a zero width: last ring
      ring_[c] = ring < kRings - 1 ? static_cast<int32_t>(ring) : kRings - 1;
      ++ring_end_[ring_[c]];
    }
    size_t end = 0;
    for (int r = 0; r < kRings; ++r) {
      end += ring_end_[r];
      ring_end_[r] = end;
    }
    size_t next[kRings];
    for (int r = 0; r < kRings; ++r) next[r] = r == 0 ? 0 : ring_end_[r - 1];
    sx_.resize(n);
    sy_.resize(n);
    sz_.resize(n);
    sindex_.resize(n);
    for (size_t c = 0; c < n; ++c) {
      const size_t slot = next[ring_[c]]++;
      sx_[slot] = cx_[c];
      sy_[slot] = cy_[c];
      sz_[slot] = cz_[c];
      sindex_[slot] = cindex_[c];
    }
    cx_.swap(sx_);
    cy_.swap(sy_);
    cz_.swap(sz_);
    cindex_.swap(sindex_);
    d2_.resize(n);
    kept_.resize(n);
  }

  // Number of leading (ring-sorted) candidates that holds every candidate within `reach` of a
  // query at distance `offset` from the anchor (triangle inequality, widened against rounding).
  size_t prefix_within(double reach, double offset) const {
    const double ring = (reach + offset) * kWidening / ring_width_;
    return ring_end_[ring < kRings - 1 ? static_cast<int>(ring) : kRings - 1];
  }

  // Squared distances from the current query to the first `prefix` candidates, computed once.
  void compute_up_to(size_t prefix) {
    for (size_t c = computed_; c < prefix; ++c) d2_[c] = squared_distance3(cx_[c], cy_[c], cz_[c], qx_, qy_, qz_);
    computed_ = std::max(computed_, prefix);
  }

  // The row of one query (its squared distances to the candidates in d2_): its first `width`
  // candidates in (distance, index) order within the radius, with the nearest (the point
  // itself, or a coincident point of lower index) first. `bound2` (>= the query's k-th squared
  // distance) and `likely2` (a probable one) only thin the candidates ranked: the likely bound
  // is used when at least k candidates fall below it, which proves that the k nearest do.
  void select(const Target& target, int64_t query, double offset, double bound2, double likely2) {
    const size_t width = static_cast<size_t>(target.width);
    const double certain =
        std::min(target.radius * target.radius, std::nextafter(bound2, std::numeric_limits<double>::infinity()));
    const double likely = std::min(certain, likely2);
    size_t prefix = prefix_within(std::sqrt(likely), offset);
    compute_up_to(prefix);
    size_t m = keep_below(likely, prefix);
    if (m < width && likely < certain) {
      prefix = prefix_within(std::sqrt(certain), offset);
      compute_up_to(prefix);
      m = keep_below(certain, prefix);
    }
    if (m > width) drop_farthest(m - width, m);
    const size_t count = std::min(m, width);
    XMODAL_CHECK(count > 0, "fpfh neighbours: internal error, the point itself is not a candidate");
    // The row, with the nearest first: the lowest index at distance 0 (the query itself, unless
    // a coincident point has a lower index).
    NeighbourTable& table = *target.table;
    int32_t* row = table.rows.data() + query * table.width;
    size_t first = 0;
    int32_t first_index = std::numeric_limits<int32_t>::max();
    for (size_t j = 0; j < count; ++j) {
      const size_t c = static_cast<size_t>(kept_[j]);
      row[j] = cindex_[c];
      const bool better = (d2_[c] == 0.0) & (cindex_[c] < first_index);
      first = better ? j : first;
      first_index = better ? cindex_[c] : first_index;
    }
    std::swap(row[0], row[first]);
    table.count[static_cast<size_t>(query)] = static_cast<int32_t>(count);
  }

  // Branch-free compaction into kept_ of the first `prefix` candidates with d2 < limit; returns
  // their number.
  size_t keep_below(double limit, size_t prefix) {
    size_t m = 0;
    for (size_t c = 0; c < prefix; ++c) {
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

  // Removes from kept_[0..m) its `surplus` last candidates in (distance, index) order; the
  // others stay, in any order.
  void drop_farthest(size_t surplus, size_t m) {
    if (surplus > kMaxSurplus) {
      std::nth_element(kept_.begin(), kept_.begin() + static_cast<std::ptrdiff_t>(m - surplus),
                       kept_.begin() + static_cast<std::ptrdiff_t>(m),
                       [this](int32_t a, int32_t b) { return before(a, b); });
      return;
    }
    // The `surplus` farthest so far in farthest_ (unordered; `nearest` is the nearest of them),
    // seeded with the last candidates (the outer rings): a candidate of the inner rings rarely
    // beats it, so the branch below predicts well.
    farthest_.assign(kept_.begin() + static_cast<std::ptrdiff_t>(m - surplus),
                     kept_.begin() + static_cast<std::ptrdiff_t>(m));
    size_t nearest = 0;
    for (size_t f = 1; f < surplus; ++f)
      if (before(farthest_[f], farthest_[nearest])) nearest = f;
    double limit = d2_[static_cast<size_t>(farthest_[nearest])];
    int32_t limit_index = cindex_[static_cast<size_t>(farthest_[nearest])];
    for (size_t j = 0; j + surplus < m; ++j) {
      const int32_t c = kept_[j];
      const double d2 = d2_[static_cast<size_t>(c)];
      if (d2 < limit || (d2 == limit && cindex_[static_cast<size_t>(c)] < limit_index)) continue;
      farthest_[nearest] = c;
      for (size_t f = 0; f < surplus; ++f)
        if (before(farthest_[f], farthest_[nearest])) nearest = f;
      limit = d2_[static_cast<size_t>(farthest_[nearest])];
      limit_index = cindex_[static_cast<size_t>(farthest_[nearest])];
    }
    // Branch-free: keep what comes before the nearest dropped candidate.
    size_t kept = 0;
    for (size_t j = 0; j < m; ++j) {
      const size_t c = static_cast<size_t>(kept_[j]);
      kept_[kept] = kept_[j];
      kept += (d2_[c] < limit) | ((d2_[c] == limit) & (cindex_[c] < limit_index));
    }
  }

  const PointTree& tree_;
  std::vector<Target> targets_;
  std::vector<float> cx_, cy_, cz_, sx_, sy_, sz_;
  std::vector<int32_t> cindex_, sindex_, ring_, kept_, farthest_, stack_;
  std::vector<double> d2_, anchor_d2_, within_;
  double reach_ = 0.0, ring_width_ = 0.0;
  size_t ring_end_[kRings];
  float qx_ = 0, qy_ = 0, qz_ = 0;  // the current query
  size_t computed_ = 0;             // candidates whose d2_ is computed for it
};

}  // namespace

void check_fpfh_arguments(int64_t num_points, Neighbourhood neighbourhood, const char* op) {
  XMODAL_CHECK(num_points >= 0 && num_points < (int64_t{1} << 31), op,
               ": points must hold fewer than 2^31 points; got N=", num_points);
  XMODAL_CHECK(neighbourhood.max_nn >= 1, op, ": max_nn must be >= 1; got ", neighbourhood.max_nn);
  XMODAL_CHECK(neighbourhood.radius > 0.0, op, ": radius must be > 0 (+inf for plain kNN); got ", neighbourhood.radius);
}

std::vector<NeighbourTable> find_neighbourhoods(const float* points, int64_t num_points,
                                                const std::vector<Neighbourhood>& neighbourhoods) {
  std::vector<NeighbourTable> tables(neighbourhoods.size());
  if (num_points == 0) return tables;
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
  std::vector<Target> targets;
  for (size_t t = 0; t < neighbourhoods.size(); ++t) {
    NeighbourTable& table = tables[t];
    table.width = std::min(neighbourhoods[t].max_nn, num_points);
    table.rows.resize(static_cast<size_t>(num_points * table.width));
    table.count.resize(static_cast<size_t>(num_points));
    const double share = static_cast<double>(table.width) / static_cast<double>(num_points);
    const double guess = std::max(std::sqrt(extent[1] * extent[2] * share), extent[2] * share);
    targets.push_back({table.width, neighbourhoods[t].radius, &table, guess});
  }
  ParallelErrors errors;
#pragma omp parallel
  {
    LeafSearch search(tree, targets);
#pragma omp for schedule(dynamic, 8)
    for (size_t l = 0; l < leaves.size(); ++l)
      errors.run([&] { search.run(tree.nodes()[static_cast<size_t>(leaves[l])]); });
  }
  errors.rethrow();
  return tables;
}

}  // namespace xmodal
