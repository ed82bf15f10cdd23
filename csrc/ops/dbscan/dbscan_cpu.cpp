#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/parallel.h"
#include "ops/dbscan/dbscan.h"

namespace xmodal {
namespace {

constexpr int kReach = 2;         // with cells of side eps/sqrt(3), neighbours are <= 2 cells away
constexpr double kShrink = 1e-8;  // keeps every same-cell pair strictly inside eps despite rounding
constexpr int kDigitBits = 11;    // radix-sort digit
constexpr int64_t kNoLabel = std::numeric_limits<int64_t>::max();
// Below this many points the whole clustering takes a few milliseconds on one core, less than
// what waking (spin-waiting) threads for its eight parallel loops costs on a busy machine.
constexpr int64_t kParallelMinPoints = 262144;

struct Box {
  double lo[3], hi[3];
  void reset() {
    for (int k = 0; k < 3; ++k) {
      lo[k] = std::numeric_limits<double>::infinity();
      hi[k] = -std::numeric_limits<double>::infinity();
    }
  }
  void add(const double p[3]) {
    for (int k = 0; k < 3; ++k) {
      lo[k] = std::min(lo[k], p[k]);
      hi[k] = std::max(hi[k], p[k]);
    }
  }
  bool empty() const { return lo[0] > hi[0]; }
};

inline double gap(double lo_a, double hi_a, double lo_b, double hi_b) {
  return std::max({0.0, lo_b - hi_a, lo_a - hi_b});
}

inline double box_distance2(const Box& a, const Box& b) {
  double s = 0.0;
  for (int k = 0; k < 3; ++k) {
    const double g = gap(a.lo[k], a.hi[k], b.lo[k], b.hi[k]);
    s += g * g;
  }
  return s;
}

inline double point_box_distance2(const double p[3], const Box& b) {
  double s = 0.0;
  for (int k = 0; k < 3; ++k) {
    const double g = gap(p[k], p[k], b.lo[k], b.hi[k]);
    s += g * g;
  }
  return s;
}

inline double distance2(const double* a, const double* b) {
  const double dx = a[0] - b[0], dy = a[1] - b[1], dz = a[2] - b[2];
  return dx * dx + dy * dy + dz * dz;
}

// Points sorted by cell, cells addressed by a hash of their packed integer coordinates.
class Grid {
 public:
  Grid(const float* points, int64_t n, double eps, bool parallel) : n_(n) {
    double lo[3], hi[3];
    for (int k = 0; k < 3; ++k) lo[k] = hi[k] = points[k];
    for (int64_t i = 1; i < n; ++i)
      for (int k = 0; k < 3; ++k) {
        lo[k] = std::min(lo[k], static_cast<double>(points[3 * i + k]));
        hi[k] = std::max(hi[k], static_cast<double>(points[3 * i + k]));
      }
    const double inv_side = std::sqrt(3.0) / (eps * (1.0 - kShrink));
    int total_bits = 0;
    for (int k = 0; k < 3; ++k) {
      const double span = std::floor((hi[k] - lo[k]) * inv_side);
      XMODAL_CHECK(span < 0x1p40, "eps=", eps, " is too small for the extent of the points (", hi[k] - lo[k],
                   " along axis ", k, "): the voxel grid would need more than 2^40 cells per axis");
      max_cell_[k] = static_cast<int64_t>(span);
      bits_[k] = 0;
      while ((int64_t{1} << bits_[k]) <= max_cell_[k]) ++bits_[k];
      total_bits += bits_[k];
    }
    XMODAL_CHECK(total_bits <= 63, "eps=", eps, " is too small for the extent of the points: the voxel grid ", "needs ",
                 total_bits, " bits of cell coordinates (at most 63)");

    std::vector<uint64_t> keys(static_cast<size_t>(n));
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t i = 0; i < n; ++i) {
      int64_t c[3];
      for (int k = 0; k < 3; ++k) {
        c[k] = static_cast<int64_t>(std::floor((static_cast<double>(points[3 * i + k]) - lo[k]) * inv_side));
        c[k] = std::min(std::max<int64_t>(c[k], 0), max_cell_[k]);
      }
      keys[static_cast<size_t>(i)] = pack(c);
    }
    order_.resize(static_cast<size_t>(n));
    std::iota(order_.begin(), order_.end(), int64_t{0});
    radix_sort(keys, order_, total_bits);

