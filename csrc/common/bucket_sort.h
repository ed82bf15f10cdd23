// Sorting by 16-bit key buckets, the core of the CPU evaluation kernels. A first pass gives
// every part of the input a histogram of the top 16 bits of its keys; a layout then fixes,
// for the buckets an op needs, where each part writes its items (so parts scatter in
// parallel without synchronisation and the result does not depend on scheduling); finally
// each bucket is sorted on its remaining key bits, in cache for all but huge buckets.
// Buckets an op does not need are never written or sorted: only their counts are used.
#pragma once

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
  for (int64_t i = 0; i < count; ++i) {
    not_finite |= not_finite_bit(scores[i]);
    code[i] = bucket_code(descending_key(scores[i]), flags[i]);
    flagged += flags[i] != 0;
  }
  for (int64_t i = 0; i < count; ++i) ++hist[code[i]];
  return flagged;
}

// A set of codes as a bitmap (2 * kNumBuckets bits = 16 KiB, in L1).
class CodeSet {
 public:
  CodeSet() : bits_(static_cast<size_t>(kNumCodes / 64), 0) {}
  void insert(int64_t code) { bits_[code >> 6] |= uint64_t{1} << (code & 63); }
  uint64_t contains(uint32_t code) const { return (bits_[code >> 6] >> (code & 63)) & 1; }

 private:
  std::vector<uint64_t> bits_;
};

// The keys of one block whose code is in `wanted`, in order: keys and codes first
// (vectorised), then a branch-free compaction (which items are wanted is unpredictable).
// keys_out gets the kept keys, codes_out their codes; returns how many.
template <typename Score, typename Key = typename KeyOf<Score>::type>
inline int64_t select_block(const Score* scores, const uint8_t* flags, int64_t count, const CodeSet& wanted,
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
