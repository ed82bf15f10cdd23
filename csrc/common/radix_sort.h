// LSD radix sorts (stable, 8-bit digits) for the CPU evaluation kernels: a serial one for
// buckets that fit in cache and an OpenMP one for large arrays.
#pragma once

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "common/parallel.h"

namespace xmodal {

// Sorts n items ascending by the bytes [first_byte, last_byte) of key_of(item) (an unsigned
// integer) using `scratch` (n items); digits on which all items agree are skipped. Returns
// whichever of the two buffers holds the result.
template <typename Item, typename KeyOfItem>
Item* radix_sort_serial(Item* items, Item* scratch, int64_t n, int first_byte, int last_byte, KeyOfItem key_of) {
  Item* src = items;
  Item* dst = scratch;
  for (int byte = first_byte; byte < last_byte; ++byte) {
    const int shift = 8 * byte;
    std::array<int64_t, 256> next{};
    for (int64_t i = 0; i < n; ++i) ++next[(key_of(src[i]) >> shift) & 0xff];
    if (std::any_of(next.begin(), next.end(), [n](int64_t c) { return c == n; })) continue;
    int64_t running = 0;
    for (int64_t& c : next) {
      const int64_t count = c;
      c = running;
      running += count;
    }
    for (int64_t i = 0; i < n; ++i) dst[next[(key_of(src[i]) >> shift) & 0xff]++] = src[i];
    std::swap(src, dst);
  }
  return src;
}

// The same, parallel over contiguous chunks of the array (for large inputs).
template <typename Item, typename KeyOfItem>
Item* radix_sort(Item* items, Item* scratch, int64_t n, int first_byte, int last_byte, KeyOfItem key_of) {
  constexpr int64_t kMinPerThread = 1 << 18;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), n / kMinPerThread)));
  if (threads == 1) return radix_sort_serial(items, scratch, n, first_byte, last_byte, key_of);
  std::vector<std::array<int64_t, 256>> counts(static_cast<size_t>(threads));
  Item* src = items;
  Item* dst = scratch;
  for (int byte = first_byte; byte < last_byte; ++byte) {
    const int shift = 8 * byte;
    bool trivial = false;
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num();
      int64_t begin, end;
      chunk_range(n, threads, t, begin, end);
      std::array<int64_t, 256>& c = counts[static_cast<size_t>(t)];
      c.fill(0);
      for (int64_t i = begin; i < end; ++i) ++c[(key_of(src[i]) >> shift) & 0xff];
#pragma omp barrier
#pragma omp single
      {
        // counts[t][d] becomes thread t's first output slot for digit d.
        int64_t running = 0;
        for (int d = 0; d < 256 && !trivial; ++d) {
          int64_t digit_total = 0;
          for (int u = 0; u < threads; ++u) {
            const int64_t count = counts[static_cast<size_t>(u)][d];
            counts[static_cast<size_t>(u)][d] = running;
            running += count;
            digit_total += count;
          }
          trivial = digit_total == n;
        }
      }
      if (!trivial) {
        std::array<int64_t, 256>& next = counts[static_cast<size_t>(t)];
        for (int64_t i = begin; i < end; ++i) dst[next[(key_of(src[i]) >> shift) & 0xff]++] = src[i];
      }
    }
    if (!trivial) std::swap(src, dst);
  }
  return src;
}

// A std::allocator that leaves trivially constructible elements uninitialised on resize, so
// large work arrays are not zeroed just to be overwritten.
template <typename T>
struct UninitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <typename U>
  UninitAllocator(const UninitAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

template <typename T>
using WorkVector = std::vector<T, UninitAllocator<T>>;

}  // namespace xmodal
