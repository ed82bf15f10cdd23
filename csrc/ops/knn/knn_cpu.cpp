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
#include "ops/knn/screening.h"

namespace xmodal {
namespace {

constexpr double kUnitRoundoff = 0x1p-24;  // float32
// Absolute error of a screening score from float32 underflow: fewer than 2^40 operations of
// at most 2^-150 each.
constexpr double kUnderflowBand = 0x1p-100;
// Relative band of the final float32 rounding of a distance (rows whose distances round to
// the same float32 tie and go by index), plus the underflow of a scaled copy.
constexpr double kRankBand = 20 * kUnitRoundoff;
constexpr int64_t kLowDim = 4;  // D <= 4: direct differences, no GEMM
constexpr int64_t kGemmQueryBlock = 256;
constexpr int64_t kGemmBankTile = 2048;
constexpr int64_t kLowDimQueryBlock = 64;
constexpr int64_t kLowDimBankTile = 4096;
constexpr int64_t kScanChunk = 16;

// A bank row that survived screening: a lower and an upper bound of its screening value.
struct Candidate {
  float lower, upper;
  int64_t index;
};

// A re-ranked neighbour: its float32 distance.
struct Ranked {
  float dist;
  int64_t index;
};

inline bool ranks_before(const Ranked& a, const Ranked& b) {
  return a.dist < b.dist || (a.dist == b.dist && a.index < b.index);
}

// Which rows can still reach the exact top k. With U_k the k-th smallest upper bound seen, a
// row whose lower bound exceeds U_k + abs + rel * (U_k + offset) can neither beat the k-th
// neighbour nor tie with it after the final rounding, so it is dropped. Once that reach
// exceeds `unbounded_at` (distances that round to float32 infinity, which all tie), nothing
// can be dropped.
struct Band {
  double abs = 0, rel = 0, offset = 0;
  double unbounded_at = std::numeric_limits<double>::infinity();
};

class CandidateList {
 public:
  void reset(int64_t k, const Band& band) {
    items_.clear();
    k_ = k;
    band_ = band;
    capacity_ = static_cast<size_t>(std::max<int64_t>(2 * k, 64));
    limit_ = std::numeric_limits<float>::infinity();
  }

  // Rows whose lower bound exceeds this can be rejected without a push.
  float limit() const { return limit_; }

  void push(float lower, float upper, int64_t index) {
    items_.push_back({lower, upper, index});
    if (items_.size() >= capacity_) prune();
  }

  // Drops everything out of reach of the current k-th upper bound.
  void prune() {
    if (static_cast<int64_t>(items_.size()) < k_) return;
    std::nth_element(items_.begin(), items_.begin() + (k_ - 1), items_.end(),
                     [](const Candidate& a, const Candidate& b) { return a.upper < b.upper; });
    const double kth = items_[static_cast<size_t>(k_ - 1)].upper;
    const double reach = kth + band_.abs + band_.rel * std::max(0.0, kth + band_.offset);
    if (reach + band_.offset >= band_.unbounded_at) {
      capacity_ = std::max(capacity_, 2 * items_.size());  // keep pushes amortised O(1)
      return;
    }
    // Round the limit up so the float comparison never excludes what the band includes.
    limit_ = std::nextafter(static_cast<float>(reach), std::numeric_limits<float>::infinity());
    auto outside =
        std::partition(items_.begin(), items_.end(), [this](const Candidate& c) { return c.lower <= limit_; });
    items_.erase(outside, items_.end());
    // Many near-ties can legitimately stay; grow so pruning stays amortised O(1) per push.
    if (items_.size() * 2 > capacity_) capacity_ *= 2;
  }

  std::vector<Candidate>& items() { return items_; }

