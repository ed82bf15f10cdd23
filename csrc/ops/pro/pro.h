// Per-region overlap (PRO) curve and its normalised area (AUPRO), as MVTec's evaluation code
// defines them (shared/reference/kernels.md §1).
//
// Input: a set of (H, W) score maps with ground-truth masks, given as batches of equally
// sized images (MVTec 3D-AD classes differ in resolution, so a set may hold several sizes).
//   scores  (count, H, W) float32 or float64, C-contiguous, finite (NaN/inf: invalid_argument)
//   masks   (count, H, W) uint8; any nonzero byte is anomalous
// Regions are the 8-connected components of each mask. "OK" pixels are all mask-zero pixels
// of all images (normal images included). n_ok >= 1 and at least one region are required.
//
// Two curves:
//  * exact (num_thresholds == 0), the MVTec AD code: one point per distinct score t (scores
//    sorted descending, ties merged keeping the last point, i.e. the point for "score >= t"):
//    FPR = (OK pixels >= t) as float32 / n_ok, stored as float32; PRO = sum over region pixels
//    >= t of 1/|region|, divided by the number of regions; both clipped to 1; (0, 0) first and
//    (1, 1) last.
//  * sampled (num_thresholds = T >= 2), the MVTec 3D-AD code used by BTF/M3DM (T = 100) and
//    CFM (T = 99): thresholds are the sorted OK scores at ranks linspace(0, n_ok - 1, T) cast
//    to int; FPR = 1 - (rank + 1) / n_ok from the rank; PRO = mean over regions of the
//    fraction of the region's pixels with score strictly greater than the threshold; points in
//    ascending FPR, then the synthetic (1, 1).
// AUPRO(limit) = trapezoid(fpr, pro, x_max = limit) / limit, with MVTec's trapezoid: linear
// interpolation at the limit when the limit is not itself a curve x value (curve.h).
//
// Both curves reduce to sorting by key buckets, prefix sums and binary searches: no
// per-region loop (pro_cpu.cpp, common/bucket_sort.h). Pass A histograms the OK keys per
// bucket and labels the regions (union-find) to get every region pixel's weight 1/|region|;
// pass B gathers only the OK keys of the buckets the walk needs (exact AUPRO: buckets above
// the rank the largest limit needs that also hold a region pixel, since the curve is flat
// between region pixels; sampled: the buckets of the threshold ranks), sorts them per bucket,
// and one walk produces the points. PRO sums are float64 (the exact curve accumulates like the
// original's cumsum, the sampled one with compensated summation), so results agree with the
// original code to ~1e-13.
//
// Memory (float32 scores, CPU): 2 x 4 bytes per gathered OK key (at most the top 30 % of the
// OK pixels for AUPRO at 30 %; all of them for the full exact curve, which also returns 16
// bytes per point), 16 bytes per anomalous pixel, 512 KiB of histogram per part (4 parts per
// thread), one int32 label buffer per thread of the largest image. float64 scores double the
// key part.
#pragma once

#include <cstdint>
#include <vector>

#include "common/sort_keys.h"

namespace xmodal {

struct MapBatch {
  const void* scores;    // (count, height, width) float32 or float64
  const uint8_t* masks;  // (count, height, width), nonzero = anomalous
  int64_t count, height, width;
};

// The full curve: `fpr` and `pro` are replaced by its points (FPR ascending).
void pro_curve_cpu(const std::vector<MapBatch>& batches, ScoreType type, int64_t num_thresholds,
                   std::vector<double>& fpr, std::vector<double>& pro);

// AUPRO at each of `num_limits` limits in (0, 1] (any order): out[k] = area(limits[k]) / limits[k].
void aupro_cpu(const std::vector<MapBatch>& batches, ScoreType type, int64_t num_thresholds, const double* limits,
               int64_t num_limits, double* out);

// Bootstrap replicates of AUPRO: `multiplicity` (num_resamples, num_images) int32 says how
// often each image (in batch order) occurs in each resample; out (num_resamples, num_limits)
// gets the AUPRO of each resampled set (each copy of an image adds its OK pixels and its
// regions again), NaN when a resample has no OK pixel or no region. Sorts once, then one
// walk per resample. Memory: 16 bytes per pixel (keys carry their image index).
void aupro_bootstrap_cpu(const std::vector<MapBatch>& batches, ScoreType type, int64_t num_thresholds,
                         const double* limits, int64_t num_limits, const int32_t* multiplicity, int64_t num_resamples,
                         double* out);

// CUDA: the curve computed on the device (pointers in `batches` are device pointers; work is
// queued on `stream`, which is synchronised before returning) and copied to the host.
void pro_curve_cuda(const std::vector<MapBatch>& batches, ScoreType type, int64_t num_thresholds,
                    std::vector<double>& fpr, std::vector<double>& pro, void* stream);

}  // namespace xmodal
