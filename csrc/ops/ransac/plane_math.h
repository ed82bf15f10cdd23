// Per-hypothesis math of the RANSAC plane fit, shared by the CPU and CUDA kernels (and mirrored
// line by line in xmodal.reference.ransac_plane, which must draw the same samples).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hostdevice.h"

namespace xmodal::plane {

// splitmix64: a counter-based generator, so hypothesis `i` draws the same indices whatever
// thread (or GPU block) evaluates it.
XMODAL_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

struct Rng {
  uint64_t state;
  XMODAL_HD explicit Rng(uint64_t seed, uint64_t stream) : state(mix64(seed + kGolden * (stream + 1))) {}
  XMODAL_HD uint64_t next() {
    state += kGolden;
    return mix64(state);
  }
  // Uniform in [0, bound): the high 64 bits of next() * bound (Lemire's multiply-shift).
  XMODAL_HD uint64_t below(uint64_t bound) {
    const uint64_t r = next();
#if defined(__CUDA_ARCH__)
    return __umul64hi(r, bound);
#else
    return static_cast<uint64_t>((static_cast<unsigned __int128>(r) * bound) >> 64);
#endif
  }
};

// Robert Floyd's sampling of `m` distinct indices of [0, n) (m <= n) into `out`, in draw
// order: exactly m draws, no retries, O(m^2) membership tests (m is small: 3..100).
XMODAL_HD void sample_distinct(Rng& rng, int64_t n, int64_t m, int64_t* out) {
  int64_t count = 0;
  for (int64_t j = n - m; j < n; ++j) {
    int64_t t = static_cast<int64_t>(rng.below(static_cast<uint64_t>(j + 1)));
    for (int64_t s = 0; s < count; ++s) {
      if (out[s] == t) {
        t = j;
        break;
      }
    }
    out[count++] = t;
  }
}

// Symmetric 3x3 matrix (a00 a01 a02 a11 a12 a22) -> eigenvector of the smallest eigenvalue by
// cyclic Jacobi rotations (robust for the tiny, nearly rank-2 covariances of planar patches).
// Returns false when the matrix has rank < 2 (all points on one line or one point): the plane
// is then undetermined.
XMODAL_HD bool smallest_eigenvector(const double cov[6], double normal[3]) {
  double a[3][3] = {{cov[0], cov[1], cov[2]}, {cov[1], cov[3], cov[4]}, {cov[2], cov[4], cov[5]}};
  double v[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
  for (int sweep = 0; sweep < 32; ++sweep) {
    const double off = fabs(a[0][1]) + fabs(a[0][2]) + fabs(a[1][2]);
    const double diag = fabs(a[0][0]) + fabs(a[1][1]) + fabs(a[2][2]);
    if (off <= 1e-300 || off <= 1e-18 * diag) break;
    for (int p = 0; p < 2; ++p) {
      for (int q = p + 1; q < 3; ++q) {
        if (a[p][q] == 0.0) continue;
        const double theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
        const double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
        for (int k = 0; k < 3; ++k) {  // A <- A J  (columns p, q)
          const double akp = a[k][p], akq = a[k][q];
          a[k][p] = c * akp - s * akq;
          a[k][q] = s * akp + c * akq;
        }
        for (int k = 0; k < 3; ++k) {  // A <- J^T A  (rows p, q)
          const double apk = a[p][k], aqk = a[q][k];
          a[p][k] = c * apk - s * aqk;
          a[q][k] = s * apk + c * aqk;
        }
        for (int k = 0; k < 3; ++k) {  // V <- V J
          const double vkp = v[k][p], vkq = v[k][q];
          v[k][p] = c * vkp - s * vkq;
          v[k][q] = s * vkp + c * vkq;
        }
      }
    }
  }
  int order[3] = {0, 1, 2};  // eigenvalue indices, ascending
  for (int i = 1; i < 3; ++i)
    for (int j = i; j > 0 && a[order[j]][order[j]] < a[order[j - 1]][order[j - 1]]; --j) {
      const int t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
  const int lo = order[0], mid = order[1], hi = order[2];
  if (!(a[hi][hi] > 0.0) || a[mid][mid] <= 1e-12 * a[hi][hi]) return false;
  const double norm = sqrt(v[0][lo] * v[0][lo] + v[1][lo] * v[1][lo] + v[2][lo] * v[2][lo]);
  for (int k = 0; k < 3; ++k) normal[k] = v[k][lo] / norm;
  return true;
}

// Least-squares plane through a centroid and a scatter matrix: unit normal (smallest
// eigenvector) and offset d = -n.c, signed so that d > 0 (the normal faces the origin, i.e.
// the sensor for camera-frame clouds); for d == 0 the largest normal component is positive.
XMODAL_HD bool plane_from_moments(const double centroid[3], const double scatter[6], double plane[4]) {
  double n[3];
  if (!smallest_eigenvector(scatter, n)) return false;
  double d = -(n[0] * centroid[0] + n[1] * centroid[1] + n[2] * centroid[2]);
  int big = 0;
  for (int k = 1; k < 3; ++k)
    if (fabs(n[k]) > fabs(n[big])) big = k;
  const bool flip = d < 0.0 || (d == 0.0 && n[big] < 0.0);
  const double sign = flip ? -1.0 : 1.0;
  plane[0] = sign * n[0];
  plane[1] = sign * n[1];
  plane[2] = sign * n[2];
  plane[3] = sign * d;
  return true;
}

// Ranks two hypotheses as open3d's segment_plane does: more inliers first, then the smaller
// inlier RMSE (compared as error_a / count_a < error_b / count_b without dividing).
XMODAL_HD bool better_hypothesis(int64_t count_a, double error_a, int64_t count_b, double error_b) {
  if (count_a != count_b) return count_a > count_b;
  return error_a * static_cast<double>(count_b) < error_b * static_cast<double>(count_a);
}

// Hypotheses needed to draw, with confidence `probability`, one sample of `sample_size`
// inliers when a fraction `inlier_fraction` of the points are inliers (+inf: never enough).
XMODAL_HD double required_hypotheses(double inlier_fraction, int64_t sample_size, double probability) {
  if (probability >= 1.0) return INFINITY;
  const double all_inliers = pow(inlier_fraction, static_cast<double>(sample_size));
  if (all_inliers >= 1.0) return 0.0;
  const double denominator = log1p(-all_inliers);
  if (denominator == 0.0) return INFINITY;
  return log1p(-probability) / denominator;
}

}  // namespace xmodal::plane
