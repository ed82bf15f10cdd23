// Union-find CCL kernels (8-connectivity) over a batch of equally sized masks, shared by the
// CCL op and the PRO kernel. parent[] holds batch-wide pixel indices; links always point a
// larger root at a smaller one (atomicMin), so after flatten() every foreground pixel holds
// its component's first pixel in raster order, and background pixels hold -1.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_buffer.cuh"

namespace xmodal {
namespace ccl {
// Internal linkage: every .cu file that includes this gets its own copy of the kernels.
namespace {

__device__ __forceinline__ int find_root(const int* parent, int a) {
  while (true) {
    const int p = parent[a];
    if (p == a) return a;
    a = p;
  }
}

// Merges the sets of a and b. If a root was linked by another thread between the find and
// the atomicMin, the loop continues from the value it found, so no link is lost.
__device__ __forceinline__ void unite(int* parent, int a, int b) {
  while (true) {
    a = find_root(parent, a);
    b = find_root(parent, b);
    if (a == b) return;
    if (a < b) {
      const int t = a;
      a = b;
      b = t;
    }
    const int old = atomicMin(&parent[a], b);
    if (old == a) return;
    a = old;
  }
}

__global__ void init(const uint8_t* mask, long long total, int* parent) {
  XMODAL_GRID_STRIDE(i, total) { parent[i] = mask[i] ? static_cast<int>(i) : -1; }
}

__global__ void merge(const uint8_t* mask, long long total, int height, int width, int* parent) {
  const long long pixels = static_cast<long long>(height) * width;
  XMODAL_GRID_STRIDE(i, total) {
    if (!mask[i]) continue;
    const long long local = i % pixels;
    const int y = static_cast<int>(local / width), x = static_cast<int>(local % width);
    const int self = static_cast<int>(i);
    if (x > 0 && mask[i - 1]) unite(parent, self, self - 1);
    if (y > 0) {
      if (mask[i - width]) unite(parent, self, self - width);
      if (x > 0 && mask[i - width - 1]) unite(parent, self, self - width - 1);
      if (x + 1 < width && mask[i - width + 1]) unite(parent, self, self - width + 1);
    }
  }
}

__global__ void flatten(long long total, int* parent) {
  XMODAL_GRID_STRIDE(i, total) {
    if (parent[i] >= 0) parent[i] = find_root(parent, static_cast<int>(i));
  }
}

}  // namespace
}  // namespace ccl
}  // namespace xmodal
