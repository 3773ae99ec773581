#include "postprocess.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "thread_pool.hpp"

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

namespace samrt {
namespace {

// Output columns per tile: one row of a tile's mask is one 64-bit word.
constexpr int kTileWidth = 64;
// A composite of two bilinear steps reads at most 3 consecutive source indices.
constexpr int kTaps = 3;

// ---- Bit helpers --------------------------------------------------------------------------

// Portable SWAR count: baseline x86-64 has no popcnt instruction, and the compiler's
// fallback is an out-of-line library call.
inline int popcount64(std::uint64_t v) {
  v = v - ((v >> 1) & 0x5555555555555555ULL);
  v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
  v = (v + (v >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  return static_cast<int>((v * 0x0101010101010101ULL) >> 56);
}

// Index of the lowest set bit; v != 0.
inline int lowest_bit(std::uint64_t v) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_ctzll(v);
#elif defined(_MSC_VER)
  unsigned long index = 0;
  _BitScanForward64(&index, v);
  return static_cast<int>(index);
#else
  int n = 0;
  for (; (v & 1) == 0; v >>= 1) ++n;
  return n;
#endif
}

// Index of the highest set bit; v != 0.
inline int highest_bit(std::uint64_t v) {
#if defined(__GNUC__) || defined(__clang__)
  return 63 - __builtin_clzll(v);
#else
  int n = 0;
  for (; v > 1; v >>= 1) ++n;
  return n;
#endif
}

// Gathers 64 flag bytes (0 or 1) into one word, bit i from flags[i]: each 8 bytes are
// packed by one multiply, whose partial products land on distinct bits so no carry
// disturbs the top byte.
inline std::uint64_t pack_flags(const std::uint8_t* flags) {
  std::uint64_t bits = 0;
  for (int group = 0; group < kTileWidth / 8; ++group) {
    // Assembled little-endian by hand so the trick is independent of byte order.
    std::uint64_t word = 0;
    for (int k = 0; k < 8; ++k) word |= static_cast<std::uint64_t>(flags[8 * group + k]) << (8 * k);
    bits |= ((word * 0x0102040810204080ULL) >> 56) << (8 * group);
  }
  return bits;
}

// Bit i is 1 when values[i] > threshold (kTileWidth values). Comparing into bytes first
// keeps the comparisons vectorizable.
inline std::uint64_t greater_bits(const float* values, float threshold) {
  alignas(64) std::uint8_t flags[kTileWidth];
  for (int i = 0; i < kTileWidth; ++i) flags[i] = values[i] > threshold ? 1 : 0;
  return pack_flags(flags);
}

// Bit i is 1 when values[i] <= threshold (false for NaN).
inline std::uint64_t at_most_bits(const float* values, float threshold) {
  alignas(64) std::uint8_t flags[kTileWidth];
  for (int i = 0; i < kTileWidth; ++i) flags[i] = values[i] <= threshold ? 1 : 0;
  return pack_flags(flags);
}

// ---- Composite taps -----------------------------------------------------------------------

// One bilinear step (align_corners=False) along an axis, with indices and weights computed
// in float exactly as torch's CPU kernel does, so both pick the same source pixels.
struct LinearTap {
  int i0 = 0, i1 = 0;
  float lambda0 = 1.0f, lambda1 = 0.0f;  // weights of i0 and i1
};

LinearTap linear_tap(int in_size, int out_size, int o) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  float real = scale * (static_cast<float>(o) + 0.5f) - 0.5f;
  if (real < 0.0f) real = 0.0f;
  LinearTap tap;
  tap.i0 = std::min(static_cast<int>(std::floor(real)), in_size - 1);
  tap.i1 = tap.i0 < in_size - 1 ? tap.i0 + 1 : tap.i0;
  tap.lambda1 = std::min(std::max(real - static_cast<float>(tap.i0), 0.0f), 1.0f);
  tap.lambda0 = 1.0f - tap.lambda1;
  return tap;
}

// Output index o along one axis reads source indices start[o] + 0..2 with
// weight[kTaps * o + k]; first[o]..last[o] is the range of nonzero weights.
struct AxisTaps {
  std::vector<int> start, first, last;
  std::vector<float> weight;
};

// The composite of: n_src -> n_padded (bilinear), keep [0, n_input), -> n_out (bilinear).
AxisTaps composite_taps(int n_src, int n_padded, int n_input, int n_out) {
  AxisTaps taps;
  taps.start.resize(static_cast<std::size_t>(n_out));
  taps.first.resize(static_cast<std::size_t>(n_out));
  taps.last.resize(static_cast<std::size_t>(n_out));
  taps.weight.resize(static_cast<std::size_t>(n_out) * kTaps);
  for (int o = 0; o < n_out; ++o) {
    const LinearTap outer = linear_tap(n_input, n_out, o);
    const LinearTap inner0 = linear_tap(n_src, n_padded, outer.i0);
    const LinearTap inner1 = linear_tap(n_src, n_padded, outer.i1);
    // inner1 starts at inner0.i0 or one later, so the window has 3 entries; shifting it
    // left at the far edge keeps start + 2 inside the source.
    const int start = std::min(inner0.i0, n_src - kTaps);
    double acc[kTaps] = {0.0, 0.0, 0.0};
    acc[inner0.i0 - start] += static_cast<double>(outer.lambda0) * inner0.lambda0;
    acc[inner0.i1 - start] += static_cast<double>(outer.lambda0) * inner0.lambda1;
    acc[inner1.i0 - start] += static_cast<double>(outer.lambda1) * inner1.lambda0;
    acc[inner1.i1 - start] += static_cast<double>(outer.lambda1) * inner1.lambda1;
    const auto index = static_cast<std::size_t>(o);
    taps.start[index] = start;
    taps.first[index] = -1;
    for (int k = 0; k < kTaps; ++k) {
      const float w = static_cast<float>(acc[k]);
      taps.weight[index * kTaps + static_cast<std::size_t>(k)] = w;
      if (w != 0.0f) {
        if (taps.first[index] < 0) taps.first[index] = start + k;
        taps.last[index] = start + k;
      }
    }
  }
  return taps;
}

// ---- Plan and per-worker scratch ---------------------------------------------------------

// Output rows [y_begin, y_end) all read source rows first..last (nonzero weights).
struct RowSegment {
  int y_begin = 0, y_end = 0;
  int first = 0, last = 0;
};

// Everything about one call that does not depend on the logits.
struct Plan {
  UpsampleGeometry geometry;
  AxisTaps rows;
  std::vector<RowSegment> segments;  // covering output rows 0..out_h-1 in order
  int n_tiles = 0;
  // Column taps per tile, kTileWidth entries each; columns past the image edge repeat the
  // last one with zero weights.
  std::vector<int> tile_col_start;     // n_tiles * kTileWidth
  std::vector<float> tile_col_weight;  // n_tiles * kTaps * kTileWidth
  std::vector<int> tile_src_first, tile_src_last;  // source columns each tile reads
  int src_row_first = 0, src_row_last = 0;         // source rows any output row reads
  int words_per_row = 0;                           // 64-bit words of a source row's bitmap
  // Tasks: a mask split into parts_per_mask parts, as column chunks of tiles_per_part tiles
  // (mask_stats) or as bands of output rows starting at segment band_start[part] (dense).
  int parts_per_mask = 1;
  int tiles_per_part = 1;
  std::vector<std::size_t> band_start;  // parts_per_mask + 1 segment indices
};

Plan make_plan(const UpsampleGeometry& g, std::size_t n_masks) {
  check_geometry(g);
  Plan plan;
  plan.geometry = g;
  plan.rows = composite_taps(g.src_h, g.padded_size, g.input_h, g.out_h);
  for (int y = 0; y < g.out_h; ++y) {
    const int first = plan.rows.first[static_cast<std::size_t>(y)];
    const int last = plan.rows.last[static_cast<std::size_t>(y)];
    if (plan.segments.empty() || plan.segments.back().first != first || plan.segments.back().last != last) {
      plan.segments.push_back(RowSegment{y, y, first, last});
    }
    plan.segments.back().y_end = y + 1;
  }
  plan.src_row_first = *std::min_element(plan.rows.first.begin(), plan.rows.first.end());
  plan.src_row_last = *std::max_element(plan.rows.last.begin(), plan.rows.last.end());
  plan.words_per_row = (g.src_w + 63) / 64;

  const AxisTaps cols = composite_taps(g.src_w, g.padded_size, g.input_w, g.out_w);
  plan.n_tiles = (g.out_w + kTileWidth - 1) / kTileWidth;
  const auto n_tiles = static_cast<std::size_t>(plan.n_tiles);
  plan.tile_col_start.resize(n_tiles * kTileWidth);
  plan.tile_col_weight.resize(n_tiles * kTaps * kTileWidth);
  plan.tile_src_first.assign(n_tiles, std::numeric_limits<int>::max());
  plan.tile_src_last.assign(n_tiles, -1);
  for (std::size_t tile = 0; tile < n_tiles; ++tile) {
    const int x_begin = static_cast<int>(tile) * kTileWidth;
    const int width = std::min(kTileWidth, g.out_w - x_begin);
    for (int i = 0; i < kTileWidth; ++i) {
      const auto x = static_cast<std::size_t>(x_begin + std::min(i, width - 1));
      plan.tile_col_start[tile * kTileWidth + static_cast<std::size_t>(i)] = cols.start[x];
      for (int k = 0; k < kTaps; ++k) {
        plan.tile_col_weight[(tile * kTaps + static_cast<std::size_t>(k)) * kTileWidth + static_cast<std::size_t>(i)] =
            i < width ? cols.weight[x * kTaps + static_cast<std::size_t>(k)] : 0.0f;
      }
      plan.tile_src_first[tile] = std::min(plan.tile_src_first[tile], cols.first[x]);
      plan.tile_src_last[tile] = std::max(plan.tile_src_last[tile], cols.last[x]);
    }
  }

  // Whole masks are the natural tasks; split masks only when there are too few of them to
  // keep every thread busy.
  const std::size_t wanted_tasks = 4 * default_pool()->num_threads();
  std::size_t parts = 1;
  if (n_masks > 0 && n_masks < wanted_tasks) parts = (wanted_tasks + n_masks - 1) / n_masks;
  parts = std::min({parts, n_tiles, plan.segments.size()});
  plan.tiles_per_part = static_cast<int>((n_tiles + parts - 1) / parts);
  plan.parts_per_mask = static_cast<int>(parts);
  // Bands of about equal row counts, cut at segment boundaries.
  plan.band_start.assign(parts + 1, plan.segments.size());
  std::size_t segment = 0;
  for (std::size_t part = 0; part < parts; ++part) {
    const auto target_row = static_cast<int>(part * static_cast<std::size_t>(g.out_h) / parts);
    while (segment < plan.segments.size() && plan.segments[segment].y_end <= target_row) ++segment;
    plan.band_start[part] = segment;
  }
  return plan;
}

// True when bits first..last (inclusive) of the bitmap are all set.
inline bool all_set(const std::uint64_t* words, int first, int last) {
  const int first_word = first / 64;
  const int last_word = last / 64;
  for (int w = first_word; w <= last_word; ++w) {
    const int lo = w == first_word ? first % 64 : 0;
    const int hi = w == last_word ? last % 64 : 63;
    const std::uint64_t mask = (hi == 63 ? ~0ULL : (1ULL << (hi + 1)) - 1) & (~0ULL << lo);
    if ((words[w] & mask) != mask) return false;
  }
  return true;
}

// Which side of the thresholds a block of outputs lies on.
enum Side : int { kBelow = -1, kMixed = 0, kAbove = 1 };

// One worker's view of one mask over tiles [first_tile, end_tile): which source pixels
// clear the thresholds, and the few source rows that the current output rows read,
// interpolated across each tile's columns on first use. Output rows must be visited top
// to bottom within a tile (tiles may interleave, as in row-major order, or follow each
// other, as in column-major order).
class MaskWorker {
 public:
  MaskWorker(const Plan& plan, int first_tile, int end_tile)
      : plan_(plan),
        first_tile_(first_tile),
        n_tiles_(static_cast<std::size_t>(end_tile - first_tile)),
        ring_values_(kRingRows * n_tiles_ * kTileWidth),
        ring_ready_(kRingRows * n_tiles_),
        row_side_(n_tiles_ * static_cast<std::size_t>(plan.geometry.src_h)) {}

