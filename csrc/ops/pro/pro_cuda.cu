// CUDA PRO curve. Written for review by eye rather than for the last factor of speed:
//  1. per batch: union-find labels (ccl_kernels.cuh), region sizes by atomicAdd on the root,
//     then every pixel's descending key and payload: -1 for an OK pixel, 1/|region| for a
//     region pixel (plus device counters of OK pixels, regions and non-finite scores);
//  2. one CUB radix sort of (key, payload) over all pixels;
//  3. exact curve: inclusive scans of the OK flags and of the region weights, the last point
//     of every tie group selected (cub::DeviceSelect::Flagged);
//     sampled curve: the OK keys and the (key, weight) region pixels selected from the sorted
//     order, a scan of the weights, and one thread per threshold doing a binary search;
//  4. the points are copied to the host, where (0, 0) / (1, 1) are added as on the CPU.
// Device memory: about 60 bytes per pixel at the peak.
#include <algorithm>
#include <cub/cub.cuh>
#include <vector>

#include "common/check.h"
#include "common/cuda_buffer.cuh"
#include "common/cuda_check.cuh"
#include "common/sort_keys.h"
#include "ops/ccl/ccl_kernels.cuh"
#include "ops/pro/pro.h"

namespace xmodal {
namespace {

struct Counters {
  unsigned long long ok, regions, not_finite;
};

__global__ void region_sizes(const int* parent, long long n, int* size) {
  XMODAL_GRID_STRIDE(i, n) {
    if (parent[i] >= 0) atomicAdd(&size[parent[i]], 1);
  }
}

template <typename Score, typename Key>
__global__ void keys_and_payload(const Score* scores, const int* parent, const int* size, long long n, Key* keys,
                                 double* payload, Counters* counters) {
  XMODAL_GRID_STRIDE(i, n) {
    const Score v = scores[i];
    if (not_finite_bit(v)) atomicAdd(&counters->not_finite, 1ull);
    keys[i] = descending_key(v);
    const int root = parent[i];
    if (root < 0) {
      payload[i] = -1.0;
      atomicAdd(&counters->ok, 1ull);
    } else {
      payload[i] = 1.0 / static_cast<double>(size[root]);
      if (root == i) atomicAdd(&counters->regions, 1ull);
    }
  }
}

__global__ void split_payload(const double* payload, long long n, long long* ok_flag, double* weight,
                              unsigned char* is_ok) {  // is_ok may be reused later for other flags
  XMODAL_GRID_STRIDE(i, n) {
    const bool ok = payload[i] < 0.0;
    ok_flag[i] = ok ? 1 : 0;
    weight[i] = ok ? 0.0 : payload[i];
    is_ok[i] = ok ? 1 : 0;
  }
}

// The exact curve's point after item i, kept when i ends its tie group.
template <typename Key>
__global__ void exact_points(const Key* keys, const long long* fp, const double* overlap, long long n, long long n_ok,
                             double num_regions, double* fpr, double* pro, unsigned char* group_end) {
  XMODAL_GRID_STRIDE(i, n) {
    group_end[i] = (i + 1 == n || keys[i] != keys[i + 1]) ? 1 : 0;
    fpr[i] = exact_fpr(fp[i], n_ok);
    pro[i] = fmin(overlap[i] / num_regions, 1.0);
  }
}

__global__ void negate_flags(const unsigned char* is_ok, long long n, unsigned char* is_region) {
  XMODAL_GRID_STRIDE(i, n) { is_region[i] = is_ok[i] ? 0 : 1; }
}

// Sampled point for threshold t, stored at index T - 1 - t (FPR ascending).
template <typename Key>
__global__ void sampled_points(const Key* ok_keys, long long n_ok, const Key* region_keys, const double* cum_weight,
                               long long n_region, double num_regions, long long num_thresholds, double* fpr,
                               double* pro) {
  XMODAL_GRID_STRIDE(t, num_thresholds) {
    const long long rank = threshold_rank(t, num_thresholds, n_ok);
    const Key threshold = ok_keys[n_ok - 1 - rank];
    long long lo = 0, hi = n_region;  // region pixels with key < threshold: score strictly greater
    while (lo < hi) {
      const long long mid = (lo + hi) / 2;
      if (region_keys[mid] < threshold) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    fpr[num_thresholds - 1 - t] = sampled_fpr(rank, n_ok);
    pro[num_thresholds - 1 - t] = lo > 0 ? cum_weight[lo - 1] / num_regions : 0.0;
  }
}

void copy_to_host(std::vector<double>& out, const double* device, long long n, cudaStream_t stream) {
  const size_t base = out.size();
  out.resize(base + static_cast<size_t>(n));
  if (n > 0) {
    XMODAL_CUDA_CHECK(cudaMemcpyAsync(out.data() + base, device, sizeof(double) * n, cudaMemcpyDeviceToHost, stream));
  }
}

template <typename Score>
void pro_curve_typed(const std::vector<MapBatch>& batches, int64_t num_thresholds, std::vector<double>& fpr,
                     std::vector<double>& pro, cudaStream_t stream) {
  using Key = typename KeyOf<Score>::type;
  long long total = 0, widest = 0;
  for (const MapBatch& b : batches) {
    XMODAL_CHECK(b.count >= 0 && b.height >= 1 && b.width >= 1, "every map must have a non-empty (H, W) shape");
    total += b.count * b.height * b.width;
    widest = std::max<long long>(widest, b.count * b.height * b.width);
  }
  XMODAL_CHECK(total > 0, "maps must hold at least one image");
  const int items = cub_count(total, "pro_curve");

  DeviceBuffer<Key> keys(total, stream), sorted_keys(total, stream);
  DeviceBuffer<double> payload(total, stream), sorted_payload(total, stream);
  DeviceBuffer<Counters> counters(1, stream);
  XMODAL_CUDA_CHECK(cudaMemsetAsync(counters.get(), 0, sizeof(Counters), stream));
  {
    DeviceBuffer<int> parent(widest, stream), size(widest, stream);
    long long offset = 0;
    for (const MapBatch& b : batches) {
      const long long n = b.count * b.height * b.width;
      if (n == 0) continue;
      launch(ccl::init, n, stream, "ccl::init", b.masks, n, parent.get());
      launch(ccl::merge, n, stream, "ccl::merge", b.masks, n, static_cast<int>(b.height), static_cast<int>(b.width),
             parent.get());
      launch(ccl::flatten, n, stream, "ccl::flatten", n, parent.get());
      XMODAL_CUDA_CHECK(cudaMemsetAsync(size.get(), 0, sizeof(int) * n, stream));
      launch(region_sizes, n, stream, "region_sizes", parent.get(), n, size.get());
      launch(keys_and_payload<Score, Key>, n, stream, "keys_and_payload", static_cast<const Score*>(b.scores),
             parent.get(), size.get(), n, keys.get() + offset, payload.get() + offset, counters.get());
      offset += n;
    }
  }
  Counters host{};
  XMODAL_CUDA_CHECK(cudaMemcpyAsync(&host, counters.get(), sizeof(Counters), cudaMemcpyDeviceToHost, stream));
  XMODAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  XMODAL_CHECK(host.not_finite == 0, "maps contain NaN or infinite values");
  XMODAL_CHECK(host.ok > 0,
               "masks mark every pixel as anomalous: the false-positive rate needs at least one "
               "normal (mask == 0) pixel");
  XMODAL_CHECK(host.regions > 0,
               "masks contain no anomalous pixel: the PRO curve needs at least one "
               "ground-truth region (a nonzero mask pixel)");
  const long long n_ok = static_cast<long long>(host.ok);
  const double num_regions = static_cast<double>(host.regions);

  cub_run(
      [&](void* temp, size_t& bytes) {
        return cub::DeviceRadixSort::SortPairs(temp, bytes, keys.get(), sorted_keys.get(), payload.get(),
                                               sorted_payload.get(), items, 0, static_cast<int>(8 * sizeof(Key)),
                                               stream);
      },
      stream, "cub::DeviceRadixSort::SortPairs");

  DeviceBuffer<long long> ok_flag(total, stream);
  DeviceBuffer<double> weight(total, stream);
  DeviceBuffer<unsigned char> is_ok(total, stream);
  DeviceBuffer<int> selected(1, stream);
  int host_selected = 0;
  launch(split_payload, total, stream, "split_payload", sorted_payload.get(), total, ok_flag.get(), weight.get(),
         is_ok.get());
  fpr.clear();
  pro.clear();
  if (num_thresholds == 0) {
    // Scans in place: ok_flag becomes the running FP count, weight the running overlap.
    cub_run(
        [&](void* temp, size_t& bytes) {
          return cub::DeviceScan::InclusiveSum(temp, bytes, ok_flag.get(), ok_flag.get(), items, stream);
        },
        stream, "cub::DeviceScan::InclusiveSum");
    cub_run(
        [&](void* temp, size_t& bytes) {
          return cub::DeviceScan::InclusiveSum(temp, bytes, weight.get(), weight.get(), items, stream);
        },
        stream, "cub::DeviceScan::InclusiveSum");
    // payload / sorted_payload are free now: they hold every point's FPR and PRO, and is_ok
    // (not needed by the exact curve) the tie-group ends.
    launch(exact_points<Key>, total, stream, "exact_points", sorted_keys.get(), ok_flag.get(), weight.get(), total,
           n_ok, num_regions, payload.get(), sorted_payload.get(), is_ok.get());
    DeviceBuffer<double> points(total, stream);
    fpr.push_back(0.0);
    pro.push_back(0.0);
    for (int column = 0; column < 2; ++column) {
      const double* all = column == 0 ? payload.get() : sorted_payload.get();
      cub_run(
          [&](void* temp, size_t& bytes) {
            return cub::DeviceSelect::Flagged(temp, bytes, all, is_ok.get(), points.get(), selected.get(), items,
                                              stream);
          },
          stream, "cub::DeviceSelect::Flagged");
      XMODAL_CUDA_CHECK(cudaMemcpyAsync(&host_selected, selected.get(), sizeof(int), cudaMemcpyDeviceToHost, stream));
      XMODAL_CUDA_CHECK(cudaStreamSynchronize(stream));
      copy_to_host(column == 0 ? fpr : pro, points.get(), host_selected, stream);
    }
  } else {
    const long long n_region = total - n_ok;
    DeviceBuffer<Key> ok_keys(n_ok, stream), region_keys(n_region, stream);
    DeviceBuffer<double> region_weight(n_region, stream);
    DeviceBuffer<unsigned char> is_region(total, stream);
    launch(negate_flags, total, stream, "negate_flags", is_ok.get(), total, is_region.get());
    cub_run(
        [&](void* temp, size_t& bytes) {
          return cub::DeviceSelect::Flagged(temp, bytes, sorted_keys.get(), is_ok.get(), ok_keys.get(), selected.get(),
                                            items, stream);
        },
        stream, "cub::DeviceSelect::Flagged");
    cub_run(
        [&](void* temp, size_t& bytes) {
          return cub::DeviceSelect::Flagged(temp, bytes, sorted_keys.get(), is_region.get(), region_keys.get(),
                                            selected.get(), items, stream);
        },
        stream, "cub::DeviceSelect::Flagged");
    cub_run(
        [&](void* temp, size_t& bytes) {
          return cub::DeviceSelect::Flagged(temp, bytes, sorted_payload.get(), is_region.get(), region_weight.get(),
                                            selected.get(), items, stream);
        },
        stream, "cub::DeviceSelect::Flagged");
    const int regions = cub_count(n_region, "pro_curve");
    cub_run(
        [&](void* temp, size_t& bytes) {
          return cub::DeviceScan::InclusiveSum(temp, bytes, region_weight.get(), region_weight.get(), regions, stream);
        },
        stream, "cub::DeviceScan::InclusiveSum");
    DeviceBuffer<double> point_fpr(num_thresholds, stream), point_pro(num_thresholds, stream);
    launch(sampled_points<Key>, num_thresholds, stream, "sampled_points", ok_keys.get(), n_ok, region_keys.get(),
           region_weight.get(), n_region, num_regions, static_cast<long long>(num_thresholds), point_fpr.get(),
           point_pro.get());
    copy_to_host(fpr, point_fpr.get(), num_thresholds, stream);
    copy_to_host(pro, point_pro.get(), num_thresholds, stream);
    XMODAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  XMODAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  fpr.push_back(1.0);
  pro.push_back(1.0);
}

}  // namespace

void pro_curve_cuda(const std::vector<MapBatch>& batches, ScoreType type, int64_t num_thresholds,
                    std::vector<double>& fpr, std::vector<double>& pro, void* stream) {
  XMODAL_CHECK(num_thresholds == 0 || num_thresholds >= 2,
               "num_thresholds must be None (exact curve) or an int >= 2; got ", num_thresholds);
  if (type == ScoreType::f32) {
    pro_curve_typed<float>(batches, num_thresholds, fpr, pro, as_stream(stream));
  } else {
    pro_curve_typed<double>(batches, num_thresholds, fpr, pro, as_stream(stream));
  }
}

}  // namespace xmodal
