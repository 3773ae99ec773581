#include "regions.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "thread_pool.hpp"

namespace samrt {
namespace {

#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SAMRT_WORD_SCAN 1
#else
#define SAMRT_WORD_SCAN 0
#endif

// Masks are mostly long stretches of equal bytes: scanning 8 at a time finds the next
// transition an order of magnitude faster than byte by byte.
std::size_t find_nonzero(const std::uint8_t* row, std::size_t x, std::size_t width) {
#if SAMRT_WORD_SCAN
  for (; x + 8 <= width; x += 8) {
    std::uint64_t word;
    std::memcpy(&word, row + x, 8);
    if (word != 0) return x + static_cast<std::size_t>(__builtin_ctzll(word)) / 8;
  }
#endif
  while (x < width && row[x] == 0) ++x;
  return x;
}

std::size_t find_zero(const std::uint8_t* row, std::size_t x, std::size_t width) {
#if SAMRT_WORD_SCAN
  constexpr std::uint64_t kLow = 0x0101010101010101ULL;
  constexpr std::uint64_t kHigh = 0x8080808080808080ULL;
  for (; x + 8 <= width; x += 8) {
    std::uint64_t word;
    std::memcpy(&word, row + x, 8);
    // Lowest set bit marks the first zero byte exactly (higher ones may be false hits).
    const std::uint64_t zero_bytes = (word - kLow) & ~word & kHigh;
    if (zero_bytes != 0) return x + static_cast<std::size_t>(__builtin_ctzll(zero_bytes)) / 8;
  }
#endif
  while (x < width && row[x] != 0) ++x;
  return x;
}

struct Run {
  std::int32_t begin;  // first column
  std::int32_t end;    // one past the last column
};

// The 8-connected components of one pixel class (zero or nonzero) as runs.
struct Components {
  std::vector<Run> runs;                // in raster order
  std::vector<std::size_t> row_begin;   // runs of row r: [row_begin[r], row_begin[r + 1])
  std::vector<std::int32_t> root;       // per run: index of the first run of its component
  std::vector<std::int64_t> area;       // per run, meaningful at roots: component size
};

std::int32_t find_root(std::vector<std::int32_t>& parent, std::int32_t k) {
  while (parent[static_cast<std::size_t>(k)] != k) {
    auto& p = parent[static_cast<std::size_t>(k)];
    p = parent[static_cast<std::size_t>(p)];  // path halving
    k = p;
  }
  return k;
}

// The smaller index becomes the root, so a root is its component's first run and every
// parent index is <= its child's: one ascending pass then flattens all paths.
void unite(std::vector<std::int32_t>& parent, std::int32_t a, std::int32_t b) {
  a = find_root(parent, a);
  b = find_root(parent, b);
  if (a < b) {
    parent[static_cast<std::size_t>(b)] = a;
  } else if (b < a) {
    parent[static_cast<std::size_t>(a)] = b;
  }
}

Components label(const std::uint8_t* mask, std::size_t height, std::size_t width, bool of_nonzero) {
  Components c;
  c.row_begin.reserve(height + 1);
  c.row_begin.push_back(0);
  for (std::size_t y = 0; y < height; ++y) {
    const std::uint8_t* row = mask + y * width;
    std::size_t x = 0;
    while (x < width) {
      const std::size_t begin = of_nonzero ? find_nonzero(row, x, width) : find_zero(row, x, width);
      if (begin == width) break;
      const std::size_t end = of_nonzero ? find_zero(row, begin, width) : find_nonzero(row, begin, width);
      c.runs.push_back({static_cast<std::int32_t>(begin), static_cast<std::int32_t>(end)});
      c.root.push_back(static_cast<std::int32_t>(c.runs.size() - 1));
      x = end;
    }
    c.row_begin.push_back(c.runs.size());
    if (y == 0) continue;

    // Join runs that touch the row above, diagonals included (8-connectivity):
    // [pb, pe) and [cb, ce) touch when pb <= ce and cb <= pe.
    std::size_t above = c.row_begin[y - 1];
    const std::size_t above_end = c.row_begin[y];
    std::size_t here = c.row_begin[y];
    const std::size_t here_end = c.row_begin[y + 1];
    while (above < above_end && here < here_end) {
      const Run& a = c.runs[above];
      const Run& h = c.runs[here];
      if (a.begin <= h.end && h.begin <= a.end) {
        unite(c.root, static_cast<std::int32_t>(above), static_cast<std::int32_t>(here));
      }
      if (a.end < h.end) {
        ++above;
      } else {
        ++here;
      }
    }
  }

  c.area.assign(c.runs.size(), 0);
  for (std::size_t k = 0; k < c.runs.size(); ++k) {
    c.root[k] = c.root[static_cast<std::size_t>(c.root[k])];
    c.area[static_cast<std::size_t>(c.root[k])] += c.runs[k].end - c.runs[k].begin;
  }
  return c;
}

// Every island is small, so the official function keeps the largest: np.argmax over
// OpenCV's labels picks, among equally large components, the one OpenCV numbers first.
// OpenCV labels 2x2 blocks in raster order, so its labels follow each component's first
// block. Returns that component's root run.
std::size_t largest_component(const Components& c, std::size_t width) {
  const std::size_t blocks_per_row = (width + 1) / 2;
  std::int64_t largest_area = 0;
  for (std::size_t k = 0; k < c.runs.size(); ++k) largest_area = std::max(largest_area, c.area[k]);
  std::vector<std::size_t> first_block(c.runs.size(), std::numeric_limits<std::size_t>::max());
  const std::size_t height = c.row_begin.size() - 1;
  for (std::size_t y = 0; y < height; ++y) {
    for (std::size_t k = c.row_begin[y]; k < c.row_begin[y + 1]; ++k) {
      auto& key = first_block[static_cast<std::size_t>(c.root[k])];
      key = std::min(key, (y / 2) * blocks_per_row + static_cast<std::size_t>(c.runs[k].begin) / 2);
    }
  }
  std::size_t best = 0;
  std::size_t best_key = std::numeric_limits<std::size_t>::max();
  for (std::size_t k = 0; k < c.runs.size(); ++k) {
    if (static_cast<std::size_t>(c.root[k]) == k && c.area[k] == largest_area && first_block[k] < best_key) {
      best = k;
      best_key = first_block[k];
    }
  }
  return best;
}

void copy_as_01(const std::uint8_t* mask, std::size_t count, std::uint8_t* out) {
  for (std::size_t k = 0; k < count; ++k) out[k] = static_cast<std::uint8_t>(mask[k] != 0);
}

}  // namespace

bool remove_small_regions(const std::uint8_t* mask, std::size_t height, std::size_t width,
                          double area_thresh, RegionMode mode, std::uint8_t* out) {
  const bool holes = mode == RegionMode::kHoles;
  const Components c = label(mask, height, width, /*of_nonzero=*/!holes);

  // flip[root] = 1: the component's pixels change class (holes filled, islands erased).
  std::vector<std::uint8_t> flip(c.runs.size(), 0);
  bool any_small = false;
  bool any_large = false;
  for (std::size_t k = 0; k < c.runs.size(); ++k) {
    if (static_cast<std::size_t>(c.root[k]) != k) continue;
    const bool small = static_cast<double>(c.area[k]) < area_thresh;
    flip[k] = static_cast<std::uint8_t>(small);
    any_small = any_small || small;
    any_large = any_large || !small;
  }
  if (!any_small) return false;
  if (!holes && !any_large) flip[largest_component(c, width)] = 0;

  copy_as_01(mask, height * width, out);
  const std::uint8_t flipped_value = holes ? 1 : 0;
  for (std::size_t y = 0; y < height; ++y) {
    for (std::size_t k = c.row_begin[y]; k < c.row_begin[y + 1]; ++k) {
      if (!flip[static_cast<std::size_t>(c.root[k])]) continue;
      const Run& r = c.runs[k];
      std::memset(out + y * width + static_cast<std::size_t>(r.begin), flipped_value,
                  static_cast<std::size_t>(r.end - r.begin));
    }
  }
  return true;
}

void remove_small_regions_batch(const std::uint8_t* masks, std::size_t n, std::size_t height,
                                std::size_t width, double area_thresh, RegionMode mode,
                                std::uint8_t* out, std::uint8_t* changed) {
  const std::size_t pixels = height * width;
  parallel_for(n, [&](std::size_t i) {
    const std::uint8_t* mask = masks + i * pixels;
    std::uint8_t* cleaned = out + i * pixels;
    const bool was_changed = remove_small_regions(mask, height, width, area_thresh, mode, cleaned);
    if (!was_changed) copy_as_01(mask, pixels, cleaned);
    changed[i] = static_cast<std::uint8_t>(was_changed);
  });
}

}  // namespace samrt
