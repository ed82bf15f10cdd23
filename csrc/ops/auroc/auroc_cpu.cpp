// CPU AUROC on key buckets (common/bucket_sort.h): one histogram pass counts positive
// and negative keys per bucket; a bucket holding only one class needs no order at all (its
// contribution to U follows from counts), so only the keys of mixed buckets are gathered,
// sorted per bucket and merged. For a detector that separates most pixels, that is a small
// fraction of the data.
#include <algorithm>
#include <utility>
#include <vector>

#include "common/bucket_sort.h"
#include "common/check.h"
#include "common/parallel.h"
#include "ops/auroc/auroc.h"

namespace xmodal {
namespace {

struct Piece {
  size_t chunk;
  int64_t begin, end;
};

// Pieces of at most ~1/(4 threads) of the data, never spanning two chunks.
std::vector<Piece> make_pieces(const std::vector<ScoreChunk>& chunks) {
  int64_t total = 0;
  for (const ScoreChunk& c : chunks) {
    XMODAL_CHECK(c.size >= 0, "chunk sizes must be non-negative; got ", c.size);
    total += c.size;
  }
  const int64_t step =
      std::min<int64_t>(int64_t{1} << 31, std::max<int64_t>(1 << 16, total / (4 * int64_t{num_threads()}) + 1));
  std::vector<Piece> pieces;
  for (size_t c = 0; c < chunks.size(); ++c) {
    for (int64_t b = 0; b < chunks[c].size; b += step) pieces.push_back({c, b, std::min(chunks[c].size, b + step)});
  }
  return pieces;
}

template <typename Score>
double auroc_typed(const std::vector<ScoreChunk>& chunks) {
  using Key = typename KeyOf<Score>::type;
  const std::vector<Piece> pieces = make_pieces(chunks);
  const int64_t num_pieces = static_cast<int64_t>(pieces.size());
  std::vector<Histogram> hists(pieces.size());
  std::vector<std::pair<const Score*, int64_t>> spans;
  for (const ScoreChunk& c : chunks) spans.emplace_back(static_cast<const Score*>(c.scores), c.size);
  const BucketMap<Key> map = sample_bucket_map(spans);
  auto scores_of = [&](const Piece& piece) {
    return static_cast<const Score*>(chunks[piece.chunk].scores) + piece.begin;
  };
  auto labels_of = [&](const Piece& piece) { return chunks[piece.chunk].labels + piece.begin; };
  ParallelErrors errors;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t p = 0; p < num_pieces; ++p) {
    errors.run([&] {
      const Piece& piece = pieces[static_cast<size_t>(p)];
      Histogram& hist = hists[static_cast<size_t>(p)];
      hist.assign(static_cast<size_t>(kNumCodes), 0);
      Key not_finite = 0;
      for (int64_t start = 0, n = piece.end - piece.begin; start < n; start += kBlock) {
        histogram_block(scores_of(piece) + start, labels_of(piece) + start, std::min(kBlock, n - start), hist.data(),
                        map, not_finite);
      }
      XMODAL_CHECK(!not_finite, "scores contain NaN or infinite values");
    });
  }
  errors.rethrow();
  std::vector<const Histogram*> parts;
  for (const Histogram& h : hists) parts.push_back(&h);
  const std::vector<int64_t> cum = cumulative_counts(parts);
  const int64_t num_neg = cum[kNumBuckets], num_pos = cum[kNumCodes] - num_neg;
  auto neg_in = [&](int64_t b) { return cum[b + 1] - cum[b]; };
  auto pos_in = [&](int64_t b) { return cum[kNumBuckets + b + 1] - cum[kNumBuckets + b]; };
  XMODAL_CHECK(num_pos > 0 && num_neg > 0, "labels must contain both classes (AUROC is undefined otherwise); got ",
               num_pos, " positive and ", num_neg, " negative");

  // Gather and sort the keys of the mixed buckets (negatives at code b, positives at b + kNumBuckets).
  const BucketLayout layout = make_layout(parts, cum, [&](int64_t c) {
    const int64_t b = c % kNumBuckets;
    return pos_in(b) > 0 && neg_in(b) > 0;
  });
  WorkVector<Key> keys(static_cast<size_t>(layout.size()));
  const CodeSet& wanted = layout.wanted;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t p = 0; p < num_pieces; ++p) {
    errors.run([&] {
      const Piece& piece = pieces[static_cast<size_t>(p)];
      std::vector<int64_t> cursor = layout.cursor[static_cast<size_t>(p)];
      Key block_keys[kBlock + 16];
      uint32_t block_codes[kBlock + 16];
      for (int64_t start = 0, n = piece.end - piece.begin; start < n; start += kBlock) {
        const int64_t kept = select_block(scores_of(piece) + start, labels_of(piece) + start,
                                          std::min(kBlock, n - start), map, wanted, block_keys, block_codes);
        for (int64_t q = 0; q < kept; ++q) keys[cursor[layout.slot_of[block_codes[q]]]++] = block_keys[q];
      }
    });
  }
  errors.rethrow();
  sort_slots(keys.data(), layout, [](Key k) { return k; });

  // Walk the buckets from the highest scores down; `above` counts the negatives passed.
  // 2U = sum over positive tie groups of size * (2 * negatives_below + negatives_tied).
  unsigned __int128 twice_u = 0;
  int64_t above = 0;
  for (int64_t b = 0; b < kNumBuckets; ++b) {
    const int64_t neg = neg_in(b), pos = pos_in(b);
    if (pos > 0 && neg == 0) {
      twice_u += static_cast<unsigned __int128>(pos) * static_cast<unsigned __int128>(2 * (num_neg - above));
    } else if (pos > 0) {
      const Key* n_first = keys.data() + layout.offset(b, cum);
      const Key* p_first = keys.data() + layout.offset(kNumBuckets + b, cum);
      int64_t i = 0, j = 0;
      while (i < pos) {
        const Key v = p_first[i];
        while (j < neg && n_first[j] < v) ++j;
        int64_t tied = 0;
        while (j + tied < neg && n_first[j + tied] == v) ++tied;
        int64_t group = 0;
        while (i < pos && p_first[i] == v) ++i, ++group;
        const int64_t below = num_neg - above - j - tied;
        twice_u += static_cast<unsigned __int128>(group) * static_cast<unsigned __int128>(2 * below + tied);
      }
    }
    above += neg;
  }
  return auroc_from_u2(twice_u, num_pos, num_neg);
}

}  // namespace

double auroc_from_u2(unsigned __int128 twice_u, int64_t positives, int64_t negatives) {
  XMODAL_CHECK(positives > 0 && negatives > 0, "labels must contain both classes (AUROC is undefined otherwise); got ",
               positives, " positive and ", negatives, " negative");
  const long double numerator = static_cast<long double>(twice_u);
  const long double denominator = 2.0L * static_cast<long double>(positives) * static_cast<long double>(negatives);
  return static_cast<double>(numerator / denominator);
}

double auroc_cpu(const std::vector<ScoreChunk>& chunks, ScoreType type) {
  return type == ScoreType::f32 ? auroc_typed<float>(chunks) : auroc_typed<double>(chunks);
}

}  // namespace xmodal