  // low_res: the mask's src_h * src_w logits.
  void start_mask(const float* low_res) {
    low_res_ = low_res;
    ring_row_.fill(-1);
  }

  // Sides of the source pixels against (below, above): "above" when > above, "below" when
  // <= below (NaN is neither, so outputs that read it are always computed); then of each
  // source row over each tile's columns.
  void classify(float below, float above) {
    const int src_w = plan_.geometry.src_w;
    const auto words = static_cast<std::size_t>(plan_.words_per_row);
    above_bits_.assign(static_cast<std::size_t>(plan_.geometry.src_h) * words, 0);
    below_bits_.assign(above_bits_.size(), 0);
    alignas(64) float padded[kTileWidth];
    for (int j = plan_.src_row_first; j <= plan_.src_row_last; ++j) {
      const float* row = low_res_ + static_cast<std::size_t>(j) * static_cast<std::size_t>(src_w);
      for (std::size_t w = 0; w < words; ++w) {
        const int begin = static_cast<int>(w) * kTileWidth;
        const int n = std::min(kTileWidth, src_w - begin);
        const float* chunk = row + begin;
        if (n < kTileWidth) {
          // NaN padding is neither above nor below.
          std::fill(padded, padded + kTileWidth, std::numeric_limits<float>::quiet_NaN());
          std::copy(chunk, chunk + n, padded);
          chunk = padded;
        }
        above_bits_[static_cast<std::size_t>(j) * words + w] = greater_bits(chunk, above);
        below_bits_[static_cast<std::size_t>(j) * words + w] = at_most_bits(chunk, below);
      }
    }
    const auto src_h = static_cast<std::size_t>(plan_.geometry.src_h);
    for (std::size_t t = 0; t < n_tiles_; ++t) {
      const std::size_t tile = static_cast<std::size_t>(first_tile_) + t;
      const int col_first = plan_.tile_src_first[tile];
      const int col_last = plan_.tile_src_last[tile];
      for (int j = plan_.src_row_first; j <= plan_.src_row_last; ++j) {
        const std::size_t offset = static_cast<std::size_t>(j) * words;
        Side side = kMixed;
        if (all_set(above_bits_.data() + offset, col_first, col_last)) {
          side = kAbove;
        } else if (all_set(below_bits_.data() + offset, col_first, col_last)) {
          side = kBelow;
        }
        row_side_[t * src_h + static_cast<std::size_t>(j)] = static_cast<std::int8_t>(side);
      }
    }
  }

