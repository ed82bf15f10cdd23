#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/check.h"
#include "common/point_math.h"
#include "common/point_range.h"
#include "common/point_tree.h"
#include "ops/fps/fps.h"

namespace xmodal {
namespace {

constexpr double kSelected = -1.0;       // running distance of a selected point (exact FPS)
constexpr double kPointnet2Init = 1e10;  // pointnet2_ops' initial running distance
constexpr double kPointnet2MinNorm = 1e-3;
constexpr int kLeafSize = 128;

struct Best {
  double value;
  uint64_t key;  // tie key of the point; it identifies the point (BucketFps::farthest)
};

inline bool beats(double value, uint64_t key, const Best& b) {
  return value > b.value || (value == b.value && key < b.key);
}

inline const Best& better_of(const Best& a, const Best& b) { return beats(b.value, b.key, a) ? b : a; }

// Bucket FPS state: the tree, every point's running distance (by tree position) and every
// node's best point (largest running distance, smallest tie key).
class BucketFps {
 public:
  BucketFps(const float* points, int64_t num_points, bool reference)
      : points_(points),
        reference_(reference),
        log2_threads_(reference ? pointnet2_log2_threads(num_points) : 0),
        pos_of_(static_cast<size_t>(num_points), -1) {
    const int log2_threads = log2_threads_;
    auto tie_key = [reference, log2_threads](int64_t row) {
      return reference ? pointnet2_tie_key(row, log2_threads) : static_cast<uint64_t>(row);
    };
    std::vector<int64_t> eligible;
    if (reference) {
      for (int64_t i = 0; i < num_points; ++i) {
        const float* p = points + 3 * i;
        if (squared_norm3(p[0], p[1], p[2]) > kPointnet2MinNorm) eligible.push_back(i);
      }
      tree_.build(points, static_cast<int64_t>(eligible.size()), eligible.data(), kLeafSize);
    } else {
      tree_.build(points, num_points, nullptr, kLeafSize);
    }
    const int64_t size = tree_.size();
    distance_.assign(static_cast<size_t>(size), reference ? kPointnet2Init : std::numeric_limits<double>::infinity());
    key_.resize(static_cast<size_t>(size));
    for (int64_t pos = 0; pos < size; ++pos) {
      const int64_t row = tree_.index()[pos];
      pos_of_[static_cast<size_t>(row)] = static_cast<int32_t>(pos);
      key_[static_cast<size_t>(pos)] = tie_key(row);
    }
    best_.resize(tree_.nodes().size());
    if (size > 0) init_best(0);
  }

  int64_t eligible() const { return tree_.size(); }

  // Applies a newly selected point: marks it (exact FPS) and lowers the running distances.
  void add_center(int64_t row) {
    const int32_t pos = pos_of_[static_cast<size_t>(row)];
    if (!reference_ && pos >= 0) distance_[static_cast<size_t>(pos)] = kSelected;
    const float* c = points_ + 3 * row;
    if (tree_.size() > 0) update(0, c[0], c[1], c[2], pos);
  }

  int64_t farthest() const {
    const uint64_t key = best_[0].key;
    if (!reference_) return static_cast<int64_t>(key);
    // Inverse of pointnet2_tie_key: the high bits hold the bit-reversed thread, the low bits k / T.
    const uint64_t reversed = key >> 40;
    uint64_t thread = 0;
    for (int b = 0; b < log2_threads_; ++b) thread |= ((reversed >> b) & 1u) << (log2_threads_ - 1 - b);
    return static_cast<int64_t>(((key & ((uint64_t{1} << 40) - 1)) << log2_threads_) | thread);
  }

 private:
  void leaf_best(int32_t id) {
    const PointTree::Node& node = tree_.nodes()[static_cast<size_t>(id)];
    Best b{-std::numeric_limits<double>::infinity(), std::numeric_limits<uint64_t>::max()};
    for (int32_t p = node.begin; p < node.end; ++p) {
      const double v = distance_[static_cast<size_t>(p)];
      if (beats(v, key_[static_cast<size_t>(p)], b)) b = {v, key_[static_cast<size_t>(p)]};
    }
    best_[static_cast<size_t>(id)] = b;
  }

