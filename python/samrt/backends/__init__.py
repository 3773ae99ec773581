"""Backend selection: which runtime executes the encoder and decoder graphs.

``backend="auto"`` picks the fastest one that can start here, in the order ONNX Runtime
with CUDA, then ONNX Runtime on the CPU, and records its choice in ``Backend.name`` (and
logs it at INFO on the "samrt" logger). An explicitly named backend that cannot start
raises BackendUnavailableError saying what is missing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import BackendUnavailableError
from ..manifest import Manifest
from .base import Backend, Embedding

__all__ = ["BACKENDS", "Backend", "Embedding", "create_backend"]

_log = logging.getLogger("samrt")

# Explicit names users may pass, and the ONNX Runtime providers each one means.
BACKENDS: dict[str, tuple[str, ...]] = {
    "onnxruntime-cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "onnxruntime-tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    "onnxruntime-cpu": ("CPUExecutionProvider",),
}
_AUTO_ORDER = ("onnxruntime-cuda", "onnxruntime-cpu")


def create_backend(
    engine_dir: Path,
    manifest: Manifest,
    backend: str = "auto",
    *,
    precision: str = "fp32",
    intra_op_num_threads: int | None = None,
) -> Backend:
    """Starts the named backend (or the best available for "auto") on an engine directory."""
    from .onnxruntime import OnnxRuntimeBackend, available_providers

    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {backend!r}")
    encoder = engine_dir / manifest.model("encoder", precision).file
    decoder = engine_dir / manifest.model("decoder", precision).file

    def start(name: str) -> Backend:
        return OnnxRuntimeBackend(
            encoder, decoder, BACKENDS[name], intra_op_num_threads=intra_op_num_threads
        )

    if backend != "auto":
        return start(backend)

    providers = available_providers()
    reasons: list[str] = []
    for name in _AUTO_ORDER:
        if BACKENDS[name][0] not in providers:
            reasons.append(f"{name}: {BACKENDS[name][0]} not in this onnxruntime")
            continue
        try:
            chosen = start(name)
        except BackendUnavailableError as e:
            reasons.append(f"{name}: {e}")
            continue
        _log.info("samrt backend: %s (%s)", chosen.name, "; ".join(reasons) or "first choice")
        return chosen
    raise BackendUnavailableError("no backend could start: " + "; ".join(reasons))