    xyz_.resize(static_cast<size_t>(3 * n));
    for (int64_t s = 0; s < n; ++s)
      for (int k = 0; k < 3; ++k) xyz_[3 * s + k] = points[3 * order_[s] + k];

    for (int64_t s = 0; s < n; ++s) {
      if (s == 0 || keys[s] != keys[s - 1]) {
        begin_.push_back(s);
        cell_key_.push_back(keys[s]);
      }
    }
    begin_.push_back(n);
    XMODAL_CHECK(num_cells() < std::numeric_limits<int32_t>::max(), "dbscan: too many occupied cells");
    build_table();
  }

  int64_t num_cells() const { return static_cast<int64_t>(cell_key_.size()); }
  int64_t begin(int64_t c) const { return begin_[c]; }
  int64_t end(int64_t c) const { return begin_[c + 1]; }
  const double* point(int64_t s) const { return &xyz_[3 * s]; }
  int64_t original(int64_t s) const { return order_[s]; }

  // Calls f(cell) for every occupied cell within kReach cells of `c` per axis, except c.
  template <typename F>
  void for_each_near_cell(int64_t c, F&& f) const {
    int64_t base[3];
    unpack(cell_key_[c], base);
    for (int64_t dx = -kReach; dx <= kReach; ++dx)
      for (int64_t dy = -kReach; dy <= kReach; ++dy)
        for (int64_t dz = -kReach; dz <= kReach; ++dz) {
          if (dx == 0 && dy == 0 && dz == 0) continue;
          const int64_t q[3] = {base[0] + dx, base[1] + dy, base[2] + dz};
          if (q[0] < 0 || q[1] < 0 || q[2] < 0 || q[0] > max_cell_[0] || q[1] > max_cell_[1] || q[2] > max_cell_[2])
            continue;
          const int64_t other = find(pack(q));
          if (other >= 0) f(other);
        }
  }

 private:
  uint64_t pack(const int64_t c[3]) const {
    return (static_cast<uint64_t>(c[0]) << (bits_[1] + bits_[2])) | (static_cast<uint64_t>(c[1]) << bits_[2]) |
           static_cast<uint64_t>(c[2]);
  }
  void unpack(uint64_t key, int64_t c[3]) const {
    c[2] = static_cast<int64_t>(key & ((uint64_t{1} << bits_[2]) - 1));
    c[1] = static_cast<int64_t>((key >> bits_[2]) & ((uint64_t{1} << bits_[1]) - 1));
    c[0] = static_cast<int64_t>(key >> (bits_[1] + bits_[2]));
  }

  static uint64_t hash(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  void build_table() {
    size_t capacity = 16;
    while (capacity < 2 * cell_key_.size()) capacity *= 2;
    mask_ = capacity - 1;
    table_key_.assign(capacity, 0);
    table_cell_.assign(capacity, -1);
    for (int64_t c = 0; c < num_cells(); ++c) {
      size_t slot = hash(cell_key_[c]) & mask_;
      while (table_cell_[slot] >= 0) slot = (slot + 1) & mask_;
      table_key_[slot] = cell_key_[c];
      table_cell_[slot] = c;
    }
  }

  int64_t find(uint64_t key) const {
    for (size_t slot = hash(key) & mask_;; slot = (slot + 1) & mask_) {
      if (table_cell_[slot] < 0) return -1;
      if (table_key_[slot] == key) return table_cell_[slot];
    }
  }

  // LSD radix sort of (key, index) pairs: stable, so equal keys keep ascending point order.
  static void radix_sort(std::vector<uint64_t>& keys, std::vector<int64_t>& index, int total_bits) {
    const size_t n = keys.size();
    std::vector<uint64_t> keys_tmp(n);
    std::vector<int64_t> index_tmp(n);
    std::vector<size_t> count(size_t{1} << kDigitBits);
    for (int shift = 0; shift < total_bits; shift += kDigitBits) {
      std::fill(count.begin(), count.end(), 0);
      const uint64_t digit_mask = (uint64_t{1} << kDigitBits) - 1;
      for (size_t i = 0; i < n; ++i) ++count[(keys[i] >> shift) & digit_mask];
      size_t sum = 0;
      for (size_t& c : count) {
        const size_t here = c;
        c = sum;
        sum += here;
      }
      for (size_t i = 0; i < n; ++i) {
        const size_t to = count[(keys[i] >> shift) & digit_mask]++;
        keys_tmp[to] = keys[i];
        index_tmp[to] = index[i];
      }
      keys.swap(keys_tmp);
      index.swap(index_tmp);
    }
  }

  int64_t n_;
  int64_t max_cell_[3];
  int bits_[3];
  std::vector<int64_t> order_;
  std::vector<double> xyz_;
  std::vector<int64_t> begin_;
  std::vector<uint64_t> cell_key_;
  size_t mask_ = 0;
  std::vector<uint64_t> table_key_;
  std::vector<int64_t> table_cell_;
};

// Union-find over cells; the smaller index becomes the root, so the forest does not depend on
// the order in which edges arrive.
class DisjointSets {
 public:
  explicit DisjointSets(int64_t n) : parent_(static_cast<size_t>(n)) {
    std::iota(parent_.begin(), parent_.end(), int64_t{0});
  }
  int64_t find(int64_t x) {
    while (parent_[x] != x) {
      parent_[x] = parent_[parent_[x]];
      x = parent_[x];
    }
    return x;
  }
  void unite(int64_t a, int64_t b) {
    a = find(a);
    b = find(b);
    if (a == b) return;
    if (a < b) std::swap(a, b);
    parent_[a] = b;
  }

