// CUDA normals and FPFH: one thread per point running the per-point math of fpfh_math.h (the
// code the CPU kernels run) over a neighbour table that the CPU KD-tree search builds from a
// host copy of the points, so both paths see identical neighbourhoods.
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
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

// One neighbour table on the device.
class DeviceTable {
 public:
  DeviceTable(const NeighbourTable& host, cudaStream_t stream)
      : width_(host.width), rows_(host.rows.size(), stream), count_(host.count.size(), stream) {
    XMODAL_CUDA_CHECK(cudaMemcpyAsync(rows_.get(), host.rows.data(), sizeof(int32_t) * host.rows.size(),
                                      cudaMemcpyHostToDevice, stream));
    XMODAL_CUDA_CHECK(cudaMemcpyAsync(count_.get(), host.count.data(), sizeof(int32_t) * host.count.size(),
                                      cudaMemcpyHostToDevice, stream));
  }

  const int32_t* rows() const { return rows_.get(); }
  const int32_t* count() const { return count_.get(); }
  int64_t width() const { return width_; }

 private:
  int64_t width_;
  DeviceBuffer<int32_t> rows_, count_;
};

void launch_normals(const float* points, int64_t num_points, const DeviceTable& table, Viewpoint viewpoint,
                    float* normals, cudaStream_t stream) {
  launch(normals_kernel, num_points, stream, "normals_kernel", points, num_points, table.rows(), table.count(),
         table.width(), viewpoint, normals);
}

void launch_fpfh(const float* points, const float* normals, int64_t num_points, const DeviceTable& table,
                 float* features, cudaStream_t stream) {
  DeviceBuffer<float> counts(static_cast<size_t>(kFpfhFeatures * num_points), stream);
  DeviceBuffer<double> increments(static_cast<size_t>(num_points), stream);
  launch(spfh_kernel, num_points, stream, "spfh_kernel", points, normals, num_points, table.rows(), table.count(),
         table.width(), counts.get(), increments.get());
  launch(fpfh_kernel, num_points, stream, "fpfh_kernel", points, static_cast<const float*>(counts.get()),
         static_cast<const double*>(increments.get()), num_points, table.rows(), table.count(), table.width(),
         features);
}

// Builds the neighbour tables on the host, uploads them and runs `work(tables, stream)`. Ends
// by synchronising the stream: the uploads read host tables that go out of scope on return.
template <typename Work>
void with_device_tables(const float* points, int64_t num_points, const std::vector<Neighbourhood>& neighbourhoods,
                        void* stream_handle, Work work) {
  if (num_points == 0) return;
  cudaStream_t stream = as_stream(stream_handle);
  const auto host = find_neighbourhoods(points_on_host(points, num_points, stream).data(), num_points, neighbourhoods);
  std::vector<std::unique_ptr<DeviceTable>> tables;
  for (const NeighbourTable& table : host) tables.push_back(std::make_unique<DeviceTable>(table, stream));
  work(tables, stream);
  XMODAL_CUDA_CHECK(cudaStreamSynchronize(stream));
}

using DeviceTables = std::vector<std::unique_ptr<DeviceTable>>;

}  // namespace

void estimate_normals_cuda(const float* points, int64_t num_points, Neighbourhood neighbourhood, Viewpoint viewpoint,
                           float* normals, void* stream) {
  check_fpfh_arguments(num_points, neighbourhood, "estimate_normals");
  with_device_tables(points, num_points, {neighbourhood}, stream, [&](const DeviceTables& tables, cudaStream_t s) {
    launch_normals(points, num_points, *tables[0], viewpoint, normals, s);
  });
}

void fpfh_cuda(const float* points, const float* normals, int64_t num_points, Neighbourhood neighbourhood,
               float* features, void* stream) {
  check_fpfh_arguments(num_points, neighbourhood, "fpfh");
  with_device_tables(points, num_points, {neighbourhood}, stream, [&](const DeviceTables& tables, cudaStream_t s) {
    launch_fpfh(points, normals, num_points, *tables[0], features, s);
  });
}

void fpfh_with_normals_cuda(const float* points, int64_t num_points, Neighbourhood neighbourhood,
                            Neighbourhood normal_neighbourhood, Viewpoint viewpoint, float* normals, float* features,
                            void* stream) {
  check_fpfh_arguments(num_points, neighbourhood, "fpfh");
  check_fpfh_arguments(num_points, normal_neighbourhood, "fpfh (normals)");
  with_device_tables(points, num_points, {neighbourhood, normal_neighbourhood}, stream,
                     [&](const DeviceTables& tables, cudaStream_t s) {
                       launch_normals(points, num_points, *tables[1], viewpoint, normals, s);
                       launch_fpfh(points, normals, num_points, *tables[0], features, s);
                     });
}

}  // namespace xmodal
