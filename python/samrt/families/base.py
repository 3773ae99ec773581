"""The interface the Predictor and the generator use to run a model family."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..backends import Backend, Tensor
from ..manifest import Manifest


@dataclass(frozen=True)
class Prompts:
    """P prompts, checked, in the original image's pixels: points [P,N,2] with labels
    [P,N] (N may be 0), boxes [P,4] XYXY, mask inputs [P,1,256,256]; any may be absent.
    With ``normalized``, coordinates are fractions of the image's width and height
    (SAM2ImagePredictor's ``normalize_coords=False``)."""

    count: int
    coords: npt.NDArray[np.float64] | None = None
    labels: npt.NDArray[np.float64] | None = None
    boxes: npt.NDArray[np.float64] | None = None
    masks: npt.NDArray[np.float32] | None = None
    normalized: bool = False


@dataclass(frozen=True)
class Decoded:
    """What the decoder made of P prompts: ``scores`` [P,C] for all of them; ``low_res``
    [S,C,256,256] logits for the prompts ``index`` [S] (all of them, in order, unless a
    score threshold left some out)."""

    scores: npt.NDArray[np.float32]
    low_res: npt.NDArray[np.float32]
    index: npt.NDArray[np.intp]


class ModelFamily(abc.ABC):
    """One family's graphs and the work between them. Stateless past construction, so one
    instance serves every thread."""

    #: The manifest's "family" value.
    name: str
    #: The graphs of an engine directory of this family, by samrt.contract role.
    roles: tuple[str, ...]
    #: The official automatic mask generator's defaults where they differ between families
    #: (samrt.AutomaticMaskGenerator takes them when a parameter is left as None).
    generator_defaults: Mapping[str, float] = {"pred_iou_thresh": 0.88}  # SamAutomaticMaskGenerator
    #: Whether the official generator's records hold boxes, crop boxes and points as
    #: float32 values (SAM 2.1's turns every tensor to float32 before writing them).
    generator_records_in_float32: bool = False

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest

    @abc.abstractmethod
    def encode(self, backend: Backend, image: npt.NDArray[np.uint8]) -> tuple[dict[str, Tensor], tuple[int, int]]:
        """An HxWx3 uint8 RGB image -> (the per-image tensors the decoder needs, by name,
        the embedding among them; the size of the image in the model's input frame)."""

    @abc.abstractmethod
    def from_embedding(self, backend: Backend, embedding: npt.NDArray[np.float32]) -> dict[str, Tensor]:
        """The per-image tensors of a saved embedding (see :meth:`embedding_name`)."""

    @property
    @abc.abstractmethod
    def embedding_name(self) -> str:
        """The name of the embedding among an image's tensors."""

    @property
    @abc.abstractmethod
    def embedding_shape(self) -> tuple[int, ...]:
        """The shape of one image's embedding, [1, C, H, W]."""

    @abc.abstractmethod
    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """The size of an image of ``original_size`` (H, W) in the model's input frame."""

    def upsample_frame(self, input_size: tuple[int, int]) -> tuple[tuple[int, int], int]:
        """(input size, padded size) for samrt.postprocess: the low-res logits are upsampled
        to a padded square, cropped to the input size, then resized to the original size.
        SAM: its 1024 input frame."""
        return input_size, self.manifest.image_size

    def returned_low_res(self, low_res: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The low-res logits as a predictor hands them back (and takes them as mask input);
        the masks are made from the logits as decoded."""
        return low_res

    @abc.abstractmethod
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
        """Scores and low-res logits of the masks for ``prompts`` on an image. With
        ``score_threshold``, only prompts with some mask scoring above it get logits (the
        rest skip the costly mask upscaling)."""
