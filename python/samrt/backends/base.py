"""The one small interface every inference backend implements: run a graph of the engine
directory by its role, and move tensors between the host and the backend.

A backend knows nothing of what the graphs compute: which graphs exist, what feeds them
and how their results are combined is the model family's business (samrt.families). So a
new model family adds graphs, not backend code.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

# A tensor as a backend holds it: a numpy array on the CPU, a device buffer on a GPU (so
# that an embedding never leaves the device between the encoder and the decoder).
Tensor = Any
# Kept for the names the rest of samrt uses for an image's embedding.
Embedding = Tensor

FloatArray = npt.NDArray[np.float32]


class Backend(abc.ABC):
    """Runs an engine directory's graphs. Implementations must be safe to call from
    several threads at once: one loaded model serves many predictors."""

    #: What runs the graphs, e.g. "onnxruntime (CPUExecutionProvider)".
    name: str
    #: The most prompts one decoder run should take: callers split larger batches (the
    #: prompts are independent). On the CPU a run's memory grows with its prompts while the
    #: time per prompt stops falling at a few; a GPU engine has its profile's maximum.
    prompts_per_run: int
    #: Whether tensors left with the backend live apart from the host (a GPU): then
    #: selecting rows of one costs a copy on the device or a round trip.
    on_device: bool = False

    @abc.abstractmethod
    def run(
        self,
        role: str,
        inputs: Mapping[str, Tensor],
        outputs: Sequence[str],
        *,
        to_host: Collection[str] = (),
    ) -> dict[str, Tensor]:
        """Runs the graph of ``role`` (a samrt.contract role) on ``inputs`` (host arrays
        or this backend's tensors, by input name) and returns ``outputs`` by name: those
        in ``to_host`` as numpy arrays the caller owns, the others as this backend's
        tensors. Raises ValueError for inputs of the wrong shape."""

    @abc.abstractmethod
    def to_numpy(self, tensor: Tensor) -> npt.NDArray[Any]:
        """A host copy of one of this backend's tensors (or a host array as it is)."""

    @abc.abstractmethod
    def from_numpy(self, array: npt.NDArray[Any]) -> Tensor:
        """A host array as this backend's tensor."""

    def nbytes(self, tensor: Tensor) -> int:
        """Bytes a tensor holds (on the host or the device), for caches bounded in bytes."""
        return int(tensor.nbytes)

    def take(self, tensor: Tensor, rows: npt.NDArray[np.intp]) -> Tensor:
        """The rows ``rows`` (indices along the first axis) of a tensor, as a new tensor."""
        return self.from_numpy(self.to_numpy(tensor)[rows])
