"""Binary mask utilities backed by samrt's C++ kernels (numpy in, numpy out).

COCO RLE (equal to pycocotools), batched NMS (equal to torchvision) and small-region
cleanup (equal to segment_anything.utils.amg.remove_small_regions): each reproduces the
function the official SAM pipeline calls, result for result, with its work done in
samrt._core with the GIL released.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any, TypedDict, overload

import numpy as np
import numpy.typing as npt

from . import _core

__all__ = [
    "CompressedRle",
    "UncompressedRle",
    "batched_nms",
    "compress_rle",
    "decode_rle",
    "decompress_rle",
    "encode_rle",
    "remove_small_regions",
    "remove_small_regions_batch",
    "rle_area",
    "rle_iou",
    "rle_to_bbox",
]

# --- RLE ---
#
# COCO run-length encoding, byte-compatible with pycocotools. A mask of size [H, W] is
# read in column-major order (down each column, columns left to right) as alternating
# run lengths, the first run being background (length 0 when the first pixel is
# foreground). The uncompressed form keeps these counts as a list of ints (as
# segment_anything.utils.amg.mask_to_rle_pytorch makes it); the compressed form packs
# them into COCO's ASCII counts string (bytes here; str, as in COCO json files, is also
# read). Run lengths are 32-bit, so H*W may be at most 2**32 - 1.
#
# Functions that read RLEs take one dict or a sequence of dicts; the read-only ones
# (decode_rle, rle_area, rle_to_bbox, rle_iou) take either form. Bad input raises
# TypeError (wrong types) or ValueError (bad values: sizes, counts that do not sum to
# H*W, malformed counts strings, sizes that disagree), naming the argument and item.


class CompressedRle(TypedDict):
    """COCO compressed RLE, as pycocotools.mask.encode returns it."""

    size: list[int]  # [H, W]
    counts: bytes


class UncompressedRle(TypedDict):
    """COCO uncompressed RLE: column-major run lengths, background first."""

    size: list[int]  # [H, W]
    counts: list[int]


RleLike = Mapping[str, Any]
_COMPRESSED_TYPES = (bytes, bytearray, str)
_MAX_SIDE = 2**32 - 1  # run lengths are uint32


class _Rles:
    """RLE dicts split into what the kernels take: counts and sizes [N, 2]."""

    def __init__(self, rles: RleLike | Sequence[RleLike], name: str) -> None:
        self.name = name
        self.single = isinstance(rles, Mapping)
        if isinstance(rles, Mapping):
            items: list[Any] = [rles]
        elif isinstance(rles, (Sequence, np.ndarray)) and not isinstance(rles, _COMPRESSED_TYPES):
            items = list(rles)
        else:
            raise TypeError(
                f"{name} must be an RLE dict or a sequence of them, got {type(rles).__name__}"
            )
        self.counts: list[Any] = []
        sizes: list[tuple[int, int]] = []
        for i, rle in enumerate(items):
            if type(rle) is not dict and not isinstance(rle, Mapping):
                raise TypeError(
                    f"{self.label(i)} must be an RLE dict with 'size' and 'counts', "
                    f"got {type(rle).__name__}"
                )
            try:
                size, counts = rle["size"], rle["counts"]
            except KeyError as e:
                raise ValueError(f"{self.label(i)} has no {e.args[0]!r} key") from None
            # The usual [h, w] of plain ints skips the general check (big lists of RLEs).
            if (
                type(size) is list
                and len(size) == 2
                and type(size[0]) is int
                and type(size[1]) is int
                and 0 <= size[0] <= _MAX_SIDE
                and 0 <= size[1] <= _MAX_SIDE
            ):
                sizes.append((size[0], size[1]))
            else:
                sizes.append(_check_size(size, self.label(i)))
            self.counts.append(counts)
        self.sizes = np.array(sizes, dtype=np.int64).reshape(len(sizes), 2)

    def __len__(self) -> int:
        return len(self.counts)

    def label(self, i: int) -> str:
        return self.name if self.single else f"{self.name}[{i}]"

    def require(self, compressed: bool) -> None:
        for i, counts in enumerate(self.counts):
            if isinstance(counts, _COMPRESSED_TYPES) != compressed:
                want = (
                    "compressed (bytes or str)"
                    if compressed
                    else "uncompressed (a sequence of ints)"
                )
                raise TypeError(
                    f"{self.label(i)}: counts must be {want}, got {type(counts).__name__}"
                )

    def common_size(self, others: _Rles | None = None) -> tuple[int, int] | None:
        """The one size of all RLEs here (and in others), None when there are none."""
        groups = [g for g in (self, others) if g is not None and len(g) > 0]
        if not groups:
            return None
        first = groups[0].sizes[0]
        for group in groups:
            differ = np.flatnonzero((group.sizes != first).any(axis=1))
            if differ.size > 0:
                i = int(differ[0])
                raise ValueError(
                    f"{group.label(i)} has size {group.sizes[i].tolist()} but {groups[0].label(0)} "
                    f"has {first.tolist()}; masks that are combined must all have one size"
                )
        return int(first[0]), int(first[1])


def _renamed(error: Exception, *groups: _Rles) -> Exception:
    """A kernel error as ValueError or TypeError, led by the argument's name (without
    the item index "[0]" where the argument was a single dict)."""
    message = str(error)
    for group in groups:
        if message.startswith(group.name):
            indexed = f"{group.name}[0]"
            if group.single and message.startswith(indexed):
                message = group.name + message[len(indexed) :]
            break
    else:
        message = f"{groups[0].name}: {message}"
    return (TypeError if isinstance(error, TypeError) else ValueError)(message)


def _check_size(size: Any, label: str) -> tuple[int, int]:
    is_sequence = isinstance(size, (Sequence, np.ndarray)) and not isinstance(
        size, _COMPRESSED_TYPES
    )
    values = list(size) if is_sequence else []
    if (
        len(values) != 2
        or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values
        )
        or any(v < 0 for v in values)
    ):
        raise ValueError(f"{label}: size must be [H, W], two non-negative integers, got {size!r}")
    if any(v > _MAX_SIDE for v in values):
        raise ValueError(
            f"{label}: size {size!r} has a side over 2**32-1 pixels, which RLE counts cannot hold"
        )
    return int(values[0]), int(values[1])


def _as_mask_stack(masks: npt.ArrayLike, name: str) -> tuple[npt.NDArray[Any], bool]:
    """[N, H, W] bool or uint8 masks, and whether the input was one [H, W] mask."""
    array = np.asarray(masks)
    if array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"{name} must be a bool or integer array (nonzero = foreground), got dtype {array.dtype}; "
            "threshold float masks first, e.g. masks > 0"
        )
    if array.ndim not in (2, 3):
        raise ValueError(f"{name} must be [H, W] or [N, H, W], got shape {array.shape}")
    if array.dtype not in (np.bool_, np.uint8):
        array = array != 0
    return (array[np.newaxis], True) if array.ndim == 2 else (array, False)


def encode_rle(masks: npt.ArrayLike) -> CompressedRle | list[CompressedRle]:
    """COCO compressed RLE of one mask [H, W] (a dict) or of each of masks [N, H, W] (a list).

    masks: bool or integer array, nonzero = foreground, any memory layout (C or Fortran
    order, or strided views). Float arrays are refused with TypeError: threshold them
    first. The counts are byte-identical to pycocotools.mask.encode of the same 0/1
    masks in Fortran order (pycocotools itself would split runs where a uint8 mask holds
    other nonzero values; here every nonzero value is foreground).
    """
    stack, single = _as_mask_stack(masks, "masks")
    counts = _core.rle_encode(stack)
    size = [int(stack.shape[1]), int(stack.shape[2])]
    encoded: list[CompressedRle] = [{"size": list(size), "counts": c} for c in counts]
    return encoded[0] if single else encoded


def decode_rle(rles: RleLike | Sequence[RleLike]) -> npt.NDArray[np.bool_]:
    """Masks from RLEs (compressed or uncompressed): one dict gives [H, W] bool; a
    sequence gives [N, H, W] bool, C order (all sizes must agree; an empty sequence gives
    shape (0, 0, 0)).

    This is pycocotools.mask.decode transposed: pycocotools returns [H, W, N] uint8 in
    Fortran order.
    """
    parsed = _Rles(rles, "rles")
    size = parsed.common_size()
    if size is None:
        return np.zeros((0, 0, 0), dtype=np.bool_)
    try:
        masks = _core.rle_decode(parsed.counts, size[0], size[1])
    except (TypeError, ValueError) as e:
        raise _renamed(e, parsed) from None
    return masks[0] if parsed.single else masks


@overload
def rle_area(rles: RleLike) -> int: ...
@overload
def rle_area(rles: Sequence[RleLike]) -> npt.NDArray[np.int64]: ...
def rle_area(rles: RleLike | Sequence[RleLike]) -> int | npt.NDArray[np.int64]:
    """Foreground pixel count: an int for one dict, int64 [N] for a sequence (equal to
    pycocotools.mask.area, which returns uint32)."""
    parsed = _Rles(rles, "rles")
    try:
        areas = _core.rle_area(parsed.counts, parsed.sizes)
    except (TypeError, ValueError) as e:
        raise _renamed(e, parsed) from None
    return int(areas[0]) if parsed.single else areas


def rle_to_bbox(rles: RleLike | Sequence[RleLike]) -> npt.NDArray[np.float64]:
    """Tight foreground box [x, y, width, height] in pixels, float64: [4] for one dict,
    [N, 4] for a sequence; all zeros for an empty mask. Equal to pycocotools.mask.toBbox,
    except that pycocotools also boxes the pixels next to a zero-length foreground run
    (which encoders never write)."""
    parsed = _Rles(rles, "rles")
    try:
        boxes = _core.rle_to_bbox(parsed.counts, parsed.sizes)
    except (TypeError, ValueError) as e:
        raise _renamed(e, parsed) from None
    return boxes[0] if parsed.single else boxes


def rle_iou(
    dt: RleLike | Sequence[RleLike],
    gt: RleLike | Sequence[RleLike],
    iscrowd: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """IoU of every dt mask with every gt mask: float64 [D, G] (one dict counts as a
    sequence of one), equal to pycocotools.mask.iou(dt, gt, iscrowd).

    iscrowd: one flag per gt (None: none is a crowd). Against a crowd gt the intersection
    is divided by the dt area instead of the union. All masks must have one size. Where
    either side is empty the result is an empty [D, G] array.
    """
    parsed_dt, parsed_gt = _Rles(dt, "dt"), _Rles(gt, "gt")
    size = parsed_dt.common_size(parsed_gt) or (0, 0)
    if iscrowd is None:
        crowd = np.zeros(len(parsed_gt), dtype=np.bool_)
    else:
        crowd = np.asarray(iscrowd)
        if crowd.size == 0:  # np.asarray([]) is float64
            crowd = crowd.astype(np.bool_)
        if crowd.dtype != np.bool_ and not np.issubdtype(crowd.dtype, np.integer):
            raise TypeError(f"iscrowd must hold bools or integers, got dtype {crowd.dtype}")
        if crowd.shape != (len(parsed_gt),):
            raise ValueError(
                f"iscrowd must have one flag per gt ({len(parsed_gt)}), got shape {crowd.shape}"
            )
    try:
        return _core.rle_iou(parsed_dt.counts, parsed_gt.counts, size[0], size[1], crowd)
    except (TypeError, ValueError) as e:
        raise _renamed(e, parsed_dt, parsed_gt) from None


@overload
def compress_rle(rles: RleLike) -> CompressedRle: ...
@overload
def compress_rle(rles: Sequence[RleLike]) -> list[CompressedRle]: ...
def compress_rle(rles: RleLike | Sequence[RleLike]) -> CompressedRle | list[CompressedRle]:
    """Compressed RLE(s) from uncompressed ones ({"size": [H, W], "counts": [ints]}, as
    segment_anything's mask_to_rle_pytorch makes them); counts are bytes, identical to
    pycocotools.mask.frPyObjects (segment_anything's coco_encode_rle decodes them to str)."""
    parsed = _Rles(rles, "rles")
    parsed.require(compressed=False)
    try:
        counts = _core.rle_compress(parsed.counts, parsed.sizes)
    except (TypeError, ValueError) as e:
        raise _renamed(e, parsed) from None
    out: list[CompressedRle] = [
        {"size": [int(h), int(w)], "counts": c} for (h, w), c in zip(parsed.sizes.tolist(), counts)
    ]
    return out[0] if parsed.single else out


@overload
def decompress_rle(rles: RleLike) -> UncompressedRle: ...
@overload
def decompress_rle(rles: Sequence[RleLike]) -> list[UncompressedRle]: ...
def decompress_rle(rles: RleLike | Sequence[RleLike]) -> UncompressedRle | list[UncompressedRle]:
    """Uncompressed RLE(s) (counts as a list of ints) from compressed ones (counts bytes
    or str); the inverse of compress_rle."""
    parsed = _Rles(rles, "rles")
    parsed.require(compressed=True)
    try:
        counts = _core.rle_decompress(parsed.counts, parsed.sizes)
    except (TypeError, ValueError) as e:
        raise _renamed(e, parsed) from None
    out: list[UncompressedRle] = [
        {"size": [int(h), int(w)], "counts": c} for (h, w), c in zip(parsed.sizes.tolist(), counts)
    ]
    return out[0] if parsed.single else out



def _check_real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int (or Fraction) like 10**400: no float holds it
        raise ValueError(f"{name} is beyond the float64 range") from None
    if math.isnan(number):
        raise ValueError(f"{name} is NaN")
    return number


# --- NMS ---


def batched_nms(
    boxes: npt.ArrayLike,
    scores: npt.ArrayLike,
    idxs: npt.ArrayLike,
    iou_threshold: float,
) -> npt.NDArray[np.int64]:
    """Non-maximum suppression per category, as ``torchvision.ops.batched_nms`` on CPU.

    A box is dropped when its IoU with a kept, better-ranked box of the same category is
    greater than ``iou_threshold``. The result equals torchvision's, tie order included:
    up to 1000 boxes, torchvision shifts each category's boxes apart by
    ``category * (max coordinate + 1)`` in the box dtype and runs one NMS (ties ranked by
    ascending index); above 1000 it runs one NMS per category and re-sorts the kept boxes
    with torch's unstable sort, whose tie order (std::sort's, which torch's CPU sort uses
    on this kind of build; x86-simd-sort builds of torch may order ties differently) is
    reproduced here. That last sort only orders the output: which boxes survive never
    depends on it.

    Args:
        boxes: ``[N, 4]`` boxes ``(x0, y0, x1, y1)``. float32 and float64 are computed in
            their own precision (IoU rounding follows the dtype, as in torchvision);
            integer boxes are converted to float32, as the SAM generator's ``.float()``
            does. Degenerate boxes (``x1 < x0``) go through the same arithmetic as in
            torchvision.
        scores: ``[N]`` scores (float or integer; NaN is refused).
        idxs: ``[N]`` integer category ids; boxes of different categories never
            suppress each other (except through torchvision's own coordinate-trick
            overlap when coordinates are negative, which is reproduced).
        iou_threshold: IoU above which a box is suppressed.

    Returns:
        int64 ``[K]``: indices of the kept boxes in decreasing score order (empty for
        no boxes).

    Raises:
        TypeError: a wrong dtype for ``boxes``, ``scores`` or ``idxs``, or a
            non-numeric ``iou_threshold``.
        ValueError: wrong shapes, NaN in ``boxes``, ``scores`` or ``iou_threshold``, an
            ``iou_threshold`` beyond the float64 range.
    """
    box_array = np.asarray(boxes)
    score_array = np.asarray(scores)
    idx_array = np.asarray(idxs)
    if box_array.ndim == 1 and box_array.size == 0:
        box_array = box_array.reshape(0, 4)  # [] is "no boxes", as in torchvision
    if box_array.dtype.kind in "iu":
        box_array = box_array.astype(np.float32)
    elif box_array.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"boxes must be float32, float64 or integer, got {box_array.dtype}")
    if score_array.dtype.kind not in "fiu":
        raise TypeError(f"scores must be floating point or integer, got {score_array.dtype}")
    if idx_array.dtype.kind not in "iu":
        raise TypeError(f"idxs must be integer category ids, got {idx_array.dtype}")
    threshold = _check_real(iou_threshold, "iou_threshold")
    return _core.batched_nms(
        box_array, score_array.astype(np.float64), idx_array.astype(np.int64), threshold
    )


# --- Small regions ---

_REGION_MODES = ("holes", "islands")


def _mask_bytes(mask: object, name: str, ndim: int) -> npt.NDArray[np.uint8]:
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(mask).__name__}")
    if mask.dtype not in (np.dtype(np.bool_), np.dtype(np.uint8)):
        raise TypeError(f"{name} must be bool or uint8, got {mask.dtype}")
    if mask.ndim != ndim:
        shape = "[H, W]" if ndim == 2 else "[N, H, W]"
        raise ValueError(f"{name} must be {ndim}-D {shape}, got shape {mask.shape}")
    # bool and uint8 share one byte per pixel: the kernels read either without a copy.
    return mask.view(np.uint8)


