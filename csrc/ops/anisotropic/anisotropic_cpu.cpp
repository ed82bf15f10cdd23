// CPU: foreground patches in tiles of kTile patches x k pairs. Each tile gathers and adds the
// bank projections into a (pairs, 2H) matrix, runs the folded head layer as one sgemm while the
// tile is in cache, then the 2-wide output layer, exp∘tanh, the weighted sum and the running
// min: memory is O(threads x tile x (2H + H1)), never patches x k x 2H.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/blas.h"
#include "common/check.h"
#include "common/parallel.h"
#include "ops/anisotropic/anisotropic.h"

namespace xmodal {
namespace {

constexpr int64_t kTile = 32;  // patches per tile: 32 x 6 pairs = 192 sgemm rows

void check_index(int64_t index, int64_t rows, const char* name, int64_t q, int64_t j) {
  XMODAL_CHECK(index >= 0 && index < rows, name, "[", q, ", ", j, "] = ", index, " is outside the bank of ", rows,
               " rows (foreground patches need valid neighbours)");
}

// h = [relu(c_img (qa_img - A_img) + c_pcd (qa_pcd - A_pcd) + b_a), relu(B_img + B_pcd + b_b)].
void pair_input(const AnisotropicArgs& a, int64_t q, int64_t j, float* h) {
  const int64_t hidden = a.hidden, pair = q * a.k + j;
  const int64_t i = a.idx_img[pair], p = a.idx_pcd[pair];
  check_index(i, a.n_img, "idx_img", q, j);
  check_index(p, a.n_pcd, "idx_pcd", q, j);
  float c_img, c_pcd;
  direction_coefficients(a.dist_img[pair], a.dist_pcd[pair], a.joint, &c_img, &c_pcd);
  const float* row_img = a.bank_img + i * 2 * hidden;
  const float* row_pcd = a.bank_pcd + p * 2 * hidden;
  const float* qi = a.qa_img + q * hidden;
  const float* qp = a.qa_pcd + q * hidden;
#pragma omp simd
  for (int64_t d = 0; d < hidden; ++d) {
    const float v = c_img * (qi[d] - row_img[d]) + c_pcd * (qp[d] - row_pcd[d]) + a.b_a[d];
    h[d] = v > 0.0f ? v : 0.0f;
  }
#pragma omp simd
  for (int64_t d = 0; d < hidden; ++d) {
    const float v = row_img[hidden + d] + row_pcd[hidden + d] + a.b_b[d];
    h[hidden + d] = v > 0.0f ? v : 0.0f;
  }
}

float output(const float* w, float bias, const float* z, int64_t width) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t d = 0; d < width; ++d) sum += w[d] * z[d];
  return sum + bias;
}

void store(const AnisotropicArgs& a, int64_t q, int64_t j, float l, float& best) {
  if (a.out_all != nullptr) a.out_all[q * a.k + j] = l;
  best = std::min(best, l);
}

void background(const AnisotropicArgs& a, int64_t q) {
  float best = std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < a.k; ++j) {
    const int64_t pair = q * a.k + j;
    store(a, q, j, a.coef[0] * a.dist_img[pair] + a.coef[1] * a.dist_pcd[pair], best);
  }
  a.out_min[q] = best;
}

}  // namespace

void anisotropic_min_cpu(const AnisotropicArgs& a) {
  XMODAL_CHECK(a.queries >= 0 && a.k >= 1 && a.hidden >= 1 && a.head >= 1, "anisotropic_min: bad sizes Q=", a.queries,
               " k=", a.k, " H=", a.hidden, " H1=", a.head);
  std::vector<int64_t> fg;
  fg.reserve(static_cast<size_t>(a.queries));
  for (int64_t q = 0; q < a.queries; ++q) {
    if (a.foreground[q] != 0) {
      fg.push_back(q);
    } else {
      background(a, q);
    }
  }
  const int64_t count = static_cast<int64_t>(fg.size());
  const int64_t tiles = (count + kTile - 1) / kTile;
  const int64_t width = 2 * a.hidden, rows_max = kTile * a.k;
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<float> h(static_cast<size_t>(rows_max * width)), z(static_cast<size_t>(rows_max * a.head));
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tiles; ++t)
      errors.run([&] {
        const int64_t first = t * kTile, patches = std::min(kTile, count - first), rows = patches * a.k;
        for (int64_t r = 0; r < rows; ++r) pair_input(a, fg[first + r / a.k], r % a.k, h.data() + r * width);
        blas::sgemm_nt(rows, a.head, width, 1.0f, h.data(), width, a.w1, width, 0.0f, z.data(), a.head);
        for (int64_t r = 0; r < rows; ++r) {
          float* zr = z.data() + r * a.head;
#pragma omp simd
          for (int64_t d = 0; d < a.head; ++d) {
            const float v = zr[d] + a.b1[d];
            zr[d] = v > 0.0f ? v : 0.0f;
          }
        }
        for (int64_t p = 0; p < patches; ++p) {
          const int64_t q = fg[first + p];
          float best = std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j < a.k; ++j) {
            const float* zr = z.data() + (p * a.k + j) * a.head;
            const int64_t pair = q * a.k + j;
            const float o_img = output(a.w2, a.b2[0], zr, a.head);
            const float o_pcd = output(a.w2 + a.head, a.b2[1], zr, a.head);
            store(a, q, j, anisotropic_metric(o_img, o_pcd, a.dist_img[pair], a.dist_pcd[pair], a.coef[0], a.coef[1]),
                  best);
          }
          a.out_min[q] = best;
        }
      });
  }
  errors.rethrow();
}

}  // namespace xmodal
