// COCO run-length encoding (RLE) of binary masks, byte-compatible with pycocotools.
//
// An RLE describes an h x w mask read in column-major order (down column 0, then down
// column 1, ...) as alternating run lengths, background first: counts[0] is the length
// of the leading background run (0 when the first pixel is foreground), counts[1] the
// next foreground run, and so on. The counts sum to h*w. Encoding yields canonical
// counts (no zero-length run except possibly counts[0]; an image with no pixels is
// {0}); every other function also accepts zero-length runs anywhere.
//
// The compressed form (COCO's "counts" string) writes counts[i] for i <= 2, and
// counts[i] - counts[i-2] for i > 2, each as a signed little-endian group of 5-bit
// digits, one ASCII character (48 + digit, +32 when more digits follow) per digit.
//
// Counts are uint32, as in pycocotools, so h*w may be at most kRleMaxPixels. Functions
// given a size check the counts against it, and rle_decompress checks the string; they
// throw std::invalid_argument saying what is wrong, which batch functions prefix with
// "[i]: " for item i.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace samrt {

using RleCounts = std::vector<std::uint32_t>;

struct RleSize {
  std::size_t h = 0;
  std::size_t w = 0;
};

constexpr std::uint64_t kRleMaxPixels = 0xFFFFFFFFu;

// Throws unless h*w <= kRleMaxPixels.
void rle_check_size(std::size_t h, std::size_t w);

// Throws unless counts (n_counts values) sum to h*w.
void rle_check_counts(const std::uint32_t* counts, std::size_t n_counts, std::size_t h, std::size_t w);

// ---- Single masks -------------------------------------------------------------------

// mask: h*w bytes, row-major, nonzero = foreground. Returns canonical counts.
RleCounts rle_encode(const std::uint8_t* mask, std::size_t h, std::size_t w);

// mask: h*w bytes, column-major (mask[x*h + y]), nonzero = foreground. Same result as
// rle_encode of the row-major mask; lets Fortran-ordered arrays skip a transpose.
RleCounts rle_encode_column_major(const std::uint8_t* mask, std::size_t h, std::size_t w);

// counts: n_counts values. Returns the COCO counts string (as pycocotools writes it).
std::string rle_compress(const std::uint32_t* counts, std::size_t n_counts);

// chars: n_chars bytes. Inverse of rle_compress. Throws on a character outside
// '0'..'o', a truncated last group, a group of more than 12 characters, or a count
// outside [0, 2^32). Does not check the sum (see rle_check_counts).
RleCounts rle_decompress(const char* chars, std::size_t n_chars);

// mask: h*w bytes, row-major, written 0/1. Throws unless counts sum to h*w.
void rle_decode(const std::uint32_t* counts, std::size_t n_counts, std::size_t h, std::size_t w,
                std::uint8_t* mask);

// Number of foreground pixels.
std::uint64_t rle_area(const std::uint32_t* counts, std::size_t n_counts);

// xywh: 4 doubles, the tight box of the foreground in pixels (x, y, width, height);
// all 0 for an empty mask. Equal to pycocotools.mask.toBbox (which, unlike this, also
// counts the pixels around a zero-length foreground run).
void rle_bbox(const std::uint32_t* counts, std::size_t n_counts, std::size_t h, std::size_t w,
              double* xywh);

// Foreground pixels common to two RLEs of the same size (counts sum to the same total).
std::uint64_t rle_intersection(const std::uint32_t* a, std::size_t n_a, const std::uint32_t* b,
                               std::size_t n_b);

// Intersection over union of two RLEs of the same size; with crowd, intersection over
// the area of `a` (COCO's rule for crowd ground truth b). 0 when they do not meet.
double rle_iou(const std::uint32_t* a, std::size_t n_a, const std::uint32_t* b, std::size_t n_b, bool crowd);

// ---- Batches, parallel over items with samrt::parallel_for ---------------------------

// masks: n*h*w bytes, n row-major masks (column-major ones if column_major). out: n.
void rle_encode_compressed_batch(const std::uint8_t* masks, std::size_t n, std::size_t h,
                                 std::size_t w, bool column_major, std::string* out);

// strings, sizes, out: n each. out[i] = rle_decompress(strings[i]), except where
// strings[i].data() is null: there out[i] already holds counts. Then checks every
// out[i] sums to its size.
void rle_decompress_batch(const std::string_view* strings, const RleSize* sizes, std::size_t n,
                          RleCounts* out);

// rles, sizes: n each. Checks each sum against its size.
void rle_check_counts_batch(const RleCounts* rles, const RleSize* sizes, std::size_t n);

// rles, out: n each.
void rle_compress_batch(const RleCounts* rles, std::size_t n, std::string* out);

// rles: n, each of size h x w. masks: n*h*w bytes, row-major, written 0/1.
void rle_decode_batch(const RleCounts* rles, std::size_t n, std::size_t h, std::size_t w,
                      std::uint8_t* masks);

// rles: n. areas: n.
void rle_area_batch(const RleCounts* rles, std::size_t n, std::uint64_t* areas);

// rles, sizes: n. xywh: 4*n.
void rle_bbox_batch(const RleCounts* rles, const RleSize* sizes, std::size_t n, double* xywh);

// dt: n_dt, gt: n_gt, all of size h x w (checked; errors start "dt[i]" or "gt[i]");
// iscrowd: n_gt (nonzero = crowd).
// iou: n_dt*n_gt, row-major [dt][gt]: intersection over union, or over the dt area where
// the gt is a crowd region, 0 where the intersection is empty (as pycocotools.mask.iou).
void rle_iou_matrix(const RleCounts* dt, std::size_t n_dt, const RleCounts* gt, std::size_t n_gt,
                    std::size_t h, std::size_t w, const std::uint8_t* iscrowd, double* iou);

}  // namespace samrt
