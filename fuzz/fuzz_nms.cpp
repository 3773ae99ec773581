// Fuzzes samrt::batched_nms (csrc/nms.hpp) in float32 and float64.
//
// The bindings refuse NaN in boxes, scores and the threshold; everything else comes from
// the fuzz bytes: infinite and huge coordinates, degenerate and inverted boxes, any
// category ids (negative and extreme included), any scores with many ties, any
// threshold. Small inputs take the coordinate-trick path; a flag stretches the input to
// just over kNmsCoordinateTrickMaxBoxes boxes (filled from a generator seeded by the
// bytes) to take the per-category path. The result must be a non-empty (for n > 0),
// duplicate-free list of valid indices in non-increasing score order, with nothing
// written past its length.
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "fuzz_check.hpp"
#include "nms.hpp"

namespace {

// Deterministic filler for the large inputs (splitmix64).
struct SplitMix {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
};

template <typename T>
T no_nan(T value) {
  return std::isnan(value) ? T(0) : value;
}

// A coordinate: mostly small integers (so boxes overlap and tie), sometimes any value.
template <typename T>
T consume_coordinate(FuzzedDataProvider& data) {
  switch (data.ConsumeIntegralInRange<int>(0, 7)) {
    case 0:
      return no_nan(data.ConsumeFloatingPoint<T>());
    case 1:
      return data.ConsumeBool() ? std::numeric_limits<T>::infinity() : -std::numeric_limits<T>::infinity();
    case 2:
      return data.ConsumeBool() ? std::numeric_limits<T>::max() : std::numeric_limits<T>::lowest();
    default:
      return static_cast<T>(data.ConsumeIntegralInRange<int>(-4, 20));
  }
}

template <typename T>
void run(FuzzedDataProvider& data) {
  // One input in four takes the per-category path; its O(n^2 / categories) greedy pass
  // dominates the run time, so it is kept to a few hundred boxes per category.
  const bool large = data.ConsumeIntegralInRange<int>(0, 3) == 0;
  const std::size_t n = large ? samrt::kNmsCoordinateTrickMaxBoxes + data.ConsumeIntegralInRange<std::size_t>(1, 64)
                              : data.ConsumeIntegralInRange<std::size_t>(0, 48);
  double iou_threshold = 0.0;
  switch (data.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      iou_threshold = no_nan(data.ConsumeFloatingPoint<double>());
      break;
    case 1:
      iou_threshold = data.ConsumeBool() ? std::numeric_limits<double>::infinity()
                                         : -std::numeric_limits<double>::infinity();
      break;
    default:
      iou_threshold = data.ConsumeProbability<double>();
  }

  std::vector<T> boxes(4 * n);
  std::vector<double> scores(n);
  std::vector<std::int64_t> categories(n);
  if (large) {
    SplitMix rng{data.ConsumeIntegral<std::uint64_t>()};
    const std::uint64_t n_categories = data.ConsumeIntegralInRange<std::uint64_t>(4, 16);
    for (std::size_t k = 0; k < n; ++k) {
      const T x = static_cast<T>(rng.next() % 200), y = static_cast<T>(rng.next() % 200);
      boxes[4 * k + 0] = x;
      boxes[4 * k + 1] = y;
      boxes[4 * k + 2] = x + static_cast<T>(rng.next() % 40) - 5;  // some inverted boxes
      boxes[4 * k + 3] = y + static_cast<T>(rng.next() % 40) - 5;
      scores[k] = static_cast<double>(rng.next() % 16);  // many ties
      categories[k] = static_cast<std::int64_t>(rng.next() % n_categories);
    }
  }
  // Fuzz bytes override the leading entries (all of them for small inputs).
  for (std::size_t k = 0; k < n && data.remaining_bytes() > 0; ++k) {
    for (int c = 0; c < 4; ++c) boxes[4 * k + static_cast<std::size_t>(c)] = consume_coordinate<T>(data);
    scores[k] = data.ConsumeBool() ? static_cast<double>(data.ConsumeIntegralInRange<int>(0, 3))
                                   : no_nan(data.ConsumeFloatingPoint<double>());
    categories[k] = data.ConsumeBool() ? data.ConsumeIntegral<std::int64_t>()
                                       : data.ConsumeIntegralInRange<std::int64_t>(-2, 3);
  }

  std::vector<std::int64_t> keep(n, -1);
  const std::size_t kept = samrt::batched_nms(n, boxes.data(), scores.data(), categories.data(), iou_threshold,
                                              keep.data());
  FUZZ_CHECK(kept <= n);
  FUZZ_CHECK(n == 0 || kept >= 1);  // the best box always survives
  std::vector<std::uint8_t> seen(n, 0);
  for (std::size_t r = 0; r < kept; ++r) {
    FUZZ_CHECK(keep[r] >= 0 && static_cast<std::size_t>(keep[r]) < n);
    const auto k = static_cast<std::size_t>(keep[r]);
    FUZZ_CHECK(!seen[k]);
    seen[k] = 1;
    if (r > 0) FUZZ_CHECK(scores[static_cast<std::size_t>(keep[r - 1])] >= scores[k]);
  }
  for (std::size_t r = kept; r < n; ++r) FUZZ_CHECK(keep[r] == -1);  // nothing written past the count
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  FuzzedDataProvider data(bytes, size);
  if (data.ConsumeBool()) {
    run<float>(data);
  } else {
    run<double>(data);
  }
  return 0;
}
