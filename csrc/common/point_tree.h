// A KD-tree over 3D float32 points with bucket leaves, the spatial index behind the CPU
// point-cloud kernels (bucket FPS, exact low-dimensional kNN, 3-NN interpolation).
//
// Points are reordered so every node owns a contiguous range of positions; coordinates are
// kept structure-of-arrays in that order (leaf scans vectorise) with each position's original
// index. Every node stores the exact bounding box of its points (float32 coordinates of the
// points themselves, so box_gap() bounds are exact lower bounds: common/point_math.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/check.h"
#include "common/point_math.h"

namespace xmodal {

class PointTree {
 public:
  struct Node {
    float lo[3], hi[3];
    int32_t begin, end;   // positions [begin, end)
    int32_t left, right;  // children; -1 for a leaf
    bool leaf() const { return left < 0; }
  };

  // Builds the tree over `count` points: all of `xyz` (N, 3) when `subset` is null, otherwise
  // the rows listed in `subset`. Splits the widest box axis at its midpoint (at the median when
  // the midpoint leaves one side empty) until at most `leaf_size` points remain.
  void build(const float* xyz, int64_t count, const int64_t* subset, int leaf_size) {
    // Rows are stored as int32: callers check N < 2^31.
    XMODAL_CHECK(count >= 0 && count < (int64_t{1} << 31), "point tree: too many points (", count, ")");
    XMODAL_CHECK(leaf_size >= 1, "point tree: leaf_size must be >= 1");
    std::vector<Item> items(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      const int64_t row = subset ? subset[i] : i;
      const float* p = xyz + row * 3;
      items[static_cast<size_t>(i)] = {{p[0], p[1], p[2]}, static_cast<int32_t>(row)};
    }
    nodes_.clear();
    nodes_.reserve(static_cast<size_t>(2 * (count / std::max(1, leaf_size / 2) + 1)));
    leaf_size_ = leaf_size;
    scratch_.resize(static_cast<size_t>(count));
    if (count > 0) build_node(items, 0, static_cast<int32_t>(count));
    std::vector<Item>().swap(scratch_);
    x_.resize(static_cast<size_t>(count));
    y_.resize(static_cast<size_t>(count));
    z_.resize(static_cast<size_t>(count));
    index_.resize(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      const Item& it = items[static_cast<size_t>(i)];
      x_[static_cast<size_t>(i)] = it.c[0];
      y_[static_cast<size_t>(i)] = it.c[1];
      z_[static_cast<size_t>(i)] = it.c[2];
      index_[static_cast<size_t>(i)] = it.row;
    }
  }

  int64_t size() const { return static_cast<int64_t>(index_.size()); }
  const std::vector<Node>& nodes() const { return nodes_; }
  const float* x() const { return x_.data(); }
  const float* y() const { return y_.data(); }
  const float* z() const { return z_.data(); }
  const int64_t* index() const { return index_.data(); }

  // Exact lower bound of squared_distance3(point, c) over the node's points.
  double lower_bound(const Node& node, float cx, float cy, float cz) const {
    const double gx = box_gap(node.lo[0], node.hi[0], cx);
    const double gy = box_gap(node.lo[1], node.hi[1], cy);
    const double gz = box_gap(node.lo[2], node.hi[2], cz);
    return (gx * gx + gy * gy) + gz * gz;
  }

 private:
  struct Item {
    float c[3];
    int32_t row;
  };

  int32_t build_node(std::vector<Item>& items, int32_t begin, int32_t end) {
    Node node;
    for (int d = 0; d < 3; ++d) {
      node.lo[d] = items[static_cast<size_t>(begin)].c[d];
      node.hi[d] = node.lo[d];
    }
    for (int32_t i = begin + 1; i < end; ++i) {
      for (int d = 0; d < 3; ++d) {
        node.lo[d] = std::min(node.lo[d], items[static_cast<size_t>(i)].c[d]);
        node.hi[d] = std::max(node.hi[d], items[static_cast<size_t>(i)].c[d]);
      }
    }
    node.begin = begin;
    node.end = end;
    node.left = node.right = -1;
    const int32_t id = static_cast<int32_t>(nodes_.size());
    nodes_.push_back(node);
    if (end - begin <= leaf_size_) return id;
    int axis = 0;
    for (int d = 1; d < 3; ++d)
      if (node.hi[d] - node.lo[d] > node.hi[axis] - node.lo[axis]) axis = d;
    if (node.hi[axis] == node.lo[axis]) return id;  // all points coincide: one (big) leaf
    // Midpoint splits: one partition pass per level (much cheaper than a median selection)
    // and cube-like cells on the uneven density of scanned surfaces.
    const float split = node.lo[axis] + (node.hi[axis] - node.lo[axis]) * 0.5f;
    int32_t mid = partition(items, begin, end, axis, split);
    if (mid == begin || mid == end) {
      mid = begin + (end - begin) / 2;
      std::nth_element(items.begin() + begin, items.begin() + mid, items.begin() + end,
                       [axis](const Item& a, const Item& b) { return a.c[axis] < b.c[axis]; });
    }
    const int32_t left = build_node(items, begin, mid);
    const int32_t right = build_node(items, mid, end);
    nodes_[static_cast<size_t>(id)].left = left;
    nodes_[static_cast<size_t>(id)].right = right;
    return id;
  }

  // Stable branch-free split: items below `split` are compacted in place, the others go to a
  // scratch buffer and follow them (random clouds would mispredict a branchy partition at
  // every other point). Returns the first position of the upper part.
  int32_t partition(std::vector<Item>& items, int32_t begin, int32_t end, int axis, float split) {
    int32_t lower = begin, upper = 0;
    for (int32_t i = begin; i < end; ++i) {
      const Item item = items[static_cast<size_t>(i)];
      const bool below = item.c[axis] < split;
      items[static_cast<size_t>(lower)] = item;
      scratch_[static_cast<size_t>(upper)] = item;
      lower += below;
      upper += !below;
    }
    std::copy(scratch_.begin(), scratch_.begin() + upper, items.begin() + lower);
    return lower;
  }

  std::vector<Node> nodes_;
  std::vector<Item> scratch_;
  std::vector<float> x_, y_, z_;
  std::vector<int64_t> index_;
  int leaf_size_ = 32;
};

}  // namespace xmodal
