// Element-wise activations shared by the CPU and CUDA MLP kernels (XMODAL_HD: one definition,
// exercised by the CPU tests).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/hostdevice.h"

namespace xmodal {

enum class Activation : int { identity = 0, relu = 1, gelu = 2, leaky_relu = 3, sigmoid = 4 };

XMODAL_HD float bits_to_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
#endif
}

// exp(y) for y <= 0, branch-free so loops over it vectorise: Cody-Waite reduction
// y = k ln2 + r, |r| <= ln2 / 2, a degree-6 Taylor/minimax polynomial for e^r (relative error
// < 2e-7), and 2^k assembled in the exponent bits. Returns 0 below -87 (float underflow).
XMODAL_HD float exp_nonpositive(float y) {
  y = y < -87.0f ? -87.0f : y;
  const float k = rintf(y * 1.44269504088896341f);
  const float r = (y - k * 0.693145751953125f) - k * 1.428606765330187045e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t e = static_cast<int32_t>(k) + 127;
  return p * bits_to_float(static_cast<uint32_t>(e) << 23);
}

// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7): the formula PyTorch's own
// vectorised CPU erf uses, so GELU matches torch.nn.GELU() to float32 rounding level.
XMODAL_HD float erf_approx(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float t = 1.0f / (1.0f + 0.3275911f * ax);
  float poly = 1.061405429f;
  poly = poly * t - 1.453152027f;
  poly = poly * t + 1.421413741f;
  poly = poly * t - 0.284496736f;
  poly = poly * t + 0.254829592f;
  const float y = 1.0f - poly * t * exp_nonpositive(-ax * ax);
  return x < 0.0f ? -y : y;
}

// GELU in its exact (erf) form, as torch.nn.GELU() with no arguments; not the tanh form.
XMODAL_HD float gelu(float x) { return 0.5f * x * (1.0f + erf_approx(x * 0.70710678118654752f)); }

// As torch.nn.LeakyReLU(negative_slope).
XMODAL_HD float leaky_relu(float x, float negative_slope) { return x > 0.0f ? x : negative_slope * x; }

// 1 / (1 + e^-x) without overflow: with e = e^-|x| in (0, 1], it is 1 / (1 + e) for x >= 0 and
// e / (1 + e) below (relative error ~3e-7; values below e^-87 come out as e^-87 ~ 1.6e-38).
XMODAL_HD float sigmoid(float x) {
  const float e = exp_nonpositive(x < 0.0f ? x : -x);
  const float s = 1.0f / (1.0f + e);
  return x >= 0.0f ? s : e * s;
}

// `negative_slope` is read by leaky_relu only.
XMODAL_HD float activate(float x, Activation act, float negative_slope) {
  switch (act) {
    case Activation::relu:
      return x > 0.0f ? x : 0.0f;
    case Activation::gelu:
      return gelu(x);
    case Activation::leaky_relu:
      return leaky_relu(x, negative_slope);
    case Activation::sigmoid:
      return sigmoid(x);
    default:
      return x;
  }
}

}  // namespace xmodal
