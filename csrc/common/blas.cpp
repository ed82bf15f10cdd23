#include "common/blas.h"

#include <cblas.h>

#include <limits>
#include <mutex>

#include "common/check.h"

namespace xmodal::blas {
namespace {

// OpenBLAS takes 32-bit dimensions (scipy-openblas32); tiles are far smaller than that, but a
// silent wrap-around would corrupt memory, so it is checked.
blasint to_blasint(int64_t v, const char* what) {
  XMODAL_CHECK(v >= 0 && v <= std::numeric_limits<blasint>::max(), "sgemm ", what, " out of 32-bit range: ", v);
  return static_cast<blasint>(v);
}

void run_in_calling_thread() {
  // This OpenBLAS (the scipy-openblas32 wheel) is xmodal's own copy: numpy and scipy bundle
  // theirs under other sonames. Setting it to one thread once therefore affects only xmodal.
  static std::once_flag once;
  std::call_once(once, [] { scipy_openblas_set_num_threads(1); });
}

void sgemm(bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
           int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  run_in_calling_thread();
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans, to_blasint(m, "m"),
                    to_blasint(n, "n"), to_blasint(k, "k"), alpha, a, to_blasint(lda, "lda"), b, to_blasint(ldb, "ldb"),
                    beta, c, to_blasint(ldc, "ldc"));
}

}  // namespace

void sgemm_nt(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
              float beta, float* c, int64_t ldc) {
  sgemm(true, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void sgemm_nn(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
              float beta, float* c, int64_t ldc) {
  sgemm(false, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

const char* name() { return XMODAL_BLAS_NAME; }

}  // namespace xmodal::blas
