#include <algorithm>
#include <vector>

#include "common/check.h"
#include "common/parallel.h"
#include "ops/grid/points_to_grid.h"

namespace xmodal {
namespace {

// Rows (or columns) of the input that feed output `o` of one axis, with their weights.
struct AxisTaps {
  int64_t first;              // first input row
  std::vector<float> weight;  // weight of rows first, first + 1, ...
};

std::vector<AxisTaps> axis_taps(int64_t in_size, int64_t out_size) {
  const int64_t pooled = in_size - 2;
  std::vector<AxisTaps> taps(static_cast<size_t>(out_size));
  for (int64_t o = 0; o < out_size; ++o) {
    int64_t begin, end;
    adaptive_window(o, pooled, out_size, begin, end);
    AxisTaps& t = taps[static_cast<size_t>(o)];
    t.first = begin;
    for (int64_t y = begin; y < end + 2; ++y) t.weight.push_back(pooled_tap_weight(y, begin, end));
  }
  return taps;
}

}  // namespace

void points_to_grid_cpu(const float* features, int64_t num_points, int64_t channels, const int64_t* pixel_index,
                        int64_t height, int64_t width, int64_t out_height, int64_t out_width, bool channels_last,
                        float* out) {
  XMODAL_CHECK(height >= 3 && width >= 3, "height and width must be >= 3 (3x3 pooling); got ", height, "x", width);
  XMODAL_CHECK(out_height >= 1 && out_width >= 1, "out_size must be positive; got ", out_height, "x", out_width);
  XMODAL_CHECK(num_points >= 0 && channels >= 0, "points_to_grid: invalid shapes N=", num_points, " C=", channels);
  XMODAL_CHECK(num_points <= height * width, "pixel_index: ", num_points, " points cannot have distinct pixels in a ",
               height, "x", width, " grid");
  std::vector<int32_t> point_at(static_cast<size_t>(height * width), -1);
  for (int64_t i = 0; i < num_points; ++i) {
    const int64_t pixel = pixel_index[i];
    XMODAL_CHECK(pixel >= 0 && pixel < height * width, "pixel_index[", i, "] = ", pixel,
                 " is outside [0, H*W=", height * width, ")");
    XMODAL_CHECK(point_at[static_cast<size_t>(pixel)] < 0, "pixel_index must be distinct; pixel ", pixel,
                 " holds points ", point_at[static_cast<size_t>(pixel)], " and ", i);
    point_at[static_cast<size_t>(pixel)] = static_cast<int32_t>(i);
  }
  const std::vector<AxisTaps> rows = axis_taps(height, out_height);
  const std::vector<AxisTaps> cols = axis_taps(width, out_width);
  const int64_t plane = out_height * out_width;

  ParallelErrors errors;
#pragma omp parallel
  {
    // One output row at a time: first the weighted sum over its input rows for every column
    // (only columns that hold points), then the weighted sum over each output's columns.
    std::vector<float> column_sum(static_cast<size_t>(width * channels));
    std::vector<char> column_used(static_cast<size_t>(width));
    std::vector<float> row_out(static_cast<size_t>(out_width * channels));
#pragma omp for schedule(dynamic, 1)
    for (int64_t oy = 0; oy < out_height; ++oy)
      errors.run([&] {
        const AxisTaps& r = rows[static_cast<size_t>(oy)];
        std::fill(column_used.begin(), column_used.end(), 0);
        for (size_t t = 0; t < r.weight.size(); ++t) {
          const int64_t y = r.first + static_cast<int64_t>(t);
          const float wy = r.weight[t];
          for (int64_t x = 0; x < width; ++x) {
            const int32_t point = point_at[static_cast<size_t>(y * width + x)];
            if (point < 0) continue;
            const float* f = features + static_cast<int64_t>(point) * channels;
            float* acc = column_sum.data() + x * channels;
            if (!column_used[static_cast<size_t>(x)]) {
              for (int64_t c = 0; c < channels; ++c) acc[c] = wy * f[c];
              column_used[static_cast<size_t>(x)] = 1;
            } else {
              for (int64_t c = 0; c < channels; ++c) acc[c] += wy * f[c];
            }
          }
        }
        for (int64_t ox = 0; ox < out_width; ++ox) {
          const AxisTaps& cl = cols[static_cast<size_t>(ox)];
          float* o = row_out.data() + ox * channels;
          std::fill(o, o + channels, 0.0f);
          for (size_t t = 0; t < cl.weight.size(); ++t) {
            const int64_t x = cl.first + static_cast<int64_t>(t);
            if (!column_used[static_cast<size_t>(x)]) continue;
            const float wx = cl.weight[t];
            const float* acc = column_sum.data() + x * channels;
            for (int64_t c = 0; c < channels; ++c) o[c] += wx * acc[c];
          }
        }
        if (channels_last) {
          std::copy(row_out.begin(), row_out.end(), out + oy * out_width * channels);
        } else {
          for (int64_t c = 0; c < channels; ++c) {
            float* dst = out + c * plane + oy * out_width;
            for (int64_t ox = 0; ox < out_width; ++ox) dst[ox] = row_out[static_cast<size_t>(ox * channels + c)];
          }
        }
      });
  }
  errors.rethrow();
}

}  // namespace xmodal