  // The side of every output in the segment's rows of the tile (after classify): a convex
  // combination of values that all clear a threshold clears it too.
  Side segment_side(int tile, const RowSegment& segment) const {
    const std::int8_t* sides =
        row_side_.data() + static_cast<std::size_t>(tile - first_tile_) * static_cast<std::size_t>(plan_.geometry.src_h);
    const int side = sides[segment.first];
    for (int j = segment.first + 1; j <= segment.last; ++j) {
      if (sides[j] != side) return kMixed;
    }
    return static_cast<Side>(side);
  }

  // values: kTileWidth floats, the tile's part of output row y (past the image's width: 0
  // or NaN).
  void interpolate(int y, int tile, float* values) {
    const auto index = static_cast<std::size_t>(y);
    const int j = plan_.rows.start[index];
    const float* w = &plan_.rows.weight[index * kTaps];
    const float w0 = w[0], w1 = w[1], w2 = w[2];
    const float* r0 = source_row(j, tile);
    const float* r1 = source_row(j + 1, tile);
    const float* r2 = source_row(j + 2, tile);
    for (int i = 0; i < kTileWidth; ++i) values[i] = w0 * r0[i] + w1 * r1[i] + w2 * r2[i];
  }

 private:
  // Output rows read consecutive source rows whose start never decreases, so a ring of 4
  // keeps every row that is still needed.
  static constexpr std::size_t kRingRows = 4;

