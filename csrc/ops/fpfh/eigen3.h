// Closed-form eigenvector of the smallest eigenvalue of a symmetric 3x3 matrix, in float64,
// shared by the CPU and CUDA normal estimation (no iterations, no branches that depend on a
// convergence test, so both produce the same vector).
//
// Method: the eigenvalues come from the trigonometric solution of the characteristic cubic
// of B = (A - q I) / p (q = trace / 3, p = sqrt(tr(B'^2) / 6) for B' = A - q I). An eigenvector
// computed from the null space of (A - lambda I) is accurate only when lambda is well separated
// from the other two eigenvalues, so the vector is always computed for the eigenvalue that is
// farthest from the middle one:
//  * det(B) <= 0: the smallest eigenvalue is the isolated one; its eigenvector is the largest
//    cross product of two rows of A - lambda_min I.
//  * det(B) > 0: the largest eigenvalue is the isolated one; its eigenvector e comes from the
//    rows of A - lambda_max I, and the smallest eigenvector is then found inside the plane
//    orthogonal to e by one exact 2x2 Jacobi rotation (stable even when the two smaller
//    eigenvalues coincide: points on a line, where any direction orthogonal to it is a valid
//    answer).
// The matrix is scaled by its largest magnitude first, so tiny covariances (millimetre-scale
// neighbourhoods: ~1e-8 m^2) and huge ones lose nothing to underflow or overflow.
#pragma once

#include <cmath>

#include "common/hostdevice.h"

namespace xmodal::eigen3 {

XMODAL_HD void cross(const double a[3], const double b[3], double out[3]) {
  out[0] = a[1] * b[2] - a[2] * b[1];
  out[1] = a[2] * b[0] - a[0] * b[2];
  out[2] = a[0] * b[1] - a[1] * b[0];
}

XMODAL_HD double dot(const double a[3], const double b[3]) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

// Unit vector spanning the null space of the rank-2 matrix M (rows m0, m1, m2): the cross
// product of the two rows that are farthest from parallel. Returns false when every cross
// product vanishes (M of rank < 2).
XMODAL_HD bool null_vector(const double m0[3], const double m1[3], const double m2[3], double out[3]) {
  double c[3][3];
  cross(m0, m1, c[0]);
  cross(m0, m2, c[1]);
  cross(m1, m2, c[2]);
  int best = 0;
  double best_norm = dot(c[0], c[0]);
  for (int i = 1; i < 3; ++i) {
    const double norm = dot(c[i], c[i]);
    if (norm > best_norm) {
      best = i;
      best_norm = norm;
    }
  }
  if (!(best_norm > 0.0)) return false;
  const double inv = 1.0 / sqrt(best_norm);
  for (int k = 0; k < 3; ++k) out[k] = c[best][k] * inv;
  return true;
}

// Eigenvector of the smallest eigenvalue of A = (a00 a01 a02 a11 a12 a22), unit length, sign
// unspecified (callers orient it). A == 0 gives (0, 0, 1); a diagonal A gives the axis of its
// smallest diagonal entry (ties: the lower axis).
XMODAL_HD void smallest_eigenvector(const double cov[6], double n[3]) {
  double scale = 0.0;
  for (int i = 0; i < 6; ++i) scale = fmax(scale, fabs(cov[i]));
  n[0] = 0.0;
  n[1] = 0.0;
  n[2] = 1.0;
  if (!(scale > 0.0)) return;
  const double a00 = cov[0] / scale, a01 = cov[1] / scale, a02 = cov[2] / scale;
  const double a11 = cov[3] / scale, a12 = cov[4] / scale, a22 = cov[5] / scale;
  const double off = a01 * a01 + a02 * a02 + a12 * a12;
  if (off == 0.0) {
    const int axis = (a00 <= a11 && a00 <= a22) ? 0 : (a11 <= a22 ? 1 : 2);
    n[0] = axis == 0;
    n[1] = axis == 1;
    n[2] = axis == 2;
    return;
  }
  const double q = (a00 + a11 + a22) / 3.0;
  const double b00 = a00 - q, b11 = a11 - q, b22 = a22 - q;
  const double p = sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * off) / 6.0);  // > 0: off > 0
  // det(B') / p^3 / 2, clamped against rounding: cos(3 phi) of the trigonometric solution.
  const double det = b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02);
  const double half_det = fmin(fmax(det / (p * p * p) * 0.5, -1.0), 1.0);
  const double phi = acos(half_det) / 3.0;
  const double two_thirds_pi = 2.0943951023931954923;
  if (half_det <= 0.0) {
    const double lambda = q + 2.0 * p * cos(phi + two_thirds_pi);  // smallest
    const double m0[3] = {a00 - lambda, a01, a02}, m1[3] = {a01, a11 - lambda, a12}, m2[3] = {a02, a12, a22 - lambda};
    if (null_vector(m0, m1, m2, n)) return;
  }
  const double lambda = q + 2.0 * p * cos(phi);  // largest
  const double m0[3] = {a00 - lambda, a01, a02}, m1[3] = {a01, a11 - lambda, a12}, m2[3] = {a02, a12, a22 - lambda};
  double e[3];
  if (!null_vector(m0, m1, m2, e)) return;  // unreachable for off > 0; keeps (0, 0, 1)
  // Orthonormal basis (u, v) of the plane orthogonal to e, from the axis least aligned with e.
  double axis[3] = {0.0, 0.0, 0.0};
  const double ax = fabs(e[0]), ay = fabs(e[1]), az = fabs(e[2]);
  axis[(ax <= ay && ax <= az) ? 0 : (ay <= az ? 1 : 2)] = 1.0;
  double u[3], v[3];
  cross(e, axis, u);
  const double inv = 1.0 / sqrt(dot(u, u));
  for (int k = 0; k < 3; ++k) u[k] *= inv;
  cross(e, u, v);
  // A restricted to the plane: [[m_uu, m_uv], [m_uv, m_vv]].
  const double au[3] = {a00 * u[0] + a01 * u[1] + a02 * u[2], a01 * u[0] + a11 * u[1] + a12 * u[2],
                        a02 * u[0] + a12 * u[1] + a22 * u[2]};
  const double av[3] = {a00 * v[0] + a01 * v[1] + a02 * v[2], a01 * v[0] + a11 * v[1] + a12 * v[2],
                        a02 * v[0] + a12 * v[1] + a22 * v[2]};
  const double m_uu = dot(u, au), m_uv = dot(u, av), m_vv = dot(v, av);
  // The rotation by theta = atan2(2 m_uv, m_uu - m_vv) / 2 maps u to the larger eigenvector of
  // the 2x2 block, so its smaller one is (-sin theta) u + (cos theta) v.
  const double theta = 0.5 * atan2(2.0 * m_uv, m_uu - m_vv);
  const double s = sin(theta), c = cos(theta);
  for (int k = 0; k < 3; ++k) n[k] = c * v[k] - s * u[k];
}

}  // namespace xmodal::eigen3
