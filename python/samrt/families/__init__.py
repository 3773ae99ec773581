"""Model families: what differs between models that share samrt's runtime.

A family knows its graphs and what flows between them: how an image becomes the encoder's
input, which per-image tensors the decoder reuses, how prompts are laid out, how the
decoder's graphs are chained. Backends only run graphs; the Predictor and the generator
speak to a family through :class:`ModelFamily`, so no other module branches on the model.
"""

from __future__ import annotations

from ..errors import EngineDirError
from ..manifest import Manifest
from .base import Decoded, ModelFamily, Prompts
from .sam import SamFamily
from .sam2 import Sam2Family

__all__ = ["Decoded", "ModelFamily", "Prompts", "Sam2Family", "SamFamily", "family_for"]

_FAMILIES: dict[str, type[ModelFamily]] = {SamFamily.name: SamFamily, Sam2Family.name: Sam2Family}


def family_for(manifest: Manifest) -> ModelFamily:
    """The family of an engine directory's manifest."""
    try:
        family = _FAMILIES[manifest.family]
    except KeyError:
        raise EngineDirError(
            f"the engine directory holds a model of family {manifest.family!r}, which this samrt "
            f"does not know (it knows {', '.join(sorted(_FAMILIES))}); upgrade samrt"
        ) from None
    return family(manifest)
