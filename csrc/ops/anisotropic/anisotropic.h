// G2SF's fused anisotropic metric over k prototype pairs per patch (the folded LSPN).
//
// For every query patch q and prototype pair j < k (the j-th nearest IMG row idx_img[q, j] and
// the j-th nearest PCD row idx_pcd[q, j], found independently):
//   s_m    = dist_m[q, j]                                (bank distances ||f_m - m_m||, m = img, pcd)
//   c_m    = 5 / max(sqrt(s_img² + s_pcd²), 1e-3)        (joint direction, the reference code) or
//            5 / max(s_m, 1e-3)                          (per-modality directions, the paper)
//   h_a    = relu(c_img (qa_img[q] - A_img[i]) + c_pcd (qa_pcd[q] - A_pcd[p]) + b_a)     (H,)
//   h_b    = relu(B_img[i] + B_pcd[p] + b_b)                                             (H,)
//   z      = relu(w1 · [h_a, h_b] + b1)                                                  (H1,)
//   w_m    = exp(tanh(w2[m] · z + b2[m]))                                                (2,)
//   l_j    = w_img coef_img s_img + w_pcd coef_pcd s_pcd       (coef_m = sigma_m / mu_m)
// and out_min[q] = min_j l_j; out_all (optional, (Q, k)) receives every l_j. A background patch
// (foreground[q] == 0) uses w = 1 and never reads the banks (its indices may be -1).
//
// Bank rows hold [A_m | B_m] (2H floats): the LSPN branches' first-layer projections W_A^m m,
// W_B^m m of every bank row, computed once. qa_m are the direction branch's projections of the
// query's features (W_A^m f_m). w1 (H1, 2H) is the head's first layer with the branches'
// second layers folded in (no activation sits between them), w2 (2, H1) the output layer.
//
// Shapes: qa_img, qa_pcd (Q, H); bank_img (n_img, 2H); bank_pcd (n_pcd, 2H); idx_* int64 and
// dist_* float32 (Q, k); foreground uint8 (Q,); b_a, b_b (H,); w1 (H1, 2H); b1 (H1,);
// w2 (2, H1); b2 (2,); coef (2,). Indices of foreground patches must lie in their bank
// (checked: std::out_of_range on the CPU, a status flag on the GPU). Work per (patch, pair):
// one 2H x H1 matrix-vector product (an sgemm over tiles of pairs on the CPU).
#pragma once

#include <math.h>

#include <cstdint>

#include "common/hostdevice.h"

namespace xmodal {

struct AnisotropicArgs {
  const float* qa_img;
  const float* qa_pcd;
  const float* bank_img;
  const float* bank_pcd;
  const int64_t* idx_img;
  const int64_t* idx_pcd;
  const float* dist_img;
  const float* dist_pcd;
  const uint8_t* foreground;
  const float* b_a;
  const float* b_b;
  const float* w1;
  const float* b1;
  const float* w2;
  const float* b2;
  const float* coef;
  int64_t queries, k, hidden, head, n_img, n_pcd;
  bool joint;
  float* out_min;
  float* out_all;  // (Q, k) or nullptr
};

constexpr float kDirectionScale = 5.0f;
constexpr float kDirectionEps = 1e-3f;

// The two direction coefficients (c_img, c_pcd) of one pair.
XMODAL_HD void direction_coefficients(float s_img, float s_pcd, bool joint, float* c_img, float* c_pcd) {
  if (joint) {
    float n = sqrtf(s_img * s_img + s_pcd * s_pcd);
    float c = kDirectionScale / (n > kDirectionEps ? n : kDirectionEps);
    *c_img = c;
    *c_pcd = c;
  } else {
    *c_img = kDirectionScale / (s_img > kDirectionEps ? s_img : kDirectionEps);
    *c_pcd = kDirectionScale / (s_pcd > kDirectionEps ? s_pcd : kDirectionEps);
  }
}

// l = exp(tanh(o_img)) coef_img s_img + exp(tanh(o_pcd)) coef_pcd s_pcd.
XMODAL_HD float anisotropic_metric(float o_img, float o_pcd, float s_img, float s_pcd, float coef_img, float coef_pcd) {
  return expf(tanhf(o_img)) * coef_img * s_img + expf(tanhf(o_pcd)) * coef_pcd * s_pcd;
}

void anisotropic_min_cpu(const AnisotropicArgs& a);
void anisotropic_min_cuda(const AnisotropicArgs& a, int32_t* status, void* stream);

}  // namespace xmodal