  void init_best(int32_t id) {
    const PointTree::Node& node = tree_.nodes()[static_cast<size_t>(id)];
    if (node.leaf()) return leaf_best(id);
    init_best(node.left);
    init_best(node.right);
    best_[static_cast<size_t>(id)] =
        better_of(best_[static_cast<size_t>(node.left)], best_[static_cast<size_t>(node.right)]);
  }

  // Skipping a node whose lower bound is >= its largest running distance is exact: every
  // point's new distance min(old, d) equals old because d >= bound >= max >= old.
  void update(int32_t id, float cx, float cy, float cz, int32_t center_pos) {
    const PointTree::Node& node = tree_.nodes()[static_cast<size_t>(id)];
    const bool holds_center = center_pos >= node.begin && center_pos < node.end;
    if (!holds_center && tree_.lower_bound(node, cx, cy, cz) >= best_[static_cast<size_t>(id)].value) return;
    if (node.leaf()) {
      // A vectorised min/max pass, then the smallest tie key among the positions holding the
      // maximum.
      const float *x = tree_.x(), *y = tree_.y(), *z = tree_.z();
      double* dist = distance_.data();
      // (max and min reductions of non-NaN values are exact in any order.)
      double largest = -std::numeric_limits<double>::infinity();
#pragma omp simd reduction(max : largest)
      for (int32_t p = node.begin; p < node.end; ++p) {
        const double d = squared_distance3(x[p], y[p], z[p], cx, cy, cz);
        const double v = std::min(dist[p], d);
        dist[p] = v;
        largest = std::max(largest, v);
      }
      const uint64_t* key = key_.data();
      uint64_t smallest_key = std::numeric_limits<uint64_t>::max();
#pragma omp simd reduction(min : smallest_key)
      for (int32_t p = node.begin; p < node.end; ++p)
        smallest_key = std::min(smallest_key, dist[p] == largest ? key[p] : std::numeric_limits<uint64_t>::max());
      best_[static_cast<size_t>(id)] = {largest, smallest_key};
      return;
    }
    update(node.left, cx, cy, cz, center_pos);
    update(node.right, cx, cy, cz, center_pos);
    best_[static_cast<size_t>(id)] =
        better_of(best_[static_cast<size_t>(node.left)], best_[static_cast<size_t>(node.right)]);
  }

  const float* points_;
  bool reference_;
  int log2_threads_;
  PointTree tree_;
  std::vector<int32_t> pos_of_;
  std::vector<double> distance_;
  std::vector<uint64_t> key_;
  std::vector<Best> best_;
};

}  // namespace

int pointnet2_log2_threads(int64_t num_points) {
  // pointnet2_ops: pow_2 = int(log(n) / log(2.0)); threads = min(1 << pow_2, 512).
  const int pow_2 = static_cast<int>(std::log(static_cast<double>(num_points)) / std::log(2.0));
  return std::max(0, std::min(pow_2, 9));
}

void farthest_point_sample_cpu(const float* points, int64_t num_points, int64_t n, int64_t start, bool reference,
                               int64_t* idx) {
  XMODAL_CHECK(num_points >= 1, "points must hold at least one point; got N=", num_points);
  XMODAL_CHECK(num_points < (int64_t{1} << 31), "points: at most 2^31 - 1 points; got N=", num_points);
  XMODAL_CHECK(n >= 1 && n <= num_points, "n must be in [1, N=", num_points, "]; got ", n);
  XMODAL_CHECK(start >= 0 && start < num_points, "start must be in [0, N=", num_points, "); got ", start);
  XMODAL_CHECK(!reference || start == 0,
               "reference=True always starts at index 0 (as pointnet2_ops); got start=", start);
  check_point_range_cpu(points, num_points, "points");
  idx[0] = start;
  if (n == 1) return;
  BucketFps fps(points, num_points, reference);
  XMODAL_CHECK(fps.eligible() > 0,
               "points has no point with |p|^2 > 1e-3, which reference=True (pointnet2_ops) "
               "never selects; cannot select n=",
               n, " points");
  int64_t center = start;
  for (int64_t step = 1; step < n; ++step) {
    fps.add_center(center);
    center = fps.farthest();
    idx[step] = center;
  }
}

}  // namespace xmodal
