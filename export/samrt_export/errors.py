"""Exceptions raised by the exporter."""

from __future__ import annotations

from samrt.errors import SamrtError


class ExportError(SamrtError):
    """The export cannot be done as asked (bad arguments, missing weights, existing output)."""


class ExportCheckError(ExportError):
    """The exported ONNX graphs disagree with PyTorch beyond tolerance; nothing was written."""
