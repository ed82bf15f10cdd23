// The neighbourhood of every point (ops/fpfh/fpfh.h) as a table, built on the host by the
// KD-tree search and shared by the CPU kernels and the CUDA path (which uploads it).
#pragma once

#include <cstdint>
#include <vector>

#include "ops/fpfh/fpfh.h"

namespace xmodal {

struct NeighbourTable {
  int64_t width = 0;           // min(max_nn, N)
  std::vector<int32_t> rows;   // (N, width): rows of the cloud, nearest first; entries past count unused
  std::vector<int32_t> count;  // (N,): neighbours kept (within the radius), the point itself included

  const int32_t* row(int64_t i) const { return rows.data() + i * width; }
};

// Throws std::invalid_argument for N >= 2^31, max_nn < 1 or a radius that is not > 0.
void check_fpfh_arguments(int64_t num_points, Neighbourhood neighbourhood, const char* op);

// The tables of one or more neighbourhoods of the same points, from one search (the candidates
// near each part of the cloud are gathered once for all of them).
std::vector<NeighbourTable> find_neighbourhoods(const float* points, int64_t num_points,
                                                const std::vector<Neighbourhood>& neighbourhoods);

}  // namespace xmodal
