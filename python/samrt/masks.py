"""Mask post-processing for the automatic mask generator, on numpy arrays.

Each function reproduces the function the official SAM pipeline calls (torchvision,
segment_anything.utils.amg) result for result, with its work done in samrt._core.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import numpy.typing as npt

from . import _core

__all__ = ["batched_nms", "remove_small_regions", "remove_small_regions_batch"]


def _check_real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    number = float(value)
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
        ValueError: wrong shapes, NaN in ``boxes``, ``scores`` or ``iou_threshold``.
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
        ValueError: ``mask`` not 2-D or empty, ``area_thresh`` negative or NaN, unknown
            ``mode``.
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
        ValueError: ``masks`` not 3-D, H or W zero with N > 0, ``area_thresh`` negative or
            NaN, unknown ``mode``.
    """
    data = _mask_bytes(masks, "masks", 3)
    threshold = _check_region_args(area_thresh, mode)
    return _core.remove_small_regions_batch(data, threshold, mode)
