"""From SAM's low-resolution mask logits to full-resolution masks, in one fused C++ pass.

The official pipeline (``Sam.postprocess_masks`` and the helpers of
``segment_anything.utils.amg``) upsamples every mask to the original image size as float32,
then thresholds, measures and run-length encodes it in separate passes. Here each mask is
upsampled tile by tile (the composite of SAM's two bilinear resizes is evaluated directly
from per-axis tap tables) and thresholded, measured and encoded on the fly, on samrt's
thread pool with the GIL released; regions where every contributing low-resolution logit
is clearly on one side of the thresholds are filled without arithmetic.

Results agree with the official torch path up to float rounding: logits within about 1e-6
of their magnitude, so a pixel whose logit is within rounding of a threshold may land on
either side of it (in practice a handful of pixels per million, if any).

Non-finite logits: ``NaN > t`` is false (as in torch), so a NaN logit makes every output
pixel whose interpolation window reads it NaN, i.e. background for every threshold and
counted in neither stability count (the window may reach one low-res pixel further than
torch's). Infinite logits act as very large values in the thresholded results, where torch
can instead produce NaN (a zero interpolation weight times infinity); SAM's decoder
produces neither.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _core, contract

__all__ = ["MaskStats", "masks_from_logits", "upsample_logits", "upsample_masks"]


@dataclass(frozen=True)
class MaskStats:
    """Per-mask results of :func:`masks_from_logits`, for M masks.

    Attributes:
        areas: int64 [M], pixels in each mask (upsampled logit > threshold).
        boxes: int64 [M, 4], XYXY with inclusive ends in the crop's own pixel coordinates
            (``batched_mask_to_box``); ``[0, 0, 0, 0]`` for an empty mask.
        stability: float32 [M], ``calculate_stability_score``: the count of logits above
            ``threshold + offset`` over the count above ``threshold - offset`` (NaN when both
            are 0).
        rle_counts: M entries, each the uncompressed COCO RLE counts (uint32, column-major,
            background run first, as ``mask_to_rle_pytorch`` gives) of the mask placed in its
            crop of the full image, or None where ``rle_min_stability`` dropped it.
        rle_size: (height, width) of the image the RLEs describe.
    """

    areas: npt.NDArray[np.int64]
    boxes: npt.NDArray[np.int64]
    stability: npt.NDArray[np.float32]
    rle_counts: list[npt.NDArray[np.uint32] | None]
    rle_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.areas.shape[0])


def upsample_logits(
    low_res: npt.ArrayLike,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    *,
    padded_size: int = contract.IMAGE_SIZE,
) -> npt.NDArray[np.float32]:
    """The official ``Sam.postprocess_masks``: upsampled logits at the original size.

    Args:
        low_res: decoder logits, [M, 256, 256] or [B, C, 256, 256], any float dtype.
        input_size: (h, w) of the resized image inside SAM's 1024 x 1024 input, each in
            1..1024 (the padding beyond it is cropped away).
        original_size: (H, W) of the original image (or crop), each >= 1.
        padded_size: side of the square frame the logits are first upsampled to (SAM's
            1024 input); ``LOW_RES_SIZE`` with input_size (256, 256) makes it the one
            bilinear resize from 256 x 256 to the original size that SAM 2 does.

    Returns:
        float32 [M, H, W] (or [B, C, H, W]).
    """
    logits, leading = _low_res(low_res)
    input_hw = _input_size(input_size, padded_size)
    original_hw = _size(original_size, "original_size")
    out = _core.upsample_logits(logits, input_hw, original_hw, padded_size)
    return out.reshape(*leading, *original_hw)


def upsample_masks(
    low_res: npt.ArrayLike,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    threshold: float = contract.MASK_THRESHOLD,
    *,
    padded_size: int = contract.IMAGE_SIZE,
) -> npt.NDArray[np.bool_]:
    """``upsample_logits(...) > threshold``, without materializing the float logits.

    Arguments as for :func:`upsample_logits`; ``threshold`` must be finite.

    Returns:
        bool [M, H, W] (or [B, C, H, W]).
    """
    logits, leading = _low_res(low_res)
    input_hw = _input_size(input_size, padded_size)
    original_hw = _size(original_size, "original_size")
    out = _core.upsample_masks(
        logits, input_hw, original_hw, padded_size, _finite(threshold, "threshold")
    )
    return out.reshape(*leading, *original_hw)


def masks_from_logits(
    low_res: npt.ArrayLike,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    *,
    threshold: float = contract.MASK_THRESHOLD,
    stability_offset: float = 1.0,
    crop_box: tuple[int, int, int, int] | None = None,
    image_size: tuple[int, int] | None = None,
    rle_min_stability: float | None = None,
    padded_size: int = contract.IMAGE_SIZE,
) -> MaskStats:
    """Areas, boxes, stability scores and RLEs of the upsampled, thresholded masks.

    What the automatic mask generator's ``_process_batch`` computes from the logits with
    ``postprocess_masks``, ``calculate_stability_score``, ``batched_mask_to_box``,
    ``uncrop_masks`` and ``mask_to_rle_pytorch``, in one pass that never holds a
    full-resolution mask.

    Args:
        low_res: decoder logits, [M, 256, 256] or [B, C, 256, 256] (flattened to
            M = B * C), any float dtype.
        input_size: (h, w) of the resized crop inside SAM's 1024 x 1024 input, in 1..1024.
        original_size: (H, W) of the crop the masks cover, each >= 1.
        threshold: mask threshold (SAM's ``mask_threshold``, 0.0).
        stability_offset: the stability score's threshold offset.
        crop_box: (x0, y0, x1, y1) of the crop in the full image, x1 - x0 == W and
            y1 - y0 == H; None when the masks cover the whole image.
        image_size: (height, width) of the full image; required with ``crop_box``, else
            defaults to ``original_size`` (and must equal it).
        rle_min_stability: masks whose stability score is not >= this (NaN included) get
            None instead of RLE counts; the generator drops them anyway.
        padded_size: as for :func:`upsample_logits`.

    Returns:
        A :class:`MaskStats` for the M masks.
    """
    logits, _ = _low_res(low_res)
    input_hw = _input_size(input_size, padded_size)
    original_hw = _size(original_size, "original_size")
    crop_origin, full_hw = _placement(crop_box, image_size, original_hw)
    min_stability = (
        None if rle_min_stability is None else _finite(rle_min_stability, "rle_min_stability")
    )
    areas, boxes, stability, rles = _core.mask_stats(
        logits,
        input_hw,
        original_hw,
        padded_size,
        _finite(threshold, "threshold"),
        _finite(stability_offset, "stability_offset"),
        crop_origin,
        full_hw,
        min_stability,
    )
    return MaskStats(
        areas=areas, boxes=boxes, stability=stability, rle_counts=rles, rle_size=full_hw
    )


# -- argument checks ---------------------------------------------------------------------


def _low_res(value: npt.ArrayLike) -> tuple[npt.NDArray[np.float32], tuple[int, ...]]:
    """The logits as a C-contiguous float32 [M, 256, 256] array, and their leading dims."""
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"low_res must hold floating-point logits, got dtype {array.dtype}")
    size = contract.LOW_RES_SIZE
    if array.ndim not in (3, 4) or array.shape[-2:] != (size, size):
        raise ValueError(
            f"low_res must be [M, {size}, {size}] or [B, C, {size}, {size}], got shape {array.shape}"
        )
    leading = tuple(int(d) for d in array.shape[:-2])
    flat = np.ascontiguousarray(array.reshape(-1, size, size), dtype=np.float32)
    return flat, leading


def _int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}"
        ) from None


def _ints(value: Any, count: int, name: str) -> tuple[int, ...]:
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of {count} integers, got {value!r}") from None
    if len(items) != count:
        raise ValueError(f"{name} must have {count} values, got {len(items)}: {value!r}")
    return tuple(_int(v, name) for v in items)


def _size(value: Any, name: str) -> tuple[int, int]:
    height, width = _ints(value, 2, name)
    if height < 1 or width < 1:
        raise ValueError(f"{name} must be (height, width) with both >= 1, got {(height, width)}")
    return height, width


def _input_size(value: Any, padded_size: int = contract.IMAGE_SIZE) -> tuple[int, int]:
    padded = _int(padded_size, "padded_size")
    if not contract.LOW_RES_SIZE <= padded <= contract.IMAGE_SIZE:
        raise ValueError(
            f"padded_size must lie in {contract.LOW_RES_SIZE}..{contract.IMAGE_SIZE}, got {padded}"
        )
    height, width = _size(value, "input_size")
    if height > padded or width > padded:
        raise ValueError(
            f"input_size must lie within the {padded}x{padded} model input, got {(height, width)}"
        )
    return height, width


def _finite(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}") from None
    except OverflowError:  # an int like 10**400: beyond every float, so not finite
        raise ValueError(f"{name} must be finite, got a number beyond the float64 range") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


def _placement(
    crop_box: Any, image_size: Any, original_hw: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(x0, y0) of the crop and (height, width) of the full image."""
    if crop_box is None:
        full_hw = original_hw if image_size is None else _size(image_size, "image_size")
        if full_hw != original_hw:
            raise ValueError(
                f"image_size {full_hw} differs from original_size {original_hw} without a crop_box; "
                "pass the crop_box the masks cover"
            )
        return (0, 0), full_hw
    if image_size is None:
        raise ValueError("crop_box needs image_size, the (height, width) of the full image")
    full_hw = _size(image_size, "image_size")
    x0, y0, x1, y1 = _ints(crop_box, 4, "crop_box")
    if not (0 <= x0 < x1 <= full_hw[1] and 0 <= y0 < y1 <= full_hw[0]):
        raise ValueError(
            f"crop_box {(x0, y0, x1, y1)} must lie inside the image of size {full_hw} (height, width)"
        )
    if (y1 - y0, x1 - x0) != original_hw:
        raise ValueError(
            f"crop_box {(x0, y0, x1, y1)} covers {(y1 - y0, x1 - x0)} pixels (height, width), "
            f"but original_size is {original_hw}"
        )
    return (x0, y0), full_hw
