"""samrt: a C++-accelerated inference engine for Meta's Segment Anything Model.

``samrt.Predictor(engine_dir)`` has the official SamPredictor's surface; engine
directories come from ``samrt export``. The runtime needs numpy, onnxruntime, Pillow and
the compiled kernels only: it never imports torch.
"""

from __future__ import annotations

from ._core import __version__, get_num_threads, set_num_threads
from .amg import AutomaticMaskGenerator, GenerateStats
from .errors import BackendUnavailableError, EngineDirError, ImageNotSetError, SamrtError
from .predictor import ImageState, Model, Predictor

__all__ = [
    "AutomaticMaskGenerator",
    "GenerateStats",
    "BackendUnavailableError",
    "EngineDirError",
    "ImageNotSetError",
    "ImageState",
    "Model",
    "Predictor",
    "SamrtError",
    "__version__",
    "get_num_threads",
    "set_num_threads",
]
