// Batched non-maximum suppression with torchvision.ops.batched_nms's exact semantics on CPU.
//
// The SAM automatic mask generator ranks many masks with tied scores, so "the same boxes
// survive" needs more than the same IoU formula. What torchvision does, and so what we do:
//  * n <= 1000 boxes: the "coordinate trick": every box is shifted by
//    category * (max coordinate + 1), computed in the box dtype, and one NMS runs over all
//    shifted boxes (so float rounding of the shifted coordinates, and any overlap between
//    categories when coordinates are negative, count as they do in torchvision). Output
//    order: descending score, ties by ascending index (torchvision's nms sorts stably).
//  * n > 1000 boxes: one NMS per category on the unshifted boxes (ties by index again),
//    then the kept boxes are ranked by torchvision's Python-level
//    scores[keep].sort(descending=True), which is NOT stable: torch's CPU sort runs
//    std::sort there, and we reproduce its tie order by running std::sort the same way.
//    This only orders the output; which boxes survive does not depend on it.
//  * IoU: areas (x1 - x0) * (y1 - y0), intersection max(0, .) clamped, inter / (a + b -
//    inter), all in the box dtype; a box is suppressed when IoU > iou_threshold (compared
//    in double). Degenerate boxes (x1 < x0) go through the same arithmetic.
#pragma once

#include <cstddef>
#include <cstdint>

namespace samrt {

// torchvision switches from the coordinate trick to per-category NMS above this many boxes.
constexpr std::size_t kNmsCoordinateTrickMaxBoxes = 1000;

// boxes: n * 4 values, row k = (x0, y0, x1, y1) of box k; no NaN.
// scores: n values, no NaN (float32 scores widened to double sort identically).
// categories: n category ids.
// keep_out: n slots; receives the kept indices, best first.
// Returns the number of kept boxes written to keep_out.
std::size_t batched_nms(std::size_t n, const float* boxes, const double* scores,
                        const std::int64_t* categories, double iou_threshold,
                        std::int64_t* keep_out);
std::size_t batched_nms(std::size_t n, const double* boxes, const double* scores,
                        const std::int64_t* categories, double iou_threshold,
                        std::int64_t* keep_out);

}  // namespace samrt