  // Source row j interpolated across the tile's columns.
  const float* source_row(int j, int tile) {
    const std::size_t slot = static_cast<std::size_t>(j) % kRingRows;
    const auto t = static_cast<std::size_t>(tile - first_tile_);
    if (ring_row_[slot] != j) {
      ring_row_[slot] = j;
      std::fill_n(ring_ready_.begin() + static_cast<std::ptrdiff_t>(slot * n_tiles_), n_tiles_, std::uint8_t{0});
    }
    float* dst = ring_values_.data() + (slot * n_tiles_ + t) * kTileWidth;
    if (ring_ready_[slot * n_tiles_ + t] == 0) {
      const float* row = low_res_ + static_cast<std::size_t>(j) * static_cast<std::size_t>(plan_.geometry.src_w);
      const std::size_t tile_index = static_cast<std::size_t>(tile);
      const int* start = plan_.tile_col_start.data() + tile_index * kTileWidth;
      const float* w0 = plan_.tile_col_weight.data() + tile_index * kTaps * kTileWidth;
      const float* w1 = w0 + kTileWidth;
      const float* w2 = w1 + kTileWidth;
      for (int i = 0; i < kTileWidth; ++i) {
        const float* s = row + start[i];
        dst[i] = w0[i] * s[0] + w1[i] * s[1] + w2[i] * s[2];
      }
      ring_ready_[slot * n_tiles_ + t] = 1;
    }
    return dst;
  }

