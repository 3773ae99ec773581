"""The export extras, imported once with a one-line hint when they are missing."""

from __future__ import annotations

INSTALL_HINT = "pip install 'samrt[export]'"

try:
    import onnx
    import segment_anything
    import torch
except ImportError as e:
    raise ImportError(
        f"samrt export needs PyTorch, ONNX and segment-anything ({e}); install them with: "
        f"{INSTALL_HINT}"
    ) from None

__all__ = ["INSTALL_HINT", "onnx", "segment_anything", "torch"]
