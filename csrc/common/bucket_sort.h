// Sorting by 16-bit key buckets, the core of the CPU evaluation kernels. A first pass gives
// every part of the input a histogram of the top 16 bits of its keys; a layout then fixes,
// for the buckets an op needs, where each part writes its items (so parts scatter in
// parallel without synchronisation and the result does not depend on scheduling); finally
// each bucket is sorted on its remaining key bits, in cache for all but huge buckets.
// Buckets an op does not need are never written or sorted: only their counts are used.
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/parallel.h"
#include "common/radix_sort.h"
#include "common/sort_keys.h"

namespace xmodal {

constexpr int kBucketBits = 16;
constexpr int64_t kNumBuckets = int64_t{1} << kBucketBits;

// Counts of one part (< 2^32 items per part) over "codes": a code is a key's bucket plus
// kNumBuckets times a class bit (anomalous pixel, positive label), so one histogram of
// 2 * kNumBuckets bins counts both classes.
using Histogram = std::vector<uint32_t>;
constexpr int64_t kNumCodes = 2 * kNumBuckets;
constexpr int64_t kBlock = 1024;  // items per staged block (its keys and codes stay in L1)

template <typename Key>
inline int64_t bucket_of(Key key) {
  return static_cast<int64_t>(key >> (8 * sizeof(Key) - kBucketBits));
}

template <typename Key>
inline uint32_t bucket_code(Key key, uint8_t flag) {
  return static_cast<uint32_t>(bucket_of(key)) | (static_cast<uint32_t>(flag != 0) << kBucketBits);
}

// Histograms one block of scores with their class bytes: codes first (a loop the compiler
// vectorises), then the increments. Returns the number of nonzero class bytes; sets
// not_finite when a score is NaN or infinite.
template <typename Score, typename Key = typename KeyOf<Score>::type>
inline int64_t histogram_block(const Score* scores, const uint8_t* flags, int64_t count, uint32_t* hist,
                               Key& not_finite) {
  uint32_t code[kBlock];
  int64_t flagged = 0;
  Key bad = 0;  // a local reduction: through the reference the loop would not vectorise
  for (int64_t i = 0; i < count; ++i) {
    bad |= not_finite_bit(scores[i]);
    code[i] = bucket_code(descending_key(scores[i]), flags[i]);
    flagged += flags[i] != 0;
  }
  not_finite |= bad;
  for (int64_t i = 0; i < count; ++i) ++hist[code[i]];
  return flagged;
}

// A set of codes as a bitmap (2 * kNumBuckets bits = 16 KiB, in L1).
class CodeSet {
 public:
  CodeSet() : bits_(static_cast<size_t>(kNumCodes / 64), 0) {}
  void insert(int64_t code) { bits_[code >> 6] |= uint64_t{1} << (code & 63); }
  uint64_t contains(uint32_t code) const { return (bits_[code >> 6] >> (code & 63)) & 1; }
  const uint64_t* words() const { return bits_.data(); }

 private:
  std::vector<uint64_t> bits_;
};

// The keys of one block whose code is in `wanted`, in order: keys and codes first
// (vectorised), then a branch-free compaction (which items are wanted is unpredictable).
// keys_out gets the kept keys, codes_out their codes; returns how many. Both outputs need
// room for count + 16 items (the AVX-512 path stores whole vectors).
template <typename Score, typename Key = typename KeyOf<Score>::type>
inline int64_t select_block_scalar(const Score* scores, const uint8_t* flags, int64_t count, const CodeSet& wanted,
                                   Key* keys_out, uint32_t* codes_out) {
  Key key[kBlock];
  uint32_t code[kBlock];
  for (int64_t i = 0; i < count; ++i) {
    key[i] = descending_key(scores[i]);
    code[i] = bucket_code(key[i], flags[i]);
  }
  int64_t kept = 0;
  for (int64_t i = 0; i < count; ++i) {
    keys_out[kept] = key[i];
    codes_out[kept] = code[i];
    kept += static_cast<int64_t>(wanted.contains(code[i]));
  }
  return kept;
}

template <typename Score, typename Key = typename KeyOf<Score>::type>
inline int64_t select_block(const Score* scores, const uint8_t* flags, int64_t count, const CodeSet& wanted,
                            Key* keys_out, uint32_t* codes_out) {
  return select_block_scalar(scores, flags, count, wanted, keys_out, codes_out);
}

#if defined(__AVX512F__)
// float32: 16 keys per step; the code set is tested with a gather from the bitmap and the
// wanted keys and codes are compressed in registers (a compress straight to memory is slow
// on some cores), then stored whole. The same arithmetic as descending_key / bucket_code.
template <>
inline int64_t select_block<float, uint32_t>(const float* scores, const uint8_t* flags, int64_t count,
                                             const CodeSet& wanted, uint32_t* keys_out, uint32_t* codes_out) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512i izero = _mm512_setzero_si512(), sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  const __m512i ones = _mm512_set1_epi32(-1), low5 = _mm512_set1_epi32(31), one = _mm512_set1_epi32(1);
  const int* words = reinterpret_cast<const int*>(wanted.words());
  int64_t kept = 0, i = 0;
  for (; i + 16 <= count; i += 16) {
    const __m512i bits = _mm512_castps_si512(_mm512_add_ps(_mm512_loadu_ps(scores + i), zero));
    const __m512i flip = _mm512_or_si512(_mm512_srai_epi32(bits, 31), sign);
    const __m512i key = _mm512_xor_si512(_mm512_xor_si512(bits, flip), ones);
    const __m512i flag = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(flags + i)));
    const __mmask16 anomalous = _mm512_cmpneq_epi32_mask(flag, izero);
    const __m512i code = _mm512_mask_or_epi32(_mm512_srli_epi32(key, 32 - kBucketBits), anomalous,
                                              _mm512_srli_epi32(key, 32 - kBucketBits),
                                              _mm512_set1_epi32(1 << kBucketBits));
    const __m512i word = _mm512_i32gather_epi32(_mm512_srli_epi32(code, 5), words, 4);
    const __mmask16 keep = _mm512_test_epi32_mask(_mm512_srlv_epi32(word, _mm512_and_si512(code, low5)), one);
    _mm512_storeu_si512(keys_out + kept, _mm512_maskz_compress_epi32(keep, key));
    _mm512_storeu_si512(codes_out + kept, _mm512_maskz_compress_epi32(keep, code));
    kept += __builtin_popcount(keep);
  }
  return kept + select_block_scalar(scores + i, flags + i, count - i, wanted, keys_out + kept, codes_out + kept);
}
#endif

