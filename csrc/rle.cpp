#include "rle.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "thread_pool.hpp"

namespace samrt {
namespace {

// pycocotools reads at most 12 characters per count without undefined behaviour;
// 12 x 5 bits also keeps our sign extension inside 64 bits.
constexpr unsigned kMaxGroupChars = 12;

std::uint64_t load_word(const std::uint8_t* bytes) {
  std::uint64_t word;
  std::memcpy(&word, bytes, sizeof word);
  return word;
}

// Nonzero where some byte of the word is zero (exact as a whole-word test).
std::uint64_t zero_byte_bits(std::uint64_t word) {
  constexpr std::uint64_t kLow = 0x0101010101010101ull;
  constexpr std::uint64_t kHigh = 0x8080808080808080ull;
  return (word - kLow) & ~word & kHigh;
}

bool differ(std::uint8_t a, std::uint8_t b) { return (a != 0) != (b != 0); }

// Calls on_change(x), in increasing x, for each x in [0, w) where above[x] and
// below[x] differ as booleans. Equal bytes are equal booleans, so identical stretches
// are skipped 32 bytes at a time: blob masks change from one row to the next at few
// columns.
template <class OnChange>
void for_each_change(const std::uint8_t* above, const std::uint8_t* below, std::size_t w,
                     OnChange&& on_change) {
  std::size_t x = 0;
  for (; x + 32 <= w; x += 32) {
    const std::uint64_t any = (load_word(above + x) ^ load_word(below + x)) |
                              (load_word(above + x + 8) ^ load_word(below + x + 8)) |
                              (load_word(above + x + 16) ^ load_word(below + x + 16)) |
                              (load_word(above + x + 24) ^ load_word(below + x + 24));
    if (any == 0) continue;
    for (std::size_t k = x; k < x + 32; k += 8) {
      if (load_word(above + k) == load_word(below + k)) continue;
      for (std::size_t j = k; j < k + 8; ++j) {
        if (differ(above[j], below[j])) on_change(j);
      }
    }
  }
  for (; x < w; ++x) {
    if (differ(above[x], below[x])) on_change(x);
  }
}

// First index in [pos, end) whose boolean value is not `value`, else end. Runs of blob
// masks span many words: whole blocks of 32 bytes are skipped first.
std::uint64_t skip_run(const std::uint8_t* mask, std::uint64_t pos, std::uint64_t end, bool value) {
  for (; pos + 32 <= end; pos += 32) {
    const std::uint64_t a = load_word(mask + pos), b = load_word(mask + pos + 8),
                        c = load_word(mask + pos + 16), d = load_word(mask + pos + 24);
    const bool uniform = value ? (zero_byte_bits(a) | zero_byte_bits(b) | zero_byte_bits(c) | zero_byte_bits(d)) == 0
                               : (a | b | c | d) == 0;
    if (!uniform) break;
  }
  for (; pos + 8 <= end; pos += 8) {
    const std::uint64_t word = load_word(mask + pos);
    const bool uniform = value ? zero_byte_bits(word) == 0 : word == 0;
    if (!uniform) break;
  }
  while (pos < end && (mask[pos] != 0) == value) ++pos;
  return pos;
}

struct Cell {
  std::uint32_t x;
  std::uint32_t y;
};

// Inclusive pixel box of the foreground.
struct Box {
  bool empty = true;
  std::uint64_t x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

Box foreground_box(const std::uint32_t* counts, std::size_t n_counts, std::size_t h) {
  Box box;
  std::uint64_t pos = 0;
  for (std::size_t i = 0; i < n_counts; ++i) {
    const std::uint64_t len = counts[i];
    if ((i & 1) != 0 && len != 0) {
      const std::uint64_t first = pos, last = pos + len - 1;
      const std::uint64_t x_first = first / h, x_last = last / h;
      // A run that crosses into the next column covers that column's top pixel and the
      // previous column's bottom one.
      const std::uint64_t y_low = x_first == x_last ? first % h : 0;
      const std::uint64_t y_high = x_first == x_last ? last % h : h - 1;
      if (box.empty) {
        box = Box{false, x_first, y_low, x_last, y_high};
      } else {
        box.x0 = std::min(box.x0, x_first);
        box.x1 = std::max(box.x1, x_last);
        box.y0 = std::min(box.y0, y_low);
        box.y1 = std::max(box.y1, y_high);
      }
    }
    pos += len;
  }
  return box;
}

bool boxes_overlap(const Box& a, const Box& b) {
  return !a.empty && !b.empty && a.x0 <= b.x1 && b.x0 <= a.x1 && a.y0 <= b.y1 && b.y0 <= a.y1;
}

// Foreground runs [begin, end) in column-major pixel order, skipping empty ones.
class ForegroundRuns {
 public:
  ForegroundRuns(const std::uint32_t* counts, std::size_t n_counts)
      : counts_(counts), n_counts_(n_counts) {}

