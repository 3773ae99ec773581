"""Checks at the public entry points: each failure names the argument and what was expected."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from . import contract

_VALID_LABELS = (contract.LABEL_PADDING, contract.LABEL_BACKGROUND, contract.LABEL_FOREGROUND)


def _as_array(value: Any, name: str) -> npt.NDArray[Any]:
    if isinstance(value, np.ndarray):
        return value
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be array-like, got {type(value).__name__} ({e})") from None
    if array.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got {type(value).__name__} of mixed/ragged values")
    return array


def _as_finite_float(value: Any, name: str) -> npt.NDArray[np.float64]:
    array = _as_array(value, name)
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise TypeError(f"{name} must hold integers or floats, got dtype {array.dtype}")
    out = array.astype(np.float64)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


def as_image(image: Any, name: str, *, max_pixels: int | None) -> npt.NDArray[np.uint8]:
    """An HxWx3 uint8 image (any strides)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (HxWx3 uint8), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8 (HxWx3, values 0..255), got {image.dtype}")
    if image.ndim != 3:
        raise ValueError(f"{name} must be HxWx3, got {image.ndim} dimension(s) with shape {image.shape}")
    if image.shape[2] != 3:
        raise ValueError(
            f"{name} must have 3 channels (RGB or BGR), got {image.shape[2]}; "
            "convert grayscale or RGBA images to RGB first"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {image.shape})")
    if max_pixels is not None and image.shape[0] * image.shape[1] > max_pixels:
        raise ValueError(
            f"{name} has {image.shape[0]}x{image.shape[1]} pixels, over max_image_pixels={max_pixels}; "
            "downscale it or raise the cap"
        )
    return image


def as_size(size: Any, name: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair of ints (H, W), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{name} must be positive, got {(h, w)}")
    return h, w


def as_points(
    coords: Any, labels: Any, *, batched: bool
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(coords [P,N,2], labels [P,N]); the unbatched form [N,2], [N] gets P = 1."""
    if coords is None:
        raise ValueError("point_labels were given without point_coords")
    if labels is None:
        raise ValueError("point_labels must be supplied with point_coords")
    xy = _as_finite_float(coords, "point_coords")
    lab = _as_finite_float(labels, "point_labels")
    want = 3 if batched else 2
    shape_text = "PxNx2" if batched else "Nx2"
    if xy.ndim != want or xy.shape[-1] != 2:
        raise ValueError(f"point_coords must be {shape_text}, got shape {xy.shape}")
    if lab.shape != xy.shape[:-1]:
        raise ValueError(
            f"point_labels must have shape {xy.shape[:-1]} to match point_coords {xy.shape}, got {lab.shape}"
        )
    if xy.shape[-2] == 0:
        raise ValueError("point_coords holds no points; pass None instead of an empty array")
    if not np.isin(lab, _VALID_LABELS).all():
        raise ValueError(f"point_labels must be 1 (foreground), 0 (background) or -1 (ignored), got {np.unique(lab)}")
    if not batched:
        xy, lab = xy[None], lab[None]
    return xy, lab


def as_boxes(boxes: Any, name: str, *, batched: bool) -> npt.NDArray[np.float64]:
    """Boxes [P,4] XYXY with x0 <= x1 and y0 <= y1; unbatched [4] (or [1,4]) gets P = 1."""
    arr = _as_finite_float(boxes, name)
    if not batched and arr.shape == (1, 4):
        arr = arr[0]
    expected = "Px4" if batched else "a length-4 XYXY array"
    if (batched and (arr.ndim != 2 or arr.shape[1] != 4)) or (not batched and arr.shape != (4,)):
        raise ValueError(f"{name} must be {expected}, got shape {arr.shape}")
    arr = arr.reshape(-1, 4)
    bad = (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
    if bad.any():
        raise ValueError(f"{name} must be XYXY with x1 >= x0 and y1 >= y0; row(s) {np.flatnonzero(bad).tolist()} are not")
    return arr


def as_mask_input(mask_input: Any, *, batched: bool) -> npt.NDArray[np.float32]:
    """Low-res mask logits [P,1,256,256]; unbatched 1x256x256 (or 256x256) gets P = 1."""
    arr = _as_finite_float(mask_input, "mask_input").astype(np.float32)
    size = contract.LOW_RES_SIZE
    if not batched and arr.shape == (size, size):
        arr = arr[None]
    want = (1, size, size)
    if (batched and (arr.ndim != 4 or arr.shape[1:] != want)) or (not batched and arr.shape != want):
        expected = f"Px1x{size}x{size}" if batched else f"1x{size}x{size}"
        raise ValueError(f"mask_input must be {expected} low-res logits, got shape {arr.shape}")
    if not batched:
        arr = arr[None]
    return np.ascontiguousarray(arr)