 private:
  std::vector<Candidate> items_;
  int64_t k_ = 1;
  Band band_;
  size_t capacity_ = 64;
  float limit_ = std::numeric_limits<float>::infinity();
};

// Fused top-k epilogue over one row of a tile of lower bounds: a vectorisable min per chunk
// rejects almost every chunk once the list is warm; only chunks that can contribute are
// scanned. upper_of(j) gives the upper bound of entry j.
template <typename UpperOf>
void scan_lower_bounds(const float* lower, int64_t count, int64_t first_index, CandidateList& list, UpperOf upper_of) {
  float limit = list.limit();
  for (int64_t j0 = 0; j0 < count; j0 += kScanChunk) {
    const int64_t j1 = std::min(count, j0 + kScanChunk);
    float chunk_min = std::numeric_limits<float>::infinity();
    for (int64_t j = j0; j < j1; ++j) chunk_min = std::min(chunk_min, lower[j]);
    if (!(chunk_min <= limit)) continue;
    for (int64_t j = j0; j < j1; ++j) {
      if (lower[j] <= limit) {
        list.push(lower[j], upper_of(j), first_index + j);
        limit = list.limit();
      }
    }
  }
}

// Rows of queries or bank as the screening sees them: the data itself, or a converted
// (float16 -> float32) and/or scaled copy (ops/knn/screening.h).
class Rows {
 public:
  Rows(const void* data, BankType type, int64_t size, int64_t dim, double scale)
      : data_(data), type_(type), size_(size), dim_(dim), scale_(scale) {}

  // Rows [first, first + count) for screening: a pointer into the data, or a copy in `scratch`.
  const float* screened(int64_t first, int64_t count, std::vector<float>& scratch) const {
    const float* rows = exact(first, count, scratch);
    if (scale_ == 1.0) return rows;
    if (rows != scratch.data()) {
      scratch.resize(static_cast<size_t>(count * dim_));
      std::copy(rows, rows + count * dim_, scratch.data());
    }
    for (float& v : scratch) v = static_cast<float>(static_cast<double>(v) * scale_);  // exact but underflow
    return scratch.data();
  }

  // Rows [first, first + count) as float32, unscaled: the values the distances are defined on.
  const float* exact(int64_t first, int64_t count, std::vector<float>& scratch) const {
    if (type_ == BankType::f32) return static_cast<const float*>(data_) + first * dim_;
    scratch.resize(static_cast<size_t>(count * dim_));
    half_to_float(static_cast<const uint16_t*>(data_) + first * dim_, scratch.data(), count * dim_);
    return scratch.data();
  }

  int64_t size() const { return size_; }
  int64_t dim() const { return dim_; }
  double scale() const { return scale_; }

