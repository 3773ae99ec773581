"""Type stubs for samrt's compiled kernels (csrc/bindings)."""

from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def release_free_heap_memory() -> bool: ...

# --- NMS ---

def batched_nms(
    boxes: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    scores: npt.NDArray[np.float64],
    idxs: npt.NDArray[np.int64],
    iou_threshold: float,
) -> npt.NDArray[np.int64]: ...

# --- Small regions ---

def remove_small_regions(
    mask: npt.NDArray[np.uint8], area_thresh: float, mode: str
) -> tuple[npt.NDArray[np.bool_] | None, bool]: ...
def remove_small_regions_batch(
    masks: npt.NDArray[np.uint8], area_thresh: float, mode: str
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]: ...

# -- postprocess (csrc/postprocess.hpp); sizes are (height, width) ----------------------

def upsample_logits(
    low_res: npt.NDArray[np.float32],
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    padded_size: int,
) -> npt.NDArray[np.float32]: ...
def upsample_masks(
    low_res: npt.NDArray[np.float32],
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    padded_size: int,
    threshold: float,
) -> npt.NDArray[np.bool_]: ...
def mask_stats(
    low_res: npt.NDArray[np.float32],
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    padded_size: int,
    threshold: float,
    stability_offset: float,
    crop_origin: tuple[int, int],
    image_size: tuple[int, int],
    rle_min_stability: float | None = None,
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    list[npt.NDArray[np.uint32] | None],
]: ...

# --- RLE (csrc/bindings/bind_rle.cpp; public API in samrt.masks) ---
# Counts: compressed (bytes, bytearray, str) or uncompressed (a 1-D sequence of ints).

def rle_encode(masks: npt.NDArray[np.bool_] | npt.NDArray[np.uint8]) -> list[bytes]: ...
def rle_decode(rles: list[Any], h: int, w: int) -> npt.NDArray[np.bool_]: ...
def rle_area(rles: list[Any], sizes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]: ...
def rle_to_bbox(rles: list[Any], sizes: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]: ...
def rle_iou(
    dt: list[Any],
    gt: list[Any],
    h: int,
    w: int,
    iscrowd: npt.NDArray[np.bool_] | npt.NDArray[np.integer[Any]],
) -> npt.NDArray[np.float64]: ...
def rle_compress(rles: list[Any], sizes: npt.NDArray[np.int64]) -> list[bytes]: ...
def rle_decompress(rles: list[Any], sizes: npt.NDArray[np.int64]) -> list[list[int]]: ...