def _check_region_args(area_thresh: float, mode: str) -> float:
    threshold = _check_real(area_thresh, "area_thresh")
    if threshold < 0:
        raise ValueError(f"area_thresh must be >= 0, got {area_thresh}")
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, got {type(mode).__name__}")
    if mode not in _REGION_MODES:
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    return threshold


def remove_small_regions(
    mask: npt.NDArray[np.bool_] | npt.NDArray[np.uint8], area_thresh: float, mode: str
) -> tuple[npt.NDArray[np.bool_] | npt.NDArray[np.uint8], bool]:
    """Fills small holes or erases small islands, as
    ``segment_anything.utils.amg.remove_small_regions``.

    Regions are 8-connected. ``"holes"``: background regions (the one touching the border
    included) of fewer than ``area_thresh`` pixels are filled. ``"islands"``: mask regions
    of fewer than ``area_thresh`` pixels are erased, except that when every region is
    small the largest one is kept (among equally large ones, the one OpenCV labels first).

    Args:
        mask: ``[H, W]`` bool or uint8 mask (nonzero = inside), H and W > 0.
        area_thresh: a region of ``s`` pixels is small when ``s < area_thresh``; >= 0.
        mode: ``"holes"`` or ``"islands"``.

    Returns:
        ``(mask, changed)``. When no region is small, ``mask`` is the input array itself
        and ``changed`` is False; otherwise a new bool array and True (True even when the
        result equals the input, as when the only island is small and so kept).

    Raises:
        TypeError: ``mask`` not a bool/uint8 numpy array, or ``mode`` not a str.
        ValueError: ``mask`` not 2-D or empty, ``area_thresh`` negative, NaN or beyond the
            float64 range, unknown ``mode``.
    """
    data = _mask_bytes(mask, "mask", 2)
    threshold = _check_region_args(area_thresh, mode)
    cleaned, changed = _core.remove_small_regions(data, threshold, mode)
    if cleaned is None:
        return mask, False
    return cleaned, changed


def remove_small_regions_batch(
    masks: npt.NDArray[np.bool_] | npt.NDArray[np.uint8], area_thresh: float, mode: str
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """``remove_small_regions`` on every mask of a stack, in parallel with the GIL released.

    Args:
        masks: ``[N, H, W]`` bool or uint8 masks (nonzero = inside); N may be 0.
        area_thresh: as in :func:`remove_small_regions`.
        mode: ``"holes"`` or ``"islands"``.

    Returns:
        ``(masks, changed)``: a new bool ``[N, H, W]`` array (unchanged masks copied, as
        bool) and bool ``[N]``, True where :func:`remove_small_regions` reports a change.

    Raises:
        TypeError: ``masks`` not a bool/uint8 numpy array, or ``mode`` not a str.
        ValueError: ``masks`` not 3-D, H or W zero with N > 0, ``area_thresh`` negative,
            NaN or beyond the float64 range, unknown ``mode``.
    """
    data = _mask_bytes(masks, "masks", 3)
    threshold = _check_region_args(area_thresh, mode)
    return _core.remove_small_regions_batch(data, threshold, mode)