 private:
  std::vector<int64_t> parent_;
};

}  // namespace

void dbscan_cpu(const float* points, int64_t num_points, double eps, int64_t min_points, int64_t* labels) {
  XMODAL_CHECK(eps > 0 && std::isfinite(eps), "eps must be a positive number; got ", eps);
  XMODAL_CHECK(min_points >= 1, "min_points must be >= 1; got ", min_points);
  if (num_points == 0) return;
  const double eps2 = eps * eps;
  const bool parallel = num_points >= kParallelMinPoints;
  const Grid grid(points, num_points, eps, parallel);
  const int64_t cells = grid.num_cells();
  ParallelErrors errors;

  // Cell bounding boxes and the near cells whose boxes come within eps (CSR, two passes).
  std::vector<Box> box(static_cast<size_t>(cells));
  std::vector<int64_t> adj_begin(static_cast<size_t>(cells) + 1, 0);
#pragma omp parallel for schedule(dynamic, 64) if (parallel)
  for (int64_t c = 0; c < cells; ++c) {
    box[c].reset();
    for (int64_t s = grid.begin(c); s < grid.end(c); ++s) box[c].add(grid.point(s));
  }
#pragma omp parallel for schedule(dynamic, 64) if (parallel)
  for (int64_t c = 0; c < cells; ++c) {
    errors.run([&] {
      int64_t count = 0;
      grid.for_each_near_cell(c, [&](int64_t o) { count += box_distance2(box[c], box[o]) <= eps2; });
      adj_begin[c + 1] = count;
    });
  }
  errors.rethrow();
  std::partial_sum(adj_begin.begin(), adj_begin.end(), adj_begin.begin());
  std::vector<int32_t> adj(static_cast<size_t>(adj_begin[cells]));
#pragma omp parallel for schedule(dynamic, 64) if (parallel)
  for (int64_t c = 0; c < cells; ++c) {
    errors.run([&] {
      int64_t at = adj_begin[c];
      grid.for_each_near_cell(c, [&](int64_t o) {
        if (box_distance2(box[c], box[o]) <= eps2) adj[at++] = static_cast<int32_t>(o);
      });
    });
  }
  errors.rethrow();

  // Core points. A cell's diagonal is below eps, so its own points all count as neighbours.
  std::vector<uint8_t> core(static_cast<size_t>(num_points), 0);
#pragma omp parallel for schedule(dynamic, 16) if (parallel)
  for (int64_t c = 0; c < cells; ++c) {
    errors.run([&] {
      const int64_t own = grid.end(c) - grid.begin(c);
      for (int64_t s = grid.begin(c); s < grid.end(c); ++s) {
        int64_t count = own;
        const double* p = grid.point(s);
        for (int64_t a = adj_begin[c]; a < adj_begin[c + 1] && count < min_points; ++a) {
          const int64_t o = adj[a];
          if (point_box_distance2(p, box[o]) > eps2) continue;
          for (int64_t t = grid.begin(o); t < grid.end(o) && count < min_points; ++t)
            count += distance2(p, grid.point(t)) <= eps2;
        }
        core[s] = count >= min_points;
      }
    });
  }
  errors.rethrow();

  // Boxes of the core points only: the join and border tests look at core points alone.
  std::vector<Box> core_box(static_cast<size_t>(cells));
#pragma omp parallel for schedule(dynamic, 64) if (parallel)
  for (int64_t c = 0; c < cells; ++c) {
    core_box[c].reset();
    for (int64_t s = grid.begin(c); s < grid.end(c); ++s)
      if (core[s]) core_box[c].add(grid.point(s));
  }

  auto cores_within = [&](const double* p, int64_t b_cell) {
    for (int64_t t = grid.begin(b_cell); t < grid.end(b_cell); ++t)
      if (core[t] && distance2(p, grid.point(t)) <= eps2) return true;
    return false;
  };

  // Cells whose core points touch: one edge per pair (a < b), joined afterwards.
  std::vector<std::vector<std::pair<int64_t, int64_t>>> edges(static_cast<size_t>(omp_get_max_threads()));
#pragma omp parallel if (parallel)
  {
    auto& mine = edges[static_cast<size_t>(omp_get_thread_num())];
#pragma omp for schedule(dynamic, 16)
    for (int64_t c = 0; c < cells; ++c) {
      errors.run([&] {
        if (core_box[c].empty()) return;
        for (int64_t a = adj_begin[c]; a < adj_begin[c + 1]; ++a) {
          const int64_t o = adj[a];
          if (o < c || core_box[o].empty() || box_distance2(core_box[c], core_box[o]) > eps2) continue;
          for (int64_t s = grid.begin(c); s < grid.end(c); ++s) {
            if (!core[s] || point_box_distance2(grid.point(s), core_box[o]) > eps2) continue;
            if (cores_within(grid.point(s), o)) {
              mine.emplace_back(c, o);
              break;
            }
          }
        }
      });
    }
  }
  errors.rethrow();
  DisjointSets sets(cells);
  for (const auto& list : edges)
    for (const auto& e : list) sets.unite(e.first, e.second);

  // Cluster ids in the order of each cluster's lowest-index core point.
  std::vector<int64_t> first_core(static_cast<size_t>(cells), kNoLabel);
  for (int64_t c = 0; c < cells; ++c) {
    if (core_box[c].empty()) continue;
    int64_t lowest = kNoLabel;
    for (int64_t s = grid.begin(c); s < grid.end(c); ++s)
      if (core[s]) lowest = std::min(lowest, grid.original(s));
    const int64_t root = sets.find(c);
    first_core[root] = std::min(first_core[root], lowest);
  }
  std::vector<std::pair<int64_t, int64_t>> roots;  // (lowest core index, root)
  for (int64_t c = 0; c < cells; ++c)
    if (first_core[c] != kNoLabel) roots.emplace_back(first_core[c], c);
  std::sort(roots.begin(), roots.end());
  std::vector<int64_t> root_label(static_cast<size_t>(cells), kNoLabel);
  for (size_t r = 0; r < roots.size(); ++r) root_label[roots[r].second] = static_cast<int64_t>(r);
  std::vector<int64_t> cell_label(static_cast<size_t>(cells), kNoLabel);
  for (int64_t c = 0; c < cells; ++c)
    if (!core_box[c].empty()) cell_label[c] = root_label[sets.find(c)];

  // Labels; a border point takes the lowest id among the clusters of its core neighbours.
#pragma omp parallel for schedule(dynamic, 16) if (parallel)
  for (int64_t c = 0; c < cells; ++c) {
    errors.run([&] {
      for (int64_t s = grid.begin(c); s < grid.end(c); ++s) {
        int64_t label = cell_label[c];  // same-cell core points are always within eps
        if (!core[s]) {
          const double* p = grid.point(s);
          for (int64_t a = adj_begin[c]; a < adj_begin[c + 1]; ++a) {
            const int64_t o = adj[a];
            if (cell_label[o] >= label || point_box_distance2(p, core_box[o]) > eps2) continue;
            if (cores_within(p, o)) label = cell_label[o];
          }
        }
        labels[grid.original(s)] = label == kNoLabel ? -1 : label;
      }
    });
  }
  errors.rethrow();
}

}  // namespace xmodal
