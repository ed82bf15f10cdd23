// Fused MLP inference and CFM's crossmodal scorer.
//
// An MLP is a list of torch-style Linear layers (weight (out, in) row-major, bias (out,) or
// null: no bias), each followed by its own activation (identity = none): exactly
// Sequential(Linear, act_0, Linear, act_1, ..., Linear, act_last). GELU is the exact erf form,
// LeakyReLU carries its negative slope (BridgeNet: 0.3), sigmoid is a discriminator's output.
//
// mlp_forward: x (rows, in) -> y (rows, out). Rows are processed in blocks that run through all
// layers while the block's activations stay in cache: activation memory is O(threads * block *
// width), never rows x width.
//
// crossmodal_discrepancy (CFM): for each foreground row i (mask[i] != 0)
//   d_3d[i] = || n(M_2d3d(f2d[i])) - n(f3d[i]) ||,   d_2d[i] = || n(M_3d2d(f3d[i])) - n(f2d[i]) ||
// with n(v) = v / max(||v||, 1e-12) (torch.nn.functional.normalize); background rows get 0 and
// cost nothing (they are never gathered). The mapped features are never materialised.
#pragma once

#include <cstdint>
#include <vector>

#include "common/activations.h"

namespace xmodal {

struct LinearLayer {
  const float* weight;  // (out, in)
  const float* bias;    // (out,) or nullptr
  int64_t in, out;
  Activation activation = Activation::identity;  // applied to this layer's output
  float negative_slope = 0.01f;                  // of leaky_relu
};

void mlp_forward_cpu(const float* x, int64_t rows, const std::vector<LinearLayer>& layers, float* y);

void crossmodal_discrepancy_cpu(const float* f2d, const float* f3d, int64_t rows, const uint8_t* mask,
                                const std::vector<LinearLayer>& mlp_2d3d, const std::vector<LinearLayer>& mlp_3d2d,
                                float* d_2d, float* d_3d);

// CUDA versions: device pointers (layer weights included), queued on `stream`.
void mlp_forward_cuda(const float* x, int64_t rows, const std::vector<LinearLayer>& layers, float* y, void* stream);

void crossmodal_discrepancy_cuda(const float* f2d, const float* f3d, int64_t rows, const uint8_t* mask,
                                 const std::vector<LinearLayer>& mlp_2d3d, const std::vector<LinearLayer>& mlp_3d2d,
                                 float* d_2d, float* d_3d, void* stream);

// Validates a layer chain: consecutive widths match, the first takes `in` features and the last
// produces `out` (pass -1 to skip a check). Shared by the CPU and CUDA entry points.
void check_mlp_chain(const std::vector<LinearLayer>& layers, int64_t in, int64_t out, const char* name);

}  // namespace xmodal
