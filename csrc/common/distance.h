// Squared Euclidean distance of float32 vectors accumulated in float64: the definition the
// exact kernels (kNN re-ranking, greedy coreset) and their float64 references share.
//
// The summation order is fixed here, not left to the compiler. An `omp simd reduction` lets
// every CPU level choose its own number of partial sums (GCC 12: 4 at x86-64-v2, 8 at v3, 16 at
// v4), so the levels could round differently; and at v4 GCC stopped inlining the function and
// added its 16 partial sums one by one through a realigned stack frame on every call, which
// made the greedy coreset 1.6x slower there than at v3. Here there are always 16 partial sums
// ("lanes"): lane l adds (a[d] - b[d])^2 for d = l (mod 16) in ascending d, and the lanes are
// combined by one tree: lane l += lane l + 8, then l + 4, l + 2, l + 1. Every CPU level runs
// exactly these float64 operations (the scalar version below is the definition), only more of
// them at once, so every level returns the same bits.
//
// `b` may also be given already converted to float64 (exactly, as the conversion is): a kernel
// that measures many rows against one point (the coreset's newest center) converts it once
// instead of once per row, which halves the conversions in the innermost loop.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#endif

// The kernels call this once per row pair in their innermost loops: a call (through the PLT,
// from a shared library) costs as much as a short distance, so it is always inlined.
#if defined(__GNUC__)
#define XMODAL_DISTANCE_INLINE [[gnu::always_inline]] inline
#else
#define XMODAL_DISTANCE_INLINE inline
#endif

namespace xmodal {

constexpr int64_t kDistanceLanes = 16;

// The definition, one lane at a time (the build of any CPU without a vector version below).
// B is float or double.
template <typename B>
double squared_distance_f64_scalar(const float* a, const B* b, int64_t dim) {
  double lane[kDistanceLanes] = {};
  for (int64_t d = 0; d < dim; ++d) {
    const double diff = static_cast<double>(a[d]) - static_cast<double>(b[d]);
    lane[d % kDistanceLanes] += diff * diff;
  }
  for (int64_t width = kDistanceLanes / 2; width >= 1; width /= 2)
    for (int64_t l = 0; l < width; ++l) lane[l] += lane[l + width];
  return lane[0];
}

#if defined(__SSE2__) && !defined(__AVX__)
namespace detail {

// The last dim % 16 elements as a zero-padded block: a padded lane adds 0 * 0 to its sum (of
// squares, never -0), which leaves it unchanged, as the scalar loop's skipping it does. (The
// AVX versions get the same zeros from masked loads.)
template <typename B>
struct DistanceTail {
  float a[kDistanceLanes] = {};
  B b[kDistanceLanes] = {};
  DistanceTail(const float* pa, const B* pb, int64_t count) {
    std::memcpy(a, pa, static_cast<size_t>(count) * sizeof(float));
    std::memcpy(b, pb, static_cast<size_t>(count) * sizeof(B));
  }
};

}  // namespace detail
#endif

#if defined(__AVX512F__) && defined(__AVX512VL__)
// GCC 12's intrinsics pass an "undefined" vector through, which -Wmaybe-uninitialized reports
// inside its own headers (a false positive, as in bucket_sort.h); silenced for this part only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// Lanes 0-7 and 8-15 in two registers.
namespace detail {
XMODAL_DISTANCE_INLINE __m512d doubles8(const float* p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
XMODAL_DISTANCE_INLINE __m512d doubles8(const double* p) { return _mm512_loadu_pd(p); }
XMODAL_DISTANCE_INLINE __m512d doubles8(const float* p, __mmask8 m) {
  return _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, p));
}
XMODAL_DISTANCE_INLINE __m512d doubles8(const double* p, __mmask8 m) { return _mm512_maskz_loadu_pd(m, p); }

template <typename B>
XMODAL_DISTANCE_INLINE void add_block(const float* a, const B* b, __m512d& low, __m512d& high) {
  const __m512d d0 = _mm512_sub_pd(doubles8(a), doubles8(b));
  const __m512d d1 = _mm512_sub_pd(doubles8(a + 8), doubles8(b + 8));
  low = _mm512_add_pd(low, _mm512_mul_pd(d0, d0));
  high = _mm512_add_pd(high, _mm512_mul_pd(d1, d1));
}
}  // namespace detail

