"""``samrt.AutomaticMaskGenerator``: "segment everything", as the official
``segment_anything.SamAutomaticMaskGenerator`` does it, without torch.

The generator prompts the model with a grid of points over the image (and, with
``crop_n_layers > 0``, over overlapping crops of it), then keeps the masks that pass the
same filters in the same order as the official one:

1. per batch of ``points_per_batch`` points: predicted IoU (``> pred_iou_thresh``), then
   stability score (``>= stability_score_thresh``), then masks whose box touches a crop
   edge that is not an image edge;
2. per crop: box NMS by predicted IoU (``box_nms_thresh``);
3. across crops: box NMS preferring masks of smaller crops (``crop_nms_thresh``);
4. with ``min_mask_region_area > 0``: holes then islands smaller than it are removed and
   box NMS runs again, preferring the masks that needed no change.

Records come back with the official keys, order and value types. The differences are in
how the work is done: the predicted-IoU filter runs before any upsampling, and each
batch's 256x256 logits go straight to :func:`samrt.postprocess.masks_from_logits`, which
computes stability, boxes and run-length encodings without materializing full-size float
masks; masks are carried as RLE counts until the output is written.

Concurrency: ``generate`` changes nothing but its own Predictor's image. Give each thread
its own generator over one shared :class:`samrt.Model`.
"""

from __future__ import annotations

import importlib
import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _core, contract
from ._validate import as_image
from .masks import (
    batched_nms,
    compress_rle,
    decode_rle,
    decompress_rle,
    encode_rle,
    remove_small_regions_batch,
)
from .postprocess import masks_from_logits
from .predictor import Model, Predictor