  const Plan& plan_;
  const float* low_res_ = nullptr;
  int first_tile_ = 0;
  std::size_t n_tiles_ = 0;
  std::array<int, kRingRows> ring_row_{};   // the source row each slot holds, or -1
  std::vector<float> ring_values_;          // kRingRows * n_tiles_ * kTileWidth values
  std::vector<std::uint8_t> ring_ready_;    // kRingRows * n_tiles_ flags
  std::vector<std::uint64_t> above_bits_, below_bits_;  // src_h rows of words_per_row words
  std::vector<std::int8_t> row_side_;       // n_tiles_ * src_h Sides
};

// Runs fn(mask, part) over every part of every mask.
template <typename Fn>
void for_each_part(const Plan& plan, std::size_t n_masks, const Fn& fn) {
  const auto parts = static_cast<std::size_t>(plan.parts_per_mask);
  parallel_for(n_masks * parts, [&](std::size_t task) { fn(task / parts, static_cast<int>(task % parts)); });
}

// ---- RLE ----------------------------------------------------------------------------------

// Appends runs of alternating values, background first, merging equal neighbours.
class RunBuilder {
 public:
  void add(bool value, std::uint64_t length) {
    if (length == 0) return;
    if (value == value_) {
      length_ += length;
    } else {
      counts_.push_back(static_cast<std::uint32_t>(length_));
      value_ = value;
      length_ = length;
    }
  }
  // Appends another builder's finished runs.
  void append(const std::vector<std::uint32_t>& counts) {
    bool value = false;
    for (const std::uint32_t length : counts) {
      add(value, length);
      value = !value;
    }
  }
  std::vector<std::uint32_t> finish() {
    counts_.push_back(static_cast<std::uint32_t>(length_));
    std::vector<std::uint32_t> out;
    out.swap(counts_);
    value_ = false;
    length_ = 0;
    return out;
  }

