// IEEE binary16 storage for memory banks kept in float16. Conversion is exact (every half is
// a float), so distances to a float16 bank are the float32 distances to the rounded bank.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/hostdevice.h"

namespace xmodal {

XMODAL_HD float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  uint32_t bits;
  if (exponent == 0x1Fu) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // inf / NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal half: renormalise into a normal float.
    exponent = 113u;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3FFu) << 13);
  }
  float out;
#if defined(__CUDA_ARCH__)
  out = __uint_as_float(bits);
#else
  std::memcpy(&out, &bits, sizeof(out));
#endif
  return out;
}

// Converts `count` halves to floats (vectorised with F16C where the build allows it).
void half_to_float(const uint16_t* in, float* out, int64_t count);

}  // namespace xmodal
