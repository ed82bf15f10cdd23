// 8-connected component labelling of binary masks (the connectivity of scipy.ndimage.label
// with a 3x3 ones structure, which MVTec's evaluation code uses for ground-truth regions).
//
//   masks   (count, H, W) uint8, C-contiguous; any nonzero byte is foreground
//   labels  (count, H, W) int32 out: 0 on background; the components of each image are
//           numbered 1..K in raster order of their first (top-most, then left-most) pixel
//   num     (count,) int64 out: K per image
//
// Every image is labelled independently (components never cross image borders). The labels
// are fully determined by the mask, so the CPU and CUDA paths produce identical arrays.
// H * W must be below 2^31. count = 0 or H * W = 0 is a no-op.
#pragma once

#include <cstdint>

namespace xmodal {

void connected_components_cpu(const uint8_t* masks, int64_t count, int64_t height, int64_t width, int32_t* labels,
                              int64_t* num);

// CUDA version: same contract on device pointers, queued on `stream` (union-find with
// atomicMin links, so each set's root is its first pixel in raster order).
void connected_components_cuda(const uint8_t* masks, int64_t count, int64_t height, int64_t width, int32_t* labels,
                               int64_t* num, void* stream);

}  // namespace xmodal
