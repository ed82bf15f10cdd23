// CPU PRO curve / AUPRO.
//
// Pass A (parallel over parts = runs of images): histogram of the OK keys per bucket, OK
// counts, and for images with anomalous pixels the union-find labels and the region pixels
// as (key, region). Region pixels are few: they are merged and radix sorted.
// Pass B gathers only the OK keys of the buckets the walk needs (common/bucket_sort.h):
//  * exact AUPRO: between two region-pixel keys the PRO curve is flat, and a flat run
//    integrates to the same area whatever its inner points are, so only the OK keys that
//    share a bucket with a region pixel (and lie above the cut the largest limit needs) are
//    sorted; every other bucket contributes its count;
//  * sampled curve: only the buckets holding the T threshold ranks;
//  * full exact curve (pro_curve) and bootstrap: every bucket.
// The walks then produce curve points for a sink (curve.h).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include "common/bucket_sort.h"
#include "common/check.h"
#include "common/parallel.h"
#include "common/radix_sort.h"
#include "common/sort_keys.h"
#include "ops/ccl/label_image.h"
#include "ops/pro/curve.h"
#include "ops/pro/pro.h"

namespace xmodal {
namespace {

constexpr int64_t kMaxPartPixels = int64_t{1} << 31;  // keeps the uint32 histograms exact

template <typename Score>
struct Image {
  const Score* scores;
  const uint8_t* mask;
  int64_t height, width;
  int64_t pixels() const { return height * width; }
};

template <typename Key>
struct RegionPixel {
  Key key;
  uint32_t region;
};

template <typename Key>
struct ImagePixel {
  Key key;
  uint32_t image;
};

template <typename Key>
Key item_key(Key k) {
  return k;
}
template <typename Key>
Key item_key(const ImagePixel<Key>& p) {
  return p.key;
}
template <typename Key>
void make_item(Key k, uint32_t, Key& out) {
  out = k;
}
template <typename Key>
void make_item(Key k, uint32_t image, ImagePixel<Key>& out) {
  out = {k, image};
}

template <typename Score>
std::vector<Image<Score>> list_images(const std::vector<MapBatch>& batches) {
  std::vector<Image<Score>> images;
  for (const MapBatch& b : batches) {
    XMODAL_CHECK(b.count >= 0 && b.height >= 1 && b.width >= 1, "every map must have a non-empty (H, W) shape; got (",
                 b.count, ", ", b.height, ", ", b.width, ")");
    const int64_t pixels = b.height * b.width;
    XMODAL_CHECK(pixels < kMaxPartPixels, "each map must have fewer than 2^31 pixels; got ", b.height, " x ", b.width);
    const Score* scores = static_cast<const Score*>(b.scores);
    for (int64_t n = 0; n < b.count; ++n)
      images.push_back({scores + n * pixels, b.masks + n * pixels, b.height, b.width});
  }
  XMODAL_CHECK(!images.empty(), "maps must hold at least one image");
  XMODAL_CHECK(images.size() < (size_t{1} << 32), "too many images: ", images.size());
  return images;
}

// Contiguous image ranges of similar pixel counts, several per thread so that a core slowed
// down by other work does not hold the rest back.
template <typename Score>
std::vector<int64_t> make_parts(const std::vector<Image<Score>>& images) {
  int64_t total = 0;
  for (const auto& im : images) total += im.pixels();
  const int64_t wanted = std::min<int64_t>(static_cast<int64_t>(images.size()), 4 * int64_t{num_threads()});
  const int64_t target = std::max<int64_t>(1, (total + wanted - 1) / wanted);
  std::vector<int64_t> bounds{0};
  int64_t filled = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    const int64_t next = images[i].pixels();
    if (filled > 0 && (filled + next > kMaxPartPixels || filled >= target)) {
      bounds.push_back(static_cast<int64_t>(i));
      filled = 0;
    }
    filled += next;
  }
  bounds.push_back(static_cast<int64_t>(images.size()));
  return bounds;
}

template <typename Key>
struct Part {
  Histogram hist;  // OK keys per bucket, then region keys per bucket
  int64_t ok = 0;
  std::vector<RegionPixel<Key>> regions;  // region ids local to the part
  std::vector<int64_t> sizes;             // pixels per local region
  std::vector<uint32_t> owner;            // image per local region
};

// Pass A over one image: the histogram, the raster indices of the anomalous pixels, their
// labels and (key, region) pairs.
template <typename Score, typename Key>
void survey_image(const Image<Score>& im, uint32_t image, const BucketMap<Key>& map, Part<Key>& part,
                  std::vector<int32_t>& work, std::vector<int32_t>& foreground, int64_t& image_ok) {
  const int64_t n = im.pixels();
  if (static_cast<int64_t>(work.size()) < n) {
    work.resize(static_cast<size_t>(n));
    foreground.resize(static_cast<size_t>(n));
  }
  uint32_t* hist = part.hist.data();
  int32_t* fg = foreground.data();
  int64_t anomalous = 0;
  Key not_finite = 0;
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t count = std::min(kBlock, n - start);
    const uint8_t* m = im.mask + start;
    if (histogram_block(im.scores + start, m, count, hist, map, not_finite) == 0) continue;
    for (int64_t i = 0; i < count; ++i) {
      fg[anomalous] = static_cast<int32_t>(start + i);
      anomalous += m[i] != 0;
    }
  }
  XMODAL_CHECK(!not_finite, "maps contain NaN or infinite values");
  image_ok = n - anomalous;
  part.ok += image_ok;
  if (anomalous == 0) return;
  const int32_t labels = label_foreground(im.mask, im.height, im.width, fg, anomalous, work.data());
  const size_t base = part.sizes.size();
  part.sizes.resize(base + static_cast<size_t>(labels), 0);
  part.owner.resize(base + static_cast<size_t>(labels), image);
  part.regions.reserve(part.regions.size() + static_cast<size_t>(anomalous));
  for (int64_t f = 0; f < anomalous; ++f) {
    const int32_t i = fg[f];
    const size_t id = base + static_cast<size_t>(work[i] - 1);
    ++part.sizes[id];
    part.regions.push_back({descending_key(im.scores[i]), static_cast<uint32_t>(id)});
  }
}

