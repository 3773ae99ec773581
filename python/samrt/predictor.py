"""``samrt.Predictor``: the official SamPredictor's surface on exported engines.

Concurrency model: a :class:`Model` (the loaded graphs) is immutable and safe to share
between threads; each :class:`Predictor` holds one image's embedding. A predictor's image
state is swapped atomically, so a predict call always sees one consistent image, but a
service should give each thread (or request) its own Predictor over one shared Model:
``Predictor(model)`` costs no copy of the weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from . import _core, contract, transforms
from ._validate import (
    as_boxes,
    as_image,
    as_mask_input,
    as_points,
    as_size,
)
from .backends import Backend, Embedding, create_backend
from .errors import ImageNotSetError
from .manifest import Manifest, load_manifest
from .postprocess import upsample_logits, upsample_masks

# Larger images are refused before any work: a decoded 100-megapixel RGB image alone is
# 300 MB. Pass max_image_pixels=None to lift the cap.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000


class Model:
    """An engine directory loaded into a backend. Thread-safe; share one per process."""

    def __init__(
        self,
        engine_dir: str | os.PathLike[str],
        backend: str = "auto",
        *,
        precision: str = "fp32",
        verify: bool = True,
        intra_op_num_threads: int | None = None,
    ) -> None:
        self.engine_dir = Path(engine_dir)
        self.precision = precision
        self.manifest: Manifest = load_manifest(self.engine_dir, verify=verify, precisions=(precision,))
        self.backend: Backend = create_backend(
            self.engine_dir,
            self.manifest,
            backend,
            precision=precision,
            intra_op_num_threads=intra_op_num_threads,
        )

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def __repr__(self) -> str:
        return (
            f"Model({str(self.engine_dir)!r}, model_type={self.manifest.model_type!r}, "
            f"precision={self.precision!r}, backend={self.backend_name!r})"
        )


@dataclass(frozen=True, eq=False)
class ImageState:
    """One image as a Predictor holds it: the embedding (in the backend's form, on the
    device for a GPU backend) and the image's sizes. Immutable and bound to the Model
    that made it: a service keeps these in its cache and hands one to any Predictor of
    the same Model with :meth:`Predictor.set_image_state`, with no copy and no check of
    the embedding's values (it came from this Model)."""

    model: Model
    embedding: Embedding
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        """Bytes this state holds (on the host or the device), for caches bounded in bytes."""
        return self.model.backend.embedding_nbytes(self.embedding)


