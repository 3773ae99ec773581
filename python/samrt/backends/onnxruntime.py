"""ONNX Runtime backend: the CPU execution provider, or CUDA / TensorRT providers on a GPU.

On a GPU tensors stay on the device between graphs (I/O binding): only the prompts go up
and only what the caller asks for on the host (IoU scores, 256x256 logits) comes back.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import BackendUnavailableError
from ..manifest import ModelFile, TensorSpec
from .base import Backend, Tensor

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - onnxruntime is a runtime dependency
        raise BackendUnavailableError(
            f"onnxruntime cannot be imported ({e}); install it with `pip install onnxruntime` "
            "(or onnxruntime-gpu for CUDA)"
        ) from None
    return onnxruntime


def available_providers() -> list[str]:
    return list(_import_ort().get_available_providers())


def _tune_for_cpu(options: Any) -> None:
    """Session options measured on a 2-core machine shared with other busy processes.

    * No spinning: a worker thread that spins between operators keeps a core that the
      other worker (or another process) needs; on a loaded machine spinning cost up to 30%
      of wall time, and without load a sleeping worker wakes in microseconds, against
      operators of milliseconds.
    * No memory pattern: with it, ORT allocates a second block of all intermediates for
      the pattern it records on the first run, on top of the arena the first run grew.
      Without it the decoder's peak memory for 64 prompts is 2.2 GB instead of 3.9 GB,
      and only the first run pays for page faults (about 1 s of system time each for the
      encoder and the 64-prompt decoder), not the first two; steady-state speed is the
      same.

    The CPU arena stays on (see _cpu_run_options for how its memory is returned): without
    it every intermediate is a fresh malloc, and glibc keeps freed blocks below its
    adaptive mmap threshold resident while mapping new ones (vit_b encoder: 22 s of page
    faults, 2.2 GB peak and 1.7 GB resident after the run, against 13 s, 1.2 GB and the
    load-time 0.67 GB with the arena).
    """
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_mem_pattern = False


def _cpu_run_options(ort: Any) -> Any:
    """Per-run options: the CPU arena gives the memory of a run's intermediates back when
    the run ends, so that the resident size between calls is the loaded model's and a
    long-running service stays flat (the arena would otherwise keep the largest run's peak
    for ever)."""
    run_options = ort.RunOptions()
    run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return run_options


# The decoder's activations grow with the prompts of a run (vit_b: +1.5 GB for the 64 of
# an automatic-generation batch, +0.17 GB for 8) while its CPU time per prompt stays the
# same from 8 prompts up, so on the CPU larger batches run in parts of this size.
CPU_DECODER_PROMPTS_PER_RUN = 8
# A GPU takes a whole automatic-generation batch (64 by default) and more at once.
GPU_DECODER_PROMPTS_PER_RUN = 256

# ONNX Runtime's log severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal. Its
# warnings (for example "Could not find a CPU kernel and hence can't constant fold" when
# an fp16 graph loads) would go straight to the user's terminal; errors are raised anyway.
_ORT_LOG_ERRORS_ONLY = 3


def quiet_session_options() -> Any:
    """ONNX Runtime SessionOptions whose own log lines are limited to errors; every session
    samrt makes (the backends', and the exporter's checks) starts from these."""
    options = _import_ort().SessionOptions()
    options.log_severity_level = _ORT_LOG_ERRORS_ONLY
    return options


class OnnxRuntimeBackend(Backend):
    """The graphs of an engine directory in ONNX Runtime sessions sharing one provider list.

    Runs bind their outputs: on the CPU straight into numpy arrays allocated for the
    caller (no copy, and no array that pins a region of ONNX Runtime's arena: a kept view,
    such as a Predictor's embedding, would stop the arena from giving that region back),
    on a GPU into device memory unless the caller asks for them on the host.
    """

    def __init__(
        self,
        graphs: Mapping[str, tuple[str | os.PathLike[str], ModelFile]],
        providers: Sequence[str],
        *,
        intra_op_num_threads: int | None = None,
        cpu_decoder_prompts_per_run: int = CPU_DECODER_PROMPTS_PER_RUN,
    ) -> None:
        if cpu_decoder_prompts_per_run < 1:
            raise ValueError(
                f"cpu_decoder_prompts_per_run must be >= 1, got {cpu_decoder_prompts_per_run}"
            )
        ort = _import_ort()
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise BackendUnavailableError(
                f"ONNX Runtime provider(s) {', '.join(missing)} not available in this onnxruntime "
                f"(available: {', '.join(ort.get_available_providers())}); for CUDA install "
                "onnxruntime-gpu built for your CUDA version"
            )
        options = quiet_session_options()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_num_threads is not None:
            options.intra_op_num_threads = intra_op_num_threads
        if providers[0] == CPU:
            _tune_for_cpu(options)
        self._providers = list(providers)
        self._sessions = {
            role: ort.InferenceSession(str(Path(path)), options, providers=self._providers)
            for role, (path, _) in graphs.items()
        }
        self._outputs = {role: {t.name: t for t in model.outputs} for role, (_, model) in graphs.items()}
        self._inputs = {role: {t.name: t for t in model.inputs} for role, (_, model) in graphs.items()}
        # ORT may silently drop a provider it cannot initialise; say so instead.
        for session in self._sessions.values():
            active = session.get_providers()
            if active[0] != self._providers[0]:
                raise BackendUnavailableError(
                    f"ONNX Runtime could not start {self._providers[0]} (it fell back to {active[0]}); "
                    "check the CUDA/cuDNN installation or choose backend='onnxruntime-cpu'"
                )
        self.on_device = self._providers[0] in GPU_PROVIDERS
        self.prompts_per_run = (
            GPU_DECODER_PROMPTS_PER_RUN if self.on_device else cpu_decoder_prompts_per_run
        )
        self._run_options = _cpu_run_options(ort)
        self.name = f"onnxruntime ({self._providers[0]})"
        self._ort = ort

    def run(
        self,
        role: str,
        inputs: Mapping[str, Tensor],
        outputs: Sequence[str],
        *,
        to_host: Collection[str] = (),
    ) -> dict[str, Tensor]:
        session = self._session(role)
        binding = session.io_binding()
        dims: dict[str, int] = {}
        for name, value in inputs.items():
            spec = self._inputs[role].get(name)
            if spec is None:
                raise ValueError(f"the {role} graph has no input {name!r}")
            if isinstance(value, np.ndarray):
                value = np.ascontiguousarray(value, dtype=np.dtype(spec.dtype))
                binding.bind_cpu_input(name, value)
                shape = value.shape
            else:
                binding.bind_ortvalue_input(name, value)
                shape = tuple(value.shape())
            _match_dims(role, spec, shape, dims)
        results: dict[str, Tensor] = {}
        for name in outputs:
            spec = self._outputs[role][name]
            if self.on_device and name not in to_host:
                binding.bind_output(name, "cuda")
                continue
            shape = tuple(d if isinstance(d, int) else dims[d] for d in spec.shape)
            array = np.empty(shape, dtype=np.dtype(spec.dtype))
            binding.bind_output(name, "cpu", 0, array.dtype, shape, array.ctypes.data)
            results[name] = array
        session.run_with_iobinding(binding, self._run_options)
        if self.on_device:
            produced = dict(zip(outputs, binding.get_outputs(), strict=True))
            for name in outputs:
                if name not in to_host:
                    results[name] = produced[name]
        return {name: results[name] for name in outputs}

    def _session(self, role: str) -> Any:
        try:
            return self._sessions[role]
        except KeyError:
            raise ValueError(
                f"this backend has no {role} graph (it has {', '.join(self._sessions)})"
            ) from None

    def to_numpy(self, tensor: Tensor) -> npt.NDArray[Any]:
        if isinstance(tensor, np.ndarray):
            return tensor
        return np.asarray(tensor.numpy())

    def from_numpy(self, array: npt.NDArray[Any]) -> Tensor:
        array = np.ascontiguousarray(array)
        if self.on_device:
            return self._ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
        return array

    def nbytes(self, tensor: Tensor) -> int:
        if isinstance(tensor, np.ndarray):
            return int(tensor.nbytes)
        return int(tensor.tensor_size_in_bytes())

    def take(self, tensor: Tensor, rows: npt.NDArray[np.intp]) -> Tensor:
        if isinstance(tensor, np.ndarray):
            return tensor[rows]
        # OrtValues cannot be indexed on the device: the rows go through the host.
        return self.from_numpy(tensor.numpy()[rows])


def _match_dims(role: str, spec: TensorSpec, shape: tuple[int, ...], dims: dict[str, int]) -> None:
    """Checks an input's shape against its spec, recording the sizes of named dims."""
    if len(shape) != len(spec.shape):
        raise ValueError(
            f"{role} input {spec.name} must have {len(spec.shape)} dimensions {list(spec.shape)}, "
            f"got shape {list(shape)}"
        )
    for want, got in zip(spec.shape, shape, strict=True):
        if isinstance(want, int):
            ok = want == got
        else:
            ok = dims.setdefault(want, got) == got
        if not ok:
            raise ValueError(
                f"{role} input {spec.name} has shape {list(shape)}, which does not fit "
                f"{list(spec.shape)} (with {dims})"
            )