// Everything pass A learns, with the region pixels merged (global ids) and sorted by key.
template <typename Score>
struct Survey {
  using Key = typename KeyOf<Score>::type;
  std::vector<Image<Score>> images;
  std::vector<int64_t> bounds;  // part p = images [bounds[p], bounds[p + 1])
  BucketMap<Key> map;           // key -> bucket, fitted to a sample of the scores
  std::vector<Part<Key>> parts;
  std::vector<const Histogram*> hists;
  std::vector<int64_t> cum;       // OK keys in buckets < b
  std::vector<int64_t> image_ok;  // OK pixels per image
  int64_t n_ok = 0;
  std::vector<RegionPixel<Key>> regions;
  std::vector<double> weight;  // 1 / |region|
  std::vector<uint32_t> region_image;
  int64_t num_parts() const { return static_cast<int64_t>(parts.size()); }
};

template <typename Score>
Survey<Score> survey(const std::vector<MapBatch>& batches) {
  using Key = typename KeyOf<Score>::type;
  Survey<Score> sv;
  sv.images = list_images<Score>(batches);
  sv.bounds = make_parts(sv.images);
  const int64_t parts = static_cast<int64_t>(sv.bounds.size()) - 1;
  sv.parts.resize(static_cast<size_t>(parts));
  sv.image_ok.assign(sv.images.size(), 0);
  std::vector<std::pair<const Score*, int64_t>> spans;
  for (const auto& im : sv.images) spans.emplace_back(im.scores, im.pixels());
  sv.map = sample_bucket_map(spans);
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<int32_t> work, foreground;
#pragma omp for schedule(dynamic, 1)
    for (int64_t p = 0; p < parts; ++p) {
      errors.run([&] {
        Part<Key>& part = sv.parts[static_cast<size_t>(p)];
        part.hist.assign(static_cast<size_t>(kNumCodes), 0);
        for (int64_t i = sv.bounds[p]; i < sv.bounds[p + 1]; ++i) {
          survey_image(sv.images[i], static_cast<uint32_t>(i), sv.map, part, work, foreground, sv.image_ok[i]);
        }
      });
    }
  }
  errors.rethrow();
  std::vector<int64_t> region_offset{0};
  std::vector<uint32_t> id_base{0};
  for (const Part<Key>& part : sv.parts) {
    sv.n_ok += part.ok;
    sv.hists.push_back(&part.hist);
    XMODAL_CHECK(sv.weight.size() + part.sizes.size() < (size_t{1} << 32), "too many ground-truth regions");
    for (int64_t s : part.sizes) sv.weight.push_back(1.0 / static_cast<double>(s));
    sv.region_image.insert(sv.region_image.end(), part.owner.begin(), part.owner.end());
    region_offset.push_back(region_offset.back() + static_cast<int64_t>(part.regions.size()));
    id_base.push_back(static_cast<uint32_t>(sv.weight.size()));
  }
  XMODAL_CHECK(sv.n_ok > 0,
               "masks mark every pixel as anomalous: the false-positive rate needs at least one "
               "normal (mask == 0) pixel");
  XMODAL_CHECK(!sv.weight.empty(),
               "masks contain no anomalous pixel: the PRO curve needs at least one "
               "ground-truth region (a nonzero mask pixel)");
  sv.cum = cumulative_counts(sv.hists);
  WorkVector<RegionPixel<Key>> merged(static_cast<size_t>(region_offset.back()));
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < parts; ++p) {
    const auto& local = sv.parts[static_cast<size_t>(p)].regions;
    for (size_t i = 0; i < local.size(); ++i) {
      merged[region_offset[p] + i] = {local[i].key, local[i].region + id_base[p]};
    }
  }
  for (Part<Key>& part : sv.parts) std::vector<RegionPixel<Key>>().swap(part.regions);
  WorkVector<RegionPixel<Key>> scratch(merged.size());
  const RegionPixel<Key>* sorted =
      radix_sort(merged.data(), scratch.data(), static_cast<int64_t>(merged.size()), 0, static_cast<int>(sizeof(Key)),
                 [](const RegionPixel<Key>& r) { return r.key; });
  sv.regions.assign(sorted, sorted + merged.size());
  return sv;
}

