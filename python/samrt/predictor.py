"""``samrt.Predictor``: the official SamPredictor's surface on exported engines.

Concurrency model: a :class:`Model` (the loaded graphs) is immutable and safe to share
between threads; each :class:`Predictor` holds one image's embedding. A predictor's image
state is swapped atomically, so a predict call always sees one consistent image, but a
service should give each thread (or request) its own Predictor over one shared Model:
``Predictor(model)`` costs no copy of the weights.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

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
from .backends import Backend, Tensor, create_backend
from .errors import ImageNotSetError
from .families import Decoded, ModelFamily, Prompts, family_for
from .manifest import Manifest, load_manifest
from .postprocess import upsample_logits, upsample_masks

_log = logging.getLogger("samrt")

# Larger images are refused before any work: a decoded 100-megapixel RGB image alone is
# 300 MB. Pass max_image_pixels=None to lift the cap.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000


class Model:
    """An engine directory loaded into a backend. Thread-safe; share one per process.

    ``precision`` None takes what the directory has (fp32 where there are both; see
    Manifest.default_precision) and logs the choice at INFO on the "samrt" logger.
    """

    def __init__(
        self,
        engine_dir: str | os.PathLike[str],
        backend: str = "auto",
        *,
        precision: str | None = None,
        verify: bool = True,
        intra_op_num_threads: int | None = None,
    ) -> None:
        self.engine_dir = Path(engine_dir)
        if precision is None:
            manifest = load_manifest(self.engine_dir, verify=False)
            precision = manifest.default_precision()
            _log.info(
                "samrt precision: %s (%s has %s)",
                precision,
                self.engine_dir,
                " and ".join(sorted(manifest.variants)),
            )
        self.precision = precision
        self.manifest: Manifest = load_manifest(self.engine_dir, verify=verify, precisions=(precision,))
        self.family: ModelFamily = family_for(self.manifest)
        self.backend: Backend = create_backend(
            self.engine_dir,
            self.manifest,
            backend,
            roles=self.family.roles,
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
    """One image as a Predictor holds it: the tensors the decoder reads (the embedding and
    what the decoder reuses for every prompt, in the backend's form: on the device for a
    GPU backend) and the image's sizes. Immutable and bound to the Model that made it: a
    service keeps these in its cache and hands one to any Predictor of the same Model
    with :meth:`Predictor.set_image_state`, with no copy and no check of the values (they
    came from this Model)."""

    model: Model
    tensors: Mapping[str, Tensor]
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def embedding(self) -> Tensor:
        return self.tensors[self.model.family.embedding_name]

    @property
    def nbytes(self) -> int:
        """Bytes this state holds (on the host or the device), for caches bounded in bytes."""
        backend = self.model.backend
        return sum(backend.nbytes(t) for t in self.tensors.values())


class Predictor:
    """Computes an image's embedding once, then predicts masks for prompts on it.

    ``Predictor(engine_dir)`` loads the model; ``Predictor(model)`` shares a loaded one.
    """

    def __init__(
        self,
        engine_dir_or_model: str | os.PathLike[str] | Model,
        backend: str = "auto",
        *,
        precision: str | None = None,
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
        tensors, input_size = self.model.family.encode(self.model.backend, image)
        self._state = ImageState(
            model=self.model,
            tensors=MappingProxyType(tensors),
            original_size=(int(image.shape[0]), int(image.shape[1])),
            input_size=input_size,
        )
        del image
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
        family = self.model.family
        array = np.asarray(embedding)
        expected = family.embedding_shape
        if array.ndim == len(expected) - 1:
            array = array[None]
        if array.shape != expected:
            raise ValueError(f"embedding must have shape {expected}, got {array.shape}")
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"embedding must be a float array, got dtype {array.dtype}")
        if not np.isfinite(array).all():
            raise ValueError("embedding contains NaN or infinite values")
        tensors = family.from_embedding(self.model.backend, np.ascontiguousarray(array, dtype=np.float32))
        self._state = ImageState(
            model=self.model,
            tensors=MappingProxyType(tensors),
            original_size=size,
            input_size=family.input_size(size),
        )

    def get_image_embedding(self) -> npt.NDArray[np.float32]:
        """The current image's embedding, [1,256,64,64] float32 on the host (a copy)."""
        embedding = self.model.backend.to_numpy(self._require_image().embedding)
        return np.array(embedding, dtype=np.float32, copy=True)

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
        normalize_coords: bool = True,
    ) -> tuple[npt.NDArray[np.bool_] | npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Masks for one prompt, as the official SamPredictor.predict (SAM2ImagePredictor's
        on a SAM 2.1 engine).

        point_coords Nx2 (x, y) pixels of the original image with point_labels N (1 fg,
        0 bg); box XYXY [4]; mask_input 1x256x256 logits from an earlier call. Any may be
        left out, all of them too (the official answers a call with no prompt from the
        image alone). Returns (masks CxHxW bool, or float32 logits with return_logits;
        scores C; low-res logits Cx256x256), C = 3 with multimask_output else 1.
        ``normalize_coords`` False: point_coords and box are fractions (0..1) of the
        image's width and height instead of pixels (SAM2ImagePredictor's meaning).
        """
        prompts = _prompts(point_coords, point_labels, box, mask_input, batched=False, normalized=not normalize_coords)
        masks, scores, low_res = self._predict(prompts, multimask_output, return_logits)
        return masks[0], scores[0], low_res[0]

    def predict_batch(
        self,
        point_coords: npt.ArrayLike | None = None,
        point_labels: npt.ArrayLike | None = None,
        boxes: npt.ArrayLike | None = None,
        mask_input: npt.ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[npt.NDArray[np.bool_] | npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Masks for P prompts at once (the official predict_torch, numpy in and out,
        coordinates in the original image's pixels).

        point_coords PxNx2 with point_labels PxN; boxes Px4; mask_input Px1x256x256.
        Returns (masks PxCxHxW, scores PxC, low-res logits PxCx256x256).
        """
        prompts = _prompts(point_coords, point_labels, boxes, mask_input, batched=True, normalized=not normalize_coords)
        return self._predict(prompts, multimask_output, return_logits)

    def predict_low_res(
        self,
        point_coords: npt.ArrayLike | None = None,
        point_labels: npt.ArrayLike | None = None,
        boxes: npt.ArrayLike | None = None,
        mask_input: npt.ArrayLike | None = None,
        multimask_output: bool = True,
        normalize_coords: bool = True,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Like predict_batch, without upsampling: (scores PxC, low-res logits PxCx256x256)."""
        prompts = _prompts(point_coords, point_labels, boxes, mask_input, batched=True, normalized=not normalize_coords)
        decoded = self._decode(prompts, multimask_output)
        return decoded.scores, self.model.family.returned_low_res(decoded.low_res)

    def predict_low_res_above(
        self,
        score_threshold: float,
        point_coords: npt.ArrayLike | None = None,
        point_labels: npt.ArrayLike | None = None,
        boxes: npt.ArrayLike | None = None,
        mask_input: npt.ArrayLike | None = None,
        multimask_output: bool = True,
        normalize_coords: bool = True,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        """predict_low_res for the prompts that have a mask scoring above
        ``score_threshold``: (scores PxC of every prompt, the indices S of those prompts,
        their low-res logits SxCx256x256). The others never have their masks upscaled,
        which is most of the decoder's work: the automatic mask generator drops such
        masks by pred_iou_thresh anyway."""
        threshold = float(score_threshold)
        if not np.isfinite(threshold):
            raise ValueError(f"score_threshold must be a finite number, got {score_threshold!r}")
        prompts = _prompts(point_coords, point_labels, boxes, mask_input, batched=True, normalized=not normalize_coords)
        decoded = self._decode(prompts, multimask_output, score_threshold=threshold)
        return decoded.scores, decoded.index, self.model.family.returned_low_res(decoded.low_res)

    # -- internals -----------------------------------------------------------------------

    def _decode_points(
        self,
        points: npt.NDArray[Any],
        mask_input: npt.NDArray[np.float32] | None,
        multimask_output: bool,
        score_threshold: float | None,
    ) -> Decoded:
        """The automatic mask generator's decode: one foreground point per prompt (pixels),
        an optional mask input per prompt, the logits as decoded (the masks are made from
        those; ``family.returned_low_res`` gives the ones fed back as mask input)."""
        prompts = _prompts(points[:, None, :], np.ones((len(points), 1)), None, mask_input, batched=True)
        return self._decode(prompts, multimask_output, score_threshold=score_threshold)

    def _require_image(self) -> ImageState:
        state = self._state
        if state is None:
            raise ImageNotSetError("an image must be set with set_image() (or set_image_embedding()) first")
        return state

    def _decode(
        self, prompts: Prompts, multimask_output: bool, score_threshold: float | None = None
    ) -> Decoded:
        state = self._require_image()
        model = self.model
        return model.family.decode(
            model.backend,
            state.tensors,
            state.original_size,
            prompts,
            multimask_output=multimask_output,
            score_threshold=score_threshold,
        )

    def _predict(
        self, prompts: Prompts, multimask_output: bool, return_logits: bool
    ) -> tuple[npt.NDArray[np.bool_] | npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        state = self._require_image()
        decoded = self._decode(prompts, multimask_output)
        family = self.model.family
        low_res = decoded.low_res
        n_prompts, n_masks = low_res.shape[:2]
        flat = low_res.reshape(n_prompts * n_masks, contract.LOW_RES_SIZE, contract.LOW_RES_SIZE)
        input_size, padded_size = family.upsample_frame(state.input_size)
        if return_logits:
            full: npt.NDArray[np.bool_] | npt.NDArray[np.float32] = upsample_logits(
                flat, input_size, state.original_size, padded_size=padded_size
            )
        else:
            full = upsample_masks(
                flat,
                input_size,
                state.original_size,
                threshold=self.model.manifest.mask_threshold,
                padded_size=padded_size,
            )
        return (
            full.reshape(n_prompts, n_masks, *state.original_size),
            decoded.scores,
            family.returned_low_res(low_res),
        )


def _prompts(
    point_coords: npt.ArrayLike | None,
    point_labels: npt.ArrayLike | None,
    boxes: npt.ArrayLike | None,
    mask_input: npt.ArrayLike | None,
    *,
    batched: bool,
    normalized: bool = False,
) -> Prompts:
    """Checked prompts (the validators give unbatched ones, predict's, a batch axis of 1)."""
    coords = labels = box_arr = masks_in = None
    if point_coords is not None or point_labels is not None:
        coords, labels = as_points(point_coords, point_labels, batched=batched)
    if boxes is not None:
        box_arr = as_boxes(boxes, "box" if not batched else "boxes", batched=batched)
    if mask_input is not None:
        masks_in = as_mask_input(mask_input, batched=batched)
    counts = {
        name: len(arr)
        for name, arr in (("point_coords", coords), ("boxes", box_arr), ("mask_input", masks_in))
        if arr is not None
    }
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{name} has {n}" for name, n in counts.items())
        raise ValueError(f"the batched prompts must agree in their first dimension ({detail})")
    # No prompt at all is one prompt of nothing, as the official prompt encoder counts it.
    count = next(iter(counts.values()), 1)
    return Prompts(count, coords, labels, box_arr, masks_in, normalized=bool(normalized))
