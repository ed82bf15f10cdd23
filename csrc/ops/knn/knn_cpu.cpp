#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/blas.h"
#include "common/check.h"
#include "common/distance.h"
#include "common/half.h"
#include "common/parallel.h"
#include "ops/knn/knn.h"
#include "ops/knn/knn_tree.h"

namespace xmodal {
namespace {

constexpr double kUnitRoundoff = 5.9604644775390625e-08;  // 2^-24, float32
constexpr int64_t kLowDim = 4;                              // D <= 4: direct differences, no GEMM
constexpr int64_t kGemmQueryBlock = 256;
constexpr int64_t kGemmBankTile = 2048;
constexpr int64_t kLowDimQueryBlock = 64;
constexpr int64_t kLowDimBankTile = 4096;
constexpr int64_t kScanChunk = 16;

struct Candidate {
  float score;
  int64_t index;
};

inline bool ranks_before(const Candidate& a, const Candidate& b) {
  return a.score < b.score || (a.score == b.score && a.index < b.index);
}

// The candidates of one query. Everything whose screening score is within `band(s_k)` of the
// current k-th smallest score s_k is kept, where the band covers the float32 error of the
// score and the float32 rounding of the final distance; all other rows can never be in the
// exact top k, so they are rejected as the scan goes.
class CandidateList {
 public:
  // band(s) = abs_band + rel_band * max(0, s + offset)
  void reset(int64_t k, double abs_band, double rel_band, double offset) {
    items_.clear();
    k_ = k;
    abs_band_ = abs_band;
    rel_band_ = rel_band;
    offset_ = offset;
    capacity_ = static_cast<size_t>(std::max<int64_t>(2 * k, 64));
    limit_ = std::numeric_limits<float>::infinity();
  }

  float limit() const { return limit_; }

  void push(float score, int64_t index) {
    items_.push_back({score, index});
    if (items_.size() >= capacity_) prune();
  }

  void append(const std::vector<Candidate>& more) {
    for (const Candidate& c : more) {
      if (c.score <= limit_) push(c.score, c.index);
    }
  }

  // Drops everything outside the band of the current k-th score.
  void prune() {
    if (static_cast<int64_t>(items_.size()) < k_) return;
    std::nth_element(items_.begin(), items_.begin() + (k_ - 1), items_.end(), ranks_before);
    const double kth = items_[static_cast<size_t>(k_ - 1)].score;
    const double band = abs_band_ + rel_band_ * std::max(0.0, kth + offset_);
    // Round the limit up so the float comparison never excludes what the band includes.
    limit_ = std::nextafter(static_cast<float>(kth + band), std::numeric_limits<float>::infinity());
    auto outside = std::partition(items_.begin(), items_.end(),
                                  [this](const Candidate& c) { return c.score <= limit_; });
    items_.erase(outside, items_.end());
    // Many near-ties can legitimately stay; grow so pruning stays amortised O(1) per push.
    if (items_.size() * 2 > capacity_) capacity_ *= 2;
  }

  std::vector<Candidate>& items() { return items_; }

 private:
  std::vector<Candidate> items_;
  int64_t k_ = 1;
  double abs_band_ = 0, rel_band_ = 0, offset_ = 0;
  size_t capacity_ = 64;
  float limit_ = std::numeric_limits<float>::infinity();
};

// Fused top-k epilogue over one row of a score tile: a vectorisable min per chunk rejects
// almost every chunk once the list is warm; only chunks that can contribute are scanned.
void scan_scores(const float* scores, int64_t count, int64_t first_index, CandidateList& list) {
  float limit = list.limit();
  for (int64_t j0 = 0; j0 < count; j0 += kScanChunk) {
    const int64_t j1 = std::min(count, j0 + kScanChunk);
    float chunk_min = std::numeric_limits<float>::infinity();
    for (int64_t j = j0; j < j1; ++j) chunk_min = std::min(chunk_min, scores[j]);
    if (!(chunk_min <= limit)) continue;
    for (int64_t j = j0; j < j1; ++j) {
      if (scores[j] <= limit) {
        list.push(scores[j], first_index + j);
        limit = list.limit();
      }
    }
  }
}

class Bank {
 public:
  Bank(const void* data, BankType type, int64_t size, int64_t dim)
      : data_(data), type_(type), size_(size), dim_(dim) {}