struct BucketLayout {
  std::vector<int32_t> slot_of;              // code -> slot, -1 when not kept
  std::vector<int64_t> bucket;               // slot -> code, ascending
  std::vector<int64_t> begin;                // slot -> first item; slots + 1 entries
  std::vector<std::vector<int64_t>> cursor;  // part -> slot -> next write position
  int64_t size() const { return begin.back(); }
  int64_t slots() const { return static_cast<int64_t>(bucket.size()); }
  CodeSet codes() const {
    CodeSet set;
    for (int64_t c : bucket) set.insert(c);
    return set;
  }
};

// Sums the parts' histograms into cumulative counts over all codes: cum[c] = items with a
// code < c (cum[kNumBuckets] = items of class 0).
inline std::vector<int64_t> cumulative_counts(const std::vector<const Histogram*>& parts) {
  std::vector<int64_t> cum(static_cast<size_t>(kNumCodes) + 1, 0);
  for (const Histogram* h : parts)
    for (int64_t c = 0; c < kNumCodes; ++c) cum[c + 1] += (*h)[c];
  for (int64_t c = 0; c < kNumCodes; ++c) cum[c + 1] += cum[c];
  return cum;
}

// The layout of the non-empty codes c with keep(c), in code order.
template <typename Keep>
BucketLayout make_layout(const std::vector<const Histogram*>& parts, const std::vector<int64_t>& cum, Keep keep) {
  BucketLayout layout;
  layout.slot_of.assign(static_cast<size_t>(kNumCodes), -1);
  layout.begin.push_back(0);
  for (int64_t b = 0; b < kNumCodes; ++b) {
    const int64_t count = cum[b + 1] - cum[b];
    if (count == 0 || !keep(b)) continue;
    layout.slot_of[b] = static_cast<int32_t>(layout.bucket.size());
    layout.bucket.push_back(b);
    layout.begin.push_back(layout.begin.back() + count);
  }
  layout.cursor.resize(parts.size());
  std::vector<int64_t> next(layout.begin.begin(), layout.begin.end() - 1);
  for (size_t p = 0; p < parts.size(); ++p) {
    layout.cursor[p] = next;
    for (int64_t s = 0; s < layout.slots(); ++s) next[s] += (*parts[p])[layout.bucket[s]];
  }
  return layout;
}

// Sorts the items of every slot ascending by key_of(item) (all items of a slot share their top
// 16 bits). Small slots are sorted one per thread, large ones with the parallel radix sort.
template <typename Item, typename KeyOfItem>
void sort_slots(Item* items, const BucketLayout& layout, KeyOfItem key_of) {
  using Key = std::decay_t<decltype(key_of(*items))>;
  constexpr int kLowBytes = static_cast<int>(sizeof(Key)) - kBucketBits / 8;
  const int64_t total = layout.size();
  const int64_t large = std::max<int64_t>(int64_t{1} << 20, total / (4 * int64_t{num_threads()}));
  auto less = [&key_of](const Item& a, const Item& b) { return key_of(a) < key_of(b); };
  std::vector<int64_t> big;
  int64_t widest = 0;
  for (int64_t s = 0; s < layout.slots(); ++s) {
    const int64_t n = layout.begin[s + 1] - layout.begin[s];
    if (n >= large) big.push_back(s);
    else widest = std::max(widest, n);
  }
  ParallelErrors errors;
#pragma omp parallel
  {
    WorkVector<Item> scratch;
    errors.run([&] { scratch.resize(static_cast<size_t>(widest)); });
#pragma omp for schedule(dynamic, 16)
    for (int64_t s = 0; s < layout.slots(); ++s) {
      Item* first = items + layout.begin[s];
      const int64_t n = layout.begin[s + 1] - layout.begin[s];
      if (n >= large || static_cast<int64_t>(scratch.size()) < n) continue;  // (scratch: only on failure)
      if (n <= 64) {
        std::sort(first, first + n, less);
      } else if (radix_sort_serial(first, scratch.data(), n, 0, kLowBytes, key_of) != first) {
        std::copy(scratch.data(), scratch.data() + n, first);
      }
    }
  }
  errors.rethrow();
  for (int64_t s : big) {
    Item* first = items + layout.begin[s];
    const int64_t n = layout.begin[s + 1] - layout.begin[s];
    WorkVector<Item> scratch(static_cast<size_t>(n));
    if (radix_sort(first, scratch.data(), n, 0, kLowBytes, key_of) != first) {
      std::copy(scratch.data(), scratch.data() + n, first);
    }
  }
}

}  // namespace xmodal