// Pass B: the OK items of the kept buckets, each bucket sorted.
template <typename OkItem, typename Score>
WorkVector<OkItem> gather_ok(const Survey<Score>& sv, const BucketLayout& layout) {
  using Key = typename KeyOf<Score>::type;
  WorkVector<OkItem> items(static_cast<size_t>(layout.size()));
  const int32_t* slot_of = layout.slot_of.data();
  const CodeSet& wanted = layout.wanted;
  ParallelErrors errors;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t p = 0; p < sv.num_parts(); ++p) {
    errors.run([&] {
      std::vector<int64_t> cursor = layout.cursor[static_cast<size_t>(p)];
      Key keys[kBlock + 16];
      uint32_t codes[kBlock + 16];
      for (int64_t i = sv.bounds[p]; i < sv.bounds[p + 1]; ++i) {
        const Image<Score>& im = sv.images[i];
        const uint32_t image = static_cast<uint32_t>(i);
        for (int64_t start = 0, n = im.pixels(); start < n; start += kBlock) {
          const int64_t kept = select_block(im.scores + start, im.mask + start, std::min(kBlock, n - start), sv.map,
                                            wanted, keys, codes);
          for (int64_t q = 0; q < kept; ++q) make_item(keys[q], image, items[cursor[slot_of[codes[q]]]++]);
        }
      }
    });
  }
  errors.rethrow();
  sort_slots(items.data(), layout, [](const OkItem& item) { return item_key(item); });
  return items;
}

