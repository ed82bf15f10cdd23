// Union-find labelling of one image, shared by connected_components_cpu and the PRO kernel.
#pragma once

#include <cstdint>

namespace xmodal {

// Labels the 8-connected foreground components of one (height, width) mask.
//
// `foreground` lists the raster indices of the mask's foreground pixels in ascending order
// (`count` of them); `work` is an int32 array of height * width entries of which only the
// foreground entries are touched. On return work[i] holds the label of foreground pixel i:
// 1..K in raster order of each component's first pixel. Returns K.
//
// Pass 1 links each foreground pixel to its already-visited neighbours (W, NW, N, NE), always
// pointing the larger index at the smaller, so every entry points to a smaller-or-equal index
// and each set's root is its first pixel. Pass 2, in raster order: a pixel that is its own
// root opens the next label; any other pixel copies the (already final) label of its parent,
// which lies before it.
inline int32_t label_foreground(const uint8_t* mask, int64_t height, int64_t width, const int32_t* foreground,
                                int64_t count, int32_t* work) {
  auto find = [work](int32_t a) {
    while (work[a] != a) {
      work[a] = work[work[a]];  // path halving keeps trees shallow
      a = work[a];
    }
    return a;
  };
  auto unite = [work, &find](int32_t a, int32_t b) {
    a = find(a);
    b = find(b);
    if (a < b) {
      work[b] = a;
    } else if (b < a) {
      work[a] = b;
    }
  };
  const int32_t w = static_cast<int32_t>(width);
  for (int64_t f = 0; f < count; ++f) {
    const int32_t i = foreground[f];
    const int32_t y = i / w, x = i - y * w;
    const bool up = y > 0, left = x > 0, right = x + 1 < w;
    const bool has_n = up && mask[i - w];
    if (has_n) {
      // W, NW and NE all touch N, so they are already in N's set.
      work[i] = work[i - w];
      continue;
    }
    const bool has_w = left && mask[i - 1];
    const bool has_nw = up && left && mask[i - w - 1];
    const bool has_ne = up && right && mask[i - w + 1];
    if (has_w) {
      work[i] = work[i - 1];  // NW touches W
      if (has_ne) unite(i, i - w + 1);
    } else if (has_nw) {
      work[i] = work[i - w - 1];
      if (has_ne) unite(i, i - w + 1);
    } else if (has_ne) {
      work[i] = work[i - w + 1];
    } else {
      work[i] = i;
    }
  }
  (void)height;
  int32_t labels = 0;
  for (int64_t f = 0; f < count; ++f) {
    const int32_t i = foreground[f];
    const int32_t parent = work[i];
    work[i] = (parent == i) ? ++labels : work[parent];
  }
  return labels;
}

}  // namespace xmodal
