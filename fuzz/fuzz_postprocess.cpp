// Fuzzes samrt::upsample_logits, upsample_masks and mask_stats (csrc/postprocess.hpp).
//
// These kernels validate their own arguments, so the geometry comes straight from the
// fuzz bytes, small (low-res sides up to 40, outputs up to 64 x 160 so a row spans up to
// three 64-column tiles) with invalid values mixed in, plus sizes of 2^32 pixels or more
// (which must be refused before any buffer is touched). std::invalid_argument is
// expected exactly when the header's preconditions fail. Logits are arbitrary floats
// (NaN, infinities, huge, values at the threshold); the pool size varies so masks get
// split into different numbers of parts. Checks on finite inputs: upsampled logits stay
// within the inputs' range, and every pixel clearly above or below the threshold agrees
// between upsample_logits, upsample_masks and the RLE of mask_stats; always: RLE counts
// are canonical, sum to the image and place the mask inside its crop, and areas, boxes
// and has_rle are consistent with them.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "fuzz_check.hpp"
#include "postprocess.hpp"
#include "thread_pool.hpp"

namespace {

constexpr std::uint64_t kMaxPixels = 0xFFFFFFFFull;  // "fewer than 2^32 pixels"

bool valid_geometry(const samrt::UpsampleGeometry& g) {
  return g.src_h >= 3 && g.src_w >= 3 && g.padded_size >= g.src_h && g.padded_size >= g.src_w &&
         g.input_h >= 1 && g.input_w >= 1 && g.input_h <= g.padded_size && g.input_w <= g.padded_size &&
         g.out_h >= 1 && g.out_w >= 1 &&
         static_cast<std::uint64_t>(g.out_h) * static_cast<std::uint64_t>(g.out_w) <= kMaxPixels;
}

float consume_logit(FuzzedDataProvider& data, float threshold) {
  switch (data.ConsumeIntegralInRange<int>(0, 15)) {
    case 0:
      return std::numeric_limits<float>::quiet_NaN();
    case 1:
      return std::numeric_limits<float>::infinity();
    case 2:
      return -std::numeric_limits<float>::infinity();
    case 3:
      return data.ConsumeFloatingPoint<float>();
    case 4:
      return threshold;
    case 5:
      return std::nextafter(threshold, std::numeric_limits<float>::infinity());
    case 6:
      return std::nextafter(threshold, -std::numeric_limits<float>::infinity());
    default:
      return static_cast<float>(data.ConsumeIntegralInRange<int>(-8, 8)) * 0.25f;
  }
}

float consume_threshold(FuzzedDataProvider& data) {
  switch (data.ConsumeIntegralInRange<int>(0, 7)) {
    case 0:
      return data.ConsumeFloatingPoint<float>();
    case 1:
      return data.ConsumeBool() ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity();
    case 2:
      return std::numeric_limits<float>::quiet_NaN();  // refused
    default:
      return static_cast<float>(data.ConsumeIntegralInRange<int>(-8, 8)) * 0.25f;
  }
}

// A side length: usually in [lo, hi], now and then just outside it.
int consume_side(FuzzedDataProvider& data, int lo, int hi) {
  if (data.ConsumeIntegralInRange<int>(0, 15) == 0) return data.ConsumeIntegralInRange<int>(-1, lo);
  return data.ConsumeIntegralInRange<int>(lo, hi);
}

// Pixels whose logit is further than this from the threshold must classify identically
// everywhere: the kernels only promise agreement up to float rounding.
bool clearly_above(float logit, float threshold, float tolerance) { return logit > threshold + tolerance; }
bool clearly_below(float logit, float threshold, float tolerance) { return logit < threshold - tolerance; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  FuzzedDataProvider data(bytes, size);

  // The pool size decides how many parts each mask is split into. Replacing the pool
  // starts threads, which is slow under ASan: only one input in eight does.
  if (data.ConsumeIntegralInRange<int>(0, 7) == 0) {
    samrt::set_num_threads(data.ConsumeIntegralInRange<std::size_t>(1, 4));
  }

  samrt::UpsampleGeometry g;
  const bool huge = data.ConsumeIntegralInRange<int>(0, 31) == 0;
  g.src_h = consume_side(data, 3, 40);
  g.src_w = consume_side(data, 3, 40);
  g.padded_size = std::max(g.src_h, g.src_w) + data.ConsumeIntegralInRange<int>(-1, 40);
  g.input_h = consume_side(data, 1, std::max(1, g.padded_size + (data.ConsumeIntegralInRange<int>(0, 15) == 0)));
  g.input_w = consume_side(data, 1, std::max(1, g.padded_size + (data.ConsumeIntegralInRange<int>(0, 15) == 0)));
  if (huge) {
    // 2^32 pixels or more: must be refused, so small buffers are enough.
    g.out_h = data.ConsumeIntegralInRange<int>(65536, std::numeric_limits<int>::max());
    g.out_w = static_cast<int>(std::min<std::uint64_t>(std::numeric_limits<int>::max(),
                                                       (std::uint64_t{1} << 32) / static_cast<std::uint64_t>(g.out_h) + 1));
  } else {
    g.out_h = consume_side(data, 1, 64);
    g.out_w = consume_side(data, 1, 160);
  }
  const bool geometry_ok = valid_geometry(g);
  FUZZ_CHECK(!huge || !geometry_ok);

  const std::size_t n_masks = data.ConsumeIntegralInRange<std::size_t>(0, 4);
  const float threshold = consume_threshold(data);
  const std::size_t src_area = geometry_ok ? static_cast<std::size_t>(g.src_h) * static_cast<std::size_t>(g.src_w) : 1;
  const std::size_t out_area = geometry_ok ? static_cast<std::size_t>(g.out_h) * static_cast<std::size_t>(g.out_w) : 1;
  std::vector<float> low_res(n_masks * src_area);
  bool finite = true;
  float magnitude = 0.0f;
  for (float& v : low_res) {
    v = data.remaining_bytes() > 0 ? consume_logit(data, threshold) : 0.0f;
    finite = finite && std::isfinite(v) && std::fabs(v) < 1e30f;
    if (std::isfinite(v)) magnitude = std::max(magnitude, std::fabs(v));
  }
  const float tolerance = 1e-5f * std::max(magnitude, std::isfinite(threshold) ? std::fabs(threshold) : 0.0f) + 1e-30f;

  const int function = data.ConsumeIntegralInRange<int>(0, 2);
  std::vector<float> logits(n_masks * out_area, -1.0f);
  std::vector<std::uint8_t> masks(n_masks * out_area, 0xAB);

  if (function == 0 || function == 1) {
    bool threw = false;
    try {
      samrt::upsample_logits(low_res.data(), n_masks, g, logits.data());
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    FUZZ_CHECK(threw == !geometry_ok);
    if (threw) return 0;
    if (finite && n_masks > 0) {
      for (std::size_t m = 0; m < n_masks; ++m) {
        const auto src = low_res.begin() + static_cast<std::ptrdiff_t>(m * src_area);
        const float lo = *std::min_element(src, src + static_cast<std::ptrdiff_t>(src_area));
        const float hi = *std::max_element(src, src + static_cast<std::ptrdiff_t>(src_area));
        for (std::size_t p = 0; p < out_area; ++p) {
          const float v = logits[m * out_area + p];
          FUZZ_CHECK(v >= lo - 1e-5f * magnitude && v <= hi + 1e-5f * magnitude);
        }
      }
    }
    if (function == 0) return 0;
    threw = false;
    try {
      samrt::upsample_masks(low_res.data(), n_masks, g, threshold, masks.data());
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    FUZZ_CHECK(threw == std::isnan(threshold));
    if (threw) return 0;
    for (std::size_t p = 0; p < masks.size(); ++p) {
      FUZZ_CHECK(masks[p] <= 1);
      if (finite) {
        if (clearly_above(logits[p], threshold, tolerance)) FUZZ_CHECK(masks[p] == 1);
        if (clearly_below(logits[p], threshold, tolerance)) FUZZ_CHECK(masks[p] == 0);
      }
    }
    return 0;
  }

  // mask_stats, with the mask placed in a larger image (crop edges included).
  samrt::MaskStatsOptions options;
  options.threshold = threshold;
  options.intersection_threshold = consume_threshold(data);
  options.union_threshold = consume_threshold(data);
  options.crop_x0 = data.ConsumeIntegralInRange<int>(-1, 3);
  options.crop_y0 = data.ConsumeIntegralInRange<int>(-1, 3);
  if (data.ConsumeIntegralInRange<int>(0, 31) == 0) {
    options.image_h = 65536;  // 2^32 pixels: refused
    options.image_w = 65536;
  } else {
    options.image_h = std::max(0, options.crop_y0) + std::max(0, g.out_h) + data.ConsumeIntegralInRange<int>(-1, 3);
    options.image_w = std::max(0, options.crop_x0) + std::max(0, g.out_w) + data.ConsumeIntegralInRange<int>(-1, 3);
  }
  options.filter_rle = data.ConsumeBool();
  options.rle_min_stability = consume_threshold(data);
  const bool options_ok =
      options.crop_x0 >= 0 && options.crop_y0 >= 0 &&
      static_cast<std::int64_t>(options.crop_x0) + g.out_w <= options.image_w &&
      static_cast<std::int64_t>(options.crop_y0) + g.out_h <= options.image_h &&
      static_cast<std::uint64_t>(options.image_h) * static_cast<std::uint64_t>(options.image_w) <= kMaxPixels &&
      !std::isnan(options.threshold) && !std::isnan(options.intersection_threshold) &&
      !std::isnan(options.union_threshold);

  std::vector<std::int64_t> areas(n_masks, -7), boxes(4 * n_masks, -7);
  std::vector<float> stability(n_masks, -7.0f);
  std::vector<std::vector<std::uint32_t>> counts(n_masks, std::vector<std::uint32_t>{12345});
  std::vector<std::uint8_t> has_rle(n_masks, 0xAB);
  bool threw = false;
  try {
    samrt::mask_stats(low_res.data(), n_masks, g, options, areas.data(), boxes.data(), stability.data(),
                      counts.data(), has_rle.data());
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  FUZZ_CHECK(threw == !(geometry_ok && options_ok));
  if (threw) return 0;

  const bool compare = finite && !std::isnan(threshold);
  if (compare) samrt::upsample_logits(low_res.data(), n_masks, g, logits.data());
  const auto image_h = static_cast<std::uint64_t>(options.image_h);
  const auto image_pixels = image_h * static_cast<std::uint64_t>(options.image_w);
  for (std::size_t m = 0; m < n_masks; ++m) {
    const std::int64_t* box = &boxes[4 * m];
    FUZZ_CHECK(areas[m] >= 0 && static_cast<std::uint64_t>(areas[m]) <= out_area);
    if (areas[m] == 0) {
      FUZZ_CHECK(box[0] == 0 && box[1] == 0 && box[2] == 0 && box[3] == 0);
    } else {
      FUZZ_CHECK(0 <= box[0] && box[0] <= box[2] && box[2] < g.out_w);
      FUZZ_CHECK(0 <= box[1] && box[1] <= box[3] && box[3] < g.out_h);
    }
    const bool keep = !options.filter_rle || stability[m] >= options.rle_min_stability;
    FUZZ_CHECK(has_rle[m] == (keep ? 1 : 0));
    if (!keep) {
      FUZZ_CHECK(counts[m].empty());
      continue;
    }
    // Walk the column-major runs: canonical, summing to the image, foreground only inside
    // the crop and the box, touching every side of the box, as many pixels as the area.
    const std::vector<std::uint32_t>& rle = counts[m];
    FUZZ_CHECK(!rle.empty());
    std::uint64_t position = 0, foreground = 0;
    std::int64_t x_min = std::numeric_limits<std::int64_t>::max(), x_max = -1;
    std::int64_t y_min = std::numeric_limits<std::int64_t>::max(), y_max = -1;
    for (std::size_t r = 0; r < rle.size(); ++r) {
      FUZZ_CHECK(r == 0 || rle[r] > 0);
      if (r % 2 == 1) {
        for (std::uint64_t p = position; p < position + rle[r]; ++p) {
          const auto x = static_cast<std::int64_t>(p / image_h) - options.crop_x0;
          const auto y = static_cast<std::int64_t>(p % image_h) - options.crop_y0;
          FUZZ_CHECK(0 <= x && x < g.out_w && 0 <= y && y < g.out_h);
          x_min = std::min(x_min, x);
          x_max = std::max(x_max, x);
          y_min = std::min(y_min, y);
          y_max = std::max(y_max, y);
          if (compare) {
            const float logit = logits[m * out_area + static_cast<std::size_t>(y) * static_cast<std::size_t>(g.out_w) +
                                       static_cast<std::size_t>(x)];
            FUZZ_CHECK(!clearly_below(logit, threshold, tolerance));
          }
        }
        foreground += rle[r];
      }
      position += rle[r];
      FUZZ_CHECK(position <= image_pixels);
    }
    FUZZ_CHECK(position == image_pixels);
    FUZZ_CHECK(foreground == static_cast<std::uint64_t>(areas[m]));
    if (foreground > 0) FUZZ_CHECK(x_min == box[0] && y_min == box[1] && x_max == box[2] && y_max == box[3]);
    if (compare) {
      // Every clearly-above pixel is in the RLE: count them against the area.
      std::int64_t clearly = 0;
      for (std::size_t p = 0; p < out_area; ++p) clearly += clearly_above(logits[m * out_area + p], threshold, tolerance);
      FUZZ_CHECK(clearly <= areas[m]);
    }
  }
  return 0;
}