// Number of top OK keys (largest scores) the walk needs before every limit is passed.
int64_t needed_ok_exact(double max_limit, int64_t n_ok) {
  if (max_limit >= 1.0) return n_ok;
  int64_t k = std::min<int64_t>(n_ok, static_cast<int64_t>(max_limit * static_cast<double>(n_ok)));
  while (k < n_ok && exact_fpr(k, n_ok) <= max_limit) ++k;
  return k;
}

// The bucket holding the OK key at `from_top` (0 = the highest score): cum[b] <= from_top < cum[b + 1].
inline int64_t bucket_of_rank(const std::vector<int64_t>& cum, int64_t from_top) {
  return static_cast<int64_t>(std::upper_bound(cum.begin(), cum.end(), from_top) - cum.begin()) - 1;
}

// Calls visit(t, rank) for the sampled thresholds in FPR order (t = T - 1 down to 0) until
// visit returns true or every threshold is visited.
template <typename Visit>
void for_each_threshold(int64_t num_thresholds, int64_t n_ok, Visit visit) {
  for (int64_t t = num_thresholds - 1; t >= 0; --t) {
    if (visit(t, threshold_rank(t, num_thresholds, n_ok))) return;
  }
}

// The exact curve for AUPRO from counts: one point where each region-pixel key group ends,
// and one where each flat run of OK keys before it ends (the inner points of a flat run do
// not change the integral). OK counts come from the bucket prefix sums plus a search in the
// sorted bucket of the region key; buckets above `max_bucket` were not gathered, and the
// walk stops before it needs them.
template <typename Score, typename Key, typename Sink>
void walk_exact_counts(const Survey<Score>& sv, const BucketLayout& layout, const WorkVector<Key>& ok,
                       int64_t max_bucket, Sink& sink) {
  const double num_regions = static_cast<double>(sv.weight.size());
  const int64_t n_ok = sv.n_ok, kept_end = sv.cum[max_bucket + 1];
  if (sink.add(0.0, 0.0)) return;
  int64_t passed = 0;  // OK keys at or above the last point
  double overlap = 0.0, y = 0.0;
  const auto& regions = sv.regions;
  for (size_t j = 0; j < regions.size();) {
    const Key v = regions[j].key;
    const int64_t b = sv.map(v);
    if (b > max_bucket) {
      if (kept_end > passed && sink.add(exact_fpr(kept_end, n_ok), y)) return;
      throw std::logic_error("PRO: the gathered OK scores ended before the integration limit");
    }
    int64_t below = sv.cum[b], equal = 0;
    if (layout.slot_of[b] >= 0) {  // else the bucket holds no OK key
      const Key* first = ok.data() + layout.offset(b, sv.cum);
      const Key* last = first + (sv.cum[b + 1] - sv.cum[b]);
      const Key* lo = std::lower_bound(first, last, v);
      const Key* hi = std::upper_bound(lo, last, v);
      below += lo - first;
      equal = hi - lo;
    }
    if (below > passed && sink.add(exact_fpr(below, n_ok), y)) return;
    passed = below + equal;
    for (; j < regions.size() && regions[j].key == v; ++j) overlap += sv.weight[regions[j].region];
    y = std::min(overlap / num_regions, 1.0);
    if (sink.add(exact_fpr(passed, n_ok), y)) return;
  }
  if (kept_end > passed && sink.add(exact_fpr(kept_end, n_ok), y)) return;
  if (kept_end != n_ok) throw std::logic_error("PRO: the gathered OK scores ended before the integration limit");
  sink.add(1.0, 1.0);
  sink.end();
}