template <typename B>
XMODAL_DISTANCE_INLINE double squared_distance_f64(const float* a, const B* b, int64_t dim) {
  __m512d low = _mm512_setzero_pd(), high = _mm512_setzero_pd();
  int64_t d = 0;
  for (; d + kDistanceLanes <= dim; d += kDistanceLanes) detail::add_block(a + d, b + d, low, high);
  if (d < dim) {  // masked-off lanes load 0 (and cannot fault)
    const int64_t rest = dim - d;
    const __mmask8 m0 = rest >= 8 ? 0xFF : static_cast<__mmask8>((1u << rest) - 1);
    const __mmask8 m1 = rest > 8 ? static_cast<__mmask8>((1u << (rest - 8)) - 1) : 0;
    const __m512d d0 = _mm512_sub_pd(detail::doubles8(a + d, m0), detail::doubles8(b + d, m0));
    const __m512d d1 = _mm512_sub_pd(detail::doubles8(a + d + 8, m1), detail::doubles8(b + d + 8, m1));
    low = _mm512_add_pd(low, _mm512_mul_pd(d0, d0));
    high = _mm512_add_pd(high, _mm512_mul_pd(d1, d1));
  }
  const __m512d s = _mm512_add_pd(low, high);  // lane l + lane l+8
  const __m256d t = _mm256_add_pd(_mm512_castpd512_pd256(s), _mm512_extractf64x4_pd(s, 1));
  const __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
  return _mm_cvtsd_f64(_mm_add_sd(u, _mm_unpackhi_pd(u, u)));
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#elif defined(__AVX__)
// Lanes 4k..4k+3 in register k.
namespace detail {
XMODAL_DISTANCE_INLINE __m256d doubles4(const float* p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
XMODAL_DISTANCE_INLINE __m256d doubles4(const double* p) { return _mm256_loadu_pd(p); }
// Elements i < count of the 4 at p; the others 0.
XMODAL_DISTANCE_INLINE __m256d doubles4(const float* p, int64_t count) {
  const __m128i m = _mm_setr_epi32(count > 0 ? -1 : 0, count > 1 ? -1 : 0, count > 2 ? -1 : 0, count > 3 ? -1 : 0);
  return _mm256_cvtps_pd(_mm_maskload_ps(p, m));
}
XMODAL_DISTANCE_INLINE __m256d doubles4(const double* p, int64_t count) {
  const __m256i m = _mm256_setr_epi64x(count > 0 ? -1 : 0, count > 1 ? -1 : 0, count > 2 ? -1 : 0, count > 3 ? -1 : 0);
  return _mm256_maskload_pd(p, m);
}

template <typename B>
XMODAL_DISTANCE_INLINE void add_block(const float* a, const B* b, __m256d* lanes) {
  for (int k = 0; k < 4; ++k) {
    const __m256d diff = _mm256_sub_pd(doubles4(a + 4 * k), doubles4(b + 4 * k));
    lanes[k] = _mm256_add_pd(lanes[k], _mm256_mul_pd(diff, diff));
  }
}
}  // namespace detail

template <typename B>
XMODAL_DISTANCE_INLINE double squared_distance_f64(const float* a, const B* b, int64_t dim) {
  __m256d lanes[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
  int64_t d = 0;
  for (; d + kDistanceLanes <= dim; d += kDistanceLanes) detail::add_block(a + d, b + d, lanes);
  for (int k = 0; d + 4 * k < dim; ++k) {  // masked-off lanes load 0 (and cannot fault)
    const int64_t count = dim - d - 4 * k;
    const __m256d diff = _mm256_sub_pd(detail::doubles4(a + d + 4 * k, count), detail::doubles4(b + d + 4 * k, count));
    lanes[k] = _mm256_add_pd(lanes[k], _mm256_mul_pd(diff, diff));
  }
  const __m256d t = _mm256_add_pd(_mm256_add_pd(lanes[0], lanes[2]), _mm256_add_pd(lanes[1], lanes[3]));
  const __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
  return _mm_cvtsd_f64(_mm_add_sd(u, _mm_unpackhi_pd(u, u)));
}
#elif defined(__SSE2__)
// Lanes 2k, 2k+1 in register k.
namespace detail {
XMODAL_DISTANCE_INLINE __m128d doubles2(const float* p) {
  return _mm_cvtps_pd(_mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
XMODAL_DISTANCE_INLINE __m128d doubles2(const double* p) { return _mm_loadu_pd(p); }

template <typename B>
XMODAL_DISTANCE_INLINE void add_block(const float* a, const B* b, __m128d* lanes) {
  for (int k = 0; k < 8; ++k) {
    const __m128d diff = _mm_sub_pd(doubles2(a + 2 * k), doubles2(b + 2 * k));
    lanes[k] = _mm_add_pd(lanes[k], _mm_mul_pd(diff, diff));
  }
}
}  // namespace detail

template <typename B>
XMODAL_DISTANCE_INLINE double squared_distance_f64(const float* a, const B* b, int64_t dim) {
  __m128d lanes[8];
  for (__m128d& l : lanes) l = _mm_setzero_pd();
  int64_t d = 0;
  for (; d + kDistanceLanes <= dim; d += kDistanceLanes) detail::add_block(a + d, b + d, lanes);
  if (d < dim) {
    const detail::DistanceTail<B> tail(a + d, b + d, dim - d);
    detail::add_block(tail.a, tail.b, lanes);
  }
  // lanes[k] + lanes[k + 4] is lane 2k (+1) plus lane 2k + 8 (+1); then + 4 lanes, + 2, + 1
  const __m128d s01 = _mm_add_pd(lanes[0], lanes[4]), s23 = _mm_add_pd(lanes[1], lanes[5]);
  const __m128d s45 = _mm_add_pd(lanes[2], lanes[6]), s67 = _mm_add_pd(lanes[3], lanes[7]);
  const __m128d u = _mm_add_pd(_mm_add_pd(s01, s45), _mm_add_pd(s23, s67));
  return _mm_cvtsd_f64(_mm_add_sd(u, _mm_unpackhi_pd(u, u)));
}
#else
template <typename B>
XMODAL_DISTANCE_INLINE double squared_distance_f64(const float* a, const B* b, int64_t dim) {
  return squared_distance_f64_scalar(a, b, dim);
}
#endif

}  // namespace xmodal
