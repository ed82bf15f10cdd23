// Area under the ROC curve of binary labels against scores, identical to
// sklearn.metrics.roc_auc_score: ties between a positive and a negative count 1/2, i.e.
// AUROC = U / (P * N) with U the Mann-Whitney statistic.
//
//   chunks  the data is the concatenation of the chunks (a test set's maps need not be
//           copied into one array); each chunk has `size` scores and `size` labels
//   scores  float32 or float64, finite (NaN/inf: invalid_argument)
//   labels  uint8; nonzero = positive
// Returns the AUROC in float64. invalid_argument when there is no positive or no negative
// (sklearn raises too: the curve is undefined).
//
// U is accumulated exactly in 128-bit integers (2U = sum over tie groups of
// p_g * (2 * negatives_below + n_g)), so the only rounding is the final division.
// The CPU path histograms both classes per key bucket: buckets holding one class only add
// to U from their counts; only the keys of buckets holding both are gathered and sorted
// (common/bucket_sort.h). Memory (float32): at most 8 bytes per element, less the better the
// classes separate.
#pragma once

#include <cstdint>
#include <vector>

#include "common/sort_keys.h"

namespace xmodal {

struct ScoreChunk {
  const void* scores;
  const uint8_t* labels;
  int64_t size;
};

double auroc_cpu(const std::vector<ScoreChunk>& chunks, ScoreType type);

// CUDA: chunk pointers are device pointers; work is queued on `stream` and synchronised.
double auroc_cuda(const std::vector<ScoreChunk>& chunks, ScoreType type, void* stream);

// The final step shared by both paths: 2U / (2 P N) with the checks on P and N.
double auroc_from_u2(unsigned __int128 twice_u, int64_t positives, int64_t negatives);

}  // namespace xmodal