  // Rows [first, first + count) as float32: a pointer into the bank, or converted into `scratch`.
  const float* rows(int64_t first, int64_t count, std::vector<float>& scratch) const {
    if (type_ == BankType::f32) return static_cast<const float*>(data_) + first * dim_;
    scratch.resize(static_cast<size_t>(count * dim_));
    half_to_float(static_cast<const uint16_t*>(data_) + first * dim_, scratch.data(), count * dim_);
    return scratch.data();
  }

  int64_t size() const { return size_; }
  int64_t dim() const { return dim_; }

 private:
  const void* data_;
  BankType type_;
  int64_t size_, dim_;
};

// Squared norms of all bank rows (float32 values, computed in float64) and their maximum norm.
std::vector<float> bank_squared_norms(const Bank& bank, double& max_norm) {
  std::vector<float> norms(static_cast<size_t>(bank.size()));
  double max_sq = 0.0;
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<float> scratch;
    double local_max = 0.0;
#pragma omp for schedule(static)
    for (int64_t t0 = 0; t0 < bank.size(); t0 += kGemmBankTile) errors.run([&] {
      const int64_t count = std::min(kGemmBankTile, bank.size() - t0);
      const float* rows = bank.rows(t0, count, scratch);
      for (int64_t r = 0; r < count; ++r) {
        double sum = 0.0;
        const float* row = rows + r * bank.dim();
#pragma omp simd reduction(+ : sum)
        for (int64_t d = 0; d < bank.dim(); ++d) sum += static_cast<double>(row[d]) * row[d];
        norms[static_cast<size_t>(t0 + r)] = static_cast<float>(sum);
        local_max = std::max(local_max, sum);
      }
    });
#pragma omp critical
    max_sq = std::max(max_sq, local_max);
  }
  errors.rethrow();
  max_norm = std::sqrt(max_sq);
  return norms;
}

struct WorkItem {
  int64_t query_begin, query_end, bank_begin, bank_end;
};

// Final pruning of a work item's lists; their candidates move to found[query * parts + part].
void hand_over(std::vector<CandidateList>& lists, const WorkItem& item, int64_t part, int64_t parts,
               std::vector<std::vector<Candidate>>& found) {
  for (int64_t r = 0; r < item.query_end - item.query_begin; ++r) {
    CandidateList& list = lists[static_cast<size_t>(r)];
    list.prune();
    found[static_cast<size_t>((item.query_begin + r) * parts + part)].swap(list.items());
  }
}

// Query blocks x bank parts; the bank is split only when there are too few query blocks to
// keep every thread busy (few queries against a large bank).
std::vector<WorkItem> plan_work(int64_t num_queries, int64_t bank_size, int64_t query_block,
                                int64_t bank_tile, int64_t& parts) {
  const int64_t threads = num_threads();
  // A multiple of the thread count, so that no thread is left with one block more than another.
  const int64_t rounds = (num_queries + threads * query_block - 1) / (threads * query_block);
  const int64_t query_blocks = std::min(num_queries, rounds * threads);
  parts = 1;
  if (query_blocks < threads) {
    const int64_t tiles = (bank_size + bank_tile - 1) / bank_tile;
    parts = std::max<int64_t>(1, std::min(tiles, (threads + query_blocks - 1) / query_blocks));
  }
  std::vector<WorkItem> items;
  for (int64_t b = 0; b < query_blocks; ++b) {
    int64_t q0, q1;
    chunk_range(num_queries, query_blocks, b, q0, q1);
    for (int64_t p = 0; p < parts; ++p) {
      int64_t n0, n1;
      chunk_range(bank_size, parts, p, n0, n1);
      items.push_back({q0, q1, n0, n1});
    }
  }
  return items;
}

// Screening with an sgemm tile: score = |b|^2 - 2 q.b (|q|^2 is constant per row).
// Error bound of that float32 score (Higham, dot product of length D):
//   |score - exact| <= 2 gamma_D |q| B + u B^2 + u (2 |q| B + B^2),  gamma_D = D u / (1 - D u)
// with B the largest bank norm; the band is twice that plus the relative rounding of the
// final float32 distance.
void screen_with_gemm(const float* queries, const Bank& bank, int64_t k,
                      const std::vector<WorkItem>& work, int64_t parts,
                      std::vector<std::vector<Candidate>>& found) {
  const int64_t dim = bank.dim();
  double max_norm = 0.0;
  const std::vector<float> norms = bank_squared_norms(bank, max_norm);
  const double u = kUnitRoundoff;
  const double gamma = dim * u / (1.0 - dim * u);

  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<float> tile_scores(static_cast<size_t>(kGemmQueryBlock * kGemmBankTile));
    std::vector<float> converted;
    std::vector<CandidateList> lists(static_cast<size_t>(kGemmQueryBlock));
#pragma omp for schedule(dynamic, 1)
    for (size_t w = 0; w < work.size(); ++w) errors.run([&] {
      const WorkItem& item = work[w];
      const int64_t rows = item.query_end - item.query_begin;
      for (int64_t r = 0; r < rows; ++r) {
        const float* q = queries + (item.query_begin + r) * dim;
        double q_sq = 0.0;
#pragma omp simd reduction(+ : q_sq)
        for (int64_t d = 0; d < dim; ++d) q_sq += static_cast<double>(q[d]) * q[d];
        const double qn = std::sqrt(q_sq), b = max_norm;
        const double err = 1.01 * (2.0 * gamma * qn * b + u * b * b + u * (2.0 * qn * b + b * b));
        lists[static_cast<size_t>(r)].reset(k, 2.0 * err + 1e-30, 16.0 * u, q_sq);
      }
      for (int64_t t0 = item.bank_begin; t0 < item.bank_end; t0 += kGemmBankTile) {
        const int64_t count = std::min(kGemmBankTile, item.bank_end - t0);
        const float* tile = bank.rows(t0, count, converted);
        blas::sgemm_nt(rows, count, dim, -2.0f, queries + item.query_begin * dim, dim, tile, dim,
                       0.0f, tile_scores.data(), count);
        for (int64_t r = 0; r < rows; ++r) {
          float* row_scores = tile_scores.data() + r * count;
          const float* tile_norms = norms.data() + t0;
          for (int64_t j = 0; j < count; ++j) row_scores[j] += tile_norms[j];
          scan_scores(row_scores, count, t0, lists[static_cast<size_t>(r)]);
        }
      }
      hand_over(lists, item, static_cast<int64_t>(w) % parts, parts, found);
    });
  }
  errors.rethrow();
}

