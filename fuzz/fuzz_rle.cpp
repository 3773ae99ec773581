// Fuzzes the RLE kernels on masks (csrc/rle.hpp): encode (row- and column-major),
// compress, decompress, decode, area, bbox, intersection/IoU and their batch versions.
//
// Masks come from the fuzz bytes: up to 4 of them, h and w in 0..64 (empty sizes
// included), any byte values as foreground. Counts are also fed in non-canonical form
// (zero-length runs spliced in), which every function but the encoders must accept.
// Everything is compared with plain pixel loops; sizes that do not match the counts must
// raise std::invalid_argument, with the "[i]: " prefix in batch calls.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "rle.hpp"

namespace {

using samrt::RleCounts;

// Column-major counts by walking the pixels.
RleCounts reference_encode(const std::uint8_t* mask, std::size_t h, std::size_t w) {
  RleCounts counts{0};
  bool value = false;
  for (std::size_t x = 0; x < w; ++x) {
    for (std::size_t y = 0; y < h; ++y) {
      const bool v = mask[y * w + x] != 0;
      if (v != value) {
        counts.push_back(0);
        value = v;
      }
      ++counts.back();
    }
  }
  return counts;
}

// The same mask with zero-length runs spliced in where the fuzz bytes say.
RleCounts with_zero_runs(const RleCounts& counts, FuzzedDataProvider& data) {
  RleCounts out;
  for (const std::uint32_t c : counts) {
    if (c > 0 && data.ConsumeIntegralInRange<int>(0, 7) == 0) {
      const auto head = data.ConsumeIntegralInRange<std::uint32_t>(0, c);
      out.insert(out.end(), {head, 0u, c - head});  // the run, split by an empty one
    } else {
      out.push_back(c);
    }
  }
  if (data.ConsumeBool()) out.insert(out.end(), {0u, 0u});  // trailing empty pair
  return out;
}

template <class Fn>
bool throws_invalid(Fn&& fn, const char* prefix = nullptr) {
  try {
    fn();
  } catch (const std::invalid_argument& e) {
    if (prefix != nullptr) FUZZ_CHECK(std::string(e.what()).rfind(prefix, 0) == 0);
    return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  FuzzedDataProvider data(bytes, size);
  const std::size_t n = data.ConsumeIntegralInRange<std::size_t>(1, 4);
  const std::size_t h = data.ConsumeIntegralInRange<std::size_t>(0, 64);
  const std::size_t w = data.ConsumeIntegralInRange<std::size_t>(0, 64);
  const std::size_t pixels = h * w;
  const bool binary = data.ConsumeBool();
  const bool crowd_flags = data.ConsumeBool();
  std::vector<std::uint8_t> masks = data.ConsumeBytes<std::uint8_t>(n * pixels);
  masks.resize(n * pixels, 0);
  if (binary) {
    for (auto& v : masks) v &= 1;
  }

  std::vector<RleCounts> rles(n), loose(n);
  std::vector<std::string> strings(n);
  std::vector<samrt::RleSize> sizes(n, samrt::RleSize{h, w});
  std::vector<std::uint8_t> column_major(pixels), decoded(pixels + 1);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t* mask = masks.data() + i * pixels;
    const RleCounts expected = reference_encode(mask, h, w);
    rles[i] = samrt::rle_encode(mask, h, w);
    FUZZ_CHECK(rles[i] == expected);
    for (std::size_t x = 0; x < w; ++x) {
      for (std::size_t y = 0; y < h; ++y) column_major[x * h + y] = mask[y * w + x];
    }
    FUZZ_CHECK(samrt::rle_encode_column_major(column_major.data(), h, w) == expected);

    strings[i] = samrt::rle_compress(rles[i].data(), rles[i].size());
    FUZZ_CHECK(samrt::rle_decompress(strings[i].data(), strings[i].size()) == rles[i]);

    // Decoding, area and box, from canonical and from non-canonical counts.
    loose[i] = with_zero_runs(rles[i], data);
    std::uint64_t area = 0;
    std::size_t x0 = w, y0 = h, x1 = 0, y1 = 0;
    for (std::size_t y = 0; y < h; ++y) {
      for (std::size_t x = 0; x < w; ++x) {
        if (mask[y * w + x] == 0) continue;
        ++area;
        x0 = std::min(x0, x);
        y0 = std::min(y0, y);
        x1 = std::max(x1, x);
        y1 = std::max(y1, y);
      }
    }
    for (const RleCounts* counts : {&rles[i], &loose[i]}) {
      std::fill(decoded.begin(), decoded.end(), 0xAB);
      samrt::rle_decode(counts->data(), counts->size(), h, w, decoded.data());
      FUZZ_CHECK(decoded[pixels] == 0xAB);  // guard byte
      for (std::size_t p = 0; p < pixels; ++p) FUZZ_CHECK(decoded[p] == (mask[p] != 0 ? 1 : 0));
      FUZZ_CHECK(samrt::rle_area(counts->data(), counts->size()) == area);
      double xywh[4];
      samrt::rle_bbox(counts->data(), counts->size(), h, w, xywh);
      if (area == 0) {
        FUZZ_CHECK(xywh[0] == 0 && xywh[1] == 0 && xywh[2] == 0 && xywh[3] == 0);
      } else {
        FUZZ_CHECK(xywh[0] == static_cast<double>(x0) && xywh[1] == static_cast<double>(y0) &&
                   xywh[2] == static_cast<double>(x1 - x0 + 1) && xywh[3] == static_cast<double>(y1 - y0 + 1));
      }
      // The wrong size is refused (unless both sizes are empty).
      if (pixels > 0) {
        FUZZ_CHECK(throws_invalid([&] { samrt::rle_decode(counts->data(), counts->size(), h + 1, w, decoded.data()); }));
        FUZZ_CHECK(throws_invalid([&] { samrt::rle_bbox(counts->data(), counts->size(), h, w + 1, xywh); }));
      }
    }
  }

  // Intersection and IoU of every pair, against the pixels.
  std::vector<std::uint8_t> iscrowd(n);
  for (auto& c : iscrowd) c = crowd_flags && data.ConsumeBool();
  std::vector<double> matrix(n * n, -1.0);
  samrt::rle_iou_matrix(loose.data(), n, rles.data(), n, h, w, iscrowd.data(), matrix.data());
  for (std::size_t a = 0; a < n; ++a) {
    for (std::size_t b = 0; b < n; ++b) {
      std::uint64_t both = 0, area_a = 0, area_b = 0;
      for (std::size_t p = 0; p < pixels; ++p) {
        const bool in_a = masks[a * pixels + p] != 0, in_b = masks[b * pixels + p] != 0;
        both += in_a && in_b;
        area_a += in_a;
        area_b += in_b;
      }
      FUZZ_CHECK(samrt::rle_intersection(rles[a].data(), rles[a].size(), loose[b].data(), loose[b].size()) == both);
      const bool crowd = iscrowd[b] != 0;
      const double expected =
          both == 0 ? 0.0
                    : static_cast<double>(both) / static_cast<double>(crowd ? area_a : area_a + area_b - both);
      FUZZ_CHECK(samrt::rle_iou(loose[a].data(), loose[a].size(), rles[b].data(), rles[b].size(), crowd) == expected);
      FUZZ_CHECK(matrix[a * n + b] == expected);
    }
  }

  // Batch versions agree with the single ones.
  const bool column_order = data.ConsumeBool();
  std::vector<std::uint8_t> batch_input = masks;
  if (column_order) {
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t x = 0; x < w; ++x) {
        for (std::size_t y = 0; y < h; ++y) batch_input[i * pixels + x * h + y] = masks[i * pixels + y * w + x];
      }
    }
  }
  std::vector<std::string> batch_strings(n);
  samrt::rle_encode_compressed_batch(batch_input.data(), n, h, w, column_order, batch_strings.data());
  FUZZ_CHECK(batch_strings == strings);

  // Decompress: strings, or (null view) counts already in place.
  std::vector<std::string_view> views(n);
  std::vector<RleCounts> batch_rles(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (data.ConsumeBool()) {
      views[i] = strings[i];
    } else {
      batch_rles[i] = loose[i];
    }
  }
  samrt::rle_decompress_batch(views.data(), sizes.data(), n, batch_rles.data());
  for (std::size_t i = 0; i < n; ++i) FUZZ_CHECK(batch_rles[i] == (views[i].data() ? rles[i] : loose[i]));

  std::vector<std::string> recompressed(n);
  samrt::rle_compress_batch(rles.data(), n, recompressed.data());
  FUZZ_CHECK(recompressed == strings);

  std::vector<std::uint8_t> batch_masks(n * pixels + 1, 0xAB);
  samrt::rle_decode_batch(loose.data(), n, h, w, batch_masks.data());
  FUZZ_CHECK(batch_masks[n * pixels] == 0xAB);
  for (std::size_t p = 0; p < n * pixels; ++p) FUZZ_CHECK(batch_masks[p] == (masks[p] != 0 ? 1 : 0));

  std::vector<std::uint64_t> areas(n);
  samrt::rle_area_batch(loose.data(), n, areas.data());
  std::vector<double> boxes(4 * n);
  samrt::rle_bbox_batch(loose.data(), sizes.data(), n, boxes.data());
  for (std::size_t i = 0; i < n; ++i) {
    FUZZ_CHECK(areas[i] == samrt::rle_area(rles[i].data(), rles[i].size()));
    double xywh[4];
    samrt::rle_bbox(rles[i].data(), rles[i].size(), h, w, xywh);
    FUZZ_CHECK(std::equal(xywh, xywh + 4, boxes.begin() + static_cast<std::ptrdiff_t>(4 * i)));
  }

  // One wrong size in a batch is reported with its index.
  const std::size_t bad = data.ConsumeIntegralInRange<std::size_t>(0, n - 1);
  sizes[bad] = samrt::RleSize{h, w + 1};
  if (pixels + h > 0) {
    const std::string prefix = "[" + std::to_string(bad) + "]: ";
    FUZZ_CHECK(throws_invalid([&] { samrt::rle_check_counts_batch(rles.data(), sizes.data(), n); }, prefix.c_str()));
    FUZZ_CHECK(throws_invalid([&] { samrt::rle_bbox_batch(rles.data(), sizes.data(), n, boxes.data()); }, prefix.c_str()));
    std::vector<std::string_view> all_strings(strings.begin(), strings.end());
    std::vector<RleCounts> scratch(n);
    FUZZ_CHECK(throws_invalid(
        [&] { samrt::rle_decompress_batch(all_strings.data(), sizes.data(), n, scratch.data()); }, prefix.c_str()));
  }
  return 0;
}
