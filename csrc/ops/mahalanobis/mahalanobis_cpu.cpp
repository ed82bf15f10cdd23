#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <mutex>
#include <vector>

#include "common/blas.h"
#include "common/check.h"
#include "common/parallel.h"
#include "ops/mahalanobis/mahalanobis.h"

// LAPACK's Cholesky factorisation from xmodal's OpenBLAS (the scipy-openblas32 wheel prefixes
// its symbols with scipy_ and uses 32-bit integers); the trailing argument is Fortran's hidden
// length of `uplo`.
extern "C" void scipy_dpotrf_(const char* uplo, const int32_t* n, double* a, const int32_t* lda, int32_t* info,
                              size_t uplo_length);

namespace xmodal {
namespace {

// full: images solved together per position. Their float64 rows (16 x d) stay in L1/L2 while the
// position's factor streams through once.
constexpr int64_t kImageGroup = 16;
// shared: rows per task and the column block of the blocked solve (sgemm-sized tiles).
constexpr int64_t kRowBlock = 64;
constexpr int64_t kColumnBlock = 64;
// Independent partial sums of a dot product: enough to hide the FMA latency once vectorised,
// and a fixed summation order (results do not depend on the thread count).
constexpr int kPartialSums = 16;

inline bool valid_diagonal(float v) { return v > 0.0f && v <= std::numeric_limits<float>::max(); }

[[noreturn]] void bad_diagonal(int64_t position, int64_t row, float value) {
  fail_argument("factors: the Cholesky factor of position ", position, " has diagonal entry ", value, " at row ", row,
                "; expected a positive finite number (lower-triangular factor with positive diagonal)");
}

[[noreturn]] void bad_distance(int64_t position) {
  fail_argument("factors: the distance at position ", position,
                " is not finite although x and mean are; the factor holds NaN or infinite values");
}

// sum_{j < n} l[j] * y[j] in float64.
inline double dot(const float* l, const double* y, int64_t n) {
  double partial[kPartialSums] = {};
  int64_t j = 0;
  for (; j + kPartialSums <= n; j += kPartialSums) {
    for (int t = 0; t < kPartialSums; ++t) partial[t] += static_cast<double>(l[j + t]) * y[j + t];
  }
  double sum = 0.0;
  for (; j < n; ++j) sum += static_cast<double>(l[j]) * y[j];
  for (int t = 0; t < kPartialSums; ++t) sum += partial[t];
  return sum;
}

inline double squared_norm(const double* y, int64_t n) {
  double partial[kPartialSums] = {};
  int64_t j = 0;
  for (; j + kPartialSums <= n; j += kPartialSums) {
    for (int t = 0; t < kPartialSums; ++t) partial[t] += y[j + t] * y[j + t];
  }
  double sum = 0.0;
  for (; j < n; ++j) sum += y[j] * y[j];
  for (int t = 0; t < kPartialSums; ++t) sum += partial[t];
  return sum;
}

// Distances of every image at one position: L y = x - mean by forward substitution, in place in
// `y` (kImageGroup rows of d doubles), images in groups so the factor is read once per group.
void position_distances(const float* x, int64_t batch, int64_t positions, int64_t dim, int64_t p, const float* mean,
                        const float* factor, double* y, float* dist) {
  for (int64_t b0 = 0; b0 < batch; b0 += kImageGroup) {
    const int64_t count = std::min(kImageGroup, batch - b0);
    for (int64_t w = 0; w < count; ++w) {
      const float* row = x + ((b0 + w) * positions + p) * dim;
      double* yw = y + w * dim;
      for (int64_t i = 0; i < dim; ++i) yw[i] = static_cast<double>(row[i]) - static_cast<double>(mean[i]);
    }
    for (int64_t i = 0; i < dim; ++i) {
      const float* l = factor + packed_row_offset(i);
      if (!valid_diagonal(l[i])) bad_diagonal(p, i, l[i]);
      const double diagonal = l[i];
      for (int64_t w = 0; w < count; ++w) {
        double* yw = y + w * dim;
        yw[i] = (yw[i] - dot(l, yw, i)) / diagonal;
      }
    }
    for (int64_t w = 0; w < count; ++w) {
      const double squared = squared_norm(y + w * dim, dim);
      if (!std::isfinite(squared)) bad_distance(p);
      dist[(b0 + w) * positions + p] = static_cast<float>(std::sqrt(squared));
    }
  }
}

void full_cpu(const float* x, int64_t batch, int64_t positions, int64_t dim, const float* mean, const float* factors,
              float* dist) {
  const int64_t packed = packed_row_offset(dim);
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<double> y(static_cast<size_t>(kImageGroup * dim));
#pragma omp for schedule(dynamic, 4)
    for (int64_t p = 0; p < positions; ++p)
      errors.run([&] {
        position_distances(x, batch, positions, dim, p, mean + p * dim, factors + p * packed, y.data(), dist);
      });
  }
  errors.rethrow();
}

// The shared factor as a dense row-major d x d matrix (zeros above the diagonal), the layout the
// sgemm updates read their blocks from.
std::vector<float> unpack_checked(const float* packed, int64_t dim) {
  std::vector<float> dense(static_cast<size_t>(dim * dim), 0.0f);
  for (int64_t i = 0; i < dim; ++i) {
    const float* l = packed + packed_row_offset(i);
    if (!valid_diagonal(l[i])) bad_diagonal(0, i, l[i]);
    std::copy_n(l, i + 1, dense.data() + i * dim);
  }
  return dense;
}

// Rows [r0, r0 + rows) of the flattened (B*P, d) batch: Y L^T = X - mean, column block by column
// block. Each block first subtracts the contribution of the solved columns (one sgemm), then
// finishes its own columns by substitution in float64.
void shared_row_block(const float* x, int64_t r0, int64_t rows, int64_t positions, int64_t dim, const float* mean,
                      const float* dense, float* y, double* squared, double* block_y, float* dist) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + (r0 + r) * dim;
    const float* mr = mean + ((r0 + r) % positions) * dim;
    float* yr = y + r * dim;
    for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] - mr[i];
    squared[r] = 0.0;
  }
  for (int64_t k0 = 0; k0 < dim; k0 += kColumnBlock) {
    const int64_t width = std::min(kColumnBlock, dim - k0);
    if (k0 > 0) {
      blas::sgemm_nt(rows, width, k0, -1.0f, y, dim, dense + k0 * dim, dim, 1.0f, y + k0, dim);
    }
    for (int64_t r = 0; r < rows; ++r) {
      float* yr = y + r * dim;
      for (int64_t c = 0; c < width; ++c) {
        const int64_t i = k0 + c;
        const float* l = dense + i * dim + k0;
        block_y[c] = (static_cast<double>(yr[i]) - dot(l, block_y, c)) / static_cast<double>(l[c]);
        yr[i] = static_cast<float>(block_y[c]);
        squared[r] += block_y[c] * block_y[c];
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    if (!std::isfinite(squared[r])) bad_distance((r0 + r) % positions);
    dist[r0 + r] = static_cast<float>(std::sqrt(squared[r]));
  }
}

void shared_cpu(const float* x, int64_t batch, int64_t positions, int64_t dim, const float* mean, const float* factor,
                float* dist) {
  const std::vector<float> dense = unpack_checked(factor, dim);
  const int64_t total = batch * positions;
  const int64_t blocks = (total + kRowBlock - 1) / kRowBlock;
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<float> y(static_cast<size_t>(kRowBlock * dim));
    std::vector<double> squared(kRowBlock), block_y(kColumnBlock);
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < blocks; ++b)
      errors.run([&] {
        const int64_t r0 = b * kRowBlock;
        shared_row_block(x, r0, std::min(kRowBlock, total - r0), positions, dim, mean, dense.data(), y.data(),
                         squared.data(), block_y.data(), dist);
      });
  }
  errors.rethrow();
}