__all__ = [
    "OUTPUT_MODES",
    "AutomaticMaskGenerator",
    "GenerateStats",
    "build_all_layer_point_grids",
    "build_point_grid",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")

# Masks are decoded to full size this many at a time when small regions are removed.
_REGION_CHUNK = 16
# The official filter drops boxes within this many pixels of a crop edge.
_CROP_EDGE_TOLERANCE = 20.0

ProgressCallback = Callable[[int, int], None]


# -- grids and crops (the official utils/amg.py semantics) -------------------------------


def build_point_grid(n_per_side: int) -> npt.NDArray[np.float64]:
    """n_per_side**2 points (x, y) at the centres of an n x n tiling of [0,1]^2, rows in y."""
    half_step = 1 / (2 * n_per_side)
    side = np.linspace(half_step, 1 - half_step, n_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def build_all_layer_point_grids(
    n_per_side: int, n_layers: int, scale_per_layer: int
) -> list[npt.NDArray[np.float64]]:
    """One grid per crop layer: layer i has int(n_per_side / scale_per_layer**i) per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes XYXY (the whole image, then (2**i)**2 overlapping crops in layer i,
    column by column) and the layer of each."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes: list[list[int]] = [[0, 0, im_w, im_h]]
    layers = [0]
    for layer in range(1, n_layers + 1):
        n_per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / n_per_side))
        crop_w = _crop_length(im_w, n_per_side, overlap)
        crop_h = _crop_length(im_h, n_per_side, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_per_side)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(layer)
    return boxes, layers


def _crop_length(full: int, n_crops: int, overlap: int) -> int:
    return math.ceil((overlap * (n_crops - 1) + full) / n_crops)


def is_box_near_crop_edge(
    boxes: npt.NDArray[np.integer[Any]],
    crop_box: Sequence[int],
    orig_box: Sequence[int],
    atol: float = _CROP_EDGE_TOLERANCE,
) -> npt.NDArray[np.bool_]:
    """For crop-local XYXY boxes [N,4]: whether a side lies within ``atol`` pixels of the
    crop's edge without also lying that close to the image's edge."""
    x0, y0 = crop_box[0], crop_box[1]
    # Integer box coordinates are exact in float32, the official's type for this test.
    full = np.asarray(boxes, dtype=np.float64) + np.array([x0, y0, x0, y0], dtype=np.float64)
    near_crop = np.abs(full - np.asarray(crop_box, dtype=np.float64)) <= atol
    near_image = np.abs(full - np.asarray(orig_box, dtype=np.float64)) <= atol
    near: npt.NDArray[np.bool_] = np.any(near_crop & ~near_image, axis=1)
    return near


# -- the masks of a run, column by column (the official MaskData) ------------------------


@dataclass
class _Masks:
    iou_preds: npt.NDArray[np.float32]
    points: npt.NDArray[Any]  # [N,2] in the dtype of grid * size (float64 for float grids)
    stability: npt.NDArray[np.float32]
    boxes: npt.NDArray[np.int64]  # XYXY inclusive
    # COCO-compressed counts in the full image: everything mode holds every mask of a crop
    # until its NMS, and compressed counts take about a quarter of the memory of uint32
    # ones (vit_b with random weights, whose masks are speckled: 1.7 GB -> 0.45 GB).
    rles: list[bytes]
    areas: npt.NDArray[np.int64]
    crop_boxes: npt.NDArray[np.int64]  # XYXY
    # The official concatenates torch tensors: a batch left with no masks contributes
    # float32 zeros(0, 4) boxes (and a crop left with none a float32 tensor of crop
    # boxes), which turns the whole column float32. Values stay exact integers; these
    # flags carry the type so records show floats exactly when the official's do.
    boxes_are_float: bool = False
    crop_boxes_are_float: bool = False

    def __len__(self) -> int:
        return len(self.rles)

    def take(self, index: npt.NDArray[Any]) -> _Masks:
        """The masks at ``index`` (integer indices, in that order, or a boolean mask)."""
        index = np.asarray(index)
        positions = np.flatnonzero(index) if index.dtype == np.bool_ else index.astype(np.int64)
        return _Masks(
            iou_preds=self.iou_preds[positions],
            points=self.points[positions],
            stability=self.stability[positions],
            boxes=self.boxes[positions],
            rles=[self.rles[i] for i in positions.tolist()],
            areas=self.areas[positions],
            crop_boxes=self.crop_boxes[positions],
            boxes_are_float=self.boxes_are_float,
            crop_boxes_are_float=self.crop_boxes_are_float,
        )

    @staticmethod
    def concatenate(parts: Sequence[_Masks]) -> _Masks:
        return _Masks(
            iou_preds=np.concatenate([p.iou_preds for p in parts]),
            points=np.concatenate([p.points for p in parts]),
            stability=np.concatenate([p.stability for p in parts]),
            boxes=np.concatenate([p.boxes for p in parts]),
            rles=[rle for p in parts for rle in p.rles],
            areas=np.concatenate([p.areas for p in parts]),
            crop_boxes=np.concatenate([p.crop_boxes for p in parts]),
            boxes_are_float=any(p.boxes_are_float for p in parts),
            crop_boxes_are_float=any(p.crop_boxes_are_float for p in parts),
        )


def _nms(
    boxes: npt.NDArray[np.int64], scores: npt.NDArray[np.float32], iou_threshold: float
) -> npt.NDArray[np.int64]:
    """Class-agnostic NMS with the official's types: float32 boxes and scores."""
    return batched_nms(
        boxes.astype(np.float32),
        np.ascontiguousarray(scores, dtype=np.float32),
        np.zeros(len(boxes), dtype=np.int64),
        iou_threshold,
    )


def _mask_boxes(masks: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """XYXY inclusive boxes of [N,H,W] masks; [0,0,0,0] for an empty mask."""
    rows = np.any(masks, axis=2)
    cols = np.any(masks, axis=1)
    boxes = np.zeros((len(masks), 4), dtype=np.int64)
    present = rows.any(axis=1)
    h, w = masks.shape[1:]
    boxes[:, 0] = np.argmax(cols, axis=1)
    boxes[:, 1] = np.argmax(rows, axis=1)
    boxes[:, 2] = w - 1 - np.argmax(cols[:, ::-1], axis=1)
    boxes[:, 3] = h - 1 - np.argmax(rows[:, ::-1], axis=1)
    boxes[~present] = 0
    return boxes


def _xywh(box: npt.NDArray[Any], as_float: bool) -> list[int] | list[float]:
    x0, y0, x1, y1 = (int(v) for v in box)
    xywh = [x0, y0, x1 - x0, y1 - y0]
    return [float(v) for v in xywh] if as_float else xywh


# -- what the filters dropped -----------------------------------------------------------


# (field, the generator parameter behind that filter), in the order the filters run; the
# crop-edge filter has no parameter of its own (it runs with crop_n_layers > 0).
_FILTERS = (
    ("pred_iou", "pred_iou_thresh"),
    ("stability", "stability_score_thresh"),
    ("crop_edge", None),
    ("box_nms", "box_nms_thresh"),
    ("crop_nms", "crop_nms_thresh"),
    ("small_regions", "min_mask_region_area"),
)


@dataclass
class GenerateStats:
    """What one :meth:`AutomaticMaskGenerator.generate` call did with the decoder's
    candidate masks: how many each filter dropped, in the order they ran, and how many were
    kept (the records returned). ``thresholds`` are the generator's parameters behind them."""

    candidates: int = 0  # masks the decoder proposed (3 per point of every crop's grid)
    pred_iou: int = 0  # predicted IoU not above pred_iou_thresh
    stability: int = 0  # stability score below stability_score_thresh
    crop_edge: int = 0  # box on a crop edge that is not an image edge (crops only)
    box_nms: int = 0  # duplicates within a crop (box_nms_thresh)
    crop_nms: int = 0  # duplicates across crops (crop_nms_thresh)
    small_regions: int = 0  # dropped by the NMS after min_mask_region_area's cleanup
    kept: int = 0
    thresholds: dict[str, float] = field(default_factory=dict)

    def dropped(self) -> dict[str, int]:
        """Filter (a field name) -> masks it dropped, for the filters that dropped some."""
        return {name: getattr(self, name) for name, _ in _FILTERS if getattr(self, name)}

    def describe(self, flag: Callable[[str], str] = lambda param: param) -> str:
        """One sentence: the candidates, what each filter dropped, and, with none kept, which
        thresholds to lower. ``flag(parameter)`` names a parameter (a CLI gives its option)."""
        params = dict(_FILTERS)
        parts = []
        for name, count in self.dropped().items():
            param = params[name]
            if param is None:
                parts.append(f"{count} on crop edges")
            else:
                parts.append(f"{count} by {flag(param)}={self.thresholds.get(param, 0):g}")
        text = f"{self.kept} of {self.candidates} candidate masks kept"
        if parts:
            text += "; dropped " + ", ".join(parts)
        if self.kept == 0 and self.candidates:
            lower = [
                flag(param)
                for name in ("pred_iou", "stability")
                if getattr(self, name) and (param := params[name]) is not None
            ]
            if lower:
                text += f"; lower {' and '.join(lower)} to keep more (random weights need 0)"
        return text


# -- parameter checks --------------------------------------------------------------------


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")  # noqa: TRY004 - as above
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_float(
    value: Any, name: str, low: float, high: float | None = None, *, high_open: bool = False
) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
    ):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    number = float(value)
    too_high = high is not None and (number >= high if high_open else number > high)
    if number < low or too_high:
        bracket = ")" if high_open else "]"
        span = f"in [{low}, {high}{bracket}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {span}, got {value!r}")
    return number


def _check_point_grids(point_grids: Any, n_layers: int) -> list[npt.NDArray[Any]]:
    if isinstance(point_grids, np.ndarray) or not isinstance(point_grids, Sequence):
        raise ValueError(  # noqa: TRY004 - every bad parameter is a ValueError naming it
            f"point_grids must be a list of Nx2 arrays (one per crop layer), got {type(point_grids).__name__}"
        )
    if len(point_grids) < n_layers + 1:
        raise ValueError(
            f"point_grids must hold one grid per crop layer (crop_n_layers={n_layers} needs "
            f"{n_layers + 1}), got {len(point_grids)}"
        )
    grids = []
    for i, grid in enumerate(point_grids):
        array = np.array(grid, copy=True)
        if array.dtype == np.bool_ or not (
            np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
        ):
            raise ValueError(f"point_grids[{i}] must hold numbers, got dtype {array.dtype}")
        if array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
            raise ValueError(
                f"point_grids[{i}] must be a non-empty Nx2 array, got shape {array.shape}"
            )
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(f"point_grids[{i}] must hold (x, y) normalized to [0, 1]")
        array.flags.writeable = False
        grids.append(array)
    return grids


def _tqdm_progress() -> Callable[[int], Any]:
    try:
        tqdm = importlib.import_module("tqdm").tqdm
    except ImportError:
        raise ImportError(
            "progress=True needs the tqdm package (`pip install tqdm`); or pass a callback "
            "progress(done_batches, total_batches)"
        ) from None
    return tqdm  # type: ignore[no-any-return]


# -- the generator -----------------------------------------------------------------------


class AutomaticMaskGenerator:
    """Generates masks for a whole image, with the official generator's parameters,
    defaults, filters and records.

    ``predictor_or_engine_dir`` is a :class:`samrt.Predictor` (used as is: ``generate``
    sets its image), a :class:`samrt.Model` (a Predictor is made over it) or an engine
    directory. ``progress`` is a callback ``progress(done_batches, total_batches)``
    called after each decoder batch, or True for a tqdm progress bar.

    After each ``generate``, ``last_stats`` (a :class:`GenerateStats`) says how many
    candidate masks each filter dropped: why an image got few masks, or none.
    """

    def __init__(
        self,
        predictor_or_engine_dir: Predictor | Model | str | os.PathLike[str],
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[npt.NDArray[np.floating[Any]]] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        *,
        mask_threshold: float | None = None,
        use_m2m: bool = False,
        multimask_output: bool = True,
        progress: ProgressCallback | bool | None = None,
    ) -> None:
        self.points_per_batch = _check_int(points_per_batch, "points_per_batch", 1)
        # None: the model family's official default (0.88 for SAM, 0.8 for SAM 2.1), set
        # once the predictor is known, below.
        self.pred_iou_thresh = 0.0 if pred_iou_thresh is None else _check_float(pred_iou_thresh, "pred_iou_thresh", 0.0)
        self.mask_threshold = None if mask_threshold is None else _check_float(
            mask_threshold, "mask_threshold", -math.inf)
        for name, flag in (("use_m2m", use_m2m), ("multimask_output", multimask_output)):
            if not isinstance(flag, (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        self.use_m2m = bool(use_m2m)
        self.multimask_output = bool(multimask_output)
        self.stability_score_thresh = _check_float(
            stability_score_thresh, "stability_score_thresh", 0.0
        )
        self.stability_score_offset = _check_float(
            stability_score_offset, "stability_score_offset", 0.0
        )
        self.box_nms_thresh = _check_float(box_nms_thresh, "box_nms_thresh", 0.0, 1.0)
        self.crop_n_layers = _check_int(crop_n_layers, "crop_n_layers", 0)
        self.crop_nms_thresh = _check_float(crop_nms_thresh, "crop_nms_thresh", 0.0, 1.0)
        self.crop_overlap_ratio = _check_float(
            crop_overlap_ratio, "crop_overlap_ratio", 0.0, 1.0, high_open=True
        )
        self.crop_n_points_downscale_factor = _check_int(
            crop_n_points_downscale_factor, "crop_n_points_downscale_factor", 1
        )
        self.min_mask_region_area = _check_float(min_mask_region_area, "min_mask_region_area", 0.0)
        if isinstance(min_mask_region_area, numbers.Integral):
            self.min_mask_region_area = int(min_mask_region_area)
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        self.output_mode = output_mode

        if (points_per_side is None) == (point_grids is None):
            raise ValueError(
                "give exactly one of points_per_side and point_grids "
                f"(got points_per_side={points_per_side!r} and "
                f"point_grids={'None' if point_grids is None else 'a list'})"
            )
        self.points_per_side: int | None = None
        if points_per_side is not None:
            self.points_per_side = _check_int(points_per_side, "points_per_side", 1)
            sides = [
                int(self.points_per_side / (self.crop_n_points_downscale_factor**i))
                for i in range(self.crop_n_layers + 1)
            ]
            if min(sides) < 1:
                raise ValueError(
                    f"crop_n_points_downscale_factor={self.crop_n_points_downscale_factor} leaves crop "
                    f"layer {sides.index(0)} with no points (points_per_side={self.points_per_side}, "
                    f"crop_n_layers={self.crop_n_layers})"
                )
            grids = build_all_layer_point_grids(
                self.points_per_side, self.crop_n_layers, self.crop_n_points_downscale_factor
            )
            for grid in grids:
                grid.flags.writeable = False
            self.point_grids = grids
        else:
            self.point_grids = _check_point_grids(point_grids, self.crop_n_layers)

        self._progress_callback: ProgressCallback | None = None
        self._progress_bar: Callable[..., Any] | None = None
        if progress is True:
            self._progress_bar = _tqdm_progress()
        elif progress is not None and progress is not False:
            if not callable(progress):
                raise ValueError(
                    f"progress must be a callable progress(done_batches, total_batches), True or None, got {progress!r}"
                )
            self._progress_callback = progress
        self.last_stats: GenerateStats | None = None
        self._stats = GenerateStats()

        if isinstance(predictor_or_engine_dir, Predictor):
            self.predictor = predictor_or_engine_dir
        elif isinstance(predictor_or_engine_dir, (Model, str, os.PathLike)):
            self.predictor = Predictor(predictor_or_engine_dir)
        else:
            raise TypeError(
                "predictor_or_engine_dir must be a samrt.Predictor, a samrt.Model or an engine "
                f"directory path, got {type(predictor_or_engine_dir).__name__}"
            )
        # Last, as it reads the model (after every parameter was checked).
        model = self.predictor.model
        if pred_iou_thresh is None:
            self.pred_iou_thresh = float(model.family.generator_defaults["pred_iou_thresh"])
        if self.mask_threshold is None:
            self.mask_threshold = float(model.manifest.mask_threshold)

    # -- public --------------------------------------------------------------------------

    def generate(self, image: npt.NDArray[np.uint8]) -> list[dict[str, Any]]:
        """Masks for an HxWx3 uint8 RGB image, as a list of records with the keys
        segmentation, area, bbox (XYWH), predicted_iou, point_coords, stability_score and
        crop_box (XYWH), in the official generator's order."""
        image = as_image(image, "image", max_pixels=self.predictor.max_image_pixels)
        self._stats = GenerateStats(
            thresholds={
                "pred_iou_thresh": self.pred_iou_thresh,
                "stability_score_thresh": self.stability_score_thresh,
                "box_nms_thresh": self.box_nms_thresh,
                "crop_nms_thresh": self.crop_nms_thresh,
                "min_mask_region_area": self.min_mask_region_area,
            }
        )
        self.last_stats = None
        try:
            records = self._generate_records(image)
            self._stats.kept = len(records)
            self.last_stats = self._stats
            return records
        finally:
            # Decoder runs and every batch's RLEs came and went: return that memory to the
            # OS so that a service's resident size stays flat (see csrc/heap.hpp).
            _core.release_free_heap_memory()

    # -- stages --------------------------------------------------------------------------

    def _generate_records(self, image: npt.NDArray[np.uint8]) -> list[dict[str, Any]]:
        masks = self._generate_masks(image)
        if self.min_mask_region_area > 0 and len(masks):
            masks = self._remove_small_regions(
                masks, image.shape[:2], max(self.box_nms_thresh, self.crop_nms_thresh)
            )
        return self._records(masks, (int(image.shape[0]), int(image.shape[1])))

    def _generate_masks(self, image: npt.NDArray[np.uint8]) -> _Masks:
        orig_size = (int(image.shape[0]), int(image.shape[1]))
        crop_boxes, layer_idxs = generate_crop_boxes(
            orig_size, self.crop_n_layers, self.crop_overlap_ratio
        )
        # Crops of layers too fine for a tiny image can be empty; they hold no pixels, so
        # no masks (the official fails on them).
        crops = [
            (box, layer)
            for box, layer in zip(crop_boxes, layer_idxs)
            if box[2] > box[0] and box[3] > box[1]
        ]

        total = sum(
            math.ceil(len(self.point_grids[layer]) / self.points_per_batch) for _, layer in crops
        )
        progress = _Progress(total, self._progress_callback, self._progress_bar)
        try:
            parts = [
                self._process_crop(image, box, layer, orig_size, progress) for box, layer in crops
            ]
        finally:
            progress.close()
        masks = _Masks.concatenate(parts)

        if len(crop_boxes) > 1 and len(masks):
            # Between crops, prefer the masks of smaller crops.
            widths = masks.crop_boxes[:, 2] - masks.crop_boxes[:, 0]
            heights = masks.crop_boxes[:, 3] - masks.crop_boxes[:, 1]
            scores = np.float32(1.0) / (widths * heights).astype(np.float32)
            before = len(masks)
            masks = masks.take(_nms(masks.boxes, scores, self.crop_nms_thresh))
            self._stats.crop_nms += before - len(masks)
        return masks

    def _process_crop(
        self,
        image: npt.NDArray[np.uint8],
        crop_box: list[int],
        layer: int,
        orig_size: tuple[int, int],
        progress: _Progress,
    ) -> _Masks:
        x0, y0, x1, y1 = crop_box
        cropped = image[y0:y1, x0:x1, :]
        predictor = self.predictor
        predictor.set_image(cropped)
        try:
            crop_size = np.array(cropped.shape[:2])[None, ::-1]  # [[w, h]], as the official
            points_for_image = self.point_grids[layer] * crop_size
            batches = []
            for start in range(0, len(points_for_image), self.points_per_batch):
                points = points_for_image[start : start + self.points_per_batch]
                batches.append(self._process_batch(points, crop_box, orig_size))
                progress.step()
        finally:
            predictor.reset_image()
        masks = _Masks.concatenate(batches)

        # Duplicates within the crop.
        before = len(masks)
        masks = masks.take(_nms(masks.boxes, masks.iou_preds, self.box_nms_thresh))
        self._stats.box_nms += before - len(masks)

        # Back to the image's frame.
        masks.boxes = masks.boxes + np.array([x0, y0, x0, y0], dtype=np.int64)
        masks.points = masks.points + np.array([x0, y0], dtype=np.int64)
        masks.crop_boxes = np.tile(np.array(crop_box, dtype=np.int64), (len(masks), 1))
        masks.crop_boxes_are_float = len(masks) == 0
        return masks

    def _process_batch(
        self,
        points: npt.NDArray[Any],
        crop_box: list[int],
        orig_size: tuple[int, int],
    ) -> _Masks:
        predictor = self.predictor
        family = predictor.model.family
        tally = self._stats
        iou_thresh = self.pred_iou_thresh
        # The predicted-IoU filter needs only the scores: a prompt none of whose masks
        # passes it is never upscaled, nor upsampled.
        skip_below = iou_thresh if iou_thresh > 0.0 else None
        if self.use_m2m:
            # SAM2AutomaticMaskGenerator's one-step refinement: every candidate (unfiltered)
            # goes back in with its point as the mask input, for one mask each; the filters
            # then judge the refined masks.
            first = predictor._decode_points(points, None, self.multimask_output, None)
            side = contract.LOW_RES_SIZE
            candidates = family.returned_low_res(first.low_res).reshape(-1, 1, side, side)
            points = points.repeat(first.scores.shape[1], axis=0)
            decoded = predictor._decode_points(points, candidates, False, skip_below)
        else:
            decoded = predictor._decode_points(points, None, self.multimask_output, skip_below)
        n_candidates = decoded.scores.size
        tally.candidates += n_candidates
        scores, points = decoded.scores[decoded.index], points[decoded.index]
        n_per_point = scores.shape[1]
        iou_preds = scores.reshape(-1)
        batch_points = points.repeat(n_per_point, axis=0)
        # The masks come from the logits as decoded (SAM 2.1 feeds back clamped ones).
        logits = decoded.low_res.reshape(-1, *decoded.low_res.shape[2:])

        # Then per mask, among the points that have one above the threshold.
        if iou_thresh > 0.0:
            keep = np.flatnonzero(iou_preds > np.float32(iou_thresh))
            if len(keep) < len(iou_preds):
                iou_preds, batch_points, logits = iou_preds[keep], batch_points[keep], logits[keep]
        tally.pred_iou += n_candidates - len(iou_preds)

        stability_thresh = self.stability_score_thresh
        assert predictor.input_size is not None and predictor.original_size is not None
        assert self.mask_threshold is not None
        if len(logits):
            input_size, padded_size = family.upsample_frame(predictor.input_size)
            stats = masks_from_logits(
                np.ascontiguousarray(logits),
                input_size,
                predictor.original_size,
                threshold=self.mask_threshold,
                padded_size=padded_size,
                stability_offset=self.stability_score_offset,
                crop_box=(crop_box[0], crop_box[1], crop_box[2], crop_box[3]),
                image_size=orig_size,
                rle_min_stability=stability_thresh if stability_thresh > 0.0 else None,
            )
            stability, boxes, areas = stats.stability, stats.boxes, stats.areas
            rle_counts = stats.rle_counts
        else:
            stability = np.zeros(0, dtype=np.float32)
            boxes = np.zeros((0, 4), dtype=np.int64)
            areas = np.zeros(0, dtype=np.int64)
            rle_counts = []

        index = np.arange(len(iou_preds))
        if stability_thresh > 0.0:
            index = np.flatnonzero(stability >= np.float32(stability_thresh))
        tally.stability += len(iou_preds) - len(index)
        # The official computes boxes here; with no mask left they are float32 zeros(0, 4).
        boxes_are_float = len(index) == 0

        near_edge = is_box_near_crop_edge(
            boxes[index], crop_box, [0, 0, orig_size[1], orig_size[0]]
        )
        index = index[~near_edge]
        tally.crop_edge += int(near_edge.sum())

        kept = []
        for i in index.tolist():
            counts = rle_counts[i]
            assert counts is not None  # encoded for every mask at or above the threshold
            kept.append({"size": list(orig_size), "counts": counts})
        rles = [rle["counts"] for rle in compress_rle(kept)] if kept else []
        return _Masks(
            iou_preds=iou_preds[index],
            points=batch_points[index],
            stability=np.asarray(stability, dtype=np.float32)[index],
            boxes=np.asarray(boxes, dtype=np.int64)[index],
            rles=rles,
            areas=np.asarray(areas, dtype=np.int64)[index],
            crop_boxes=np.zeros((len(index), 4), dtype=np.int64),
            boxes_are_float=boxes_are_float,
        )

    def _remove_small_regions(
        self, masks: _Masks, image_size: tuple[int, int], nms_thresh: float
    ) -> _Masks:
        """Fills small holes, then drops small islands; NMS again, preferring unchanged
        masks; changed masks that survive get their new RLE and box."""
        h, w = image_size
        new_boxes = np.empty_like(masks.boxes)
        changed = np.zeros(len(masks), dtype=bool)
        new_rles: dict[int, bytes] = {}
        new_areas: dict[int, int] = {}
        for start in range(0, len(masks), _REGION_CHUNK):
            stop = min(start + _REGION_CHUNK, len(masks))
            batch = decode_rle(
                [{"size": [h, w], "counts": masks.rles[i]} for i in range(start, stop)]
            )
            batch, holes_changed = remove_small_regions_batch(
                batch, self.min_mask_region_area, "holes"
            )
            batch, islands_changed = remove_small_regions_batch(
                batch, self.min_mask_region_area, "islands"
            )
            chunk_changed = np.asarray(holes_changed, dtype=bool) | np.asarray(
                islands_changed, dtype=bool
            )
            changed[start:stop] = chunk_changed
            new_boxes[start:stop] = _mask_boxes(batch)
            redone = np.flatnonzero(chunk_changed)
            if len(redone):
                encoded = encode_rle(batch[redone])
                assert isinstance(encoded, list)  # a stack of masks gives a list
                areas = batch[redone].sum(axis=(1, 2), dtype=np.int64)
                for offset, rle, area in zip(redone.tolist(), encoded, areas.tolist()):
                    new_rles[start + offset] = rle["counts"]
                    new_areas[start + offset] = area
        scores = np.where(changed, np.float32(0.0), np.float32(1.0)).astype(np.float32)
        keep = _nms(new_boxes, scores, nms_thresh)
        self._stats.small_regions += len(masks) - len(keep)
        for i in keep.tolist():
            if changed[i]:
                masks.rles[i] = new_rles[i]
                masks.areas[i] = new_areas[i]
                masks.boxes[i] = new_boxes[i]
        return masks.take(keep)

    def _records(self, masks: _Masks, image_size: tuple[int, int]) -> list[dict[str, Any]]:
        h, w = image_size
        uncompressed: list[Any] = []
        if self.output_mode == "uncompressed_rle" and len(masks):
            uncompressed = decompress_rle([{"size": [h, w], "counts": c} for c in masks.rles])
        in_float32 = self.predictor.model.family.generator_records_in_float32
        points = masks.points.astype(np.float32) if in_float32 else masks.points
        records = []
        for i in range(len(masks)):
            counts = masks.rles[i]
            segmentation: Any
            if self.output_mode == "binary_mask":
                segmentation = decode_rle({"size": [h, w], "counts": counts})
            elif self.output_mode == "coco_rle":
                # As the official coco_encode_rle: str counts, so records serialize to json.
                segmentation = {"size": [h, w], "counts": counts.decode("utf-8")}
            else:
                segmentation = uncompressed[i]
            records.append(
                {
                    "segmentation": segmentation,
                    "area": int(masks.areas[i]),
                    "bbox": _xywh(masks.boxes[i], masks.boxes_are_float or in_float32),
                    "predicted_iou": float(masks.iou_preds[i]),
                    "point_coords": [points[i].tolist()],
                    "stability_score": float(masks.stability[i]),
                    "crop_box": _xywh(masks.crop_boxes[i], masks.crop_boxes_are_float or in_float32),
                }
            )
        return records


class _Progress:
    """Counts finished decoder batches for a callback or a tqdm bar."""

    def __init__(
        self, total: int, callback: ProgressCallback | None, bar_factory: Callable[..., Any] | None
    ) -> None:
        self.total = total
        self.done = 0
        self.callback = callback
        self.bar = (
            None if bar_factory is None else bar_factory(total=total, unit="batch", desc="masks")
        )

    def step(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
