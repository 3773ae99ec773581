"""The one small interface every inference backend implements."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import numpy.typing as npt

# An image embedding as a backend holds it: a numpy array on the CPU, a device buffer on a
# GPU (so the embedding never leaves the device between encoder and decoder).
Embedding = Any

FloatArray = npt.NDArray[np.float32]


class Backend(abc.ABC):
    """Runs SAM's encoder and decoder graphs. Implementations must be safe to call from
    several threads at once: one loaded model serves many predictors."""

    #: What runs the graphs, e.g. "onnxruntime (CPUExecutionProvider)".
    name: str

    @abc.abstractmethod
    def encode(self, images: FloatArray) -> Embedding:
        """[B,3,1024,1024] normalized, padded images -> embedding of [B,256,64,64]."""

    @abc.abstractmethod
    def decode(
        self,
        embedding: Embedding,
        point_coords: FloatArray,
        point_labels: FloatArray,
        mask_input: FloatArray,
        has_mask_input: FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        """One image's embedding and P prompts -> (iou [P,4], low-res logits [P,4,256,256]).

        point_coords [P,N,2] are in the 1024 frame; point_labels [P,N]; mask_input
        [P,1,256,256]; has_mask_input [P]. Both results are host arrays.
        """

    @abc.abstractmethod
    def embedding_to_numpy(self, embedding: Embedding) -> FloatArray:
        """A host copy of an embedding, [B,256,64,64] float32."""

    @abc.abstractmethod
    def embedding_from_numpy(self, array: FloatArray) -> Embedding:
        """The backend's form of a host embedding [1,256,64,64] float32."""

    def embedding_nbytes(self, embedding: Embedding) -> int:
        """Bytes an embedding holds; host arrays by default."""
        return int(embedding.nbytes)

    def select_embedding(self, embedding: Embedding, index: int) -> Embedding:
        """The embedding of one image of an encoded batch, as [1,256,64,64]."""
        return embedding[index : index + 1]
