// CUDA AUROC: keys and labels of all chunks, one CUB radix sort of (key, label), an inclusive
// scan of the positive flags, the end of every tie group selected, and per group
// p_g * (2 * negatives_below + n_g) summed in unsigned 64-bit integers (2U <= 2 P N, checked
// to fit). The division is shared with the CPU path.
#include <cub/cub.cuh>
#include <vector>

#include "common/check.h"
#include "common/cuda_buffer.cuh"
#include "common/cuda_check.cuh"
#include "common/sort_keys.h"
#include "ops/auroc/auroc.h"

namespace xmodal {
namespace {

template <typename Score, typename Key>
__global__ void keys_and_labels(const Score* scores, const uint8_t* labels, long long n, Key* keys, long long* positive,
                                unsigned long long* not_finite) {
  XMODAL_GRID_STRIDE(i, n) {
    if (not_finite_bit(scores[i])) atomicAdd(not_finite, 1ull);
    keys[i] = descending_key(scores[i]);
    positive[i] = labels[i] ? 1 : 0;
  }
}

template <typename Key>
__global__ void group_ends(const Key* keys, long long n, long long* index, unsigned char* is_end) {
  XMODAL_GRID_STRIDE(i, n) {
    index[i] = i;
    is_end[i] = (i + 1 == n || keys[i] != keys[i + 1]) ? 1 : 0;
  }
}

// ends[g] = last item of tie group g; tp[i] = positives among items 0..i.
__global__ void group_terms(const long long* ends, long long groups, const long long* tp, long long num_neg,
                            unsigned long long* term) {
  XMODAL_GRID_STRIDE(g, groups) {
    const long long end = ends[g], prev = g > 0 ? ends[g - 1] : -1;
    const long long tp_end = tp[end], tp_prev = prev >= 0 ? tp[prev] : 0;
    const long long fp_end = end + 1 - tp_end, fp_prev = prev + 1 - tp_prev;
    const long long pos = tp_end - tp_prev, neg = fp_end - fp_prev;
    term[g] = static_cast<unsigned long long>(pos) * static_cast<unsigned long long>(2 * (num_neg - fp_end) + neg);
  }
}

template <typename Score>
double auroc_typed(const std::vector<ScoreChunk>& chunks, cudaStream_t stream) {
  using Key = typename KeyOf<Score>::type;
  long long total = 0;
  for (const ScoreChunk& c : chunks) {
    XMODAL_CHECK(c.size >= 0, "chunk sizes must be non-negative");
    total += c.size;
  }
  const int items = cub_count(total, "auroc");
  XMODAL_CHECK(total > 0, "labels must contain both classes (AUROC is undefined otherwise); got no element");
  DeviceBuffer<Key> keys(total, stream), sorted_keys(total, stream);
  DeviceBuffer<long long> positive(total, stream), sorted_positive(total, stream);
  DeviceBuffer<unsigned long long> not_finite(1, stream);
  XMODAL_CUDA_CHECK(cudaMemsetAsync(not_finite.get(), 0, sizeof(unsigned long long), stream));
  long long offset = 0;
  for (const ScoreChunk& c : chunks) {
    launch(keys_and_labels<Score, Key>, c.size, stream, "keys_and_labels", static_cast<const Score*>(c.scores),
           c.labels, static_cast<long long>(c.size), keys.get() + offset, positive.get() + offset, not_finite.get());
    offset += c.size;
  }
  cub_run(
      [&](void* temp, size_t& bytes) {
        return cub::DeviceRadixSort::SortPairs(temp, bytes, keys.get(), sorted_keys.get(), positive.get(),
                                               sorted_positive.get(), items, 0, static_cast<int>(8 * sizeof(Key)),
                                               stream);
      },
      stream, "cub::DeviceRadixSort::SortPairs");
  cub_run(
      [&](void* temp, size_t& bytes) {
        return cub::DeviceScan::InclusiveSum(temp, bytes, sorted_positive.get(), sorted_positive.get(), items, stream);
      },
      stream, "cub::DeviceScan::InclusiveSum");
  unsigned long long host_not_finite = 0;
  long long num_pos = 0;
  XMODAL_CUDA_CHECK(
      cudaMemcpyAsync(&host_not_finite, not_finite.get(), sizeof(host_not_finite), cudaMemcpyDeviceToHost, stream));
  XMODAL_CUDA_CHECK(
      cudaMemcpyAsync(&num_pos, sorted_positive.get() + (total - 1), sizeof(num_pos), cudaMemcpyDeviceToHost, stream));
  XMODAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  XMODAL_CHECK(host_not_finite == 0, "scores contain NaN or infinite values");
  const long long num_neg = total - num_pos;
  XMODAL_CHECK(num_pos > 0 && num_neg > 0, "labels must contain both classes (AUROC is undefined otherwise); got ",
               num_pos, " positive and ", num_neg, " negative");
  XMODAL_CHECK(static_cast<long double>(num_pos) * num_neg < 4.0e18L,
               "auroc on CUDA: positives x negatives is too large for 64-bit counting; use the CPU");
  // keys / positive are free after the sort: reuse positive for the group-end indices.
  DeviceBuffer<unsigned char> is_end(total, stream);
  DeviceBuffer<long long> ends(total, stream);
  DeviceBuffer<int> groups(1, stream);
  launch(group_ends<Key>, total, stream, "group_ends", sorted_keys.get(), total, positive.get(), is_end.get());
  cub_run(
      [&](void* temp, size_t& bytes) {
        return cub::DeviceSelect::Flagged(temp, bytes, positive.get(), is_end.get(), ends.get(), groups.get(), items,
                                          stream);
      },
      stream, "cub::DeviceSelect::Flagged");
  int host_groups = 0;
  XMODAL_CUDA_CHECK(cudaMemcpyAsync(&host_groups, groups.get(), sizeof(int), cudaMemcpyDeviceToHost, stream));
  XMODAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  DeviceBuffer<unsigned long long> term(host_groups, stream), sum(1, stream);
  launch(group_terms, host_groups, stream, "group_terms", ends.get(), static_cast<long long>(host_groups),
         sorted_positive.get(), num_neg, term.get());
  cub_run(
      [&](void* temp, size_t& bytes) {
        return cub::DeviceReduce::Sum(temp, bytes, term.get(), sum.get(), host_groups, stream);
      },
      stream, "cub::DeviceReduce::Sum");
  unsigned long long twice_u = 0;
  XMODAL_CUDA_CHECK(cudaMemcpyAsync(&twice_u, sum.get(), sizeof(twice_u), cudaMemcpyDeviceToHost, stream));
  XMODAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  return auroc_from_u2(twice_u, num_pos, num_neg);
}

}  // namespace

double auroc_cuda(const std::vector<ScoreChunk>& chunks, ScoreType type, void* stream) {
  return type == ScoreType::f32 ? auroc_typed<float>(chunks, as_stream(stream))
                                : auroc_typed<double>(chunks, as_stream(stream));
}

}  // namespace xmodal
