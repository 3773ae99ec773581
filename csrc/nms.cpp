#include "nms.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "thread_pool.hpp"

namespace samrt {
namespace {

struct ScoredIndex {
  double score;
  std::int64_t index;
};

std::vector<ScoredIndex> scored(const std::vector<std::int64_t>& indices, const double* scores) {
  std::vector<ScoredIndex> pairs(indices.size());
  for (std::size_t k = 0; k < indices.size(); ++k) pairs[k] = {scores[indices[k]], indices[k]};
  return pairs;
}

std::vector<std::int64_t> indices_of(const std::vector<ScoredIndex>& pairs) {
  std::vector<std::int64_t> indices(pairs.size());
  for (std::size_t k = 0; k < pairs.size(); ++k) indices[k] = pairs[k].index;
  return indices;
}

// The NMS kernel's ranking: descending score, ties by ascending index (torchvision's nms
// sorts with stable=True).
std::vector<std::int64_t> rank_stable(const std::vector<std::int64_t>& indices, const double* scores) {
  std::vector<ScoredIndex> pairs = scored(indices, scores);
  std::sort(pairs.begin(), pairs.end(), [](const ScoredIndex& a, const ScoredIndex& b) {
    return a.score > b.score || (a.score == b.score && a.index < b.index);
  });
  return indices_of(pairs);
}

// The final ranking of torchvision's per-category path, scores[keep].sort(descending=True):
// no stable=True, so torch's CPU sort runs std::sort on (score, index) pairs laid out in
// ascending index order with a score-only comparison, and ties come out in std::sort's
// order, not index order. Running std::sort the same way reproduces it.
std::vector<std::int64_t> rank_like_unstable_torch_sort(const std::vector<std::int64_t>& indices,
                                                        const double* scores) {
  std::vector<ScoredIndex> pairs = scored(indices, scores);
  // torch's comparator also puts NaN first; NaN is refused upstream, so `>` is all of it.
  std::sort(pairs.begin(), pairs.end(), [](const ScoredIndex& a, const ScoredIndex& b) { return a.score > b.score; });
  return indices_of(pairs);
}

// The largest T not above `threshold`: for any T value x (NaN included),
// x > result exactly when double(x) > threshold, which lets the inner loop compare in T.
template <typename T>
T threshold_in(double threshold) {
  constexpr T kInf = std::numeric_limits<T>::infinity();
  if (std::isinf(threshold)) return threshold > 0 ? kInf : -kInf;
  if (threshold >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
  if (threshold < static_cast<double>(std::numeric_limits<T>::lowest())) return -kInf;
  T t = static_cast<T>(threshold);
  if (static_cast<double>(t) > threshold) t = std::nextafter(t, -kInf);
  return t;
}

// Boxes in rank order, one array per coordinate so the inner loop streams.
template <typename T>
struct RankedBoxes {
  std::vector<T> x0, y0, x1, y1, area;
  explicit RankedBoxes(std::size_t m) : x0(m), y0(m), x1(m), y1(m), area(m) {}
  void set(std::size_t r, T bx0, T by0, T bx1, T by1) {
    x0[r] = bx0;
    y0[r] = by0;
    x1[r] = bx1;
    y1[r] = by1;
    // Same operation order as torchvision: (x1 - x0) * (y1 - y0) in T.
    const T width = bx1 - bx0;
    const T height = by1 - by0;
    area[r] = width * height;
  }
};

// Greedy NMS over boxes already in rank order. suppressed: m bytes, zero on entry; on
// return the zero entries are the kept boxes. Suppressed candidates are re-tested
// (harmless: suppression only ever sets the flag) so the inner loop has no branch and
// vectorizes; every IoU is computed with torchvision's operations in torchvision's order.
template <typename T>
void greedy_suppress(const RankedBoxes<T>& b, T threshold, std::uint8_t* suppressed) {
  const std::size_t m = b.area.size();
  const T* x0 = b.x0.data();
  const T* y0 = b.y0.data();
  const T* x1 = b.x1.data();
  const T* y1 = b.y1.data();
  const T* area = b.area.data();
  for (std::size_t i = 0; i < m; ++i) {
    if (suppressed[i]) continue;
    const T ix0 = x0[i], iy0 = y0[i], ix1 = x1[i], iy1 = y1[i], iarea = area[i];
    for (std::size_t j = i + 1; j < m; ++j) {
      const T xx0 = std::max(ix0, x0[j]);
      const T yy0 = std::max(iy0, y0[j]);
      const T xx1 = std::min(ix1, x1[j]);
      const T yy1 = std::min(iy1, y1[j]);
      const T w = std::max(static_cast<T>(0), xx1 - xx0);
      const T h = std::max(static_cast<T>(0), yy1 - yy0);
      const T inter = w * h;
      const T iou = inter / (iarea + area[j] - inter);
      suppressed[j] |= static_cast<std::uint8_t>(iou > threshold);
    }
  }
}

// n <= kNmsCoordinateTrickMaxBoxes: one NMS over boxes shifted apart by category.
template <typename T>
std::size_t nms_coordinate_trick(std::size_t n, const T* boxes, const double* scores,
                                 const std::int64_t* categories, T threshold,
                                 std::int64_t* keep_out) {
  T max_coordinate = boxes[0];
  for (std::size_t k = 1; k < 4 * n; ++k) max_coordinate = std::max(max_coordinate, boxes[k]);
  const T category_stride = max_coordinate + static_cast<T>(1);

  std::vector<std::int64_t> all(n);
  std::iota(all.begin(), all.end(), std::int64_t{0});
  const std::vector<std::int64_t> ranked = rank_stable(all, scores);

  RankedBoxes<T> b(n);
  for (std::size_t r = 0; r < n; ++r) {
    const std::size_t k = static_cast<std::size_t>(ranked[r]);
    // Separate statements keep the compiler from fusing multiply and add (torch rounds
    // the product to T before adding it).
    const T offset = static_cast<T>(categories[k]) * category_stride;
    const T* box = boxes + 4 * k;
    b.set(r, box[0] + offset, box[1] + offset, box[2] + offset, box[3] + offset);
  }
  std::vector<std::uint8_t> suppressed(n, 0);
  greedy_suppress(b, threshold, suppressed.data());

  std::size_t kept = 0;
  for (std::size_t r = 0; r < n; ++r) {
    if (!suppressed[r]) keep_out[kept++] = ranked[r];
  }
  return kept;
}

// n > kNmsCoordinateTrickMaxBoxes: one NMS per category, then one ranking of the kept.
template <typename T>
std::size_t nms_per_category(std::size_t n, const T* boxes, const double* scores,
                             const std::int64_t* categories, T threshold,
                             std::int64_t* keep_out) {
  // Group indices by category, ascending inside each group (torch.where's order).
  std::vector<std::int64_t> by_category(n);
  std::iota(by_category.begin(), by_category.end(), std::int64_t{0});
  std::stable_sort(by_category.begin(), by_category.end(),
                   [categories](std::int64_t a, std::int64_t b) { return categories[a] < categories[b]; });
  std::vector<std::size_t> group_begin;
  for (std::size_t k = 0; k < n; ++k) {
    if (k == 0 || categories[by_category[k]] != categories[by_category[k - 1]]) group_begin.push_back(k);
  }
  group_begin.push_back(n);

  std::vector<std::uint8_t> kept_flag(n, 0);  // groups write disjoint entries
  parallel_for(group_begin.size() - 1, [&](std::size_t g) {
    const std::vector<std::int64_t> members(by_category.begin() + static_cast<std::ptrdiff_t>(group_begin[g]),
                                            by_category.begin() + static_cast<std::ptrdiff_t>(group_begin[g + 1]));
    const std::vector<std::int64_t> ranked = rank_stable(members, scores);
    RankedBoxes<T> b(ranked.size());
    for (std::size_t r = 0; r < ranked.size(); ++r) {
      const T* box = boxes + 4 * static_cast<std::size_t>(ranked[r]);
      b.set(r, box[0], box[1], box[2], box[3]);
    }
    std::vector<std::uint8_t> suppressed(ranked.size(), 0);
    greedy_suppress(b, threshold, suppressed.data());
    for (std::size_t r = 0; r < ranked.size(); ++r) {
      if (!suppressed[r]) kept_flag[static_cast<std::size_t>(ranked[r])] = 1;
    }
  });

  std::vector<std::int64_t> kept;
  for (std::size_t k = 0; k < n; ++k) {
    if (kept_flag[k]) kept.push_back(static_cast<std::int64_t>(k));
  }
  const std::vector<std::int64_t> ranked = rank_like_unstable_torch_sort(kept, scores);
  std::copy(ranked.begin(), ranked.end(), keep_out);
  return ranked.size();
}

template <typename T>
std::size_t batched_nms_impl(std::size_t n, const T* boxes, const double* scores,
                             const std::int64_t* categories, double iou_threshold,
                             std::int64_t* keep_out) {
  if (n == 0) return 0;
  const T threshold = threshold_in<T>(iou_threshold);
  if (n <= kNmsCoordinateTrickMaxBoxes) {
    return nms_coordinate_trick(n, boxes, scores, categories, threshold, keep_out);
  }
  return nms_per_category(n, boxes, scores, categories, threshold, keep_out);
}

}  // namespace

std::size_t batched_nms(std::size_t n, const float* boxes, const double* scores,
                        const std::int64_t* categories, double iou_threshold,
                        std::int64_t* keep_out) {
  return batched_nms_impl(n, boxes, scores, categories, iou_threshold, keep_out);
}

std::size_t batched_nms(std::size_t n, const double* boxes, const double* scores,
                        const std::int64_t* categories, double iou_threshold,
                        std::int64_t* keep_out) {
  return batched_nms_impl(n, boxes, scores, categories, iou_threshold, keep_out);
}

}  // namespace samrt
