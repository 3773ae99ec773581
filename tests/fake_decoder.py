"""A deterministic stand-in for SAM whose masks look like a real model's, for both sides.

A randomly initialized SAM answers every prompt with one image-wide blob, which leaves
NMS, crops and small-region cleanup untested. This fake instead reads a *label map* out
of the image it is shown: test scenes are painted with one palette colour per object
(:func:`make_scene`), and the fake encoder recovers the labels from the normalized
1024x1024 encoder input. Everything downstream is a pure function of that input and the
prompt, so the two sides agree without sharing any state, and crops work naturally (the
encoder sees the resized crop, as a real model would).

For a point prompt (1024 frame) on object ``l`` the decoder returns four 256x256 logit
maps: [0] the object (the single-mask output), then the multimask outputs [1] a part of
the object (a disc around the point), [2] the object, [3] the object with everything it
touches. Logits are scaled signed distances (smooth under bilinear upsampling) plus a
small ripple, so boundaries carry near-threshold values and the stability score varies
with object size and a per-label slope. IoU predictions are deterministic functions of
the label, the output and the point; some fall below 0.88. Points on the background
(label 0: background colour, anything far from the palette, the encoder's padding) give
the background region with low predicted IoU.

Two adapters feed the same outputs in:

* :class:`FakeBackend` / :func:`fake_model`: a samrt ``Backend`` (the embedding is a real
  [1,256,64,64] array whose first 16 channels hold the label map, so it round-trips
  through ``get_image_embedding``);
* :class:`FakeSamPredictor` / :func:`official_generator`: a ``SamPredictor`` whose
  encoder and decoder are replaced while the official ``set_image``, ``Sam.preprocess``
  and ``Sam.postprocess_masks`` still run.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from samrt import contract
from samrt.backends.base import Backend
from samrt.families import SamFamily
from samrt.manifest import Manifest
from samrt.predictor import Model

LOW = contract.LOW_RES_SIZE
FRAME = contract.IMAGE_SIZE
STRIDE = FRAME // LOW
_LABEL_CHANNELS = LOW * LOW // (contract.EMBEDDING_SIZE * contract.EMBEDDING_SIZE)  # 16

# -- the palette ---------------------------------------------------------------------------

BACKGROUND_COLOUR = (12, 12, 12)
_MAX_COLOUR_DISTANCE = 40.0


def _make_palette(n: int, seed: int = 7) -> npt.NDArray[np.int64]:
    """Background first, then colours at least 60 apart from each other and from the
    colour the encoder's zero padding decodes to (the pixel mean)."""
    rng = np.random.default_rng(seed)
    pad_colour = np.round(np.array(contract.PIXEL_MEAN))
    colours = [np.array(BACKGROUND_COLOUR, dtype=np.int64)]
    while len(colours) < n:
        candidate = rng.integers(0, 256, size=3)
        existing = np.array(colours + [pad_colour])
        if np.min(np.linalg.norm(existing - candidate, axis=1)) >= 60:
            colours.append(candidate.astype(np.int64))
    return np.array(colours)


PALETTE = _make_palette(48)
N_LABELS = len(PALETTE)

# -- scenes ----------------------------------------------------------------------------------


