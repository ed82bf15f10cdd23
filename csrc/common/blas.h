// The sgemm the CPU kernels build on (OpenBLAS from the scipy-openblas32 wheel).
// Every call runs single-threaded in the calling thread: the kernels parallelise over their
// own tiles with OpenMP and fuse their epilogues while the tile is still in cache, so
// OpenBLAS must not spawn threads of its own under ours.
#pragma once

#include <cstdint>

namespace xmodal::blas {

// C[m×n] = alpha · A[m×k] · B[n×k]ᵀ + beta · C, all row-major with leading dimensions.
// This is the shape of distance tiles (queries × bankᵀ) and of torch Linear layers (x · Wᵀ).
void sgemm_nt(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
              float beta, float* c, int64_t ldc);

// C[m×n] = alpha · A[m×k] · B[k×n] + beta · C, row-major.
void sgemm_nn(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
              float beta, float* c, int64_t ldc);

const char* name();

}  // namespace xmodal::blas
