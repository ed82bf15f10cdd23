// Per-position Mahalanobis distances (PaDiM): every position p of an image has its own Gaussian
// N(mean_p, Sigma_p), given by the Cholesky factor Sigma_p = L_p L_p^T (L_p lower triangular,
// positive diagonal), and
//
//   dist[b, p] = sqrt((x[b,p] - mean_p)^T Sigma_p^-1 (x[b,p] - mean_p)) = || L_p^-1 (x[b,p] - mean_p) ||
//
// computed by a triangular solve (forward substitution), never with an explicit inverse.
//
//   x        (B, P, d) float32, C-contiguous: image-major, channels last (each image's feature
//            map as it leaves a backbone in NHWC / token order; stacking images needs no
//            transpose, and the whole batch is one (B*P, d) row-major matrix)
//   mean     (P, d) float32
//   factors  (F, d*(d+1)/2) float32: the lower triangles, packed row by row (L[i][j], j <= i,
//            at i*(i+1)/2 + j: numpy's L[np.tril_indices(d)]), half the memory of d x d.
//            F = P: one covariance per position ("full"); F = 1: one covariance shared by every
//            position ("shared")
//   dist     (B, P) float32 out
//
// Accuracy. full: each (image, position) is a forward substitution whose dot products are
// accumulated in float64 from the float32 inputs, and x - mean is formed in float64, so the
// result is the float64 solve with the float32 factor, rounded once to float32 (the rounding
// of the stored factor is the only float32 error that remains). shared: the B*P rows against
// one factor form a blocked triangular solve whose off-diagonal blocks are sgemm updates
// (float32 accumulation over at most d terms, the standard float32 TRSM bound) and whose
// diagonal blocks are solved in float64.
//
// Inputs must be finite (the caller checks x and mean). A factor with a diagonal entry that is
// not a positive finite number, or a distance that is not finite (a NaN/inf inside a factor),
// raises std::invalid_argument naming the position; a true distance above FLT_MAX is inf.
// B = 0 or P = 0 is a no-op.
//
// Work is split over positions (full: each position's factor is read once for all B images,
// which makes batch-1 inference a pure stream over the factors) or over blocks of rows (shared).
#pragma once

#include <cstdint>

#include "common/hostdevice.h"

namespace xmodal {

// Offset of row i in a packed lower triangle.
XMODAL_HD int64_t packed_row_offset(int64_t i) { return i * (i + 1) / 2; }

void mahalanobis_cpu(const float* x, int64_t batch, int64_t positions, int64_t dim, const float* mean,
                     const float* factors, bool shared, float* dist);

// Fit-time helpers, host only (the fit accumulates in float64 on the CPU, wherever the features
// come from). The fit's statistics: scatter[f] += the packed lower triangle of rows[f]^T rows[f] for each
// of `count` float64 (m, d) row blocks (a float64 SYRK per block, one block per thread; PaDiM:
// the centred feature vectors of one position). Deterministic whatever the thread count.
void gaussian_accumulate_cpu(const double* rows, int64_t count, int64_t m, int64_t dim, double* scatter);

// The fit's factors: for `count` symmetric d x d float64 matrices S_p given as packed lower
// triangles (same layout as the factors), the Cholesky factor of scale * S_p + regularization * I,
// computed in float64 (LAPACK dpotrf, one matrix per thread) and packed to float32 into
// `factors`. PaDiM: S_p = the scatter matrix of position p, scale = 1 / (N - 1), 0.01.
// Returns the lowest index whose matrix is not positive definite, or -1 when all are.
int64_t gaussian_factors_cpu(const double* packed, int64_t count, int64_t dim, double scale, double regularization,
                             float* factors);

// CUDA version: device pointers, queued on `stream`, the same float64 substitution for full and
// shared factors. `status` (device int32, zeroed by the caller) is set to 1 + a bad position
// when a factor diagonal or a distance is invalid (the caller raises).
void mahalanobis_cuda(const float* x, int64_t batch, int64_t positions, int64_t dim, const float* mean,
                      const float* factors, bool shared, float* dist, int32_t* status, void* stream);

}  // namespace xmodal