 private:
  std::vector<std::uint32_t> counts_;
  bool value_ = false;
  std::uint64_t length_ = 0;
};

// What one (mask, chunk of tiles) task found.
struct ChunkStats {
  std::int64_t in_mask = 0, in_intersection = 0, in_union = 0;
  int x_min = std::numeric_limits<int>::max(), x_max = -1;
  int y_min = std::numeric_limits<int>::max(), y_max = -1;
  std::vector<std::uint32_t> runs;  // the chunk's columns, full image height, from background
};

void check_positive(int value, const char* name) {
  if (value < 1) throw std::invalid_argument(std::string(name) + " must be >= 1, got " + std::to_string(value));
}

}  // namespace

void check_geometry(const UpsampleGeometry& g) {
  check_positive(g.src_h, "low-res height");
  check_positive(g.src_w, "low-res width");
  check_positive(g.padded_size, "padded size");
  check_positive(g.input_h, "input height");
  check_positive(g.input_w, "input width");
  check_positive(g.out_h, "output height");
  check_positive(g.out_w, "output width");
  if (g.src_h < kTaps || g.src_w < kTaps) {
    throw std::invalid_argument("low-res logits must be at least 3x3, got " + std::to_string(g.src_h) + "x" +
                                std::to_string(g.src_w));
  }
  if (g.src_h > g.padded_size || g.src_w > g.padded_size) {
    throw std::invalid_argument("low-res size " + std::to_string(g.src_h) + "x" + std::to_string(g.src_w) +
                                " exceeds the padded size " + std::to_string(g.padded_size));
  }
  if (g.input_h > g.padded_size || g.input_w > g.padded_size) {
    throw std::invalid_argument("input size " + std::to_string(g.input_h) + "x" + std::to_string(g.input_w) +
                                " exceeds the padded size " + std::to_string(g.padded_size));
  }
  if (static_cast<std::uint64_t>(g.out_h) * static_cast<std::uint64_t>(g.out_w) > 0xFFFFFFFFull) {
    throw std::invalid_argument("output size " + std::to_string(g.out_h) + "x" + std::to_string(g.out_w) +
                                " has 2^32 pixels or more");
  }
}

void upsample_logits(const float* low_res, std::size_t n_masks, const UpsampleGeometry& geometry, float* out) {
  const Plan plan = make_plan(geometry, n_masks);
  const auto src_area = static_cast<std::size_t>(geometry.src_h) * static_cast<std::size_t>(geometry.src_w);
  const auto out_w = static_cast<std::size_t>(geometry.out_w);
  const auto out_area = static_cast<std::size_t>(geometry.out_h) * out_w;
  for_each_part(plan, n_masks, [&](std::size_t mask, int part) {
    MaskWorker worker(plan, 0, plan.n_tiles);
    worker.start_mask(low_res + mask * src_area);
    alignas(64) float values[kTileWidth];
    const auto band = static_cast<std::size_t>(part);
    for (std::size_t s = plan.band_start[band]; s < plan.band_start[band + 1]; ++s) {
      const RowSegment& segment = plan.segments[s];
      for (int y = segment.y_begin; y < segment.y_end; ++y) {
        float* row = out + mask * out_area + static_cast<std::size_t>(y) * out_w;
        for (int tile = 0; tile < plan.n_tiles; ++tile) {
          const auto x_begin = static_cast<std::size_t>(tile) * kTileWidth;
          worker.interpolate(y, tile, values);
          std::memcpy(row + x_begin, values, std::min<std::size_t>(kTileWidth, out_w - x_begin) * sizeof(float));
        }
      }
    }
  });
}

void upsample_masks(const float* low_res, std::size_t n_masks, const UpsampleGeometry& geometry, float threshold,
                    std::uint8_t* out) {
  if (std::isnan(threshold)) throw std::invalid_argument("upsample_masks: threshold must not be NaN");
  const Plan plan = make_plan(geometry, n_masks);
  const auto src_area = static_cast<std::size_t>(geometry.src_h) * static_cast<std::size_t>(geometry.src_w);
  const auto out_w = static_cast<std::size_t>(geometry.out_w);
  const auto out_area = static_cast<std::size_t>(geometry.out_h) * out_w;
  const auto n_tiles = static_cast<std::size_t>(plan.n_tiles);
  for_each_part(plan, n_masks, [&](std::size_t mask, int part) {
    MaskWorker worker(plan, 0, plan.n_tiles);
    worker.start_mask(low_res + mask * src_area);
    worker.classify(threshold, threshold);
    std::vector<Side> sides(n_tiles);
    alignas(64) float values[kTileWidth];
    const auto band = static_cast<std::size_t>(part);
    for (std::size_t s = plan.band_start[band]; s < plan.band_start[band + 1]; ++s) {
      const RowSegment& segment = plan.segments[s];
      bool uniform = true;
      for (std::size_t tile = 0; tile < n_tiles; ++tile) {
        sides[tile] = worker.segment_side(static_cast<int>(tile), segment);
        uniform = uniform && sides[tile] != kMixed && sides[tile] == sides[0];
      }
      std::uint8_t* rows = out + mask * out_area + static_cast<std::size_t>(segment.y_begin) * out_w;
      if (uniform) {
        // The whole band of rows is one value: one contiguous fill.
        std::memset(rows, sides[0] == kAbove ? 1 : 0, static_cast<std::size_t>(segment.y_end - segment.y_begin) * out_w);
        continue;
      }
      for (int y = segment.y_begin; y < segment.y_end; ++y, rows += out_w) {
        for (std::size_t tile = 0; tile < n_tiles;) {
          const std::size_t x_begin = tile * kTileWidth;
          if (sides[tile] == kMixed) {
            worker.interpolate(y, static_cast<int>(tile), values);
            const std::size_t width = std::min<std::size_t>(kTileWidth, out_w - x_begin);
            for (std::size_t i = 0; i < width; ++i) rows[x_begin + i] = values[i] > threshold ? 1 : 0;
            ++tile;
            continue;
          }
          // A run of tiles on the same side: one fill.
          std::size_t end = tile + 1;
          while (end < n_tiles && sides[end] == sides[tile]) ++end;
          const std::size_t x_end = std::min(end * kTileWidth, out_w);
          std::memset(rows + x_begin, sides[tile] == kAbove ? 1 : 0, x_end - x_begin);
          tile = end;
        }
      }
    }
  });
}

namespace {

// Accumulates one tile's rows, top to bottom, as 64-bit row masks: counts, extent and the
// rows where each column changes value (for the column-major RLE).
class TileRows {
 public:
  void reset() {
    for (auto& rows : transitions_) rows.clear();
    first_row_ = previous_ = columns_hit_ = 0;
  }