  bool next(std::uint64_t& begin, std::uint64_t& end) {
    while (index_ + 1 < n_counts_) {
      pos_ += counts_[index_];
      const std::uint64_t len = counts_[index_ + 1];
      index_ += 2;
      begin = pos_;
      pos_ += len;
      end = pos_;
      if (len != 0) return true;
    }
    return false;
  }

 private:
  const std::uint32_t* counts_;
  std::size_t n_counts_;
  std::size_t index_ = 0;
  std::uint64_t pos_ = 0;
};

// IoU from the overlap of a and b and their areas; over a's area alone for a crowd b.
double overlap_ratio(std::uint64_t overlap, std::uint64_t area_a, std::uint64_t area_b, bool crowd) {
  if (overlap == 0) return 0.0;
  const std::uint64_t denominator = crowd ? area_a : area_a + area_b - overlap;
  return static_cast<double>(overlap) / static_cast<double>(denominator);
}

// Runs fn(i) for i in [0, n) on the pool; an invalid_argument gets "[i]: " in front so
// the caller can tell which item was bad.
template <class Fn>
void for_each_item(std::size_t n, Fn&& fn) {
  parallel_for(n, [&](std::size_t i) {
    try {
      fn(i);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument("[" + std::to_string(i) + "]: " + e.what());
    }
  });
}

}  // namespace

void rle_check_size(std::size_t h, std::size_t w) {
  if (w != 0 && h > kRleMaxPixels / w) {
    throw std::invalid_argument("size " + std::to_string(h) + "x" + std::to_string(w) +
                                " has more than 2^32-1 pixels, which RLE counts cannot hold");
  }
}

void rle_check_counts(const std::uint32_t* counts, std::size_t n_counts, std::size_t h, std::size_t w) {
  rle_check_size(h, w);
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < n_counts; ++i) sum += counts[i];
  const std::uint64_t expected = static_cast<std::uint64_t>(h) * w;
  if (sum != expected) {
    throw std::invalid_argument("counts sum to " + std::to_string(sum) + ", expected H*W = " +
                                std::to_string(h) + "*" + std::to_string(w) + " = " +
                                std::to_string(expected));
  }
}

RleCounts rle_encode(const std::uint8_t* mask, std::size_t h, std::size_t w) {
  rle_check_size(h, w);
  const std::uint64_t total = static_cast<std::uint64_t>(h) * w;
  if (total == 0) return {0};

  // Changes down a column (y >= 1) are found row by row, where the mask is contiguous,
  // then bucketed by column; the bucketing is stable, so rows stay increasing.
  std::vector<std::uint32_t> column_start(w + 1, 0);
  std::vector<Cell> changes;
  for (std::size_t y = 1; y < h; ++y) {
    for_each_change(mask + (y - 1) * w, mask + y * w, w, [&](std::size_t x) {
      changes.push_back({static_cast<std::uint32_t>(x), static_cast<std::uint32_t>(y)});
      ++column_start[x + 1];
    });
  }
  for (std::size_t x = 0; x < w; ++x) column_start[x + 1] += column_start[x];
  std::vector<std::uint32_t> change_rows(changes.size());
  {
    std::vector<std::uint32_t> next(column_start.begin(), column_start.end() - 1);
    for (const Cell& c : changes) change_rows[next[c.x]++] = c.y;
  }

  RleCounts counts;
  counts.reserve(changes.size() + w + 2);
  std::uint64_t run_start = 0;
  auto end_run_at = [&](std::uint64_t pos) {
    counts.push_back(static_cast<std::uint32_t>(pos - run_start));
    run_start = pos;
  };
  const std::uint8_t* bottom_row = mask + (h - 1) * w;
  for (std::size_t x = 0; x < w; ++x) {
    const std::uint64_t column = static_cast<std::uint64_t>(x) * h;
    // The pixel before a column's top is the previous column's bottom (background
    // before the first column).
    const bool before_top = x > 0 && bottom_row[x - 1] != 0;
    if ((mask[x] != 0) != before_top) end_run_at(column);
    for (std::uint32_t k = column_start[x]; k < column_start[x + 1]; ++k) {
      end_run_at(column + change_rows[k]);
    }
  }
  end_run_at(total);
  return counts;
}

RleCounts rle_encode_column_major(const std::uint8_t* mask, std::size_t h, std::size_t w) {
  rle_check_size(h, w);
  const std::uint64_t total = static_cast<std::uint64_t>(h) * w;
  if (total == 0) return {0};
  RleCounts counts;
  std::uint64_t pos = 0;
  bool value = false;
  for (;;) {
    const std::uint64_t end = skip_run(mask, pos, total, value);
    counts.push_back(static_cast<std::uint32_t>(end - pos));
    if (end == total) break;
    pos = end;
    value = !value;
  }
  return counts;
}

std::string rle_compress(const std::uint32_t* counts, std::size_t n_counts) {
  std::string out;
  out.reserve(2 * n_counts);
  for (std::size_t i = 0; i < n_counts; ++i) {
    std::int64_t value = counts[i];
    // COCO's format stores the difference from the count two places before, but only
    // from the fourth count on.
    if (i > 2) value -= counts[i - 2];
    bool more = true;
    while (more) {
      const std::int64_t digit = value & 0x1f;
      value = (value - digit) / 32;  // exact, so this is the floor (arithmetic shift)
      more = (digit & 0x10) != 0 ? value != -1 : value != 0;
      out.push_back(static_cast<char>(48 + digit + (more ? 0x20 : 0)));
    }
  }
  return out;
}

RleCounts rle_decompress(const char* chars, std::size_t n_chars) {
  RleCounts counts;
  counts.reserve(n_chars);  // at least one character per count
  std::size_t pos = 0;
  while (pos < n_chars) {
    const std::size_t group_start = pos;
    std::uint64_t bits = 0;
    unsigned n_digits = 0;
    unsigned digit = 0;
    bool more = true;
    while (more) {
      if (pos == n_chars) {
        throw std::invalid_argument("counts string is truncated: the group starting at character " +
                                    std::to_string(group_start) + " ends with a continuation flag");
      }
      const auto ch = static_cast<unsigned char>(chars[pos]);
      if (ch < 48 || ch > 111) {
        throw std::invalid_argument("counts string has byte " + std::to_string(ch) + " at position " +
                                    std::to_string(pos) + ", outside '0'..'o' (48..111)");
      }
      if (n_digits == kMaxGroupChars) {
        throw std::invalid_argument("counts string overflows: the group starting at character " +
                                    std::to_string(group_start) + " is longer than " +
                                    std::to_string(kMaxGroupChars) + " characters");
      }
      digit = ch - 48u;
      bits |= static_cast<std::uint64_t>(digit & 0x1f) << (5 * n_digits);
      more = (digit & 0x20) != 0;
      ++pos;
      ++n_digits;
    }
    std::int64_t value;
    if ((digit & 0x10) != 0) {
      bits |= ~std::uint64_t{0} << (5 * n_digits);  // sign-extend; 5 * n_digits <= 60
      value = -static_cast<std::int64_t>(~bits) - 1;
    } else {
      value = static_cast<std::int64_t>(bits);
    }
    if (counts.size() > 2) value += counts[counts.size() - 2];
    if (value < 0 || static_cast<std::uint64_t>(value) > kRleMaxPixels) {
      throw std::invalid_argument("counts string decodes count " + std::to_string(counts.size()) +
                                  " (at character " + std::to_string(group_start) + ") to " +
                                  std::to_string(value) + ", outside [0, 2^32)");
    }
    counts.push_back(static_cast<std::uint32_t>(value));
  }
  return counts;
}


void rle_decode(const std::uint32_t* counts, std::size_t n_counts, std::size_t h, std::size_t w,
                std::uint8_t* mask) {
  rle_check_counts(counts, n_counts, h, w);
  if (h == 0 || w == 0) return;

  // Row 0 comes from the runs covering each column's top pixel; each later row is the
  // row above with the pixels flipped where the mask changes down a column. Both write
  // the mask in row order, and blob masks change at few pixels.
  std::memset(mask, 0, w);
  std::vector<std::uint32_t> row_start(h + 1, 0);
  std::vector<Cell> flips;
  std::uint64_t pos = 0;
  bool previous = false;
  for (std::size_t i = 0; i < n_counts; ++i) {
    const std::uint64_t len = counts[i];
    if (len == 0) continue;
    const bool value = (i & 1) != 0;
    if (value) {
      for (std::uint64_t x = (pos + h - 1) / h; x * h < pos + len; ++x) mask[x] = 1;
    }
    if (value != previous && pos % h != 0) {
      const auto y = static_cast<std::uint32_t>(pos % h);
      flips.push_back({static_cast<std::uint32_t>(pos / h), y});
      ++row_start[y + 1];
    }
    previous = value;
    pos += len;
  }
  for (std::size_t y = 0; y < h; ++y) row_start[y + 1] += row_start[y];
  std::vector<std::uint32_t> flip_columns(flips.size());
  {
    std::vector<std::uint32_t> next(row_start.begin(), row_start.end() - 1);
    for (const Cell& c : flips) flip_columns[next[c.y]++] = c.x;
  }
  for (std::size_t y = 1; y < h; ++y) {
    std::uint8_t* row = mask + y * w;
    std::memcpy(row, row - w, w);
    for (std::uint32_t k = row_start[y]; k < row_start[y + 1]; ++k) row[flip_columns[k]] ^= 1;
  }
}

std::uint64_t rle_area(const std::uint32_t* counts, std::size_t n_counts) {
  std::uint64_t area = 0;
  for (std::size_t i = 1; i < n_counts; i += 2) area += counts[i];
  return area;
}

void rle_bbox(const std::uint32_t* counts, std::size_t n_counts, std::size_t h, std::size_t w,
              double* xywh) {
  rle_check_counts(counts, n_counts, h, w);
  const Box box = foreground_box(counts, n_counts, h);
  if (box.empty) {
    std::fill(xywh, xywh + 4, 0.0);
    return;
  }
  xywh[0] = static_cast<double>(box.x0);
  xywh[1] = static_cast<double>(box.y0);
  xywh[2] = static_cast<double>(box.x1 - box.x0 + 1);
  xywh[3] = static_cast<double>(box.y1 - box.y0 + 1);
}

std::uint64_t rle_intersection(const std::uint32_t* a, std::size_t n_a, const std::uint32_t* b,
                               std::size_t n_b) {
  ForegroundRuns runs_a(a, n_a), runs_b(b, n_b);
  std::uint64_t a_begin = 0, a_end = 0, b_begin = 0, b_end = 0;
  bool has_a = runs_a.next(a_begin, a_end);
  bool has_b = runs_b.next(b_begin, b_end);
  std::uint64_t overlap = 0;
  while (has_a && has_b) {
    const std::uint64_t begin = std::max(a_begin, b_begin), end = std::min(a_end, b_end);
    if (end > begin) overlap += end - begin;
    if (a_end < b_end) {
      has_a = runs_a.next(a_begin, a_end);
    } else {
      has_b = runs_b.next(b_begin, b_end);
    }
  }
  return overlap;
}

double rle_iou(const std::uint32_t* a, std::size_t n_a, const std::uint32_t* b, std::size_t n_b, bool crowd) {
  std::uint64_t sum_a = 0, sum_b = 0;
  for (std::size_t i = 0; i < n_a; ++i) sum_a += a[i];
  for (std::size_t i = 0; i < n_b; ++i) sum_b += b[i];
  if (sum_a != sum_b) {
    throw std::invalid_argument("RLEs cover " + std::to_string(sum_a) + " and " + std::to_string(sum_b) +
                                " pixels: IoU needs masks of one size");
  }
  const std::uint64_t overlap = rle_intersection(a, n_a, b, n_b);
  return overlap_ratio(overlap, overlap == 0 ? 0 : rle_area(a, n_a), overlap == 0 ? 0 : rle_area(b, n_b), crowd);
}

void rle_encode_compressed_batch(const std::uint8_t* masks, std::size_t n, std::size_t h,
                                 std::size_t w, bool column_major, std::string* out) {
  rle_check_size(h, w);
  const std::size_t pixels = h * w;
  for_each_item(n, [&](std::size_t i) {
    const std::uint8_t* mask = masks + i * pixels;
    const RleCounts counts = column_major ? rle_encode_column_major(mask, h, w) : rle_encode(mask, h, w);
    out[i] = rle_compress(counts.data(), counts.size());
  });
}

void rle_decompress_batch(const std::string_view* strings, const RleSize* sizes, std::size_t n,
                          RleCounts* out) {
  for_each_item(n, [&](std::size_t i) {
    if (strings[i].data() != nullptr) out[i] = rle_decompress(strings[i].data(), strings[i].size());
    rle_check_counts(out[i].data(), out[i].size(), sizes[i].h, sizes[i].w);
  });
}

void rle_check_counts_batch(const RleCounts* rles, const RleSize* sizes, std::size_t n) {
  for_each_item(n, [&](std::size_t i) {
    rle_check_counts(rles[i].data(), rles[i].size(), sizes[i].h, sizes[i].w);
  });
}

void rle_compress_batch(const RleCounts* rles, std::size_t n, std::string* out) {
  for_each_item(n, [&](std::size_t i) { out[i] = rle_compress(rles[i].data(), rles[i].size()); });
}

void rle_decode_batch(const RleCounts* rles, std::size_t n, std::size_t h, std::size_t w,
                      std::uint8_t* masks) {
  rle_check_size(h, w);
  const std::size_t pixels = h * w;
  for_each_item(n, [&](std::size_t i) {
    rle_decode(rles[i].data(), rles[i].size(), h, w, masks + i * pixels);
  });
}

void rle_area_batch(const RleCounts* rles, std::size_t n, std::uint64_t* areas) {
  for_each_item(n, [&](std::size_t i) { areas[i] = rle_area(rles[i].data(), rles[i].size()); });
}

void rle_bbox_batch(const RleCounts* rles, const RleSize* sizes, std::size_t n, double* xywh) {
  for_each_item(n, [&](std::size_t i) {
    rle_bbox(rles[i].data(), rles[i].size(), sizes[i].h, sizes[i].w, xywh + 4 * i);
  });
}

void rle_iou_matrix(const RleCounts* dt, std::size_t n_dt, const RleCounts* gt, std::size_t n_gt,
                    std::size_t h, std::size_t w, const std::uint8_t* iscrowd, double* iou) {
  const std::vector<RleSize> dt_sizes(n_dt, RleSize{h, w}), gt_sizes(n_gt, RleSize{h, w});
  try {
    rle_check_counts_batch(dt, dt_sizes.data(), n_dt);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("dt") + e.what());
  }
  try {
    rle_check_counts_batch(gt, gt_sizes.data(), n_gt);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("gt") + e.what());
  }
  if (n_dt == 0 || n_gt == 0) return;

  std::vector<std::uint64_t> dt_area(n_dt), gt_area(n_gt);
  std::vector<Box> dt_box(n_dt), gt_box(n_gt);
  parallel_for(n_dt + n_gt, [&](std::size_t i) {
    if (i < n_dt) {
      dt_area[i] = rle_area(dt[i].data(), dt[i].size());
      dt_box[i] = foreground_box(dt[i].data(), dt[i].size(), h);
    } else {
      const std::size_t g = i - n_dt;
      gt_area[g] = rle_area(gt[g].data(), gt[g].size());
      gt_box[g] = foreground_box(gt[g].data(), gt[g].size(), h);
    }
  });

  // Pairs in chunks: one pair can be as cheap as a box test.
  constexpr std::size_t kChunk = 64;
  const std::size_t n_pairs = n_dt * n_gt;
  parallel_for((n_pairs + kChunk - 1) / kChunk, [&](std::size_t chunk) {
    const std::size_t end = std::min(n_pairs, (chunk + 1) * kChunk);
    for (std::size_t pair = chunk * kChunk; pair < end; ++pair) {
      const std::size_t d = pair / n_gt, g = pair % n_gt;
      std::uint64_t overlap = 0;
      if (boxes_overlap(dt_box[d], gt_box[g])) {
        overlap = rle_intersection(dt[d].data(), dt[d].size(), gt[g].data(), gt[g].size());
      }
      iou[pair] = overlap_ratio(overlap, dt_area[d], gt_area[g], iscrowd[g] != 0);
    }
  });
}

}  // namespace samrt