def make_scene(
    height: int, width: int, seed: int = 0, n_objects: int = 26
) -> npt.NDArray[np.uint8]:
    """An RGB test image painted with palette colours: objects of varied size (ellipses,
    boxes, rings with holes, objects with stray small islands, some cut by the image
    edges), drawn over each other on the background colour."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), dtype=np.int64)
    yy, xx = np.mgrid[0:height, 0:width]
    scale = min(height, width)
    order = rng.permutation(np.arange(1, N_LABELS))[:n_objects]
    for i, label in enumerate(order.tolist()):
        kind = i % 5
        # Sizes from a few pixels to a third of the image.
        radius = float(scale * rng.choice([0.03, 0.06, 0.1, 0.16, 0.25, 0.33]))
        if i % 7 == 3:
            # Centred on an edge, so crops and the edge filter see it.
            cx = float(rng.choice([0.0, width - 1.0])) if i % 2 else float(rng.uniform(0, width))
            cy = float(rng.uniform(0, height)) if i % 2 else float(rng.choice([0.0, height - 1.0]))
        else:
            cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0, height))
        aspect = float(rng.uniform(0.5, 1.6))
        rx, ry = radius * aspect, radius / aspect
        ellipse = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
        if kind == 1:
            shape = (np.abs(xx - cx) <= rx) & (np.abs(yy - cy) <= ry)
        else:
            shape = ellipse <= 1.0
        labels[shape] = label
        if kind == 2:
            # A ring: a hole of background, some small enough to be filled by cleanup.
            hole = float(rng.choice([0.08, 0.2, 0.45]))
            labels[shape & (ellipse <= hole**2)] = 0
        if kind == 3:
            # Stray small islands of the same object near it.
            for _ in range(int(rng.integers(1, 4))):
                angle = rng.uniform(0, 2 * np.pi)
                ix = cx + np.cos(angle) * (rx + 6 + rng.uniform(0, 10))
                iy = cy + np.sin(angle) * (ry + 6 + rng.uniform(0, 10))
                r = float(rng.uniform(1.5, 4.0))
                labels[(xx - ix) ** 2 + (yy - iy) ** 2 <= r * r] = label
    return PALETTE[labels].astype(np.uint8)


def _off_palette_colour() -> tuple[int, int, int]:
    """The colour of a coarse grid farthest from the palette: the fake reads it as background."""
    levels = np.arange(0, 256, 15)
    grid = np.stack(np.meshgrid(levels, levels, levels), -1).reshape(-1, 3)
    distance = np.linalg.norm(grid[:, None, :] - PALETTE[None], axis=2).min(1)
    r, g, b = grid[int(np.argmax(distance))].tolist()
    return r, g, b


OFF_PALETTE_COLOUR = _off_palette_colour()


def single_colour_image(
    height: int, width: int, colour: tuple[int, int, int] = OFF_PALETTE_COLOUR
) -> npt.NDArray[np.uint8]:
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = colour
    return image


# -- the fake encoder and decoder ------------------------------------------------------------


def fake_encode(normalized: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """[1,3,1024,1024] normalized padded image -> [1,256,64,64] embedding carrying the
    256x256 label map (nearest palette colour of the centre pixel of each 4x4 cell)."""
    array = np.asarray(normalized, dtype=np.float32)
    if array.shape != (1, 3, FRAME, FRAME):
        raise ValueError(f"fake encoder expects [1,3,{FRAME},{FRAME}], got {array.shape}")
    mean = np.array(contract.PIXEL_MEAN, dtype=np.float64)[:, None, None]
    std = np.array(contract.PIXEL_STD, dtype=np.float64)[:, None, None]
    centres = array[0, :, STRIDE // 2 :: STRIDE, STRIDE // 2 :: STRIDE].astype(np.float64)
    pixels = np.clip(np.round(centres * std + mean), 0, 255).astype(np.int64).reshape(3, -1)
    # A scene has few distinct colours: classify each once.
    codes = (pixels[0] << 16) | (pixels[1] << 8) | pixels[2]
    distinct, where = np.unique(codes, return_inverse=True)
    colours = np.stack([distinct >> 16, (distinct >> 8) & 255, distinct & 255], axis=1)
    squared = ((colours[:, None, :] - PALETTE[None, :, :]) ** 2).sum(axis=2)  # exact integers
    colour_labels = np.argmin(squared, axis=1)
    colour_labels[np.min(squared, axis=1) > _MAX_COLOUR_DISTANCE**2] = 0
    labels = colour_labels[where.reshape(-1)]
    embedding = np.zeros(
        (1, contract.EMBEDDING_DIM, contract.EMBEDDING_SIZE, contract.EMBEDDING_SIZE), np.float32
    )
    embedding[0, :_LABEL_CHANNELS] = labels.astype(np.float32).reshape(_LABEL_CHANNELS, 64, 64)
    return embedding


def labels_of(embedding: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    return (
        np.asarray(embedding, dtype=np.float32)[0, :_LABEL_CHANNELS]
        .reshape(LOW, LOW)
        .astype(np.int64)
    )


def _unit_hash(*values: float) -> float:
    """A deterministic pseudo-random number in [0, 1) from a few numbers."""
    seed = sum(v * k for v, k in zip(values, (12.9898, 78.233, 37.719, 4.581)))
    return float(np.modf(np.abs(np.sin(seed) * 43758.5453))[0])


_YY, _XX = np.mgrid[0:LOW, 0:LOW].astype(np.float32)
_RIPPLE = (0.22 * np.sin(0.9 * _XX + 0.4 * _YY) * np.cos(0.3 * _XX - 0.8 * _YY)).astype(np.float32)


def _signed_distance(region: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    """Distance to the region's boundary in low-res pixels: positive inside."""
    if not region.any():
        return np.full(region.shape, -float(LOW), dtype=np.float32)
    if region.all():
        return np.full(region.shape, float(LOW), dtype=np.float32)
    inside = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = cv2.distanceTransform((~region).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return (inside - outside + np.where(region, -0.5, 0.5)).astype(np.float32)


class _LabelFields:
    """Signed distances of one label map's objects and groups, computed on demand
    (thread-safe: a value is a pure function of the labels, so a race only repeats work)."""

    def __init__(self, labels: npt.NDArray[np.int64]) -> None:
        self.labels = labels
        self._objects: dict[int, tuple[npt.NDArray[np.float32], float]] = {}
        self._groups: dict[int, npt.NDArray[np.float32]] = {}

    def object(self, label: int) -> tuple[npt.NDArray[np.float32], float]:
        """(signed distance, area in low-res pixels)."""
        found = self._objects.get(label)
        if found is None:
            region = self.labels == label
            found = self._objects[label] = (_signed_distance(region), float(region.sum()))
        return found

    def group(self, label: int) -> npt.NDArray[np.float32]:
        """The object with every object touching it (background never joins)."""
        found = self._groups.get(label)
        if found is None:
            region = self.labels == label
            ring = (
                cv2.dilate(region.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
                & ~region
            )
            neighbours = np.unique(self.labels[ring])
            neighbours = neighbours[neighbours != 0] if label != 0 else neighbours[:0]
            found = self._groups[label] = _signed_distance(
                region | np.isin(self.labels, neighbours)
            )
        return found


_FIELDS_CACHE: OrderedDict[bytes, _LabelFields] = OrderedDict()
_FIELDS_CACHE_SIZE = 8
_FIELDS_LOCK = threading.Lock()


def _fields_of(embedding: npt.NDArray[np.float32]) -> _LabelFields:
    """The label map's distance fields, kept for the last few images (every decoder batch
    of an image would otherwise recompute them)."""
    labels = labels_of(embedding)
    key = hashlib.sha1(labels.tobytes()).digest()
    with _FIELDS_LOCK:
        fields = _FIELDS_CACHE.get(key)
        if fields is None:
            fields = _FIELDS_CACHE[key] = _LabelFields(labels)
            while len(_FIELDS_CACHE) > _FIELDS_CACHE_SIZE:
                _FIELDS_CACHE.popitem(last=False)
        else:
            _FIELDS_CACHE.move_to_end(key)
    return fields


def fake_decode(
    embedding: npt.NDArray[np.float32],
    point_coords: npt.NDArray[Any],
    point_labels: npt.NDArray[Any],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(iou [P,4], low-res logits [P,4,256,256]) for P prompts; each prompt's first
    foreground point (1024 frame) picks the object."""
    fields = _fields_of(embedding)
    coords = np.asarray(point_coords, dtype=np.float32)
    prompt_labels = np.asarray(point_labels)
    n_prompts = coords.shape[0]
    iou = np.empty((n_prompts, contract.NUM_MASK_OUTPUTS), dtype=np.float32)
    logits = np.empty((n_prompts, contract.NUM_MASK_OUTPUTS, LOW, LOW), dtype=np.float32)
    for p in range(n_prompts):
        foreground = np.flatnonzero(prompt_labels[p] == contract.LABEL_FOREGROUND)
        x, y = (
            coords[p, foreground[0]] if len(foreground) else np.array([-1, -1], np.float32)
        ).tolist()
        iou[p], logits[p] = _decode_point(fields, x, y)
    return iou, logits


def _decode_point(
    fields: _LabelFields, x: float, y: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    # Coordinates go through float32 on both sides, so these are the same numbers.
    col, row = int(np.floor(x / STRIDE)), int(np.floor(y / STRIDE))
    inside = 0 <= col < LOW and 0 <= row < LOW
    label = int(fields.labels[row, col]) if inside else 0
    object_distance, area = fields.object(label)
    group_distance = fields.group(label)

    # A part: the object cut by a disc around the point.
    radius = max(3.0, 0.6 * np.sqrt(area / np.pi))
    to_point = np.sqrt((_XX - np.float32(x / STRIDE)) ** 2 + (_YY - np.float32(y / STRIDE)) ** 2)
    part_distance = np.minimum(object_distance, np.float32(radius) - to_point)

    slopes = [0.8 + 5.0 * _unit_hash(label, k) for k in range(3)]
    part = slopes[0] * part_distance + _RIPPLE
    whole = slopes[1] * object_distance + _RIPPLE
    group = slopes[2] * group_distance + _RIPPLE
    out = np.stack([whole, part, whole, group]).astype(np.float32)

    wobble = 0.03 * np.sin(0.013 * x + 0.021 * y + label)
    if label == 0:
        base = [0.55, 0.45, 0.6, 0.5]
    else:
        base = [
            0.86 + 0.12 * _unit_hash(label, 9),
            0.70 + 0.28 * _unit_hash(label, 10),
            0.86 + 0.12 * _unit_hash(label, 9),
            0.80 + 0.18 * _unit_hash(label, 11),
        ]
    iou = np.array([b + wobble for b in base], dtype=np.float32)
    return iou, out


# -- samrt side ------------------------------------------------------------------------------


class FakeBackend(Backend):
    """A samrt backend running the fake encoder and decoder in place of the graphs.
    Stateless: thread-safe.

    The SAM family chains the graphs as it chains real ones; the fake's tensors only keep
    what it needs: decoder_image passes the embedding on (the label map), decoder_prompts
    returns the four logit maps as the "prompt image tokens" and each mask's index in its
    "mask weights", so that decoder_masks returns the logits of the masks chosen."""

    name = "fake (label-map decoder)"
    # Small, so that the family's batching and selection run in every generation.
    prompts_per_run = 8

    def run(
        self,
        role: str,
        inputs: Mapping[str, Any],
        outputs: Sequence[str],
        *,
        to_host: Collection[str] = (),
    ) -> dict[str, Any]:
        if role == contract.ENCODER:
            images = inputs[contract.ENCODER_INPUT]
            produced = {
                contract.ENCODER_OUTPUT: np.concatenate(
                    [fake_encode(images[i : i + 1]) for i in range(len(images))]
                )
            }
        elif role == contract.DECODER_IMAGE:
            embedding = inputs[contract.ENCODER_OUTPUT]
            tokens, *projections = contract.DECODER_IMAGE_OUTPUTS
            produced = {tokens: np.array(embedding, copy=True)}
            produced |= {name: np.zeros(0, np.float32) for name in projections}
        elif role == contract.DECODER_PROMPTS:
            coords, labels = contract.PROMPT_INPUTS[:2]
            iou, logits = fake_decode(
                inputs[contract.DECODER_IMAGE_OUTPUTS[0]], inputs[coords], inputs[labels]
            )
            index = np.zeros((len(iou), contract.NUM_MASK_OUTPUTS, contract.MASK_WEIGHT_DIM), np.float32)
            index += np.arange(contract.NUM_MASK_OUTPUTS, dtype=np.float32)[None, :, None]
            produced = dict(zip(contract.DECODER_PROMPTS_OUTPUTS, (iou, index, logits), strict=True))
        elif role == contract.DECODER_MASKS:
            logits, index = (inputs[name] for name in contract.DECODER_MASKS_INPUTS)
            chosen = np.asarray(index)[0, :, 0].astype(np.intp)
            produced = {contract.DECODER_MASKS_OUTPUTS[0]: np.ascontiguousarray(logits[:, chosen])}
        else:
            raise ValueError(f"the fake backend has no {role} graph")
        return {name: produced[name] for name in outputs}

    def to_numpy(self, tensor: Any) -> npt.NDArray[Any]:
        return np.asarray(tensor)

    def from_numpy(self, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.ascontiguousarray(array)


class FakeModel(Model):
    """A samrt.Model over :class:`FakeBackend`, with no engine directory."""

    def __init__(self) -> None:  # no super().__init__: there are no files to load
        self.engine_dir = Path("<fake>")
        self.precision = "fp32"
        self.manifest = Manifest(
            format_version=contract.MANIFEST_FORMAT_VERSION,
            samrt_version="fake",
            family=SamFamily.name,
            model_type="vit_b",
            model_config={},
            image_size=contract.IMAGE_SIZE,
            pixel_mean=contract.PIXEL_MEAN,
            pixel_std=contract.PIXEL_STD,
            mask_threshold=contract.MASK_THRESHOLD,
            opset=17,
            source={"fake": True},
            variants={},
        )
        self.family = SamFamily(self.manifest)
        self.backend = FakeBackend()


def fake_model() -> FakeModel:
    return FakeModel()


# -- official side ---------------------------------------------------------------------------


def official_fake_sam() -> Any:
    """An official ``Sam`` whose image encoder is only its input size: its preprocess and
    postprocess_masks are the real ones; the fake stands in for the networks."""
    import torch
    from segment_anything.modeling import Sam

    class _InputSizeOnly(torch.nn.Module):
        img_size = contract.IMAGE_SIZE

    return Sam(
        image_encoder=_InputSizeOnly(),  # type: ignore[arg-type]
        prompt_encoder=torch.nn.Module(),  # type: ignore[arg-type]
        mask_decoder=torch.nn.Module(),  # type: ignore[arg-type]
        pixel_mean=list(contract.PIXEL_MEAN),
        pixel_std=list(contract.PIXEL_STD),
    ).eval()


def _fake_sam_predictor_class() -> type:
    import torch
    from segment_anything import SamPredictor

    class FakeSamPredictor(SamPredictor):  # type: ignore[misc]
        """The official predictor with the fake in place of the encoder and decoder:
        official set_image (resize), Sam.preprocess and Sam.postprocess_masks still run."""

        @torch.no_grad()
        def set_torch_image(
            self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]
        ) -> None:
            assert transformed_image.ndim == 4 and max(*transformed_image.shape[2:]) == FRAME
            self.reset_image()
            self.original_size = original_image_size
            self.input_size = tuple(transformed_image.shape[-2:])
            input_image = self.model.preprocess(transformed_image)
            self.features = torch.from_numpy(fake_encode(input_image.numpy()))
            self.is_image_set = True

        @torch.no_grad()
        def predict_torch(
            self,
            point_coords: torch.Tensor | None,
            point_labels: torch.Tensor | None,
            boxes: torch.Tensor | None = None,
            mask_input: torch.Tensor | None = None,
            multimask_output: bool = True,
            return_logits: bool = False,
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            if not self.is_image_set:
                raise RuntimeError(
                    "An image must be set with .set_image(...) before mask prediction."
                )
            assert (
                point_coords is not None
                and point_labels is not None
                and boxes is None
                and mask_input is None
            )
            iou, low = fake_decode(
                self.features.numpy(), point_coords.numpy(), point_labels.numpy()
            )
            chosen = slice(1, None) if multimask_output else slice(0, 1)
            iou_predictions = torch.from_numpy(np.ascontiguousarray(iou[:, chosen]))
            low_res_masks = torch.from_numpy(np.ascontiguousarray(low[:, chosen]))
            masks = self.model.postprocess_masks(low_res_masks, self.input_size, self.original_size)
            if not return_logits:
                masks = masks > self.model.mask_threshold
            return masks, iou_predictions, low_res_masks

    return FakeSamPredictor


def official_generator(**params: Any) -> Any:
    """The official SamAutomaticMaskGenerator over the fake."""
    from segment_anything import SamAutomaticMaskGenerator

    sam = official_fake_sam()
    generator = SamAutomaticMaskGenerator(sam, **params)
    generator.predictor = _fake_sam_predictor_class()(sam)
    return generator