  // Rows [y, y + n) all equal bits; calls come in row order, without gaps.
  void add(int y, int n, std::uint64_t bits, ChunkStats& stats) {
    if (bits != 0) {
      columns_hit_ |= bits;
      stats.y_min = std::min(stats.y_min, y);
      stats.y_max = std::max(stats.y_max, y + n - 1);
    }
    if (y == 0) {
      first_row_ = bits;
    } else {
      for (std::uint64_t changed = bits ^ previous_; changed != 0; changed &= changed - 1) {
        transitions_[static_cast<std::size_t>(lowest_bit(changed))].push_back(y);
      }
    }
    previous_ = bits;
  }

  // Appends the tile's columns (each padded to the image height) to runs, and its
  // horizontal extent to stats.
  void finish(int x_begin, int width, int out_h, std::uint64_t pad_top, std::uint64_t pad_bottom,
              RunBuilder& runs, ChunkStats& stats) const {
    if (columns_hit_ != 0) {
      stats.x_min = std::min(stats.x_min, x_begin + lowest_bit(columns_hit_));
      stats.x_max = std::max(stats.x_max, x_begin + highest_bit(columns_hit_));
    }
    for (int c = 0; c < width; ++c) {
      runs.add(false, pad_top);
      bool value = ((first_row_ >> c) & 1) != 0;
      int row = 0;
      for (const int change : transitions_[static_cast<std::size_t>(c)]) {
        runs.add(value, static_cast<std::uint64_t>(change - row));
        value = !value;
        row = change;
      }
      runs.add(value, static_cast<std::uint64_t>(out_h - row));
      runs.add(false, pad_bottom);
    }
  }

