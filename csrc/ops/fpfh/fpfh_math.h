// Per-point math of normal estimation, SPFH and FPFH, shared by the CPU and CUDA kernels
// (XMODAL_HD: the CPU tests exercise exactly what the GPU runs). Every function reads one
// point's neighbourhood row (rows of the cloud, nearest first, ops/fpfh/fpfh.h) and writes
// that point's result, so a kernel is a loop (or a thread) per point around it.
//
// All arithmetic is float64 on the float32 inputs; xmodal.reference.fpfh writes the same
// formulas in numpy.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hostdevice.h"
#include "common/point_math.h"
#include "ops/fpfh/eigen3.h"
#include "ops/fpfh/fpfh.h"

namespace xmodal::fpfh {

constexpr double kPi = 3.14159265358979323846;

// --- normals --------------------------------------------------------------------------------

// Covariance (xx xy xz yy yz zz) of the `count` points listed in `rows`, about their mean
// (two passes in float64; divided by count as open3d does, which does not move the vector).
XMODAL_HD void neighbourhood_covariance(const float* points, const int32_t* rows, int32_t count, double cov[6]) {
  double mean[3] = {0.0, 0.0, 0.0};
  for (int32_t k = 0; k < count; ++k)
    for (int d = 0; d < 3; ++d) mean[d] += points[3 * static_cast<int64_t>(rows[k]) + d];
  for (int d = 0; d < 3; ++d) mean[d] /= count;
  for (int i = 0; i < 6; ++i) cov[i] = 0.0;
  for (int32_t k = 0; k < count; ++k) {
    const float* p = points + 3 * static_cast<int64_t>(rows[k]);
    const double x = p[0] - mean[0], y = p[1] - mean[1], z = p[2] - mean[2];
    cov[0] += x * x;
    cov[1] += x * y;
    cov[2] += x * z;
    cov[3] += y * y;
    cov[4] += y * z;
    cov[5] += z * z;
  }
  for (int i = 0; i < 6; ++i) cov[i] /= count;
}

// The normal of point i from its neighbourhood (rows[0..count), the point itself included):
// the smallest eigenvector of the covariance; (0, 0, 1) with fewer than 3 points (open3d's
// rule). Flipped when it points away from the viewpoint (n . (viewpoint - p) < 0).
XMODAL_HD void point_normal(const float* points, int64_t i, const int32_t* rows, int32_t count, Viewpoint viewpoint,
                            float out[3]) {
  double n[3] = {0.0, 0.0, 1.0};
  if (count >= 3) {
    double cov[6];
    neighbourhood_covariance(points, rows, count, cov);
    eigen3::smallest_eigenvector(cov, n);
  }
  if (viewpoint.orient) {
    const float* p = points + 3 * i;
    const double toward = n[0] * (viewpoint.x - p[0]) + n[1] * (viewpoint.y - p[1]) + n[2] * (viewpoint.z - p[2]);
    if (toward < 0.0)
      for (int d = 0; d < 3; ++d) n[d] = -n[d];
  }
  for (int d = 0; d < 3; ++d) out[d] = static_cast<float>(n[d]);
}

// --- SPFH -----------------------------------------------------------------------------------

// open3d's pair features of a source point (p1, n1) and a target (p2, n2), in its order:
// theta = atan2(w . nt, u . nt), alpha = v . nt, phi = u . (p2 - p1) / d, in the Darboux frame
// u = ns, v = unit((pt - ps) x u), w = u x v. The source is the point whose normal makes the
// smaller angle with the line joining them: n2 when |n1 . dp| < |n2 . dp| (dp = p2 - p1;
// open3d compares acos(|n . dp| / d), the same order up to rounding). Coincident points, and normals parallel to dp,
// give (0, 0, 0).
//
// Written without branches (selects only), so that the CPU loop over a point's neighbours
// vectorises; theta is not formed: its bin comes from cos(theta) = x / sqrt(x^2 + y^2)
// (x = u . nt, y = w . nt) compared with the cosines of the bin edges on the side the sign of y
// gives, which is floor(11 * (atan2(y, x) + pi) / (2 pi)) except within rounding of an edge
// (signed zeros follow atan2: theta = +-pi for y = +-0 and x < 0).
struct PairSlots {
  int theta, alpha, phi;  // histogram slots 0..10, 11..21, 22..32
};

// cos(m pi / 11), m = 1, 3, 5, 7, 9: theta's bin edges are at +-m pi / 11.
constexpr double kEdgeCos1 = 0.9594929736144974, kEdgeCos3 = 0.6548607339452851, kEdgeCos5 = 0.14231483827328512,
                 kEdgeCos7 = -0.4154150130018863, kEdgeCos9 = -0.8412535328311811;

// floor(scaled) clamped to the 11 bins, as open3d's clamp of floor(...) (NaN to bin 0); selects
// and a truncation only, so that the loop over a point's pairs vectorises.
XMODAL_HD int clamp_bin(double scaled) {
  const double last = kFpfhBins - 1;
  return static_cast<int>(scaled >= 0.0 ? (scaled < last ? scaled : last) : 0.0);
}

// The sign bit of v (true for -0.0), in a form both compilers accept on host and device.
XMODAL_HD int sign_bit(double v) { return copysign(1.0, v) < 0.0; }

// theta's bin from x = cos-like and y = sin-like components (any positive scale).
XMODAL_HD int theta_bin(double x, double y) {
  const double r2 = x * x + y * y;
  const double c = x / sqrt(r2);
  const int upper = 5 + (c <= kEdgeCos1) + (c <= kEdgeCos3) + (c <= kEdgeCos5) + (c <= kEdgeCos7) + (c <= kEdgeCos9);
  const int lower = (c >= kEdgeCos9) + (c >= kEdgeCos7) + (c >= kEdgeCos5) + (c >= kEdgeCos3) + (c >= kEdgeCos1);
  const int negative_y = sign_bit(y), valid = r2 > 0.0;
  const int bin = upper + negative_y * (lower - upper);
  // x = y = 0: atan2's signed zeros (0 for x = +0, +-pi for x = -0).
  const int origin = 5 + sign_bit(x) * (5 - 10 * negative_y);
  return valid * bin + (1 - valid) * origin;
}

// The slots of the pair (p1, n1) -> (p2, n2) with dp = p2 - p1 (all float64).
XMODAL_HD PairSlots pair_slots(double dx, double dy, double dz, double n1x, double n1y, double n1z, double n2x,
                               double n2y, double n2z) {
  const double d = sqrt(dx * dx + dy * dy + dz * dz);
  const double along1 = n1x * dx + n1y * dy + n1z * dz, along2 = n2x * dx + n2y * dy + n2z * dz;
  const bool swap = fabs(along1) < fabs(along2);
  const double ux = swap ? n2x : n1x, uy = swap ? n2y : n1y, uz = swap ? n2z : n1z;  // source normal
  const double tx = swap ? n1x : n2x, ty = swap ? n1y : n2y, tz = swap ? n1z : n2z;  // target normal
  const double ex = swap ? -dx : dx, ey = swap ? -dy : dy, ez = swap ? -dz : dz;     // source -> target
  const double phi = (swap ? -along2 : along1) / d;
  double vx = ey * uz - ez * uy, vy = ez * ux - ex * uz, vz = ex * uy - ey * ux;
  const double v_norm = sqrt(vx * vx + vy * vy + vz * vz);
  vx /= v_norm;
  vy /= v_norm;
  vz /= v_norm;
  const double wx = uy * vz - uz * vy, wy = uz * vx - ux * vz, wz = ux * vy - uy * vx;
  const double alpha = vx * tx + vy * ty + vz * tz;
  const int theta_slot = theta_bin(ux * tx + uy * ty + uz * tz, wx * tx + wy * ty + wz * tz);
  const int alpha_slot = clamp_bin(kFpfhBins * (alpha + 1.0) * 0.5);
  const int phi_slot = clamp_bin(kFpfhBins * (phi + 1.0) * 0.5);
  // Coincident points or dp parallel to the source normal (NaNs above): zero features, whose
  // bin is 5 in every block.
  const int degenerate = (d == 0.0) | (v_norm == 0.0);
  return {theta_slot + degenerate * (5 - theta_slot), kFpfhBins + alpha_slot + degenerate * (5 - alpha_slot),
          2 * kFpfhBins + phi_slot + degenerate * (5 - phi_slot)};
}

// SPFH of point i as bin counts (counts[0..33)) over the pairs with rows[1..count) (rows[0] is
// the point itself, or a coincident point with a lower index: either pair gives zero features,
// so skipping it is open3d's "skip the point itself"). Returns the value of one count,
// 100 / (count - 1), so that SPFH = increment * counts sums to 100 per 11-bin block; 0 when the
// point has no neighbour. On the CPU the neighbours go through pair_slots in vectorised chunks.
XMODAL_HD double point_spfh(const float* points, const float* normals, int64_t i, const int32_t* rows, int32_t count,
                            float counts[kFpfhFeatures]) {
#if defined(__CUDA_ARCH__)
  constexpr int kChunk = 1;
#else
  constexpr int kChunk = 32;
#endif
  if (count <= 1) {
    for (int b = 0; b < kFpfhFeatures; ++b) counts[b] = 0.0f;
    return 0.0;
  }
  // Two interleaved integer histograms: consecutive pairs often hit the same bin, and one
  // histogram would chain every increment through a store and a reload.
  int32_t hist[2][kFpfhFeatures];
  for (int b = 0; b < kFpfhFeatures; ++b) hist[0][b] = hist[1][b] = 0;
  const float* p = points + 3 * i;
  const double n1x = normals[3 * i], n1y = normals[3 * i + 1], n1z = normals[3 * i + 2];
  for (int32_t k0 = 1; k0 < count; k0 += kChunk) {
    const int m = count - k0 < kChunk ? count - k0 : kChunk;
    double dx[kChunk], dy[kChunk], dz[kChunk], nx[kChunk], ny[kChunk], nz[kChunk];
    for (int c = 0; c < m; ++c) {
      const int64_t j = rows[k0 + c];
      dx[c] = static_cast<double>(points[3 * j]) - p[0];
      dy[c] = static_cast<double>(points[3 * j + 1]) - p[1];
      dz[c] = static_cast<double>(points[3 * j + 2]) - p[2];
      nx[c] = normals[3 * j];
      ny[c] = normals[3 * j + 1];
      nz[c] = normals[3 * j + 2];
    }
    int theta[kChunk], alpha[kChunk], phi[kChunk];
    for (int c = 0; c < m; ++c) {
      const PairSlots slots = pair_slots(dx[c], dy[c], dz[c], n1x, n1y, n1z, nx[c], ny[c], nz[c]);
      theta[c] = slots.theta;
      alpha[c] = slots.alpha;
      phi[c] = slots.phi;
    }
    for (int c = 0; c < m; ++c) {
      int32_t* h = hist[c & 1];
      ++h[theta[c]];
      ++h[alpha[c]];
      ++h[phi[c]];
    }
  }
  for (int b = 0; b < kFpfhFeatures; ++b) counts[b] = static_cast<float>(hist[0][b] + hist[1][b]);
  return 100.0 / (count - 1);
}

// --- FPFH -----------------------------------------------------------------------------------

// FPFH of point i: its SPFH plus the neighbours' SPFH weighted by 1 / d^2 (squared distance in
// the arithmetic of common/point_math.h; coincident neighbours skipped), each 11-bin block of
// the weighted sum scaled to sum to 100. All zero when the point has no neighbour.
XMODAL_HD void point_fpfh(const float* points, const float* counts, const double* increments, int64_t i,
                          const int32_t* rows, int32_t count, float out[kFpfhFeatures]) {
  double sum[kFpfhFeatures];
  for (int b = 0; b < kFpfhFeatures; ++b) sum[b] = 0.0;
  const float* p = points + 3 * i;
  for (int32_t k = 1; k < count; ++k) {
    const int64_t j = rows[k];
    const float* q = points + 3 * j;
    const double d2 = squared_distance3(p[0], p[1], p[2], q[0], q[1], q[2]);
    if (d2 == 0.0) continue;
    const double weight = increments[j] / d2;
    const float* c = counts + kFpfhFeatures * j;
    for (int b = 0; b < kFpfhFeatures; ++b) sum[b] += weight * c[b];
  }
  const float* own = counts + kFpfhFeatures * i;
  for (int block = 0; block < 3; ++block) {
    double total = 0.0;
    for (int b = block * kFpfhBins; b < (block + 1) * kFpfhBins; ++b) total += sum[b];
    const double scale = total != 0.0 ? 100.0 / total : 0.0;
    for (int b = block * kFpfhBins; b < (block + 1) * kFpfhBins; ++b)
      out[b] = static_cast<float>(sum[b] * scale + increments[i] * own[b]);
  }
}

}  // namespace xmodal::fpfh
