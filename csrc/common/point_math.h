// The distance arithmetic of the point-cloud kernels (FPS, grouping search, 3-NN), shared by
// the CPU and CUDA code so both make the same decisions.
//
// The squared distance of two float32 points a, b is defined as
//   dx = float(a.x - b.x)          (one correctly rounded float32 subtraction per axis)
//   d  = (double(dx)^2 + double(dy)^2) + double(dz)^2   (float64, in this order)
// Every square of a float32 value is exact in float64 (24 + 24 bits < 53), so the only
// roundings are the three subtractions and the two additions. This has two consequences the
// kernels rely on:
//  * FMA contraction cannot change the result (fma(dx, dx, s) rounds dx*dx + s once, and so
//    does dx*dx + s when dx*dx is exact), whatever the compiler or nvcc decides; the numpy
//    reference (float32 subtraction, float64 squares and sums) reproduces it bit for bit.
//  * It is monotone in |dx|, |dy|, |dz|: rounding is monotone, so the same formula applied to
//    the gap between a point and a bounding box is a lower bound of the distance to every
//    point inside the box, with no error margin. Pruning by that bound can never change a
//    decision (box_gap below).
#pragma once

#include <cstdint>

#include "common/hostdevice.h"

namespace xmodal {

XMODAL_HD double squared_distance3(float ax, float ay, float az, float bx, float by, float bz) {
  const double dx = static_cast<double>(ax - bx);
  const double dy = static_cast<double>(ay - by);
  const double dz = static_cast<double>(az - bz);
  return (dx * dx + dy * dy) + dz * dz;
}

// Distance along one axis from coordinate c to the interval [lo, hi], rounded as the point
// differences are: for every p in [lo, hi], |float(p - c)| >= box_gap(lo, hi, c).
XMODAL_HD float box_gap(float lo, float hi, float c) {
  if (c < lo) return lo - c;
  if (c > hi) return c - hi;
  return 0.0f;
}

// |p|^2 = (x^2 + y^2) + z^2 in float64 (exact squares): pointnet2_ops' "near-origin" test.
XMODAL_HD double squared_norm3(float x, float y, float z) {
  const double dx = x, dy = y, dz = z;
  return (dx * dx + dy * dy) + dz * dz;
}

// Tie keys of farthest point sampling: among equal distances the smallest key wins.
//  * exact FPS: the point index;
//  * pointnet2_ops (reference=True): its CUDA kernel gives point k to thread k mod T (T a power
//    of two <= 512); a thread keeps the first k of its stride, and the block then reduces the
//    threads with a halving tree (slot t vs slot t + s, s = T/2 ... 1) that keeps the lower
//    slot on ties. The last level decides bit 0 of the thread id, the one before bit 1, and so
//    on, so the winner among tied threads is the one with the smallest bit-reversed id; then
//    the lowest k of that thread.
XMODAL_HD uint64_t pointnet2_tie_key(int64_t k, int log2_threads) {
  const uint64_t thread = static_cast<uint64_t>(k) & ((uint64_t{1} << log2_threads) - 1);
  uint64_t reversed = 0;
  for (int b = 0; b < log2_threads; ++b) reversed |= ((thread >> b) & 1u) << (log2_threads - 1 - b);
  return (reversed << 40) | (static_cast<uint64_t>(k) >> log2_threads);
}

}  // namespace xmodal