// Screening for D <= 4 (point grouping): float32 squared differences over a tile stored
// structure-of-arrays so the inner loop vectorises. Relative error of a sum of D squared
// rounded differences: (2D + 4) u.
void screen_low_dim(const float* queries, const Bank& bank, int64_t k,
                    const std::vector<WorkItem>& work, int64_t parts,
                    std::vector<std::vector<Candidate>>& found) {
  const int64_t dim = bank.dim();
  const double u = kUnitRoundoff;
  const double rel_band = 1.01 * 2.0 * (2.0 * dim + 4.0) * u + 16.0 * u;

  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<float> soa(static_cast<size_t>(kLowDim * kLowDimBankTile));
    std::vector<float> scores(static_cast<size_t>(kLowDimBankTile));
    std::vector<float> converted;
    std::vector<CandidateList> lists(static_cast<size_t>(kLowDimQueryBlock));
#pragma omp for schedule(dynamic, 1)
    for (size_t w = 0; w < work.size(); ++w) errors.run([&] {
      const WorkItem& item = work[w];
      const int64_t rows = item.query_end - item.query_begin;
      for (int64_t r = 0; r < rows; ++r) lists[static_cast<size_t>(r)].reset(k, 1e-30, rel_band, 0.0);
      for (int64_t t0 = item.bank_begin; t0 < item.bank_end; t0 += kLowDimBankTile) {
        const int64_t count = std::min(kLowDimBankTile, item.bank_end - t0);
        const float* tile = bank.rows(t0, count, converted);
        for (int64_t j = 0; j < count; ++j)
          for (int64_t d = 0; d < dim; ++d) soa[static_cast<size_t>(d * kLowDimBankTile + j)] = tile[j * dim + d];
        for (int64_t r = 0; r < rows; ++r) {
          const float* q = queries + (item.query_begin + r) * dim;
          std::fill(scores.begin(), scores.begin() + count, 0.0f);
          for (int64_t d = 0; d < dim; ++d) {
            const float qd = q[d];
            const float* column = soa.data() + d * kLowDimBankTile;
            for (int64_t j = 0; j < count; ++j) {
              const float diff = qd - column[j];
              scores[static_cast<size_t>(j)] += diff * diff;
            }
          }
          scan_scores(scores.data(), count, t0, lists[static_cast<size_t>(r)]);
        }
      }
      hand_over(lists, item, static_cast<int64_t>(w) % parts, parts, found);
    });
  }
  errors.rethrow();
}

}  // namespace

