#include <algorithm>
#include <vector>

#include "common/check.h"
#include "common/parallel.h"
#include "ops/coreset/projection.h"

namespace xmodal {
namespace {

// Rows are projected kBlock at a time from a transposed copy (column k of the block is kBlock
// adjacent floats), so each nonzero of M costs one short contiguous load and kBlock independent
// multiply-adds that vectorise at any width; the order of the additions within an output stays
// the ascending column order the contract defines.
constexpr int64_t kBlock = 8;
constexpr int64_t kMinBlocksPerThread = 64;  // one image (~100 blocks) stays on the calling thread

void project_block(const float* x, int64_t count, int64_t dim, const int64_t* indptr, const int32_t* indices,
                   const float* values, int64_t out, float* y, std::vector<float>& columns) {
  columns.resize(static_cast<size_t>(dim * kBlock));
  if (count < kBlock) std::fill(columns.begin(), columns.end(), 0.0f);  // missing rows read as 0
  for (int64_t k = 0; k < dim; ++k)
    for (int64_t r = 0; r < count; ++r) columns[static_cast<size_t>(k * kBlock + r)] = x[r * dim + k];
  for (int64_t j = 0; j < out; ++j) {
    double acc[kBlock] = {};
    for (int64_t p = indptr[j]; p < indptr[j + 1]; ++p) {
      const float* column = columns.data() + static_cast<int64_t>(indices[p]) * kBlock;
      const double v = values[p];
      for (int64_t r = 0; r < kBlock; ++r) acc[r] += static_cast<double>(column[r]) * v;
    }
    for (int64_t r = 0; r < count; ++r) y[r * out + j] = static_cast<float>(acc[r]);
  }
}

}  // namespace

void sparse_project_cpu(const float* x, int64_t rows, int64_t dim, const int64_t* indptr, const int32_t* indices,
                        const float* values, int64_t out, float* y) {
  XMODAL_CHECK(rows >= 0 && dim >= 1 && out >= 0, "x must be a (rows, D >= 1) matrix; got (", rows, ", ", dim, ")");
  XMODAL_CHECK(indptr[0] == 0, "indptr[0] must be 0; got ", indptr[0]);
  for (int64_t j = 0; j < out; ++j)  // first, so that the loop below reads only indices[0, indptr[out])
    XMODAL_CHECK(indptr[j + 1] >= indptr[j], "indptr must be non-decreasing; indptr[", j + 1, "] = ", indptr[j + 1],
                 " < indptr[", j, "] = ", indptr[j]);
  for (int64_t j = 0; j < out; ++j)
    for (int64_t p = indptr[j]; p < indptr[j + 1]; ++p)
      XMODAL_CHECK(indices[p] >= 0 && indices[p] < dim && (p == indptr[j] || indices[p] > indices[p - 1]),
                   "indices of row ", j, " must ascend within [0, D=", dim, "); got ", indices[p], " at position ", p);
  const int64_t blocks = (rows + kBlock - 1) / kBlock;
  const int threads =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), blocks / kMinBlocksPerThread)));
  ParallelErrors errors;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<float> columns;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b)
      errors.run([&] {
        const int64_t first = b * kBlock, count = std::min(kBlock, rows - first);
        project_block(x + first * dim, count, dim, indptr, indices, values, out, y + first * out, columns);
      });
  }
  errors.rethrow();
}

void sum_squares_cpu(const float* x, int64_t count, double* sum, double* sum_of_squares) {
  XMODAL_CHECK(count >= 0, "count must be >= 0; got ", count);
  // Eight independent partial sums (vectorised at any width), combined in a fixed order.
  constexpr int64_t kLanes = 8;
  double s[kLanes] = {}, q[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) {
      const double v = x[i + l];
      s[l] += v;
      q[l] += v * v;
    }
  for (int64_t l = 0; i + l < count; ++l) {
    const double v = x[i + l];
    s[l] += v;
    q[l] += v * v;
  }
  *sum = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
  *sum_of_squares = ((q[0] + q[4]) + (q[2] + q[6])) + ((q[1] + q[5]) + (q[3] + q[7]));
}

}  // namespace xmodal