// OpenBLAS calls made here run inside our OpenMP threads. This OpenBLAS is xmodal's own copy
// (blas.cpp), so setting it to one thread affects nothing else.
void single_threaded_openblas() {
  static std::once_flag once;
  std::call_once(once, [] { scipy_openblas_set_num_threads(1); });
}

// Cholesky factor of scale * S + regularization * I in place in `work` (d x d, row-major, lower
// triangle filled); false when not positive definite. A row-major lower triangle is the
// column-major upper one, hence LAPACK's "U".
bool factor_in_place(const double* packed, int64_t dim, double scale, double regularization, double* work) {
  for (int64_t i = 0; i < dim; ++i) {
    const double* row = packed + packed_row_offset(i);
    for (int64_t j = 0; j <= i; ++j) work[i * dim + j] = scale * row[j];
    work[i * dim + i] += regularization;
  }
  const char upper = 'U';
  const int32_t n = static_cast<int32_t>(dim);
  int32_t info = 0;
  scipy_dpotrf_(&upper, &n, work, &n, &info, 1);
  return info == 0;
}

}  // namespace

void gaussian_accumulate_cpu(const double* rows, int64_t count, int64_t m, int64_t dim, double* scatter) {
  XMODAL_CHECK(count >= 0 && m >= 0 && dim >= 1 && dim <= std::numeric_limits<int32_t>::max() &&
                   m <= std::numeric_limits<int32_t>::max(),
               "gaussian_accumulate: bad sizes count=", count, " m=", m, " d=", dim);
  if (m == 0) return;
  single_threaded_openblas();
  const int64_t size = packed_row_offset(dim);
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<double> product(static_cast<size_t>(dim * dim));
#pragma omp for schedule(dynamic, 1)
    for (int64_t f = 0; f < count; ++f)
      errors.run([&] {
        const blasint n = static_cast<blasint>(dim), k = static_cast<blasint>(m);
        scipy_cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, n, k, 1.0, rows + f * m * dim, n, 0.0, product.data(),
                          n);
        double* out = scatter + f * size;
        for (int64_t i = 0; i < dim; ++i) {
          const double* row = product.data() + i * dim;
          double* packed = out + packed_row_offset(i);
#pragma omp simd
          for (int64_t j = 0; j <= i; ++j) packed[j] += row[j];
        }
      });
  }
  errors.rethrow();
}

