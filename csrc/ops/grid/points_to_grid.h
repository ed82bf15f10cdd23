// Per-point features back onto the organized image grid, smoothed and resized as the
// Point-MAE pipelines of M3DM / CFM / G2SF do it (shared/reference/methods.md section 1.6):
//
//   grid = zeros(C, H, W); grid[:, pixel_index[i]] = features[i]      (scatter)
//   pooled = AvgPool2d(kernel 3, stride 1, no padding)(grid)          (C, H - 2, W - 2)
//   out = AdaptiveAvgPool2d((out_h, out_w))(pooled)                   (C, out_h, out_w)
//
//   features     (N, C) float32
//   pixel_index  (N,) int64 flat pixel y * W + x of each point; distinct, in [0, H * W)
//   height, width  >= 3
//   out          (C, out_h, out_w) float32, or (out_h, out_w, C) when channels_last
//
// Both poolings are averages over rectangles, so the whole map is separable: output (oy, ox)
// is sum_y sum_x wy(oy, y) wx(ox, x) grid[:, y, x] with
//   wy(oy, y) = #{py in adaptive row window of oy : py <= y <= py + 2} / (3 * window length)
// (adaptive window of output i over n inputs: [floor(i n / out), ceil((i + 1) n / out))).
// The kernels evaluate exactly that from the N points, never forming the H x W x C grid;
// float32 accumulation with float64-derived weights (matches torch to float32 rounding).
// Every output and partial sum is a weighted average of features (weights sum to at most 1
// up to rounding), so nothing overflows while max |features| <= FLT_MAX / 2.
#pragma once

#include <cstdint>

#include "common/hostdevice.h"

namespace xmodal {

// Adaptive pooling window of output `i` (torch AdaptiveAvgPool semantics).
XMODAL_HD void adaptive_window(int64_t i, int64_t in_size, int64_t out_size, int64_t& begin, int64_t& end) {
  begin = (i * in_size) / out_size;
  end = ((i + 1) * in_size + out_size - 1) / out_size;
}

void points_to_grid_cpu(const float* features, int64_t num_points, int64_t channels, const int64_t* pixel_index,
                        int64_t height, int64_t width, int64_t out_height, int64_t out_width, bool channels_last,
                        float* out);

// Weight of input row y in output row o: 3x3 pooling rows py..py+2 for py in the adaptive
// window [begin, end) of o over the pooled axis.
XMODAL_HD float pooled_tap_weight(int64_t y, int64_t begin, int64_t end) {
  const int64_t lo = y - 2 > begin ? y - 2 : begin;
  const int64_t hi = y < end - 1 ? y : end - 1;
  const int64_t count = hi >= lo ? hi - lo + 1 : 0;
  return static_cast<float>(static_cast<double>(count) / (3.0 * static_cast<double>(end - begin)));
}

// CUDA: `pixel_index` must already be validated (distinct, in range) by the caller.
void points_to_grid_cuda(const float* features, int64_t num_points, int64_t channels, const int64_t* pixel_index,
                         int64_t height, int64_t width, int64_t out_height, int64_t out_width, bool channels_last,
                         float* out, void* stream);

}  // namespace xmodal
