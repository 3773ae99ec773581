"""samrt: a C++-accelerated inference engine for Meta's Segment Anything Model."""

from __future__ import annotations

from ._core import __version__
from .amg import AutomaticMaskGenerator

__all__ = ["AutomaticMaskGenerator", "__version__"]
