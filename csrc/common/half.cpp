#include "common/half.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace xmodal {

void half_to_float(const uint16_t* in, float* out, int64_t count) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= count; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
#endif
  for (; i < count; ++i) out[i] = half_bits_to_float(in[i]);
}

}  // namespace xmodal
