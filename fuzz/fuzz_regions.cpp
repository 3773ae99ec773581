// Fuzzes samrt::remove_small_regions and remove_small_regions_batch (csrc/regions.hpp).
//
// The bindings guarantee 0 < height * width and area_thresh >= 0 (not NaN); within that,
// everything comes from the fuzz bytes: sizes up to 64 x 64 (so rows cover the 8-byte
// word scan with and without a tail), arbitrary nonzero byte values as "inside",
// thresholds from 0 to +inf. Each result is checked against a plain flood-fill
// reference of the documented semantics, including the islands tie rule.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "fuzz_check.hpp"
#include "regions.hpp"

namespace {

constexpr std::uint8_t kSentinel = 0xAB;  // marks output bytes the kernel must not write

struct Component {
  std::vector<std::size_t> pixels;
  std::size_t first_block;  // OpenCV's labeling order: first 2x2 block in block-raster order
};

// 8-connected components of the pixels whose "inside" flag equals of_nonzero.
std::vector<Component> reference_components(const std::uint8_t* mask, std::size_t h, std::size_t w,
                                            bool of_nonzero) {
  std::vector<Component> components;
  std::vector<std::uint8_t> seen(h * w, 0);
  std::vector<std::size_t> stack;
  const std::size_t blocks_per_row = (w + 1) / 2;
  for (std::size_t start = 0; start < h * w; ++start) {
    if (seen[start] || (mask[start] != 0) != of_nonzero) continue;
    Component c{{}, std::numeric_limits<std::size_t>::max()};
    seen[start] = 1;
    stack.push_back(start);
    while (!stack.empty()) {
      const std::size_t p = stack.back();
      stack.pop_back();
      c.pixels.push_back(p);
      const std::size_t y = p / w, x = p % w;
      c.first_block = std::min(c.first_block, (y / 2) * blocks_per_row + x / 2);
      for (int dy = -1; dy <= 1; ++dy) {
        for (int dx = -1; dx <= 1; ++dx) {
          const long ny = static_cast<long>(y) + dy, nx = static_cast<long>(x) + dx;
          if (ny < 0 || nx < 0 || ny >= static_cast<long>(h) || nx >= static_cast<long>(w)) continue;
          const std::size_t q = static_cast<std::size_t>(ny) * w + static_cast<std::size_t>(nx);
          if (seen[q] || (mask[q] != 0) != of_nonzero) continue;
          seen[q] = 1;
          stack.push_back(q);
        }
      }
    }
    components.push_back(std::move(c));
  }
  return components;
}

// Expected (changed, cleaned 0/1 mask) for one mask.
bool reference_clean(const std::uint8_t* mask, std::size_t h, std::size_t w, double area_thresh,
                     samrt::RegionMode mode, std::vector<std::uint8_t>& cleaned) {
  const bool holes = mode == samrt::RegionMode::kHoles;
  const std::vector<Component> components = reference_components(mask, h, w, !holes);
  cleaned.assign(h * w, 0);
  for (std::size_t p = 0; p < h * w; ++p) cleaned[p] = mask[p] != 0;
  std::vector<bool> small(components.size());
  bool any_small = false, any_large = false;
  for (std::size_t k = 0; k < components.size(); ++k) {
    small[k] = static_cast<double>(components[k].pixels.size()) < area_thresh;
    any_small = any_small || small[k];
    any_large = any_large || !small[k];
  }
  if (!any_small) return false;
  if (!holes && !any_large) {
    // Keep the largest island; among equals, the one OpenCV labels first.
    std::size_t best = 0;
    for (std::size_t k = 1; k < components.size(); ++k) {
      const auto& c = components[k];
      const auto& b = components[best];
      if (c.pixels.size() > b.pixels.size() ||
          (c.pixels.size() == b.pixels.size() && c.first_block < b.first_block)) {
        best = k;
      }
    }
    small[best] = false;
  }
  for (std::size_t k = 0; k < components.size(); ++k) {
    if (!small[k]) continue;
    for (const std::size_t p : components[k].pixels) cleaned[p] = holes ? 1 : 0;
  }
  return true;
}

double consume_area_thresh(FuzzedDataProvider& data, std::size_t pixels) {
  switch (data.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      return static_cast<double>(data.ConsumeIntegralInRange<std::size_t>(0, pixels + 1));
    case 1:
      return std::numeric_limits<double>::infinity();
    case 2:
      // Fractions around the integer sizes.
      return data.ConsumeFloatingPointInRange<double>(0.0, static_cast<double>(pixels) + 2.0);
    default: {
      // Any non-negative double, denormals and the largest values included.
      const double value = std::fabs(data.ConsumeFloatingPoint<double>());
      return std::isnan(value) ? 0.0 : value;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  FuzzedDataProvider data(bytes, size);
  const auto mode = data.ConsumeBool() ? samrt::RegionMode::kHoles : samrt::RegionMode::kIslands;
  const bool batch = data.ConsumeBool();
  const bool binary = data.ConsumeBool();  // pixels 0/1 rather than arbitrary bytes
  const std::size_t n = batch ? data.ConsumeIntegralInRange<std::size_t>(1, 4) : 1;
  const std::size_t h = data.ConsumeIntegralInRange<std::size_t>(1, 64);
  const std::size_t w = data.ConsumeIntegralInRange<std::size_t>(1, 64);
  const double area_thresh = consume_area_thresh(data, h * w);

  std::vector<std::uint8_t> masks = data.ConsumeRemainingBytes<std::uint8_t>();
  masks.resize(n * h * w, 0);
  if (binary) {
    for (auto& v : masks) v &= 1;
  }

  std::vector<std::uint8_t> expected;
  if (!batch) {
    std::vector<std::uint8_t> out(h * w, kSentinel);
    const bool changed = samrt::remove_small_regions(masks.data(), h, w, area_thresh, mode, out.data());
    const bool expected_changed = reference_clean(masks.data(), h, w, area_thresh, mode, expected);
    FUZZ_CHECK(changed == expected_changed);
    if (changed) {
      FUZZ_CHECK(out == expected);
    } else {
      FUZZ_CHECK(std::all_of(out.begin(), out.end(), [](std::uint8_t v) { return v == kSentinel; }));
    }
    return 0;
  }

  std::vector<std::uint8_t> out(n * h * w, kSentinel);
  std::vector<std::uint8_t> changed(n, kSentinel);
  samrt::remove_small_regions_batch(masks.data(), n, h, w, area_thresh, mode, out.data(), changed.data());
  for (std::size_t i = 0; i < n; ++i) {
    const bool expected_changed = reference_clean(masks.data() + i * h * w, h, w, area_thresh, mode, expected);
    FUZZ_CHECK(changed[i] == (expected_changed ? 1 : 0));
    FUZZ_CHECK(std::equal(expected.begin(), expected.end(), out.begin() + static_cast<std::ptrdiff_t>(i * h * w)));
  }
  return 0;
}