 private:
  const void* data_;
  BankType type_;
  int64_t size_, dim_;
  double scale_;
};

// Squared norms (float32 of the float64 value) and norms of rows seen through `view`
// (Rows::screened or Rows::exact); returns the largest norm.
template <typename View>
double row_norms(const Rows& rows, View view, std::vector<float>* squared, std::vector<float>* norms) {
  if (squared) squared->resize(static_cast<size_t>(rows.size()));
  if (norms) norms->resize(static_cast<size_t>(rows.size()));
  double max_sq = 0.0;
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<float> scratch;
    double local_max = 0.0;
#pragma omp for schedule(static)
    for (int64_t t0 = 0; t0 < rows.size(); t0 += kGemmBankTile)
      errors.run([&] {
        const int64_t count = std::min(kGemmBankTile, rows.size() - t0);
        const float* tile = view(rows, t0, count, scratch);
        for (int64_t r = 0; r < count; ++r) {
          double sum = 0.0;
          const float* row = tile + r * rows.dim();
#pragma omp simd reduction(+ : sum)
          for (int64_t d = 0; d < rows.dim(); ++d) sum += static_cast<double>(row[d]) * row[d];
          if (squared) (*squared)[static_cast<size_t>(t0 + r)] = static_cast<float>(sum);
          if (norms) (*norms)[static_cast<size_t>(t0 + r)] = static_cast<float>(std::sqrt(sum));
          local_max = std::max(local_max, sum);
        }
      });
#pragma omp critical
    max_sq = std::max(max_sq, local_max);
  }
  errors.rethrow();
  return std::sqrt(max_sq);
}

const float* exact_view(const Rows& rows, int64_t first, int64_t count, std::vector<float>& scratch) {
  return rows.exact(first, count, scratch);
}

const float* screened_view(const Rows& rows, int64_t first, int64_t count, std::vector<float>& scratch) {
  return rows.screened(first, count, scratch);
}

// The band of one query in screening units (squared distances of the scaled rows). Besides
// the errors each path bounds itself: rows whose distances round to the same float32 (the
// relative kRankBand, or in absolute terms where distances are float32 subnormals) and the
// float32 overflow of distances above FLT_MAX, all in the original units.
Band query_band(double scale, double extra_rel, double offset) {
  const double s2 = scale * scale;
  const double flt_max = std::numeric_limits<float>::max();
  Band band;
  band.abs = kUnderflowBand + s2 * 0x1p-270;
  band.rel = kRankBand + extra_rel;
  band.offset = offset;
  band.unbounded_at = s2 * flt_max * flt_max * (1.0 - 8 * kUnitRoundoff);
  return band;
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
std::vector<WorkItem> plan_work(int64_t num_queries, int64_t bank_size, int64_t query_block, int64_t bank_tile,
                                int64_t& parts) {
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

// Screening with an sgemm tile: score = |b|^2 - 2 q.b (|q|^2 is constant per row). Error of
// that float32 score for bank row b (Higham, dot product of length D; the norm rounded once;
// the sum rounded once):
//   e(b) = 1.01 ((2 gamma_D + 2 u) |q| |b| + 2 u |b|^2) + underflow,  gamma_D = D u / (1 - D u).
// Each row's own norm enters, so one huge row does not widen the band of every other. The
// scan works on lower = score - slack with slack = 2.1 e(b) evaluated in float32: the factor
// covers the rounding of that subtraction and of the slack itself, so lower <= score - e(b)
// and lower + 2 slack >= score + e(b).
void screen_with_gemm(const Rows& queries, const Rows& bank, const std::vector<float>& squared,
                      const std::vector<float>& norms, int64_t k, const std::vector<WorkItem>& work, int64_t parts,
                      std::vector<std::vector<Candidate>>& found) {
  const int64_t dim = bank.dim();
  const double u = kUnitRoundoff;
  const double gamma = dim * u / (1.0 - dim * u);
  const float slack_per_sq = static_cast<float>(2.1 * 1.01 * 2.0 * u * (1.0 + u));
  const float slack_abs = static_cast<float>(2.1 * kUnderflowBand);

  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<float> tile_scores(static_cast<size_t>(kGemmQueryBlock * kGemmBankTile));
    std::vector<float> converted, query_scratch;
    std::vector<float> slack_per_norm(static_cast<size_t>(kGemmQueryBlock));
    std::vector<CandidateList> lists(static_cast<size_t>(kGemmQueryBlock));
#pragma omp for schedule(dynamic, 1)
    for (size_t w = 0; w < work.size(); ++w)
      errors.run([&] {
        const WorkItem& item = work[w];
        const int64_t rows = item.query_end - item.query_begin;
        const float* block = queries.screened(item.query_begin, rows, query_scratch);
        for (int64_t r = 0; r < rows; ++r) {
          const float* q = block + r * dim;
          double q_sq = 0.0;
#pragma omp simd reduction(+ : q_sq)
          for (int64_t d = 0; d < dim; ++d) q_sq += static_cast<double>(q[d]) * q[d];
          slack_per_norm[static_cast<size_t>(r)] =
              static_cast<float>(2.1 * 1.01 * (2.0 * gamma + 2.0 * u) * (1.0 + u) * std::sqrt(q_sq));
          lists[static_cast<size_t>(r)].reset(k, query_band(bank.scale(), 0.0, q_sq));
        }
        for (int64_t t0 = item.bank_begin; t0 < item.bank_end; t0 += kGemmBankTile) {
          const int64_t count = std::min(kGemmBankTile, item.bank_end - t0);
          const float* tile = bank.screened(t0, count, converted);
          blas::sgemm_nt(rows, count, dim, -2.0f, block, dim, tile, dim, 0.0f, tile_scores.data(), count);
          const float* tile_sq = squared.data() + t0;
          const float* tile_norm = norms.data() + t0;
          for (int64_t r = 0; r < rows; ++r) {
            float* lower = tile_scores.data() + r * count;
            const float a = slack_per_norm[static_cast<size_t>(r)];
            auto slack = [&](int64_t j) { return a * tile_norm[j] + slack_per_sq * tile_sq[j] + slack_abs; };
            for (int64_t j = 0; j < count; ++j) lower[j] = (lower[j] + tile_sq[j]) - slack(j);
            scan_lower_bounds(lower, count, t0, lists[static_cast<size_t>(r)], [&](int64_t j) {
              const double upper = static_cast<double>(lower[j]) + 2.0 * static_cast<double>(slack(j));
              return std::nextafter(static_cast<float>(upper), std::numeric_limits<float>::infinity());
            });
          }
        }
        hand_over(lists, item, static_cast<int64_t>(w) % parts, parts, found);
      });
  }
  errors.rethrow();
}

// Screening for D <= 4 (point grouping): float32 squared differences over a tile stored
// structure-of-arrays so the inner loop vectorises. Relative error of a sum of D squared
// rounded differences: (2D + 4) u, on either side, hence twice that in the band.
void screen_low_dim(const Rows& queries, const Rows& bank, int64_t k, const std::vector<WorkItem>& work, int64_t parts,
                    std::vector<std::vector<Candidate>>& found) {
  const int64_t dim = bank.dim();
  const double score_band = 1.01 * 2.0 * (2.0 * dim + 4.0) * kUnitRoundoff;
  const Band band = query_band(bank.scale(), score_band, 0.0);

  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<float> soa(static_cast<size_t>(kLowDim * kLowDimBankTile));
    std::vector<float> scores(static_cast<size_t>(kLowDimBankTile));
    std::vector<float> converted, query_scratch;
    std::vector<CandidateList> lists(static_cast<size_t>(kLowDimQueryBlock));
#pragma omp for schedule(dynamic, 1)
    for (size_t w = 0; w < work.size(); ++w)
      errors.run([&] {
        const WorkItem& item = work[w];
        const int64_t rows = item.query_end - item.query_begin;
        const float* block = queries.screened(item.query_begin, rows, query_scratch);
        for (int64_t r = 0; r < rows; ++r) lists[static_cast<size_t>(r)].reset(k, band);
        for (int64_t t0 = item.bank_begin; t0 < item.bank_end; t0 += kLowDimBankTile) {
          const int64_t count = std::min(kLowDimBankTile, item.bank_end - t0);
          const float* tile = bank.screened(t0, count, converted);
          for (int64_t j = 0; j < count; ++j)
            for (int64_t d = 0; d < dim; ++d) soa[static_cast<size_t>(d * kLowDimBankTile + j)] = tile[j * dim + d];
          for (int64_t r = 0; r < rows; ++r) {
            const float* q = block + r * dim;
            std::fill(scores.begin(), scores.begin() + count, 0.0f);
            for (int64_t d = 0; d < dim; ++d) {
              const float qd = q[d];
              const float* column = soa.data() + d * kLowDimBankTile;
              for (int64_t j = 0; j < count; ++j) {
                const float diff = qd - column[j];
                scores[static_cast<size_t>(j)] += diff * diff;
              }
            }
            // The band is symmetric here: the score serves as both bounds.
            scan_lower_bounds(scores.data(), count, t0, lists[static_cast<size_t>(r)],
                              [&](int64_t j) { return scores[static_cast<size_t>(j)]; });
          }
        }
        hand_over(lists, item, static_cast<int64_t>(w) % parts, parts, found);
      });
  }
  errors.rethrow();
}

}  // namespace