// The exact curve point by point (MVTec AD) over every OK item, sorted ascending.
// ok_weight / region_weight give each item's false-positive count / PRO increment (image
// multiplicities in the bootstrap; a key whose items all weigh 0 makes no point).
template <typename Key, typename OkItem, typename OkWeight, typename RegionWeight, typename Sink>
void walk_exact_items(const WorkVector<OkItem>& ok, const std::vector<RegionPixel<Key>>& regions, OkWeight ok_weight,
                      RegionWeight region_weight, int64_t n_ok, double num_regions, Sink& sink) {
  if (sink.add(0.0, 0.0)) return;
  const size_t num_ok_items = ok.size(), num_region_items = regions.size();
  size_t i = 0, j = 0;
  int64_t false_positives = 0;
  double overlap = 0.0;  // a plain running sum, like the original's cumsum
  while (i < num_ok_items || j < num_region_items) {
    const bool from_ok = i < num_ok_items && (j >= num_region_items || item_key(ok[i]) <= regions[j].key);
    const Key v = from_ok ? item_key(ok[i]) : regions[j].key;
    bool changed = false;
    for (; i < num_ok_items && item_key(ok[i]) == v; ++i) {
      const int64_t w = ok_weight(ok[i]);
      false_positives += w;
      changed |= w != 0;
    }
    for (; j < num_region_items && regions[j].key == v; ++j) {
      const double w = region_weight(regions[j].region);
      overlap += w;
      changed |= w != 0.0;
    }
    if (changed && sink.add(exact_fpr(false_positives, n_ok), std::min(overlap / num_regions, 1.0))) return;
  }
  sink.add(1.0, 1.0);
  sink.end();
}

// The sampled curve (MVTec 3D-AD): thresholds at OK ranks linspace(0, n_ok - 1, T) from the
// highest score down (FPR ascending), then the synthetic (1, 1). threshold_key(from_top)
// gives the OK key at a rank counted from the top; region pixels with a smaller key (a
// strictly greater score) count as detected.
template <typename Key, typename ThresholdKey, typename RegionWeight, typename Sink>
void walk_sampled(const std::vector<RegionPixel<Key>>& regions, ThresholdKey threshold_key, RegionWeight region_weight,
                  int64_t n_ok, double num_regions, int64_t num_thresholds, Sink& sink) {
  size_t j = 0;
  CompensatedSum overlap;
  bool stopped = false;
  for_each_threshold(num_thresholds, n_ok, [&](int64_t, int64_t rank) {
    const Key threshold = threshold_key(n_ok - 1 - rank);
    for (; j < regions.size() && regions[j].key < threshold; ++j) overlap.add(region_weight(regions[j].region));
    stopped = sink.add(sampled_fpr(rank, n_ok), overlap.value() / num_regions);
    return stopped;
  });
  if (stopped) return;
  sink.add(1.0, 1.0);
  sink.end();
}

void check_arguments(int64_t num_thresholds, int64_t num_limits) {
  XMODAL_CHECK(num_thresholds == 0 || num_thresholds >= 2,
               "num_thresholds must be None (exact curve) or an int >= 2; got ", num_thresholds);
  XMODAL_CHECK(num_limits >= 1, "limits must hold at least one value");
}

// Sampled curve with unit multiplicities: gathers only the buckets of the threshold ranks
// the sink can use (up to the first FPR above max_limit).
template <typename Score, typename Sink>
void sampled_curve(const Survey<Score>& sv, int64_t num_thresholds, double max_limit, Sink& sink) {
  using Key = typename KeyOf<Score>::type;
  std::vector<char> needed(static_cast<size_t>(kNumBuckets), 0);
  for_each_threshold(num_thresholds, sv.n_ok, [&](int64_t, int64_t rank) {
    needed[bucket_of_rank(sv.cum, sv.n_ok - 1 - rank)] = 1;
    return sampled_fpr(rank, sv.n_ok) > max_limit;
  });
  const BucketLayout layout = make_layout(sv.hists, sv.cum, [&](int64_t b) { return b < kNumBuckets && needed[b]; });
  const WorkVector<Key> ok = gather_ok<Key>(sv, layout);
  auto threshold_key = [&](int64_t from_top) {
    const int64_t b = bucket_of_rank(sv.cum, from_top);
    if (layout.slot_of[b] < 0) throw std::logic_error("PRO: a threshold rank falls outside the gathered buckets");
    return ok[layout.offset(b, sv.cum) + (from_top - sv.cum[b])];
  };
  const double* weight = sv.weight.data();
  walk_sampled(
      sv.regions, threshold_key, [weight](uint32_t r) { return weight[r]; }, sv.n_ok,
      static_cast<double>(sv.weight.size()), num_thresholds, sink);
}