class Predictor:
    """Computes an image's embedding once, then predicts masks for prompts on it.

    ``Predictor(engine_dir)`` loads the model; ``Predictor(model)`` shares a loaded one.
    """

    def __init__(
        self,
        engine_dir_or_model: str | os.PathLike[str] | Model,
        backend: str = "auto",
        *,
        precision: str = "fp32",
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        if isinstance(engine_dir_or_model, Model):
            self.model = engine_dir_or_model
        else:
            self.model = Model(engine_dir_or_model, backend, precision=precision)
        self.max_image_pixels = max_image_pixels
        self._state: ImageState | None = None

    # -- image ---------------------------------------------------------------------------

    def set_image(self, image: npt.NDArray[np.uint8], image_format: str = "RGB") -> None:
        """Computes the embedding of an HxWx3 uint8 image (RGB, or BGR with image_format)."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        image = as_image(image, "image", max_pixels=self.max_image_pixels)
        if image_format == "BGR":
            image = image[..., ::-1]
        manifest = self.model.manifest
        resized = transforms.resize_longest_side(image, manifest.image_size)
        batch = transforms.normalize_and_pad(resized, manifest.pixel_mean, manifest.pixel_std, manifest.image_size)
        embedding = self.model.backend.encode(batch)
        self._state = ImageState(
            model=self.model,
            embedding=embedding,
            original_size=(int(image.shape[0]), int(image.shape[1])),
            input_size=(int(resized.shape[0]), int(resized.shape[1])),
        )
        del image, resized, batch
        # The encoder's intermediates (about 0.5 GB for vit_b) were just freed: hand them
        # back to the OS, or the heap keeps them (see csrc/heap.hpp).
        _core.release_free_heap_memory()

    def set_image_embedding(
        self,
        embedding: npt.NDArray[np.float32],
        original_size: tuple[int, int],
    ) -> None:
        """Uses a saved embedding ([1,256,64,64] or [256,64,64] float32, from
        get_image_embedding) of an image of ``original_size`` (H, W)."""
        size = as_size(original_size, "original_size")
        array = np.asarray(embedding)
        if array.ndim == 3:
            array = array[None]
        expected = (1, contract.EMBEDDING_DIM, contract.EMBEDDING_SIZE, contract.EMBEDDING_SIZE)
        if array.shape != expected:
            raise ValueError(f"embedding must have shape {expected}, got {array.shape}")
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"embedding must be a float array, got dtype {array.dtype}")
        if not np.isfinite(array).all():
            raise ValueError("embedding contains NaN or infinite values")
        self._state = ImageState(
            model=self.model,
            embedding=self.model.backend.embedding_from_numpy(array.astype(np.float32)),
            original_size=size,
            input_size=transforms.preprocess_shape(*size, self.model.manifest.image_size),
        )

    def get_image_embedding(self) -> npt.NDArray[np.float32]:
        """The current image's embedding, [1,256,64,64] float32 on the host."""
        return self.model.backend.embedding_to_numpy(self._require_image().embedding)

    @property
    def image_state(self) -> ImageState:
        """The current image's state, to keep and later restore with set_image_state."""
        return self._require_image()

    def set_image_state(self, state: ImageState) -> None:
        """Makes ``state`` (from any Predictor of this Predictor's Model) the current image."""
        if not isinstance(state, ImageState):
            raise TypeError(f"state must be an ImageState, got {type(state).__name__}")
        if state.model is not self.model:
            raise ValueError("this ImageState was made by another Model; states are bound to their Model")
        self._state = state

    def reset_image(self) -> None:
        self._state = None

    @property
    def is_image_set(self) -> bool:
        return self._state is not None

    @property
    def original_size(self) -> tuple[int, int] | None:
        return None if self._state is None else self._state.original_size

    @property
    def input_size(self) -> tuple[int, int] | None:
        return None if self._state is None else self._state.input_size

    @property
    def backend_name(self) -> str:
        return self.model.backend_name

    # -- prompts -------------------------------------------------------------------------

    def predict(
        self,
        point_coords: npt.ArrayLike | None = None,
        point_labels: npt.ArrayLike | None = None,
        box: npt.ArrayLike | None = None,
        mask_input: npt.ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[npt.NDArray[np.bool_] | npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Masks for one prompt, as the official SamPredictor.predict.

        point_coords Nx2 (x, y) pixels of the original image with point_labels N (1 fg,
        0 bg); box XYXY [4]; mask_input 1x256x256 logits from an earlier call. Returns
        (masks CxHxW bool, or float32 logits with return_logits; scores C; low-res logits
        Cx256x256), C = 3 with multimask_output else 1.
        """
        coords = labels = None
        if point_coords is not None or point_labels is not None:
            coords, labels = as_points(point_coords, point_labels, batched=False)
        boxes = None if box is None else as_boxes(box, "box", batched=False)
        masks_in = None if mask_input is None else as_mask_input(mask_input, batched=False)
        masks, scores, low_res = self.predict_batch(
            coords, labels, boxes, masks_in, multimask_output=multimask_output, return_logits=return_logits
        )
        return masks[0], scores[0], low_res[0]

    def predict_batch(
        self,
        point_coords: npt.ArrayLike | None = None,
        point_labels: npt.ArrayLike | None = None,
        boxes: npt.ArrayLike | None = None,
        mask_input: npt.ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[npt.NDArray[np.bool_] | npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Masks for P prompts at once (the official predict_torch, numpy in and out,
        coordinates in the original image's pixels).

        point_coords PxNx2 with point_labels PxN; boxes Px4; mask_input Px1x256x256.
        Returns (masks PxCxHxW, scores PxC, low-res logits PxCx256x256).
        """
        state = self._require_image()
        scores, low_res = self._decode(state, point_coords, point_labels, boxes, mask_input, multimask_output)
        n_prompts, n_masks = scores.shape
        flat = low_res.reshape(n_prompts * n_masks, contract.LOW_RES_SIZE, contract.LOW_RES_SIZE)
        if return_logits:
            full: npt.NDArray[np.bool_] | npt.NDArray[np.float32] = upsample_logits(
                flat, state.input_size, state.original_size
            )
        else:
            full = upsample_masks(
                flat, state.input_size, state.original_size, threshold=self.model.manifest.mask_threshold
            )
        return full.reshape(n_prompts, n_masks, *state.original_size), scores, low_res

    def predict_low_res(
        self,
        point_coords: npt.ArrayLike | None = None,
        point_labels: npt.ArrayLike | None = None,
        boxes: npt.ArrayLike | None = None,
        mask_input: npt.ArrayLike | None = None,
        multimask_output: bool = True,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Like predict_batch, without upsampling: (scores PxC, low-res logits PxCx256x256).
        The automatic mask generator post-processes these itself."""
        return self._decode(self._require_image(), point_coords, point_labels, boxes, mask_input, multimask_output)

    # -- internals -----------------------------------------------------------------------

    def _require_image(self) -> ImageState:
        state = self._state
        if state is None:
            raise ImageNotSetError("an image must be set with set_image() (or set_image_embedding()) first")
        return state

    def _decode(
        self,
        state: ImageState,
        point_coords: npt.ArrayLike | None,
        point_labels: npt.ArrayLike | None,
        boxes: npt.ArrayLike | None,
        mask_input: npt.ArrayLike | None,
        multimask_output: bool,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        coords = labels = box_arr = masks_in = None
        if point_coords is not None or point_labels is not None:
            coords, labels = as_points(point_coords, point_labels, batched=True)
        if boxes is not None:
            box_arr = as_boxes(boxes, "boxes", batched=True)
        if mask_input is not None:
            masks_in = as_mask_input(mask_input, batched=True)
        n_prompts = _prompt_count(coords, box_arr, masks_in)

        prompt_coords, prompt_labels = _prompt_points(coords, labels, box_arr, state.original_size, n_prompts)
        if masks_in is None:
            size = contract.LOW_RES_SIZE
            masks_in = np.zeros((n_prompts, 1, size, size), dtype=np.float32)
            has_mask = np.zeros((n_prompts,), dtype=np.float32)
        else:
            has_mask = np.ones((n_prompts,), dtype=np.float32)

        iou, low_res = self.model.backend.decode(state.embedding, prompt_coords, prompt_labels, masks_in, has_mask)
        # Mask 0 answers a single-mask request; masks 1..3 are the multimask outputs.
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return np.ascontiguousarray(iou[:, chosen]), np.ascontiguousarray(low_res[:, chosen])


def _prompt_count(
    coords: npt.NDArray[np.float64] | None,
    boxes: npt.NDArray[np.float64] | None,
    masks: npt.NDArray[np.float32] | None,
) -> int:
    counts = {
        name: len(arr)
        for name, arr in (("point_coords", coords), ("boxes", boxes), ("mask_input", masks))
        if arr is not None
    }
    if not counts:
        raise ValueError("give at least one prompt: point_coords with point_labels, a box, or mask_input")
    if "point_coords" not in counts and "boxes" not in counts:
        raise ValueError("mask_input alone is not a prompt: give point_coords or a box with it")
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{name} has {n}" for name, n in counts.items())
        raise ValueError(f"the batched prompts must agree in their first dimension ({detail})")
    return next(iter(counts.values()))


def _prompt_points(
    coords: npt.NDArray[np.float64] | None,
    labels: npt.NDArray[np.float64] | None,
    boxes: npt.NDArray[np.float64] | None,
    original_size: tuple[int, int],
    n_prompts: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The decoder's point sequence per prompt, as the official prompt encoder builds it:
    the clicked points, then either the box's two corners (labels 2, 3) or, when there is
    no box, one padding point (label -1)."""
    parts_xy: list[npt.NDArray[np.float64]] = []
    parts_label: list[npt.NDArray[np.float64]] = []
    if coords is not None and labels is not None:
        parts_xy.append(transforms.apply_coords(coords, original_size))
        parts_label.append(labels)
    if boxes is not None:
        corners = transforms.apply_boxes(boxes, original_size).reshape(n_prompts, 2, 2)
        parts_xy.append(corners)
        parts_label.append(
            np.broadcast_to(
                np.array([contract.LABEL_BOX_TOP_LEFT, contract.LABEL_BOX_BOTTOM_RIGHT], dtype=np.float64),
                (n_prompts, 2),
            )
        )
    else:
        parts_xy.append(np.zeros((n_prompts, 1, 2), dtype=np.float64))
        parts_label.append(np.full((n_prompts, 1), contract.LABEL_PADDING, dtype=np.float64))
    xy = np.concatenate(parts_xy, axis=1)
    if np.abs(xy).max() > np.finfo(np.float32).max:
        raise ValueError("point_coords or box are too large: they overflow float32 in the model's frame")
    return np.ascontiguousarray(xy, dtype=np.float32), np.ascontiguousarray(np.concatenate(parts_label, axis=1), dtype=np.float32)
