#include "common/parallel.h"

#include <omp.h>

#include "common/check.h"

namespace xmodal {

int num_threads() { return omp_get_max_threads(); }

void set_num_threads(int threads) {
  XMODAL_CHECK(threads >= 1, "threads must be >= 1; got ", threads);
  omp_set_num_threads(threads);
}

bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace xmodal
