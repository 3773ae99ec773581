"""Export of SAM checkpoints to samrt engine directories. The only package that imports torch.

The names below load on first use, so that ``samrt_export.cli`` can start (and explain
what to install) on a machine without PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import OFFICIAL_CONFIGS, TINY_CONFIG, SamConfig
    from .errors import ExportCheckError, ExportError
    from .export import engine_is_current, export_engine
    from .models import build_sam, save_random_checkpoint

_LAZY = {
    "SamConfig": "config",
    "OFFICIAL_CONFIGS": "config",
    "TINY_CONFIG": "config",
    "ExportError": "errors",
    "ExportCheckError": "errors",
    "export_engine": "export",
    "engine_is_current": "export",
    "build_sam": "models",
    "save_random_checkpoint": "models",
}

__all__ = [
    "OFFICIAL_CONFIGS",
    "TINY_CONFIG",
    "ExportCheckError",
    "ExportError",
    "SamConfig",
    "build_sam",
    "engine_is_current",
    "export_engine",
    "save_random_checkpoint",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'samrt_export' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)
