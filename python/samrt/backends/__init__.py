"""Backend selection: which runtime executes the encoder and decoder graphs.

``backend="auto"`` picks the fastest one that can start here, in the order TensorRT
(when ``import tensorrt`` works, a GPU is present and ``samrt build`` made engines for
this GPU and TensorRT version), ONNX Runtime with CUDA, then ONNX Runtime on the CPU. It
records its choice in ``Backend.name`` and logs it, with the reason each better backend
was skipped, at INFO on the "samrt" logger. An explicitly named backend that cannot
start raises BackendUnavailableError (or EngineDirError) saying what is missing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import BackendUnavailableError, EngineDirError
from ..manifest import Manifest
from .base import Backend, Embedding, Tensor

__all__ = ["BACKENDS", "BACKEND_NAMES", "TENSORRT", "Backend", "Embedding", "Tensor", "create_backend"]

_log = logging.getLogger("samrt")

# Explicit names users may pass, and the ONNX Runtime providers each one means.
BACKENDS: dict[str, tuple[str, ...]] = {
    "onnxruntime-cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "onnxruntime-tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    "onnxruntime-cpu": ("CPUExecutionProvider",),
}
# TensorRT runs its own engines (from `samrt build`), not an ONNX Runtime provider list.
TENSORRT = "tensorrt"
BACKEND_NAMES: tuple[str, ...] = (TENSORRT, *BACKENDS)
_AUTO_ORDER = (TENSORRT, "onnxruntime-cuda", "onnxruntime-cpu")


def create_backend(
    engine_dir: Path,
    manifest: Manifest,
    backend: str = "auto",
    *,
    roles: tuple[str, ...],
    precision: str = "fp32",
    intra_op_num_threads: int | None = None,
) -> Backend:
    """Starts the named backend (or the best available for "auto") on the graphs ``roles``
    of an engine directory."""
    from .onnxruntime import OnnxRuntimeBackend, available_providers

    if backend != "auto" and backend not in BACKEND_NAMES:
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKEND_NAMES)}, got {backend!r}")
    if backend == TENSORRT:
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(engine_dir, manifest, roles=roles, precision=precision)
    graphs = {
        role: (engine_dir / model.file, model)
        for role, model in manifest.graphs(precision, roles).items()
    }

    def start(name: str) -> Backend:
        return OnnxRuntimeBackend(graphs, BACKENDS[name], intra_op_num_threads=intra_op_num_threads)

    if backend != "auto":
        return start(backend)

    providers = available_providers()
    reasons: list[str] = []
    for name in _AUTO_ORDER:
        if name == TENSORRT:
            from .tensorrt import CudaError, TensorRTBackend, unavailable_reason

            # Checked cheaply first: without engines for this machine TensorRT is not imported.
            reason = unavailable_reason(engine_dir, manifest, precision, roles)
            if reason is not None:
                reasons.append(f"{name}: {reason}")
                continue
            try:
                chosen: Backend = TensorRTBackend(engine_dir, manifest, roles=roles, precision=precision)
            except (BackendUnavailableError, EngineDirError, CudaError) as e:
                reasons.append(f"{name}: {e}")
                continue
            _log.info("samrt backend: %s (%s)", chosen.name, "; ".join(reasons) or "first choice")
            return chosen
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