int64_t gaussian_factors_cpu(const double* packed, int64_t count, int64_t dim, double scale, double regularization,
                             float* factors) {
  XMODAL_CHECK(count >= 0 && dim >= 1 && dim <= std::numeric_limits<int32_t>::max(),
               "gaussian_factors: bad sizes count=", count, " d=", dim);
  single_threaded_openblas();
  const int64_t size = packed_row_offset(dim);
  std::atomic<int64_t> failed{count};
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<double> work(static_cast<size_t>(dim * dim));
#pragma omp for schedule(dynamic, 1)
    for (int64_t p = 0; p < count; ++p)
      errors.run([&] {
        if (!factor_in_place(packed + p * size, dim, scale, regularization, work.data())) {
          int64_t seen = failed.load();
          while (p < seen && !failed.compare_exchange_weak(seen, p)) {
          }
          return;
        }
        float* out = factors + p * size;
        for (int64_t i = 0; i < dim; ++i) {
          for (int64_t j = 0; j <= i; ++j) out[packed_row_offset(i) + j] = static_cast<float>(work[i * dim + j]);
        }
      });
  }
  errors.rethrow();
  return failed.load() < count ? failed.load() : -1;
}

void mahalanobis_cpu(const float* x, int64_t batch, int64_t positions, int64_t dim, const float* mean,
                     const float* factors, bool shared, float* dist) {
  XMODAL_CHECK(batch >= 0 && positions >= 0 && dim >= 1, "mahalanobis: bad sizes B=", batch, " P=", positions,
               " d=", dim);
  if (batch == 0 || positions == 0) return;
  if (shared) {
    shared_cpu(x, batch, positions, dim, mean, factors, dist);
  } else {
    full_cpu(x, batch, positions, dim, mean, factors, dist);
  }
}

}  // namespace xmodal
