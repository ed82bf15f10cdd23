// CUDA CCL: union-find (ccl_kernels.cuh), then labels numbered in raster order of each
// component's first pixel from an exclusive scan of the root flags, exactly as the CPU path.
#include <cub/cub.cuh>

#include "common/check.h"
#include "common/cuda_buffer.cuh"
#include "common/cuda_check.cuh"
#include "ops/ccl/ccl.h"
#include "ops/ccl/ccl_kernels.cuh"

namespace xmodal {
namespace {

__global__ void root_flags(const int* parent, long long total, int* flags) {
  XMODAL_GRID_STRIDE(i, total) { flags[i] = parent[i] == i ? 1 : 0; }
}

// rank[i] = roots before pixel i in the batch (exclusive scan, total + 1 entries).
__global__ void write_labels(const int* parent, const int* rank, long long total, long long pixels, int* labels) {
  XMODAL_GRID_STRIDE(i, total) {
    const int root = parent[i];
    labels[i] = root < 0 ? 0 : rank[root] - rank[(i / pixels) * pixels] + 1;
  }
}

__global__ void write_counts(const int* rank, long long count, long long pixels, int64_t* num) {
  XMODAL_GRID_STRIDE(n, count) { num[n] = rank[(n + 1) * pixels] - rank[n * pixels]; }
}

}  // namespace

void connected_components_cuda(const uint8_t* masks, int64_t count, int64_t height, int64_t width, int32_t* labels,
                               int64_t* num, void* stream_handle) {
  XMODAL_CHECK(count >= 0 && height >= 0 && width >= 0, "masks must have a non-negative shape");
  const long long pixels = height * width, total = count * pixels;
  if (count == 0) return;
  cub_count(total + 1, "connected_components");
  cudaStream_t stream = as_stream(stream_handle);
  // The labels array doubles as the parent array.
  int* parent = labels;
  launch(ccl::init, total, stream, "ccl::init", masks, total, parent);
  if (pixels > 0) {
    launch(ccl::merge, total, stream, "ccl::merge", masks, total, static_cast<int>(height), static_cast<int>(width),
           parent);
    launch(ccl::flatten, total, stream, "ccl::flatten", total, parent);
  }
  DeviceBuffer<int> flags(total + 1, stream), rank(total + 1, stream);
  launch(root_flags, total, stream, "root_flags", parent, total, flags.get());
  XMODAL_CUDA_CHECK(cudaMemsetAsync(flags.get() + total, 0, sizeof(int), stream));
  const int items = static_cast<int>(total + 1);
  cub_run(
      [&](void* temp, size_t& bytes) {
        return cub::DeviceScan::ExclusiveSum(temp, bytes, flags.get(), rank.get(), items, stream);
      },
      stream, "cub::DeviceScan::ExclusiveSum");
  launch(write_labels, total, stream, "write_labels", parent, rank.get(), total, pixels, labels);
  launch(write_counts, count, stream, "write_counts", rank.get(), static_cast<long long>(count), pixels, num);
}

}  // namespace xmodal