template <typename Score>
void pro_curve_typed(const std::vector<MapBatch>& batches, int64_t num_thresholds, std::vector<double>& fpr,
                     std::vector<double>& pro) {
  using Key = typename KeyOf<Score>::type;
  const Survey<Score> sv = survey<Score>(batches);
  fpr.clear();
  pro.clear();
  CurvePoints sink{&fpr, &pro};
  if (num_thresholds > 0) {
    sampled_curve(sv, num_thresholds, 1.0, sink);
    return;
  }
  const BucketLayout layout = make_layout(sv.hists, sv.cum, [](int64_t b) { return b < kNumBuckets; });
  const WorkVector<Key> ok = gather_ok<Key>(sv, layout);
  // At most one point per item plus the two ends; capacity that is never written is never
  // resident, so this costs no memory, only the reallocations it avoids.
  fpr.reserve(ok.size() + sv.regions.size() + 2);
  pro.reserve(ok.size() + sv.regions.size() + 2);
  const double* weight = sv.weight.data();
  walk_exact_items(
      ok, sv.regions, [](Key) { return int64_t{1}; }, [weight](uint32_t r) { return weight[r]; }, sv.n_ok,
      static_cast<double>(sv.weight.size()), sink);
}

template <typename Score>
void aupro_typed(const std::vector<MapBatch>& batches, int64_t num_thresholds, const double* limits, int64_t num_limits,
                 double* out) {
  using Key = typename KeyOf<Score>::type;
  AuproIntegrator sink(limits, num_limits);
  const Survey<Score> sv = survey<Score>(batches);
  if (num_thresholds > 0) {
    sampled_curve(sv, num_thresholds, sink.max_limit(), sink);
  } else {
    // Buckets up to the one holding the needed-th OK key from the top, and of those only
    // the ones a region key falls into.
    const int64_t need = needed_ok_exact(sink.max_limit(), sv.n_ok);
    const int64_t max_bucket = need >= sv.n_ok ? kNumBuckets - 1 : bucket_of_rank(sv.cum, need - 1);
    std::vector<char> has_region(static_cast<size_t>(kNumBuckets), 0);
    for (const auto& r : sv.regions) has_region[sv.map(r.key)] = 1;
    const BucketLayout layout =
        make_layout(sv.hists, sv.cum, [&](int64_t b) { return b <= max_bucket && has_region[b]; });
    const WorkVector<Key> ok = gather_ok<Key>(sv, layout);
    walk_exact_counts(sv, layout, ok, max_bucket, sink);
  }
  sink.finish(out);
}

