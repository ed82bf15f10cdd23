#include <algorithm>
#include <vector>

#include "common/check.h"
#include "common/parallel.h"
#include "ops/ccl/ccl.h"
#include "ops/ccl/label_image.h"

namespace xmodal {

void connected_components_cpu(const uint8_t* masks, int64_t count, int64_t height, int64_t width, int32_t* labels,
                              int64_t* num) {
  XMODAL_CHECK(count >= 0 && height >= 0 && width >= 0, "masks must have a non-negative shape; got (", count, ", ",
               height, ", ", width, ")");
  const int64_t pixels = height * width;
  XMODAL_CHECK(pixels < (int64_t{1} << 31), "each mask must have fewer than 2^31 pixels; got ", height, " x ", width);
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<int32_t> foreground;
#pragma omp for schedule(dynamic, 1)
    for (int64_t n = 0; n < count; ++n) {
      errors.run([&] {
        const uint8_t* mask = masks + n * pixels;
        int32_t* out = labels + n * pixels;
        foreground.clear();
        for (int64_t i = 0; i < pixels; ++i) {
          if (mask[i]) foreground.push_back(static_cast<int32_t>(i));
        }
        std::fill(out, out + pixels, 0);
        num[n] = label_foreground(mask, height, width, foreground.data(), static_cast<int64_t>(foreground.size()), out);
      });
    }
  }
  errors.rethrow();
}

}  // namespace xmodal
