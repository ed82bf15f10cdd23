// The point-cloud kernels subtract float32 coordinates (common/point_math.h); a difference
// overflows float32 once coordinates reach 2^127 (~1.7e38) in magnitude, and every distance
// from such a point would be infinite. Such clouds are rejected, not answered wrongly.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/check.h"
#include "common/hostdevice.h"

namespace xmodal {

constexpr float kMaxPointCoordinate = 0x1p127f;
constexpr const char* kPointRangeError =
    " has a coordinate of magnitude >= 2^127 (about 1.7e38): differences of such coordinates overflow float32; "
    "scale the cloud down";

XMODAL_HD bool coordinate_in_range(float v) { return fabsf(v) < kMaxPointCoordinate; }

// invalid_argument naming `name` when one of the count x 3 coordinates is out of range.
inline void check_point_range_cpu(const float* xyz, int64_t count, const char* name) {
  bool ok = true;
  for (int64_t i = 0; i < 3 * count; ++i) ok &= coordinate_in_range(xyz[i]);
  XMODAL_CHECK(ok, name, kPointRangeError);
}

// The same for device coordinates (queued on `stream`, which is synchronised to read the result).
void check_point_range_cuda(const float* xyz, int64_t count, const char* name, void* stream);

}  // namespace xmodal
