"""SAM (Segment Anything, vit_b/l/h and any encoder with its contract): the official
SamPredictor's preprocessing, prompt layout and decoder, on the engine directory's graphs.

Per image: the encoder, then decoder_image (the first decoder layer's image side, the same
for every prompt). Per batch of prompts, a few at a time (Backend.prompts_per_run):
decoder_prompts gives the IoU predictions, then decoder_masks upscales the masks of the
prompts that are wanted. A prompt none of whose masks scores above a caller's threshold
(the generator's pred_iou_thresh) is never upscaled: its masks would all be dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from .. import contract, transforms
from ..backends import Backend, Tensor
from .base import Decoded, ModelFamily, Prompts

# Mask 0 answers a single-mask request; masks 1..3 are the multimask outputs.
_SINGLE_MASK = slice(0, 1)
_MULTIMASK = slice(1, None)


class SamFamily(ModelFamily):
    name = "sam"
    roles = contract.ROLES

    # -- images ------------------------------------------------------------------------------

    def encode(
        self, backend: Backend, image: npt.NDArray[np.uint8]
    ) -> tuple[dict[str, Tensor], tuple[int, int]]:
        manifest = self.manifest
        resized = transforms.resize_longest_side(image, manifest.image_size)
        batch = transforms.normalize_and_pad(
            resized, manifest.pixel_mean, manifest.pixel_std, manifest.image_size
        )
        input_size = (int(resized.shape[0]), int(resized.shape[1]))
        del resized
        embedding = backend.run(contract.ENCODER, {contract.ENCODER_INPUT: batch}, (contract.ENCODER_OUTPUT,))
        del batch
        return self._with_image_side(backend, embedding[contract.ENCODER_OUTPUT]), input_size

    def from_embedding(self, backend: Backend, embedding: npt.NDArray[np.float32]) -> dict[str, Tensor]:
        return self._with_image_side(backend, backend.from_numpy(embedding))

    def _with_image_side(self, backend: Backend, embedding: Tensor) -> dict[str, Tensor]:
        side = backend.run(
            contract.DECODER_IMAGE, {contract.ENCODER_OUTPUT: embedding}, contract.DECODER_IMAGE_OUTPUTS
        )
        return {contract.ENCODER_OUTPUT: embedding, **side}

    @property
    def embedding_name(self) -> str:
        return contract.ENCODER_OUTPUT

    @property
    def embedding_shape(self) -> tuple[int, ...]:
        return (1, contract.EMBEDDING_DIM, contract.EMBEDDING_SIZE, contract.EMBEDDING_SIZE)

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        return transforms.preprocess_shape(*original_size, self.manifest.image_size)

    # -- prompts -----------------------------------------------------------------------------

    def decode(
        self,
        backend: Backend,
        image: Mapping[str, Tensor],
        original_size: tuple[int, int],
        prompts: Prompts,
        *,
        multimask_output: bool,
        score_threshold: float | None = None,
    ) -> Decoded:
        chosen = _MULTIMASK if multimask_output else _SINGLE_MASK
        inputs = _prompt_inputs(prompts, original_size, self.manifest.image_size)
        image_side = {name: image[name] for name in contract.DECODER_IMAGE_OUTPUTS}
        iou_name, weights_name, tokens_name = contract.DECODER_PROMPTS_OUTPUTS
        (low_res_name,) = contract.DECODER_MASKS_OUTPUTS

        n_masks = len(range(contract.NUM_MASK_OUTPUTS)[chosen])
        scores = np.empty((prompts.count, n_masks), np.float32)
        parts: list[npt.NDArray[np.float32]] = []
        kept: list[npt.NDArray[np.intp]] = []
        step = backend.prompts_per_run
        for start in range(0, prompts.count, step):
            part = {name: value[start : start + step] for name, value in inputs.items()}
            out = backend.run(
                contract.DECODER_PROMPTS,
                {**image_side, **part},
                contract.DECODER_PROMPTS_OUTPUTS,
                to_host=(iou_name, weights_name),
            )
            part_scores = out[iou_name][:, chosen]
            scores[start : start + len(part_scores)] = part_scores
            tokens = out[tokens_name]
            weights = out[weights_name][:, chosen]
            rows = np.arange(len(part_scores))
            if score_threshold is not None:
                rows = np.flatnonzero((part_scores > np.float32(score_threshold)).any(axis=1))
                if len(rows) == 0:
                    continue
                if len(rows) < len(part_scores):
                    tokens, weights = backend.take(tokens, rows), weights[rows]
            masks = backend.run(
                contract.DECODER_MASKS,
                dict(zip(contract.DECODER_MASKS_INPUTS, (tokens, weights), strict=True)),
                contract.DECODER_MASKS_OUTPUTS,
                to_host=(low_res_name,),
            )
            parts.append(masks[low_res_name])
            kept.append(rows + start)
        if len(parts) == 1:
            low_res, index = parts[0], kept[0]
        elif parts:
            low_res, index = np.concatenate(parts), np.concatenate(kept)
        else:
            low_res = np.empty((0, n_masks, contract.LOW_RES_SIZE, contract.LOW_RES_SIZE), np.float32)
            index = np.empty(0, np.intp)
        return Decoded(scores, low_res, index)


def _prompt_inputs(
    prompts: Prompts, original_size: tuple[int, int], image_size: int
) -> dict[str, npt.NDArray[np.float32]]:
    """decoder_prompts' prompt inputs, as the official prompt encoder lays prompts out: the
    clicked points, then either the box's two corners (labels 2, 3) or, for clicked points
    without a box, one padding point (label -1); no points and no box give no point at
    all (a mask input alone, or no prompt: the output tokens alone)."""
    n = prompts.count
    parts_xy: list[npt.NDArray[np.float64]] = []
    parts_label: list[npt.NDArray[np.float64]] = []
    # Normalized coordinates (fractions of the width and height) in pixels first.
    scale = np.array(original_size[::-1], dtype=np.float64) if prompts.normalized else None
    if prompts.coords is not None and prompts.labels is not None:
        coords = prompts.coords if scale is None else prompts.coords * scale
        parts_xy.append(transforms.apply_coords(coords, original_size, image_size))
        parts_label.append(prompts.labels)
    if prompts.boxes is not None:
        boxes = prompts.boxes if scale is None else prompts.boxes * np.tile(scale, 2)
        corners = transforms.apply_boxes(boxes, original_size, image_size).reshape(n, 2, 2)
        parts_xy.append(corners)
        parts_label.append(
            np.broadcast_to(
                np.array([contract.LABEL_BOX_TOP_LEFT, contract.LABEL_BOX_BOTTOM_RIGHT], dtype=np.float64),
                (n, 2),
            )
        )
    elif prompts.coords is not None:
        parts_xy.append(np.zeros((n, 1, 2), dtype=np.float64))
        parts_label.append(np.full((n, 1), contract.LABEL_PADDING, dtype=np.float64))
    xy = np.concatenate(parts_xy, axis=1) if parts_xy else np.zeros((n, 0, 2))
    labels = np.concatenate(parts_label, axis=1) if parts_label else np.zeros((n, 0))
    if xy.size and np.abs(xy).max() > np.finfo(np.float32).max:
        raise ValueError("point_coords or box are too large: they overflow float32 in the model's frame")
    size = contract.LOW_RES_SIZE
    if prompts.masks is None:
        masks = np.zeros((n, 1, size, size), dtype=np.float32)
        has_mask = np.zeros((n,), dtype=np.float32)
    else:
        masks = prompts.masks
        has_mask = np.ones((n,), dtype=np.float32)
    coords_name, labels_name, masks_name, has_mask_name = contract.PROMPT_INPUTS
    return {
        coords_name: np.ascontiguousarray(xy, dtype=np.float32),
        labels_name: np.ascontiguousarray(labels, dtype=np.float32),
        masks_name: masks,
        has_mask_name: has_mask,
    }
