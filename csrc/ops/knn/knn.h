// Exact k nearest neighbours of each query among the rows of a memory bank.
//
//   queries  (Q, D) float32, C-contiguous
//   bank     (N, D) float32, or float16 (IEEE binary16 bits) for half-precision banks
//   k        1 <= k <= N
//   dist     (Q, k) float32 out: Euclidean distance (not squared), ascending per row
//   idx      (Q, k) int64 out: bank row of each neighbour
//
// The distance of a pair is sqrt(sum_d (q_d - b_d)^2) evaluated in float64 and rounded to
// float32 (+inf above FLT_MAX); each row is ordered by (dist, idx), so equal distances list the
// lower bank index first. Exactness, for any finite input: candidates are screened with
// float32 scores (an sgemm for D > 4, a direct difference for D <= 4), and every bank row
// whose score lies within a proven float32 error bound (per row: it grows with the row's own
// norm) of the current k-th score is kept and re-ranked exactly; nothing that can belong to
// the top k is dropped. When the largest row norm lies outside [2^-20, 2^62] the screening
// runs on a copy scaled by a power of two (ops/knn/screening.h), so float32 neither overflows
// nor drowns in underflow; re-ranking always uses the inputs themselves. Memory is
// O(Q * k + tiles), never Q x N (rows within float32 rounding of the k-th distance are all
// kept, so data spanning more than ~2^80 in scale can keep more). For D <= 3 and a float32
// bank the search runs in a KD-tree instead (ops/knn/knn_tree.h, float64 arithmetic), with
// the same contract. NaN/inf inputs are rejected by the caller (their order would be
// meaningless). Q = 0 is a no-op.
#pragma once

#include <cstdint>

namespace xmodal {

enum class BankType { f32, f16 };

void knn_cpu(const float* queries, int64_t num_queries, const void* bank, BankType bank_type, int64_t bank_size,
             int64_t dim, int64_t k, float* dist, int64_t* idx);

// CUDA version: same contract; all pointers are device pointers, work is queued on `stream`.
// `status` (device int32, zeroed by the caller) is set to 1 when a bank row outside the
// kernel's candidate list (k + 32 rows per query) might still round to some query's k-th
// distance: more near-ties than the margin, or k-th distances that are float32 subnormals or
// infinite, where rounding merges many rows. The result is then not guaranteed and the caller
// raises; it is never wrong silently. Inputs are screened at a power-of-two scale chosen on
// the device, as on the CPU.
void knn_cuda(const float* queries, int64_t num_queries, const void* bank, BankType bank_type, int64_t bank_size,
              int64_t dim, int64_t k, float* dist, int64_t* idx, int32_t* status, void* stream);

}  // namespace xmodal
