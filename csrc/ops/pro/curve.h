// Host-side consumers of PRO curve points, shared by the CPU walk and the CUDA path (which
// copies its curve to the host): collect the points, or integrate them on the fly with
// MVTec's trapezoid rule.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "common/check.h"

namespace xmodal {

// Collects every point (the full curve).
struct CurvePoints {
  std::vector<double>* fpr;
  std::vector<double>* pro;
  bool add(double x, double y) {
    fpr->push_back(x);
    pro->push_back(y);
    return false;
  }
  void end() {}
};

// Neumaier-compensated running sum.
class CompensatedSum {
 public:
  void add(double v) {
    const double t = sum_ + v;
    comp_ += (std::fabs(sum_) >= std::fabs(v)) ? (sum_ - t) + v : (v - t) + sum_;
    sum_ = t;
  }
  double value() const { return sum_ + comp_; }

 private:
  double sum_ = 0.0, comp_ = 0.0;
};

// MVTec's trapezoid(x, y, x_max) / x_max for several limits at once, fed with the points of
// a curve in non-decreasing x order (the first point has x = 0). For each limit: the sum of
// the trapezoids between consecutive points with x <= limit, plus, when no point lies exactly
// on the limit, the partial trapezoid up to the limit with y interpolated linearly between
// the last point at or below it and the first point above it.
class AuproIntegrator {
 public:
  AuproIntegrator(const double* limits, int64_t num_limits) : order_(static_cast<size_t>(num_limits)) {
    for (int64_t k = 0; k < num_limits; ++k) {
      XMODAL_CHECK(limits[k] > 0.0 && limits[k] <= 1.0, "limits must lie in (0, 1]; got ", limits[k]);
    }
    limits_.assign(limits, limits + num_limits);
    result_.assign(static_cast<size_t>(num_limits), std::numeric_limits<double>::quiet_NaN());
    hit_.assign(static_cast<size_t>(num_limits), false);
    std::iota(order_.begin(), order_.end(), size_t{0});
    std::sort(order_.begin(), order_.end(), [this](size_t a, size_t b) { return limits_[a] < limits_[b]; });
  }

  double max_limit() const { return limits_.empty() ? 0.0 : limits_[order_.back()]; }

  // Adds the next point; returns true once every limit is resolved (later points are unused).
  bool add(double x, double y) {
    if (!started_) {
      started_ = true;
    } else {
      while (next_ < order_.size() && x > limits_[order_[next_]]) resolve(order_[next_++], x, y);
      if (next_ == order_.size()) return true;
      area_.add((0.5 * (y + py_)) * (x - px_));
    }
    for (size_t k = next_; k < order_.size() && limits_[order_[k]] == x; ++k) hit_[order_[k]] = true;
    px_ = x;
    py_ = y;
    return next_ == order_.size();
  }

  bool done() const { return next_ == order_.size(); }

  // After the last point: limits that a point hit exactly (limit 1 hits the closing (1, 1))
  // take the whole accumulated area.
  void end() {
    while (next_ < order_.size() && hit_[order_[next_]]) {
      result_[order_[next_]] = area_.value() / limits_[order_[next_]];
      ++next_;
    }
  }

  // Writes the normalised areas in the caller's limit order; every limit must be resolved.
  void finish(double* out) const {
    if (!done()) throw std::logic_error("AUPRO: the curve ended before every limit was reached");
    std::copy(result_.begin(), result_.end(), out);
  }

 private:
  // (x, y) is the first point beyond limit k; (px_, py_) the last one at or below it.
  void resolve(size_t k, double x, double y) {
    const double limit = limits_[k];
    double area = area_.value();
    if (!hit_[k]) {
      const double y_interp = py_ + ((y - py_) * (limit - px_) / (x - px_));
      area += (0.5 * (y_interp + py_)) * (limit - px_);
    }
    result_[k] = area / limit;
  }

  std::vector<double> limits_, result_;
  std::vector<bool> hit_;
  std::vector<size_t> order_;
  size_t next_ = 0;
  bool started_ = false;
  double px_ = 0.0, py_ = 0.0;
  CompensatedSum area_;
};

}  // namespace xmodal