void knn_cpu(const float* query_data, int64_t num_queries, const void* bank_data, BankType bank_type, int64_t bank_size,
             int64_t dim, int64_t k, float* dist, int64_t* idx) {
  XMODAL_CHECK(num_queries >= 0 && dim >= 1, "knn: invalid shapes Q=", num_queries, " D=", dim);
  XMODAL_CHECK(k >= 1 && k <= bank_size, "k must be in [1, N=", bank_size, "]; got ", k);
  if (num_queries == 0) return;
  if (dim <= kKnnTreeMaxDim && bank_type == BankType::f32 && bank_size < (int64_t{1} << 31)) {  // point sets
    // float64 arithmetic throughout: no range limit.
    knn_tree_cpu(query_data, num_queries, static_cast<const float*>(bank_data), bank_size, dim, k, dist, idx);
    return;
  }
  const bool low_dim = dim <= kLowDim;
  // The bank's norms serve the sgemm screening too, unless the data must be scaled.
  std::vector<float> squared, norms;
  const Rows unscaled_bank(bank_data, bank_type, bank_size, dim, 1.0);
  const double bank_norm =
      row_norms(unscaled_bank, exact_view, low_dim ? nullptr : &squared, low_dim ? nullptr : &norms);
  const double query_norm =
      row_norms(Rows(query_data, BankType::f32, num_queries, dim, 1.0), exact_view, nullptr, nullptr);
  const double scale = knn_screening_scale(std::max(bank_norm, query_norm));
  const Rows queries(query_data, BankType::f32, num_queries, dim, scale);
  const Rows bank(bank_data, bank_type, bank_size, dim, scale);
  if (!low_dim && scale != 1.0) row_norms(bank, screened_view, &squared, &norms);

  int64_t parts = 1;
  const std::vector<WorkItem> work = plan_work(num_queries, bank_size, low_dim ? kLowDimQueryBlock : kGemmQueryBlock,
                                               low_dim ? kLowDimBankTile : kGemmBankTile, parts);
  std::vector<std::vector<Candidate>> found(static_cast<size_t>(num_queries * parts));
  if (low_dim) {
    screen_low_dim(queries, bank, k, work, parts, found);
  } else {
    screen_with_gemm(queries, bank, squared, norms, k, work, parts, found);
  }

  // Exact re-ranking: float64 distances of the surviving candidates, rounded to float32, ordered
  // by (distance, index).
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<Ranked> exact;
    std::vector<float> row_scratch;
#pragma omp for schedule(dynamic, 16)
    for (int64_t q = 0; q < num_queries; ++q)
      errors.run([&] {
        exact.clear();
        const float* query = query_data + q * dim;
        for (int64_t p = 0; p < parts; ++p) {
          for (const Candidate& c : found[static_cast<size_t>(q * parts + p)]) {
            const double d2 = squared_distance_f64(query, bank.exact(c.index, 1, row_scratch), dim);
            exact.push_back({static_cast<float>(std::sqrt(d2)), c.index});
          }
          std::vector<Candidate>().swap(found[static_cast<size_t>(q * parts + p)]);
        }
        XMODAL_CHECK(static_cast<int64_t>(exact.size()) >= k, "knn: internal error, ", exact.size(),
                     " candidates for k=", k);
        std::partial_sort(exact.begin(), exact.begin() + k, exact.end(), ranks_before);
        for (int64_t j = 0; j < k; ++j) {
          dist[q * k + j] = exact[static_cast<size_t>(j)].dist;
          idx[q * k + j] = exact[static_cast<size_t>(j)].index;
        }
      });
  }
  errors.rethrow();
}

}  // namespace xmodal
