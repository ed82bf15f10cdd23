// What a coreset needs from its training rows besides the selection itself: the rows times a
// sparse random projection matrix, and float64 sums for the feature statistics.
//
// sparse_project_cpu: y = x M^T for a sparse M (the JL "very sparse" projection keeps ~1/sqrt(D)
// of its entries: 2.5 % at D = 1536, where a dense GEMM would do 40x the work).
//
//   x        (rows, dim) float32, C-contiguous
//   M        (out, dim), given by its nonzeros: row j holds values[p] at column indices[p] for
//            p in [indptr[j], indptr[j + 1]), columns strictly ascending, 0 <= column < dim
//   y        (rows, out) float32 out
//
// y[i, j] is the sum over M's nonzeros of row j of x[i, k] * M[j, k], each product exact in
// float64, added in float64 in ascending k and rounded once to float32. That is one definition,
// not a property of a GEMM's blocking: every CPU level, thread count and split of the rows into
// batches gives the same bits (the streaming bank builder relies on it to reproduce the one-shot
// coreset), and the result is the float64 product rounded to float32.
//
// sum_squares_cpu: the float64 sum and sum of squares of `count` float32 values, in a fixed
// order (the same bits on every CPU level).
#pragma once

#include <cstdint>

namespace xmodal {

void sparse_project_cpu(const float* x, int64_t rows, int64_t dim, const int64_t* indptr, const int32_t* indices,
                        const float* values, int64_t out, float* y);

void sum_squares_cpu(const float* x, int64_t count, double* sum, double* sum_of_squares);

}  // namespace xmodal