void knn_cpu(const float* queries, int64_t num_queries, const void* bank_data, BankType bank_type,
             int64_t bank_size, int64_t dim, int64_t k, float* dist, int64_t* idx) {
  XMODAL_CHECK(num_queries >= 0 && dim >= 1, "knn: invalid shapes Q=", num_queries, " D=", dim);
  XMODAL_CHECK(k >= 1 && k <= bank_size, "k must be in [1, N=", bank_size, "]; got ", k);
  if (num_queries == 0) return;
  if (dim <= kKnnTreeMaxDim && bank_type == BankType::f32 && bank_size < (int64_t{1} << 31)) {  // point sets
    knn_tree_cpu(queries, num_queries, static_cast<const float*>(bank_data), bank_size, dim, k, dist, idx);
    return;
  }
  const Bank bank(bank_data, bank_type, bank_size, dim);
  const bool low_dim = dim <= kLowDim;

  int64_t parts = 1;
  const std::vector<WorkItem> work =
      plan_work(num_queries, bank_size, low_dim ? kLowDimQueryBlock : kGemmQueryBlock,
                low_dim ? kLowDimBankTile : kGemmBankTile, parts);
  std::vector<std::vector<Candidate>> found(static_cast<size_t>(num_queries * parts));
  if (low_dim) {
    screen_low_dim(queries, bank, k, work, parts, found);
  } else {
    screen_with_gemm(queries, bank, k, work, parts, found);
  }

  // Exact re-ranking: float64 distances of the surviving candidates, rounded to float32, ordered
  // by (distance, index).
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<Candidate> exact;
    std::vector<float> row_scratch;
#pragma omp for schedule(dynamic, 16)
    for (int64_t q = 0; q < num_queries; ++q) errors.run([&] {
      exact.clear();
      const float* query = queries + q * dim;
      for (int64_t p = 0; p < parts; ++p) {
        for (const Candidate& c : found[static_cast<size_t>(q * parts + p)]) {
          const double d2 = squared_distance_f64(query, bank.rows(c.index, 1, row_scratch), dim);
          exact.push_back({static_cast<float>(std::sqrt(d2)), c.index});
        }
        std::vector<Candidate>().swap(found[static_cast<size_t>(q * parts + p)]);
      }
      XMODAL_CHECK(static_cast<int64_t>(exact.size()) >= k, "knn: internal error, ", exact.size(),
                   " candidates for k=", k);
      std::partial_sort(exact.begin(), exact.begin() + k, exact.end(), ranks_before);
      for (int64_t j = 0; j < k; ++j) {
        dist[q * k + j] = exact[static_cast<size_t>(j)].score;
        idx[q * k + j] = exact[static_cast<size_t>(j)].index;
      }
    });
  }
  errors.rethrow();
}

}  // namespace xmodal