 private:
  // transitions_[c]: the rows where column c differs from the row above.
  std::array<std::vector<int>, kTileWidth> transitions_;
  std::uint64_t first_row_ = 0, previous_ = 0, columns_hit_ = 0;
};

}  // namespace

void mask_stats(const float* low_res, std::size_t n_masks, const UpsampleGeometry& geometry,
                const MaskStatsOptions& options, std::int64_t* areas, std::int64_t* boxes, float* stability,
                std::vector<std::uint32_t>* rle_counts, std::uint8_t* has_rle) {
  const Plan plan = make_plan(geometry, n_masks);
  if (options.crop_x0 < 0 || options.crop_y0 < 0 ||
      static_cast<std::int64_t>(options.crop_x0) + geometry.out_w > options.image_w ||
      static_cast<std::int64_t>(options.crop_y0) + geometry.out_h > options.image_h) {
    throw std::invalid_argument("the " + std::to_string(geometry.out_h) + "x" + std::to_string(geometry.out_w) +
                                " mask at (x0=" + std::to_string(options.crop_x0) +
                                ", y0=" + std::to_string(options.crop_y0) + ") does not fit in the " +
                                std::to_string(options.image_h) + "x" + std::to_string(options.image_w) + " image");
  }
  if (static_cast<std::uint64_t>(options.image_h) * static_cast<std::uint64_t>(options.image_w) > 0xFFFFFFFFull) {
    throw std::invalid_argument("image size " + std::to_string(options.image_h) + "x" +
                                std::to_string(options.image_w) + " has 2^32 pixels or more (RLE counts are uint32)");
  }
  const float t_mask = options.threshold;
  const float t_inter = options.intersection_threshold;
  const float t_union = options.union_threshold;
  if (std::isnan(t_mask) || std::isnan(t_inter) || std::isnan(t_union)) {
    throw std::invalid_argument("mask_stats: thresholds must not be NaN");
  }
  const float below = std::min({t_mask, t_inter, t_union});
  const float above = std::max({t_mask, t_inter, t_union});

  const auto src_area = static_cast<std::size_t>(geometry.src_h) * static_cast<std::size_t>(geometry.src_w);
  const int out_h = geometry.out_h;
  const auto image_h = static_cast<std::uint64_t>(options.image_h);
  const auto pad_top = static_cast<std::uint64_t>(options.crop_y0);
  const auto pad_bottom = image_h - pad_top - static_cast<std::uint64_t>(out_h);

  const auto parts = static_cast<std::size_t>(plan.parts_per_mask);
  std::vector<ChunkStats> chunks(n_masks * parts);
  for_each_part(plan, n_masks, [&](std::size_t mask, int part) {
    ChunkStats& stats = chunks[mask * parts + static_cast<std::size_t>(part)];
    const int first_tile = std::min(plan.n_tiles, part * plan.tiles_per_part);
    const int end_tile = std::min(plan.n_tiles, first_tile + plan.tiles_per_part);
    RunBuilder runs;
    TileRows rows;
    alignas(64) float values[kTileWidth];
    MaskWorker worker(plan, first_tile, end_tile);
    worker.start_mask(low_res + mask * src_area);
    worker.classify(below, above);
    for (int tile = first_tile; tile < end_tile; ++tile) {
      const int x_begin = tile * kTileWidth;
      const int width = std::min(kTileWidth, geometry.out_w - x_begin);
      const std::uint64_t valid = width == kTileWidth ? ~0ULL : (1ULL << width) - 1;
      rows.reset();
      for (const RowSegment& segment : plan.segments) {
        const Side side = worker.segment_side(tile, segment);
        const int n = segment.y_end - segment.y_begin;
        if (side == kAbove) {
          const std::int64_t pixels = static_cast<std::int64_t>(n) * width;
          stats.in_mask += pixels;
          stats.in_intersection += pixels;
          stats.in_union += pixels;
          rows.add(segment.y_begin, n, valid, stats);
          continue;
        }
        if (side == kBelow) {
          rows.add(segment.y_begin, n, 0, stats);
          continue;
        }
        for (int y = segment.y_begin; y < segment.y_end; ++y) {
          worker.interpolate(y, tile, values);
          const std::uint64_t bits = greater_bits(values, t_mask) & valid;
          stats.in_mask += popcount64(bits);
          stats.in_intersection += popcount64(greater_bits(values, t_inter) & valid);
          stats.in_union += popcount64(greater_bits(values, t_union) & valid);
          rows.add(y, 1, bits, stats);
        }
      }
      rows.finish(x_begin, width, out_h, pad_top, pad_bottom, runs, stats);
    }
    stats.runs = runs.finish();
  });

  const auto pad_left = static_cast<std::uint64_t>(options.crop_x0) * image_h;
  const auto pad_right =
      static_cast<std::uint64_t>(options.image_w - options.crop_x0 - geometry.out_w) * image_h;
  parallel_for(n_masks, [&](std::size_t mask) {
    ChunkStats total;
    for (std::size_t chunk = 0; chunk < parts; ++chunk) {
      const ChunkStats& part = chunks[mask * parts + chunk];
      total.in_mask += part.in_mask;
      total.in_intersection += part.in_intersection;
      total.in_union += part.in_union;
      total.x_min = std::min(total.x_min, part.x_min);
      total.x_max = std::max(total.x_max, part.x_max);
      total.y_min = std::min(total.y_min, part.y_min);
      total.y_max = std::max(total.y_max, part.y_max);
    }
    areas[mask] = total.in_mask;
    std::int64_t* box = boxes + 4 * mask;
    if (total.in_mask == 0) {
      std::fill(box, box + 4, std::int64_t{0});
    } else {
      box[0] = total.x_min;
      box[1] = total.y_min;
      box[2] = total.x_max;
      box[3] = total.y_max;
    }
    // torch divides the int32 counts as float32; spelled out so 0/0 needs no FP trap.
    float score = 0.0f;
    if (total.in_union != 0) {
      score = static_cast<float>(total.in_intersection) / static_cast<float>(total.in_union);
    } else {
      score = total.in_intersection == 0 ? std::numeric_limits<float>::quiet_NaN()
                                         : std::numeric_limits<float>::infinity();
    }
    stability[mask] = score;
    const bool keep = !options.filter_rle || score >= options.rle_min_stability;
    has_rle[mask] = keep ? 1 : 0;
    rle_counts[mask].clear();
    if (keep) {
      RunBuilder runs;
      runs.add(false, pad_left);
      for (std::size_t chunk = 0; chunk < parts; ++chunk) runs.append(chunks[mask * parts + chunk].runs);
      runs.add(false, pad_right);
      rle_counts[mask] = runs.finish();
    }
  });
}

}  // namespace samrt
