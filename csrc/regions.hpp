// Small-region cleanup with the exact semantics of segment_anything.utils.amg.
// remove_small_regions (which labels with OpenCV's 8-connected components):
//  * holes mode: the 8-connected components of the background (zero pixels, the image
//    border region included) smaller than area_thresh are filled;
//  * islands mode: the 8-connected components of the mask smaller than area_thresh are
//    erased; when every component is small, the largest one is kept (ties: the component
//    OpenCV labels first, i.e. the one whose first 2x2 block in block-raster order comes
//    first, as its block-based labeling numbers them);
//  * "changed" is true as soon as one component is small, even if the result equals the
//    input (islands mode keeping its only, small, component).
// Labeling is run-based: runs of equal pixels per row, joined to the touching runs of the
// row above with a union-find, so memory grows with the number of runs, not of pixels.
#pragma once

#include <cstddef>
#include <cstdint>

namespace samrt {

enum class RegionMode { kHoles, kIslands };

// Largest height * width the kernels accept (run indices are int32).
constexpr std::size_t kMaxRegionPixels = 0x7fffffff;

// mask: height * width bytes, row-major; nonzero = inside the mask.
// out: height * width bytes; receives the cleaned mask as 0/1, written only when the
//   function returns true (the mask is "changed").
// area_thresh: >= 0; a component of s pixels is small when s < area_thresh.
// Requires 0 < height * width <= kMaxRegionPixels.
bool remove_small_regions(const std::uint8_t* mask, std::size_t height, std::size_t width,
                          double area_thresh, RegionMode mode, std::uint8_t* out);

// n masks at once, in parallel over the shared pool.
// masks: n * height * width bytes; out: n * height * width bytes, always written (0/1;
// an unchanged mask is copied); changed: n bytes, 1 where the mask was changed.
void remove_small_regions_batch(const std::uint8_t* masks, std::size_t n, std::size_t height,
                                std::size_t width, double area_thresh, RegionMode mode,
                                std::uint8_t* out, std::uint8_t* changed);

}  // namespace samrt
