// OpenMP thread control shared by every CPU kernel.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>

namespace xmodal {

// Threads the CPU kernels use (OpenMP's max threads: OMP_NUM_THREADS or all cores).
int num_threads();
void set_num_threads(int threads);
bool openmp_enabled();

// Splits [0, n) into `parts` nearly equal chunks; chunk `i` is [begin, end).
inline void chunk_range(int64_t n, int64_t parts, int64_t i, int64_t& begin, int64_t& end) {
  const int64_t base = n / parts, extra = n % parts;
  begin = i * base + (i < extra ? i : extra);
  end = begin + base + (i < extra ? 1 : 0);
}

// An exception must not leave an OpenMP region (the runtime would terminate the process, and
// with it the Python interpreter). Wrap the body of every parallel loop iteration in run();
// the first exception is kept and rethrown by rethrow() after the region.
//
// `failed_` only lets the remaining iterations skip their work early, so relaxed atomics are
// enough: the exception itself is written inside a critical section and read by rethrow()
// after the region, whose closing barrier orders the two.
class ParallelErrors {
 public:
  template <typename Body>
  void run(Body&& body) noexcept {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      body();
    } catch (...) {
#pragma omp critical(xmodal_parallel_errors)
      if (!error_) error_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }

  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
};

}  // namespace xmodal
