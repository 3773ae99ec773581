"""Image and prompt transforms into SAM's 1024x1024 input frame.

These reproduce the official ``ResizeLongestSide`` and ``Sam.preprocess`` exactly: the
resize goes through Pillow's bilinear filter (the official transform hands a PIL image
to torchvision, which calls ``PIL.Image.resize``), and normalization is done in float32
in the same order, so the encoder sees bit-identical input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

from . import contract


def preprocess_shape(height: int, width: int, long_side: int = contract.IMAGE_SIZE) -> tuple[int, int]:
    """(h, w) after resizing so the longest side is ``long_side``, rounded half up."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: npt.NDArray[np.uint8], long_side: int = contract.IMAGE_SIZE) -> npt.NDArray[np.uint8]:
    """Resizes an HxWx3 uint8 image so its longest side is ``long_side`` (Pillow bilinear)."""
    new_h, new_w = preprocess_shape(image.shape[0], image.shape[1], long_side)
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((new_w, new_h), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def normalize_and_pad(
    resized: npt.NDArray[np.uint8],
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    size: int = contract.IMAGE_SIZE,
) -> npt.NDArray[np.float32]:
    """HxWx3 uint8 -> 1x3xSIZExSIZE float32: (x - mean) / std, zero-padded bottom and right."""
    h, w = resized.shape[:2]
    mean = np.asarray(pixel_mean, dtype=np.float32)
    std = np.asarray(pixel_std, dtype=np.float32)
    batch = np.zeros((1, 3, size, size), dtype=np.float32)
    # Subtract then divide in float32, as Sam.preprocess does, so values match bit for bit.
    normalized = (resized.astype(np.float32) - mean) / std
    batch[0, :, :h, :w] = normalized.transpose(2, 0, 1)
    return batch


def apply_coords(
    coords: npt.NDArray[np.floating], original_size: tuple[int, int], long_side: int = contract.IMAGE_SIZE
) -> npt.NDArray[np.float64]:
    """Maps (x, y) pixel coordinates of the original image into the resized frame."""
    old_h, old_w = original_size
    new_h, new_w = preprocess_shape(old_h, old_w, long_side)
    out = np.array(coords, dtype=np.float64, copy=True)
    out[..., 0] = out[..., 0] * (new_w / old_w)
    out[..., 1] = out[..., 1] * (new_h / old_h)
    return out


def apply_boxes(
    boxes: npt.NDArray[np.floating], original_size: tuple[int, int], long_side: int = contract.IMAGE_SIZE
) -> npt.NDArray[np.float64]:
    """Maps Bx4 XYXY boxes of the original image into the resized frame."""
    return apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size, long_side).reshape(-1, 4)
