// Sorting by key buckets, the core of the CPU evaluation kernels. Keys map monotonically to
// 2^16 buckets (BucketMap, fitted to a sample of the data). A first pass gives every part of
// the input a histogram of its buckets; a layout then fixes, for the buckets an op needs,
// where each part writes its items (so parts scatter in parallel without synchronisation and
// the result does not depend on scheduling); finally each slot (a run of buckets) is sorted,
// in cache for all but huge ones. Buckets an op does not need are never written or sorted:
// only their counts are used.
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
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
constexpr int64_t kBlock = 1024;          // items per staged block (its keys and codes stay in L1)
constexpr int64_t kActiveBuckets = 4096;  // buckets spanned by the bulk of the data

// A monotone map from keys to buckets: bucket = min((max(key, lo) - lo) >> shift, last). Any
// monotone map keeps every result exact (buckets are ordered key intervals); a fine one keeps
// the buckets an op must gather and sort small. sample_bucket_map() fits lo and shift to the
// data, so maps concentrated in a narrow score range still spread over many buckets.
template <typename Key>
struct BucketMap {
  Key lo = 0;
  int shift = 8 * static_cast<int>(sizeof(Key)) - kBucketBits;
  int64_t operator()(Key key) const {
    const Key offset = key > lo ? static_cast<Key>(key - lo) : Key{0};
    const Key b = static_cast<Key>(offset >> shift);
    return b < static_cast<Key>(kNumBuckets - 1) ? static_cast<int64_t>(b) : kNumBuckets - 1;
  }
};

template <typename Key>
inline uint32_t bucket_code(Key key, uint8_t flag, const BucketMap<Key>& map) {
  return static_cast<uint32_t>(map(key)) | (static_cast<uint32_t>(flag != 0) << kBucketBits);
}

// Fits a map to ~2^16 keys sampled evenly from `spans` (pointer, length): about
// kActiveBuckets equal steps cover the sampled keys from the smallest to the 99.9 % quantile
// (smaller keys fall into bucket 0, larger ones into later buckets, the largest into the
// last). Few active buckets keep the histogram increments in L1; equal steps over the data's
// own range keep the buckets an op must gather small even when scores are concentrated.
template <typename Score, typename Key = typename KeyOf<Score>::type>
BucketMap<Key> sample_bucket_map(const std::vector<std::pair<const Score*, int64_t>>& spans) {
  int64_t total = 0;
  for (const auto& span : spans) total += span.second;
  const int64_t stride = std::max<int64_t>(1, total / kNumBuckets);
  std::vector<Key> sample;
  int64_t next = 0, base = 0;  // next: global index of the next sample
  for (const auto& span : spans) {
    for (; next < base + span.second; next += stride) sample.push_back(descending_key(span.first[next - base]));
    base += span.second;
  }
  BucketMap<Key> map;
  if (sample.empty()) return map;
  const Key lo = *std::min_element(sample.begin(), sample.end());
  auto quantile = sample.begin() + static_cast<std::ptrdiff_t>(static_cast<double>(sample.size() - 1) * 0.999);
  std::nth_element(sample.begin(), quantile, sample.end());
  const Key hi = *quantile;
  map.lo = lo;
  map.shift = 0;
  while (static_cast<Key>(hi - lo) >> map.shift >= static_cast<Key>(kActiveBuckets)) ++map.shift;
  return map;
}

