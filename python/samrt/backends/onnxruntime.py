"""ONNX Runtime backend: the CPU execution provider, or CUDA / TensorRT providers on a GPU.

On a GPU the embedding stays on the device (I/O binding): only the prompts go up and only
IoU scores and 256x256 logits come back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import contract
from ..errors import BackendUnavailableError
from .base import Backend, Embedding, FloatArray

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


def _own_copy(output: FloatArray) -> FloatArray:
    """A run's output as an array that owns its memory. ONNX Runtime hands outputs over
    without a copy, as views of its arena; a view kept alive (a Predictor holds its
    image's embedding) would stop the arena from giving that whole region back. The copy
    is a few MB against a run of seconds."""
    return np.array(output, copy=True)


# The decoder's activations grow with the prompts of a run (vit_b: +1.5 GB for the 64 of
# an automatic-generation batch, +0.17 GB for 8) while its CPU time per prompt stays the
# same from 8 prompts up, so on the CPU larger batches run in parts of this size.
CPU_DECODER_PROMPTS_PER_RUN = 8


class OnnxRuntimeBackend(Backend):
    """Encoder and decoder as two ONNX Runtime sessions sharing one provider list."""

    def __init__(
        self,
        encoder_path: str | os.PathLike[str],
        decoder_path: str | os.PathLike[str],
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
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_num_threads is not None:
            options.intra_op_num_threads = intra_op_num_threads
        if providers[0] == CPU:
            _tune_for_cpu(options)
        self._providers = list(providers)
        self._encoder = ort.InferenceSession(str(Path(encoder_path)), options, providers=self._providers)
        self._decoder = ort.InferenceSession(str(Path(decoder_path)), options, providers=self._providers)
        # ORT may silently drop a provider it cannot initialise; say so instead.
        active = self._encoder.get_providers()
        if active[0] != self._providers[0]:
            raise BackendUnavailableError(
                f"ONNX Runtime could not start {self._providers[0]} (it fell back to {active[0]}); "
                "check the CUDA/cuDNN installation or choose backend='onnxruntime-cpu'"
            )
        self._on_gpu = self._providers[0] in GPU_PROVIDERS
        self._cpu_decoder_prompts_per_run = cpu_decoder_prompts_per_run
        self._run_options = _cpu_run_options(ort)
        self.name = f"onnxruntime ({self._providers[0]})"
        self._ort = ort

    def encode(self, images: FloatArray) -> Embedding:
        if not self._on_gpu:
            (embedding,) = self._encoder.run(
                [contract.ENCODER_OUTPUT], {contract.ENCODER_INPUT: images}, self._run_options
            )
            return _own_copy(embedding)
        binding = self._encoder.io_binding()
        binding.bind_cpu_input(contract.ENCODER_INPUT, images)
        binding.bind_output(contract.ENCODER_OUTPUT, "cuda")
        self._encoder.run_with_iobinding(binding, self._run_options)
        return binding.get_outputs()[0]

    def decode(
        self,
        embedding: Embedding,
        point_coords: FloatArray,
        point_labels: FloatArray,
        mask_input: FloatArray,
        has_mask_input: FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        names = contract.DECODER_INPUTS
        host_inputs = dict(zip(names[1:], (point_coords, point_labels, mask_input, has_mask_input)))
        if not self._on_gpu:
            return self._decode_on_cpu(embedding, host_inputs)
        binding = self._decoder.io_binding()
        binding.bind_ortvalue_input(names[0], embedding)
        for name, value in host_inputs.items():
            binding.bind_cpu_input(name, value)
        for name in contract.DECODER_OUTPUTS:
            binding.bind_output(name, "cpu")
        self._decoder.run_with_iobinding(binding, self._run_options)
        iou, low_res = binding.copy_outputs_to_cpu()
        return iou, low_res

    def _decode_on_cpu(
        self, embedding: FloatArray, host_inputs: dict[str, FloatArray]
    ) -> tuple[FloatArray, FloatArray]:
        """Runs the prompts a few at a time into outputs allocated once (prompts are
        independent, so the results are those of one run over all of them)."""
        names = contract.DECODER_INPUTS
        outputs = list(contract.DECODER_OUTPUTS)
        prompts = len(host_inputs[names[1]])
        step = self._cpu_decoder_prompts_per_run
        if prompts <= step:
            iou, low_res = self._decoder.run(
                outputs, {names[0]: embedding, **host_inputs}, self._run_options
            )
            return _own_copy(iou), _own_copy(low_res)
        iou = low_res = None
        for start in range(0, prompts, step):
            part = {name: value[start : start + step] for name, value in host_inputs.items()}
            part_iou, part_low_res = self._decoder.run(
                outputs, {names[0]: embedding, **part}, self._run_options
            )
            if iou is None or low_res is None:
                iou = np.empty((prompts, *part_iou.shape[1:]), dtype=part_iou.dtype)
                low_res = np.empty((prompts, *part_low_res.shape[1:]), dtype=part_low_res.dtype)
            iou[start : start + step] = part_iou
            low_res[start : start + step] = part_low_res
        assert iou is not None and low_res is not None
        return iou, low_res

    def embedding_to_numpy(self, embedding: Embedding) -> FloatArray:
        if self._on_gpu:
            return np.asarray(embedding.numpy(), dtype=np.float32)
        return np.asarray(embedding, dtype=np.float32)

    def embedding_from_numpy(self, array: FloatArray) -> Embedding:
        array = np.ascontiguousarray(array, dtype=np.float32)
        if self._on_gpu:
            return self._ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
        return array

    def embedding_nbytes(self, embedding: Embedding) -> int:
        if self._on_gpu:  # an OrtValue on the device: float32 elements
            return int(np.prod(embedding.shape())) * 4
        return int(embedding.nbytes)

    def select_embedding(self, embedding: Embedding, index: int) -> Embedding:
        if self._on_gpu:
            # OrtValues cannot be sliced on the device; a batch is re-uploaded per image.
            return self.embedding_from_numpy(embedding.numpy()[index : index + 1])
        return embedding[index : index + 1]