template <typename Score>
void aupro_bootstrap_typed(const std::vector<MapBatch>& batches, int64_t num_thresholds, const double* limits,
                           int64_t num_limits, const int32_t* multiplicity, int64_t num_resamples, double* out) {
  using Key = typename KeyOf<Score>::type;
  using Item = ImagePixel<Key>;
  const AuproIntegrator validate(limits, num_limits);  // checks the limits before the work
  (void)validate;
  const Survey<Score> sv = survey<Score>(batches);
  const int64_t num_images = static_cast<int64_t>(sv.images.size());
  for (int64_t i = 0; i < num_resamples * num_images; ++i) {
    XMODAL_CHECK(multiplicity[i] >= 0, "multiplicity must be non-negative; got ", multiplicity[i]);
  }
  const BucketLayout layout = make_layout(sv.hists, sv.cum, [](int64_t b) { return b < kNumBuckets; });
  const WorkVector<Item> ok = gather_ok<Item>(sv, layout);
  std::vector<int64_t> image_regions(static_cast<size_t>(num_images), 0);
  for (uint32_t image : sv.region_image) ++image_regions[image];
  const double* weight = sv.weight.data();
  const uint32_t* owner = sv.region_image.data();
  ParallelErrors errors;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t b = 0; b < num_resamples; ++b) {
    errors.run([&] {
      const int32_t* m = multiplicity + b * num_images;
      double* row = out + b * num_limits;
      int64_t n_ok = 0, num_regions = 0;
      for (int64_t i = 0; i < num_images; ++i) {
        n_ok += m[i] * sv.image_ok[i];
        num_regions += m[i] * image_regions[i];
      }
      if (n_ok == 0 || num_regions == 0) {
        std::fill(row, row + num_limits, std::numeric_limits<double>::quiet_NaN());
        return;
      }
      AuproIntegrator sink(limits, num_limits);
      auto ok_weight = [m](const Item& p) { return int64_t{m[p.image]}; };
      auto region_weight = [m, weight, owner](uint32_t r) { return m[owner[r]] * weight[r]; };
      if (num_thresholds == 0) {
        walk_exact_items(ok, sv.regions, ok_weight, region_weight, n_ok, static_cast<double>(num_regions), sink);
      } else {
        // The OK item at a weighted rank: walk forward (ranks only grow).
        size_t next = 0;
        int64_t passed = 0;
        Key key = 0;
        auto threshold_key = [&](int64_t from_top) {
          while (passed <= from_top) {
            if (next >= ok.size()) throw std::logic_error("PRO: threshold rank beyond the OK scores");
            passed += ok_weight(ok[next]);
            key = ok[next++].key;
          }
          return key;
        };
        walk_sampled(sv.regions, threshold_key, region_weight, n_ok, static_cast<double>(num_regions), num_thresholds,
                     sink);
      }
      sink.finish(row);
    });
  }
  errors.rethrow();
}

}  // namespace

void pro_curve_cpu(const std::vector<MapBatch>& batches, ScoreType type, int64_t num_thresholds,
                   std::vector<double>& fpr, std::vector<double>& pro) {
  check_arguments(num_thresholds, 1);
  if (type == ScoreType::f32) {
    pro_curve_typed<float>(batches, num_thresholds, fpr, pro);
  } else {
    pro_curve_typed<double>(batches, num_thresholds, fpr, pro);
  }
}

void aupro_cpu(const std::vector<MapBatch>& batches, ScoreType type, int64_t num_thresholds, const double* limits,
               int64_t num_limits, double* out) {
  check_arguments(num_thresholds, num_limits);
  if (type == ScoreType::f32) {
    aupro_typed<float>(batches, num_thresholds, limits, num_limits, out);
  } else {
    aupro_typed<double>(batches, num_thresholds, limits, num_limits, out);
  }
}

void aupro_bootstrap_cpu(const std::vector<MapBatch>& batches, ScoreType type, int64_t num_thresholds,
                         const double* limits, int64_t num_limits, const int32_t* multiplicity, int64_t num_resamples,
                         double* out) {
  check_arguments(num_thresholds, num_limits);
  XMODAL_CHECK(num_resamples >= 0, "num_resamples must be >= 0; got ", num_resamples);
  if (type == ScoreType::f32) {
    aupro_bootstrap_typed<float>(batches, num_thresholds, limits, num_limits, multiplicity, num_resamples, out);
  } else {
    aupro_bootstrap_typed<double>(batches, num_thresholds, limits, num_limits, multiplicity, num_resamples, out);
  }
}

}  // namespace xmodal
