// Fuzzes samrt::rle_decompress (csrc/rle.hpp), the parser of COCO's compressed counts
// strings, which come from untrusted annotation files: the fuzz bytes are the string.
//
// A plain reference parser of the documented format decides what must happen: counts
// identical to the reference, or std::invalid_argument exactly when the reference refuses
// the string (byte outside '0'..'o', truncated group, group over 12 characters, count
// outside [0, 2^32)). Accepted counts must survive rle_compress -> rle_decompress, and
// when they describe a small mask (sum <= 2^16) it is decoded at a size chosen from the
// input and checked against a pixel-by-pixel expansion: the mask, its area, box, RLE
// re-encoding (canonical form) and its IoU with itself. A wrong size must be refused.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <vector>

#include "fuzz_check.hpp"
#include "rle.hpp"

namespace {

// The format, spelled out: 5-bit little-endian digits, '0' + digit (+32 when more
// follow), sign bit 0x10 of the last digit, counts after the third stored as the
// difference from the count two places before.
std::optional<samrt::RleCounts> reference_decompress(const std::uint8_t* s, std::size_t n) {
  samrt::RleCounts counts;
  std::size_t pos = 0;
  while (pos < n) {
    std::int64_t value = 0;
    int shift = 0;
    int digits = 0;
    bool more = true;
    bool negative = false;
    while (more) {
      if (pos == n || s[pos] < '0' || s[pos] > 'o' || digits == 12) return std::nullopt;
      const int digit = s[pos] - '0';
      value += static_cast<std::int64_t>(digit & 0x1f) << shift;
      more = (digit & 0x20) != 0;
      negative = (digit & 0x10) != 0;
      shift += 5;
      ++digits;
      ++pos;
    }
    if (negative) value -= std::int64_t{1} << shift;  // two's complement of a shift-bit number
    if (counts.size() > 2) value += counts[counts.size() - 2];
    if (value < 0 || value > 0xFFFFFFFFll) return std::nullopt;
    counts.push_back(static_cast<std::uint32_t>(value));
  }
  return counts;
}

// Drops zero-length runs (but a leading empty background run) by merging neighbours.
samrt::RleCounts canonical(const samrt::RleCounts& counts) {
  samrt::RleCounts out{0};
  bool value = false;  // value of out.back()
  for (std::size_t i = 0; i < counts.size(); ++i) {
    const bool run_value = (i % 2) == 1;
    if (counts[i] == 0) continue;
    if (run_value == value) {
      out.back() += counts[i];
    } else {
      out.push_back(counts[i]);
      value = run_value;
    }
  }
  return out;
}

void check_small_mask(const samrt::RleCounts& counts, std::uint64_t total, std::size_t salt) {
  // Choose h among the divisors of the total.
  std::vector<std::size_t> divisors;
  for (std::size_t d = 1; d <= total; ++d) {
    if (total % d == 0) divisors.push_back(d);
  }
  const std::size_t h = divisors[salt % divisors.size()];
  const std::size_t w = static_cast<std::size_t>(total) / h;

  // Pixel-by-pixel expansion, column-major.
  std::vector<std::uint8_t> column_major;
  column_major.reserve(total);
  for (std::size_t i = 0; i < counts.size(); ++i) column_major.insert(column_major.end(), counts[i], i % 2);
  std::vector<std::uint8_t> expected(total);
  std::uint64_t area = 0;
  std::size_t x0 = w, y0 = h, x1 = 0, y1 = 0;
  for (std::size_t x = 0; x < w; ++x) {
    for (std::size_t y = 0; y < h; ++y) {
      const std::uint8_t v = column_major[x * h + y];
      expected[y * w + x] = v;
      if (v) {
        ++area;
        x0 = std::min(x0, x);
        y0 = std::min(y0, y);
        x1 = std::max(x1, x);
        y1 = std::max(y1, y);
      }
    }
  }

  std::vector<std::uint8_t> mask(total + 1, 0xAB);  // one guard byte
  samrt::rle_decode(counts.data(), counts.size(), h, w, mask.data());
  FUZZ_CHECK(mask.back() == 0xAB);
  mask.pop_back();
  FUZZ_CHECK(mask == expected);
  FUZZ_CHECK(samrt::rle_area(counts.data(), counts.size()) == area);

  double xywh[4] = {-1, -1, -1, -1};
  samrt::rle_bbox(counts.data(), counts.size(), h, w, xywh);
  if (area == 0) {
    FUZZ_CHECK(xywh[0] == 0 && xywh[1] == 0 && xywh[2] == 0 && xywh[3] == 0);
  } else {
    FUZZ_CHECK(xywh[0] == static_cast<double>(x0) && xywh[1] == static_cast<double>(y0));
    FUZZ_CHECK(xywh[2] == static_cast<double>(x1 - x0 + 1) && xywh[3] == static_cast<double>(y1 - y0 + 1));
  }

  const samrt::RleCounts want = canonical(counts);
  FUZZ_CHECK(samrt::rle_encode(mask.data(), h, w) == want);
  FUZZ_CHECK(samrt::rle_encode_column_major(column_major.data(), h, w) == want);

  const double iou = samrt::rle_iou(counts.data(), counts.size(), want.data(), want.size(), false);
  FUZZ_CHECK(iou == (area > 0 ? 1.0 : 0.0));

  // One pixel more or fewer is the wrong size.
  bool threw = false;
  try {
    samrt::rle_check_counts(counts.data(), counts.size(), h, w + 1);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  FUZZ_CHECK(threw);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  const std::optional<samrt::RleCounts> expected = reference_decompress(bytes, size);
  samrt::RleCounts counts;
  bool threw = false;
  try {
    counts = samrt::rle_decompress(reinterpret_cast<const char*>(bytes), size);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  FUZZ_CHECK(threw == !expected.has_value());
  if (threw) return 0;
  FUZZ_CHECK(counts == *expected);

  // Compressing re-creates a string that parses to the same counts.
  const std::string again = samrt::rle_compress(counts.data(), counts.size());
  FUZZ_CHECK(samrt::rle_decompress(again.data(), again.size()) == counts);
  FUZZ_CHECK(again.size() <= size);  // the encoder never uses more digits than needed

  std::uint64_t total = 0;
  for (const std::uint32_t c : counts) total += c;
  if (total > 0 && total <= (1u << 16)) check_small_mask(counts, total, size);
  return 0;
}