// Histograms one block of scores with their class bytes: codes first (a loop the compiler
// vectorises), then the increments. Returns the number of nonzero class bytes; sets
// not_finite when a score is NaN or infinite.
template <typename Score, typename Key = typename KeyOf<Score>::type>
inline int64_t histogram_block(const Score* scores, const uint8_t* flags, int64_t count, uint32_t* hist,
                               const BucketMap<Key>& map, Key& not_finite) {
  uint32_t code[kBlock];
  int64_t flagged = 0;
  Key bad = 0;  // a local reduction: through the reference the loop would not vectorise
  for (int64_t i = 0; i < count; ++i) {
    bad |= not_finite_bit(scores[i]);
    code[i] = bucket_code(descending_key(scores[i]), flags[i], map);
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
inline int64_t select_block_scalar(const Score* scores, const uint8_t* flags, int64_t count, const BucketMap<Key>& map,
                                   const CodeSet& wanted, Key* keys_out, uint32_t* codes_out) {
  Key key[kBlock];
  uint32_t code[kBlock];
  for (int64_t i = 0; i < count; ++i) {
    key[i] = descending_key(scores[i]);
    code[i] = bucket_code(key[i], flags[i], map);
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
inline int64_t select_block(const Score* scores, const uint8_t* flags, int64_t count, const BucketMap<Key>& map,
                            const CodeSet& wanted, Key* keys_out, uint32_t* codes_out) {
  return select_block_scalar(scores, flags, count, map, wanted, keys_out, codes_out);
}

#if defined(__AVX512F__)
// GCC 12's intrinsics pass an "undefined" vector through, which -Wmaybe-uninitialized
// reports inside its own headers (a false positive); silence it for this function only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// float32: 16 keys per step; the code set is tested with a gather from the bitmap and the
// wanted keys and codes are compressed in registers (a compress straight to memory is slow
// on some cores), then stored whole. The same arithmetic as descending_key / bucket_code.
template <>
inline int64_t select_block<float, uint32_t>(const float* scores, const uint8_t* flags, int64_t count,
                                             const BucketMap<uint32_t>& map, const CodeSet& wanted, uint32_t* keys_out,
                                             uint32_t* codes_out) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512i izero = _mm512_setzero_si512(), sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  const __m512i ones = _mm512_set1_epi32(-1), low5 = _mm512_set1_epi32(31), one = _mm512_set1_epi32(1);
  const __m512i lo = _mm512_set1_epi32(static_cast<int>(map.lo)), last = _mm512_set1_epi32(kNumBuckets - 1);
  const __m128i shift = _mm_cvtsi32_si128(map.shift);
  const int* words = reinterpret_cast<const int*>(wanted.words());
  int64_t kept = 0, i = 0;
  for (; i + 16 <= count; i += 16) {
    const __m512i bits = _mm512_castps_si512(_mm512_add_ps(_mm512_loadu_ps(scores + i), zero));
    const __m512i flip = _mm512_or_si512(_mm512_srai_epi32(bits, 31), sign);
    const __m512i key = _mm512_xor_si512(_mm512_xor_si512(bits, flip), ones);
    const __m512i flag = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(flags + i)));
    const __mmask16 anomalous = _mm512_cmpneq_epi32_mask(flag, izero);
    const __m512i offset = _mm512_sub_epi32(_mm512_max_epu32(key, lo), lo);
    const __m512i bucket = _mm512_min_epu32(_mm512_srl_epi32(offset, shift), last);
    const __m512i code = _mm512_mask_or_epi32(bucket, anomalous, bucket, _mm512_set1_epi32(1 << kBucketBits));
    const __m512i word = _mm512_i32gather_epi32(_mm512_srli_epi32(code, 5), words, 4);
    const __mmask16 keep = _mm512_test_epi32_mask(_mm512_srlv_epi32(word, _mm512_and_si512(code, low5)), one);
    _mm512_storeu_si512(keys_out + kept, _mm512_maskz_compress_epi32(keep, key));
    _mm512_storeu_si512(codes_out + kept, _mm512_maskz_compress_epi32(keep, code));
    kept += __builtin_popcount(keep);
  }
  return kept + select_block_scalar(scores + i, flags + i, count - i, map, wanted, keys_out + kept, codes_out + kept);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

// Where the items of the kept codes go. A slot is a run of adjacent kept codes (never
// spanning a non-kept code that holds items, nor the class boundary) of up to a target size,
// so that parts scatter into few destinations and each slot sorts in cache; after the sort a
// code's items are a contiguous range of its slot (offset()).
struct BucketLayout {
  std::vector<int32_t> slot_of;              // code -> slot, -1 when not kept or empty
  std::vector<int64_t> first;                // slot -> its first code
  std::vector<int64_t> begin;                // slot -> first item; slots + 1 entries
  std::vector<std::vector<int64_t>> cursor;  // part -> slot -> next write position
  CodeSet wanted;                            // the kept codes
  int64_t size() const { return begin.back(); }
  int64_t slots() const { return static_cast<int64_t>(first.size()); }
  // Position of the first item of a kept, non-empty code once the slots are sorted.
  int64_t offset(int64_t code, const std::vector<int64_t>& cum) const {
    const int32_t s = slot_of[code];
    return begin[s] + (cum[code] - cum[first[s]]);
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

// The layout of the codes c with keep(c), slots of about `target` items.
template <typename Keep>
BucketLayout make_layout(const std::vector<const Histogram*>& parts, const std::vector<int64_t>& cum, Keep keep,
                         int64_t target = int64_t{1} << 15) {
  BucketLayout layout;
  layout.slot_of.assign(static_cast<size_t>(kNumCodes), -1);
  layout.begin.push_back(0);
  bool open = false;  // whether the next kept code may join the last slot
  for (int64_t c = 0; c < kNumCodes; ++c) {
    const int64_t count = cum[c + 1] - cum[c];
    if (c == kNumBuckets) open = false;
    if (count == 0) continue;
    if (!keep(c)) {
      open = false;
      continue;
    }
    if (!open || layout.begin.back() - layout.begin[layout.first.size() - 1] >= target) {
      layout.first.push_back(c);
      layout.begin.push_back(layout.begin.back());
      open = true;
    }
    layout.slot_of[c] = static_cast<int32_t>(layout.first.size() - 1);
    layout.begin.back() += count;
    layout.wanted.insert(c);
  }
  layout.cursor.resize(parts.size());
  std::vector<int64_t> next(layout.begin.begin(), layout.begin.end() - 1);
  for (size_t p = 0; p < parts.size(); ++p) {
    layout.cursor[p] = next;
    for (int64_t c = 0; c < kNumCodes; ++c) {
      if (layout.slot_of[c] >= 0) next[layout.slot_of[c]] += (*parts[p])[c];
    }
  }
  return layout;
}

// Sorts a small array (one slot) ascending by key: LSD radix on key - min, in the fewest
// passes of at most 11 bits that cover the slot's key range (usually two), digits split
// evenly. Returns whichever of items / scratch holds the result.
template <typename Item, typename KeyOfItem>
Item* sort_small(Item* items, Item* scratch, int64_t n, KeyOfItem key_of) {
  using Key = std::decay_t<decltype(key_of(*items))>;
  constexpr int kMaxDigit = 11;
  if (n <= 64) {
    std::sort(items, items + n, [&key_of](const Item& a, const Item& b) { return key_of(a) < key_of(b); });
    return items;
  }
  Key lo = key_of(items[0]), hi = lo;
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, key_of(items[i]));
    hi = std::max(hi, key_of(items[i]));
  }
  int bits = 0;
  for (Key range = static_cast<Key>(hi - lo); range != 0; range = static_cast<Key>(range >> 1)) ++bits;
  const int passes = (bits + kMaxDigit - 1) / kMaxDigit;
  const int digit = passes > 0 ? (bits + passes - 1) / passes : 0;
  const Key mask = static_cast<Key>((Key{1} << digit) - 1);
  Item* src = items;
  Item* dst = scratch;
  for (int pass = 0; pass < passes; ++pass) {
    const int shift = pass * digit;
    int64_t next[1 << kMaxDigit];
    std::fill(next, next + (int64_t{1} << digit), int64_t{0});
    for (int64_t i = 0; i < n; ++i) ++next[(static_cast<Key>(key_of(src[i]) - lo) >> shift) & mask];
    int64_t running = 0;
    for (int64_t d = 0; d < (int64_t{1} << digit); ++d) {
      const int64_t count = next[d];
      next[d] = running;
      running += count;
    }
    for (int64_t i = 0; i < n; ++i) dst[next[(static_cast<Key>(key_of(src[i]) - lo) >> shift) & mask]++] = src[i];
    std::swap(src, dst);
  }
  return src;
}

// Sorts the items of every slot ascending by key_of(item). Slots are sorted one per thread
// (sort_small); huge ones (heavy ties, a very narrow score range) with the parallel radix sort.
template <typename Item, typename KeyOfItem>
void sort_slots(Item* items, const BucketLayout& layout, KeyOfItem key_of) {
  const int64_t total = layout.size();
  const int64_t large = std::max<int64_t>(int64_t{1} << 20, total / (4 * int64_t{num_threads()}));
  std::vector<int64_t> big;
  int64_t widest = 0;
  for (int64_t s = 0; s < layout.slots(); ++s) {
    const int64_t n = layout.begin[s + 1] - layout.begin[s];
    if (n >= large)
      big.push_back(s);
    else
      widest = std::max(widest, n);
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
      if (sort_small(first, scratch.data(), n, key_of) != first) std::copy(scratch.data(), scratch.data() + n, first);
    }
  }
  errors.rethrow();
  for (int64_t s : big) {
    Item* first = items + layout.begin[s];
    const int64_t n = layout.begin[s + 1] - layout.begin[s];
    WorkVector<Item> scratch(static_cast<size_t>(n));
    using Key = std::decay_t<decltype(key_of(*items))>;
    if (radix_sort(first, scratch.data(), n, 0, static_cast<int>(sizeof(Key)), key_of) != first) {
      std::copy(scratch.data(), scratch.data() + n, first);
    }
  }
}

}  // namespace xmodal
