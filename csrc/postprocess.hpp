// SAM's mask post-processing, fused: from the decoder's low-resolution logits straight to
// full-resolution masks, their statistics and their COCO run-length encoding.
//
// The official pipeline (Sam.postprocess_masks) upsamples every mask in two bilinear
// steps (align_corners=False): the src_h x src_w logits to the padded model input
// (padded x padded), then the crop [:input_h, :input_w] of that to out_h x out_w. Both
// steps are separable with non-negative weights that sum to 1, so each output row
// (column) is a fixed combination of at most 3 consecutive source rows (columns). The
// kernels here precompute those per-axis taps once per call and evaluate the composite
// directly: source rows are interpolated across the output columns as needed (a worker
// holds at most 4 of them), then combined into output rows. mask_stats walks each tile of
// 64 output columns top to bottom, for column-major RLE; the dense outputs are written in
// row-major bands. Thresholded outputs skip the arithmetic wherever every contributing
// source value lies on the same side of every threshold (a convex combination cannot
// cross a threshold its inputs all clear).
//
// Values agree with the official float32 torch path up to rounding (about 1e-6 of the
// logits' magnitude): a pixel whose interpolated logit is within rounding of a threshold
// may fall on either side of it. NaN logits spread to every output pixel whose
// interpolation window contains them (including zero-weight window entries), and a NaN
// output is above no threshold, as `NaN > t` is false in torch. Thresholded results treat
// infinite logits as very large values (torch can get NaN from 0 * inf there).
//
// Work is spread over samrt::parallel_for. All functions validate their arguments and
// throw std::invalid_argument naming the problem.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace samrt {

// Sizes of the two-step upsampling, in pixels.
struct UpsampleGeometry {
  int src_h = 0, src_w = 0;      // low-resolution logits (SAM: 256 x 256)
  int padded_size = 0;           // side of the square model input (SAM: 1024)
  int input_h = 0, input_w = 0;  // resized image inside the padded input: 1..padded_size
  int out_h = 0, out_w = 0;      // original image (or crop) size: >= 1
};

// Throws std::invalid_argument unless 3 <= src_h, src_w <= padded_size, the input size
// lies within 1..padded_size, the output size is >= 1 and each output holds fewer than
// 2^32 pixels.
void check_geometry(const UpsampleGeometry& geometry);

// low_res: n_masks * src_h * src_w floats, row-major. out: n_masks * out_h * out_w floats,
// row-major: the upsampled logits.
void upsample_logits(const float* low_res, std::size_t n_masks, const UpsampleGeometry& geometry,
                     float* out);

// low_res as above. out: n_masks * out_h * out_w bytes, row-major: 1 where the upsampled
// logit is > threshold, else 0.
void upsample_masks(const float* low_res, std::size_t n_masks, const UpsampleGeometry& geometry,
                    float threshold, std::uint8_t* out);

struct MaskStatsOptions {
  // A pixel is in the mask when its upsampled logit is > threshold. The stability score
  // is count(> intersection_threshold) / count(> union_threshold) as a float32 division
  // (SAM: threshold + offset and threshold - offset; 0/0 gives NaN, as in torch).
  float threshold = 0.0f;
  float intersection_threshold = 1.0f;
  float union_threshold = -1.0f;
  // Where the out_h x out_w mask sits in the image that the RLE describes: its top-left
  // corner (crop_x0, crop_y0) in an image_h x image_w image, the rest being background.
  // Requires crop_x0 + out_w <= image_w, crop_y0 + out_h <= image_h and
  // image_h * image_w < 2^32.
  int crop_x0 = 0, crop_y0 = 0;
  int image_h = 0, image_w = 0;
  // When set, masks whose stability score is not >= rle_min_stability (NaN included) get
  // no RLE (has_rle 0, counts left empty).
  bool filter_rle = false;
  float rle_min_stability = 0.0f;
};

// Per-mask statistics and RLE of the thresholded upsampled logits, in one pass.
//   low_res:    n_masks * src_h * src_w floats
//   areas:      n_masks values: pixels in the mask
//   boxes:      n_masks * 4 values: x_min, y_min, x_max, y_max (inclusive) of the mask in
//               the out_h x out_w frame; 0, 0, 0, 0 for an empty mask
//   stability:  n_masks values
//   rle_counts: n_masks vectors (replaced): uncompressed COCO counts of the mask placed in
//               the image, column-major, starting with the background run (0 when the
//               first pixel is foreground), with no other zero-length run
//   has_rle:    n_masks bytes: 1 where rle_counts holds the counts, 0 where filtered out
void mask_stats(const float* low_res, std::size_t n_masks, const UpsampleGeometry& geometry,
                const MaskStatsOptions& options, std::int64_t* areas, std::int64_t* boxes,
                float* stability, std::vector<std::uint32_t>* rle_counts, std::uint8_t* has_rle);

}  // namespace samrt
