// CUDA normals and FPFH: one thread per point running the per-point math of fpfh_math.h (the
// code the CPU kernels run) over a neighbour table that the CPU KD-tree search builds from a
// host copy of the points, so both paths see identical neighbourhoods.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "common/check.h"
#include "common/cuda_buffer.cuh"
#include "common/cuda_check.cuh"
#include "ops/fpfh/fpfh.h"
#include "ops/fpfh/fpfh_math.h"
#include "ops/fpfh/fpfh_neighbours.h"

namespace xmodal {
namespace {

__global__ void normals_kernel(const float* points, int64_t num_points, const int32_t* rows, const int32_t* count,
                               int64_t width, Viewpoint viewpoint, float* normals) {
  XMODAL_GRID_STRIDE(i, num_points) {
    fpfh::point_normal(points, i, rows + i * width, count[i], viewpoint, normals + 3 * i);
  }
}

__global__ void spfh_kernel(const float* points, const float* normals, int64_t num_points, const int32_t* rows,
                            const int32_t* count, int64_t width, float* counts, double* increments) {
  XMODAL_GRID_STRIDE(i, num_points) {
    increments[i] = fpfh::point_spfh(points, normals, i, rows + i * width, count[i], counts + kFpfhFeatures * i);
  }
}

__global__ void fpfh_kernel(const float* points, const float* counts, const double* increments, int64_t num_points,
                            const int32_t* rows, const int32_t* count, int64_t width, float* features) {
  XMODAL_GRID_STRIDE(i, num_points) {
    fpfh::point_fpfh(points, counts, increments, i, rows + i * width, count[i], features + kFpfhFeatures * i);
  }
}

// Copies device points to the host, after the work queued before on the stream.
std::vector<float> points_on_host(const float* points, int64_t num_points, cudaStream_t stream) {
  std::vector<float> host(static_cast<size_t>(3 * num_points));
  XMODAL_CUDA_CHECK(cudaMemcpyAsync(host.data(), points, sizeof(float) * host.size(), cudaMemcpyDeviceToHost, stream));
  XMODAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

// The neighbour table of device-resident points: searched on the host, uploaded. Its host copy
// must outlive the uploads: callers synchronise the stream before it goes out of scope.
class DeviceNeighbourTable {
 public:
  DeviceNeighbourTable(const float* points, int64_t num_points, Neighbourhood neighbourhood, cudaStream_t stream)
      : host_(find_neighbourhoods(points_on_host(points, num_points, stream).data(), num_points, neighbourhood)),
        rows_(host_.rows.size(), stream),
        count_(host_.count.size(), stream) {
    XMODAL_CUDA_CHECK(cudaMemcpyAsync(rows_.get(), host_.rows.data(), sizeof(int32_t) * host_.rows.size(),
                                      cudaMemcpyHostToDevice, stream));
    XMODAL_CUDA_CHECK(cudaMemcpyAsync(count_.get(), host_.count.data(), sizeof(int32_t) * host_.count.size(),
                                      cudaMemcpyHostToDevice, stream));
  }

  const int32_t* rows() const { return rows_.get(); }
  const int32_t* count() const { return count_.get(); }
  int64_t width() const { return host_.width; }

 private:
  NeighbourTable host_;
  DeviceBuffer<int32_t> rows_, count_;
};

}  // namespace

void estimate_normals_cuda(const float* points, int64_t num_points, Neighbourhood neighbourhood, Viewpoint viewpoint,
                           float* normals, void* stream_handle) {
  check_fpfh_arguments(num_points, neighbourhood, "estimate_normals");
  if (num_points == 0) return;
  cudaStream_t stream = as_stream(stream_handle);
  DeviceNeighbourTable table(points, num_points, neighbourhood, stream);
  launch(normals_kernel, num_points, stream, "normals_kernel", points, num_points, table.rows(), table.count(),
         table.width(), viewpoint, normals);
  XMODAL_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void fpfh_cuda(const float* points, const float* normals, int64_t num_points, Neighbourhood neighbourhood,
               float* features, void* stream_handle) {
  check_fpfh_arguments(num_points, neighbourhood, "fpfh");
  if (num_points == 0) return;
  cudaStream_t stream = as_stream(stream_handle);
  DeviceNeighbourTable table(points, num_points, neighbourhood, stream);
  DeviceBuffer<float> counts(static_cast<size_t>(kFpfhFeatures * num_points), stream);
  DeviceBuffer<double> increments(static_cast<size_t>(num_points), stream);
  launch(spfh_kernel, num_points, stream, "spfh_kernel", points, normals, num_points, table.rows(), table.count(),
         table.width(), counts.get(), increments.get());
  launch(fpfh_kernel, num_points, stream, "fpfh_kernel", points, static_cast<const float*>(counts.get()),
         static_cast<const double*>(increments.get()), num_points, table.rows(), table.count(), table.width(),
         features);
  XMODAL_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace xmodal
