"""SAM 2.1 image models (Hiera tiny/small/base+/large): the official SAM2ImagePredictor's
preprocessing, prompt layout, mask choice and postprocessing on an engine directory's two
graphs (see samrt.contract, "SAM 2.1").

Differences from SAM that live here and nowhere else:

* The image is resized to 1024 x 1024 whatever its aspect (SAM2Transforms: ToTensor, then
  torchvision's antialiased bilinear Resize, then the ImageNet Normalize): no padding, so
  the input size is always (1024, 1024).
* Coordinates go to the model frame by x / W * 1024 and y / H * 1024
  (``normalize_coords=True``), or by * 1024 for coordinates already in [0, 1].
* Prompts are laid out box corners first, then the clicks, then the padding point, which
  the official prompt encoder appends to every set of points (a box is a set of points
  there).
* The decoder gives all four masks; a multimask request takes masks 1..3, a single-mask
  request mask 0 unless its stability score (on the 256 x 256 logits) is below the
  exported threshold, then the multimask output with the best IoU prediction
  (MaskDecoder._dynamic_multimask_via_stability).
* Masks are upsampled from 256 x 256 straight to the original size (one bilinear resize);
  the low-resolution logits handed back are clamped to +/- 32, the masks are made from the
  unclamped ones, as SAM2ImagePredictor._predict does.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from .. import contract
from ..backends import Backend, Tensor
from ..manifest import Manifest
from .base import Decoded, ModelFamily, Prompts

_LOW = contract.LOW_RES_SIZE
_MULTIMASK = slice(1, None)


class Sam2Family(ModelFamily):
    name = contract.SAM2_FAMILY
    roles = contract.SAM2_ROLES
    # Masks are made by one bilinear resize from 256 x 256 to the original size.
    upsample_padded_size = contract.LOW_RES_SIZE
    generator_defaults = {"pred_iou_thresh": 0.8}  # SAM2AutomaticMaskGenerator's
    generator_records_in_float32 = True

    def __init__(self, manifest: Manifest) -> None:
        super().__init__(manifest)
        choice = manifest.extra.get(contract.SAM2_FAMILY, {})
        self.dynamic_multimask = bool(choice.get("dynamic_multimask_via_stability", False))
        self.stability_delta = np.float32(choice.get("dynamic_multimask_stability_delta", 0.05))
        self.stability_thresh = np.float32(choice.get("dynamic_multimask_stability_thresh", 0.98))
        size = manifest.image_size
        self._mean = (np.asarray(manifest.pixel_mean, np.float64) / 255.0).astype(np.float32)
        self._std = (np.asarray(manifest.pixel_std, np.float64) / 255.0).astype(np.float32)
        self._size = size
        # What the decoder reads of an image, as the engine directory's graphs have it (an
        # export before the image side moved to the encoder graph has a decoder that reads
        # the embedding and the two high-resolution levels). An image keeps that and its
        # embedding, nothing more: the encoder's other outputs are not asked for.
        variant = manifest.variants[manifest.default_precision()]
        self._decoder_image_inputs = tuple(
            t.name for t in variant[contract.SAM2_DECODER].inputs if t.name not in contract.PROMPT_INPUTS
        )
        self._kept = tuple(dict.fromkeys((contract.SAM2_EMBEDDING, *self._decoder_image_inputs)))

    # -- images ------------------------------------------------------------------------------

    def encode(
        self, backend: Backend, image: npt.NDArray[np.uint8]
    ) -> tuple[dict[str, Tensor], tuple[int, int]]:
        batch = self.preprocess(image)
        out = backend.run(contract.ENCODER, {contract.ENCODER_INPUT: batch}, self._kept)
        del batch
        return dict(out), (self._size, self._size)

    def preprocess(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """HxWx3 uint8 RGB -> the encoder's [1,3,1024,1024] input, as SAM2Transforms."""
        scaled = image.astype(np.float32) * np.float32(1.0 / 255.0)
        resized = resize_bilinear_antialias(scaled, self._size, self._size)
        del scaled
        normalized = (resized - self._mean) / self._std
        return np.ascontiguousarray(normalized.transpose(2, 0, 1)[None], dtype=np.float32)

    def from_embedding(self, backend: Backend, embedding: npt.NDArray[np.float32]) -> dict[str, Tensor]:
        raise ValueError(
            "a SAM 2.1 decoder needs the image's high-resolution features as well as its "
            "embedding, so an embedding alone cannot be decoded; keep the predictor's "
            "image_state (set_image_state) instead of the embedding"
        )

    @property
    def embedding_name(self) -> str:
        return contract.SAM2_EMBEDDING

    @property
    def embedding_shape(self) -> tuple[int, ...]:
        return (1, contract.EMBEDDING_DIM, contract.EMBEDDING_SIZE, contract.EMBEDDING_SIZE)

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        return (self._size, self._size)

    def upsample_frame(self, input_size: tuple[int, int]) -> tuple[tuple[int, int], int]:
        return (_LOW, _LOW), _LOW

    def returned_low_res(self, low_res: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        clamp = np.float32(contract.SAM2_LOGIT_CLAMP)
        return np.clip(low_res, -clamp, clamp)

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
        inputs = self._prompt_inputs(prompts, original_size)
        features = {name: image[name] for name in self._decoder_image_inputs}
        iou_name, masks_name, _ = contract.SAM2_DECODER_OUTPUTS
        n_masks = 3 if multimask_output else 1
        scores = np.empty((prompts.count, n_masks), np.float32)
        parts: list[npt.NDArray[np.float32]] = []
        kept: list[npt.NDArray[np.intp]] = []
        step = backend.prompts_per_run
        for start in range(0, prompts.count, step):
            part = {name: value[start : start + step] for name, value in inputs.items()}
            out = backend.run(
                contract.SAM2_DECODER,
                {**features, **part},
                (iou_name, masks_name),
                to_host=(iou_name, masks_name),
            )
            part_scores, part_masks = self._choose(
                np.asarray(out[iou_name]), np.asarray(out[masks_name]), multimask_output
            )
            scores[start : start + len(part_scores)] = part_scores
            rows = np.arange(len(part_scores))
            if score_threshold is not None:
                rows = np.flatnonzero((part_scores > np.float32(score_threshold)).any(axis=1))
                if len(rows) == 0:
                    continue
                part_masks = part_masks[rows]
            parts.append(np.ascontiguousarray(part_masks))
            kept.append(rows + start)
        if len(parts) == 1:
            low_res, index = parts[0], kept[0]
        elif parts:
            low_res, index = np.concatenate(parts), np.concatenate(kept)
        else:
            low_res = np.empty((0, n_masks, _LOW, _LOW), np.float32)
            index = np.empty(0, np.intp)
        return Decoded(scores, low_res, index)

    def _choose(
        self, iou: npt.NDArray[np.float32], masks: npt.NDArray[np.float32], multimask_output: bool
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """MaskDecoder.forward's choice among the four masks (eval mode)."""
        if multimask_output:
            return iou[:, _MULTIMASK], masks[:, _MULTIMASK]
        single_iou, single = iou[:, :1], masks[:, :1]
        if not self.dynamic_multimask:
            return single_iou, single
        flat = single.reshape(len(single), -1)
        area_i = (flat > self.stability_delta).sum(axis=1).astype(np.float32)
        area_u = (flat > -self.stability_delta).sum(axis=1).astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            stability = np.where(area_u > 0, area_i / area_u, np.float32(1.0))
        stable = stability >= self.stability_thresh
        rows = np.arange(len(iou))
        best = np.argmax(iou[:, _MULTIMASK], axis=1) + 1
        chosen_iou = np.where(stable, single_iou[:, 0], iou[rows, best])[:, None]
        chosen = np.where(stable[:, None, None, None], single, masks[rows, best][:, None])
        return chosen_iou.astype(np.float32), chosen.astype(np.float32, copy=False)

    def _prompt_inputs(
        self, prompts: Prompts, original_size: tuple[int, int]
    ) -> dict[str, npt.NDArray[np.float32]]:
        n = prompts.count
        height, width = original_size
        size = np.float32(self._size)

        def to_frame(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
            # SAM2Transforms.transform_coords, in float32 as the official tensors are.
            coords = np.array(xy, dtype=np.float32)
            if not prompts.normalized:
                coords[..., 0] = coords[..., 0] / np.float32(width)
                coords[..., 1] = coords[..., 1] / np.float32(height)
            return coords * size

        parts_xy: list[npt.NDArray[np.float32]] = []
        parts_label: list[npt.NDArray[np.float32]] = []
        if prompts.boxes is not None:
            parts_xy.append(to_frame(prompts.boxes.reshape(n, 2, 2)))
            parts_label.append(
                np.broadcast_to(
                    np.array([contract.LABEL_BOX_TOP_LEFT, contract.LABEL_BOX_BOTTOM_RIGHT], np.float32),
                    (n, 2),
                )
            )
        if prompts.coords is not None and prompts.labels is not None:
            parts_xy.append(to_frame(prompts.coords))
            parts_label.append(prompts.labels.astype(np.float32))
        if parts_xy:
            parts_xy.append(np.zeros((n, 1, 2), np.float32))
            parts_label.append(np.full((n, 1), contract.LABEL_PADDING, np.float32))
            xy = np.concatenate(parts_xy, axis=1)
            labels = np.concatenate(parts_label, axis=1)
        else:
            xy = np.zeros((n, 0, 2), np.float32)
            labels = np.zeros((n, 0), np.float32)
        if not np.isfinite(xy).all():
            raise ValueError("point_coords or box are too large: they overflow float32 in the model's frame")
        if prompts.masks is None:
            masks = np.zeros((n, 1, _LOW, _LOW), np.float32)
            has_mask = np.zeros((n,), np.float32)
        else:
            masks = np.ascontiguousarray(prompts.masks, dtype=np.float32)
            has_mask = np.ones((n,), np.float32)
        coords_name, labels_name, masks_name, has_mask_name = contract.PROMPT_INPUTS
        return {
            coords_name: np.ascontiguousarray(xy),
            labels_name: np.ascontiguousarray(labels),
            masks_name: masks,
            has_mask_name: has_mask,
        }


def _aa_taps(in_size: int, out_size: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """Source indices and weights [out, K] of a 1-D antialiased linear resize, as torch's
    interpolate(mode="bilinear", antialias=True, align_corners=False) computes them: a
    triangle filter stretched by the scale when shrinking, clipped to the input and
    renormalized."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    centers = scale * (np.arange(out_size, dtype=np.float64) + 0.5)
    xmin = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((centers + support + 0.5).astype(np.int64), in_size)
    taps = int((xmax - xmin).max())
    index = xmin[:, None] + np.arange(taps)[None, :]
    weights = 1.0 - np.abs((index - centers[:, None] + 0.5) * invscale)
    weights = np.where((index < xmax[:, None]) & (weights > 0.0), weights, 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.minimum(index, in_size - 1).astype(np.intp), weights.astype(np.float32)


def resize_bilinear_antialias(
    image: npt.NDArray[np.float32], out_h: int, out_w: int
) -> npt.NDArray[np.float32]:
    """HxWxC float32 -> out_h x out_w x C, torchvision's Resize on a float tensor
    (antialiased bilinear), one separable pass per axis, tap by tap (memory stays at two
    images, whatever the scale)."""
    height, width = image.shape[:2]
    index, weights = _aa_taps(width, out_w)
    across = np.zeros((height, out_w, image.shape[2]), np.float32)
    for k in range(index.shape[1]):
        across += image[:, index[:, k], :] * weights[None, :, k, None]
    index, weights = _aa_taps(height, out_h)
    out = np.zeros((out_h, out_w, image.shape[2]), np.float32)
    for k in range(index.shape[1]):
        out += across[index[:, k]] * weights[:, k, None, None]
    return out
