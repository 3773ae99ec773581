"""The ONNX Runtime backend's CPU decoder runs large prompt batches in parts (to bound
its activation memory); the parts must give the numbers of one run over the whole batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from samrt import contract
from samrt.backends.onnxruntime import CPU, OnnxRuntimeBackend


def _backend(model: Any, prompts_per_run: int) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(
        model.engine_dir / contract.ENCODER_FILE,
        model.engine_dir / contract.DECODER_FILE,
        [CPU],
        cpu_decoder_prompts_per_run=prompts_per_run,
    )


def test_decoder_in_parts_equals_one_run(tiny_model: Any) -> None:
    rng = np.random.default_rng(0)
    prompts = 11  # parts of 4, 4 and 3
    embedding = rng.standard_normal((1, 256, 64, 64)).astype(np.float32)
    coords = rng.uniform(0, 1024, (prompts, 2, 2)).astype(np.float32)
    labels = np.tile(np.array([[1.0, 0.0]], np.float32), (prompts, 1))
    masks = rng.standard_normal((prompts, 1, 256, 256)).astype(np.float32)
    has_mask = (np.arange(prompts) % 2).astype(np.float32)
    inputs = (embedding, coords, labels, masks, has_mask)

    whole_iou, whole_masks = _backend(tiny_model, prompts).decode(*inputs)
    part_iou, part_masks = _backend(tiny_model, 4).decode(*inputs)
    assert part_iou.shape == whole_iou.shape == (prompts, 4)
    assert part_masks.shape == whole_masks.shape == (prompts, 4, 256, 256)
    np.testing.assert_allclose(part_iou, whole_iou, rtol=0, atol=1e-5)
    np.testing.assert_allclose(part_masks, whole_masks, rtol=0, atol=1e-4)


def test_prompts_per_run_must_be_positive(tiny_model: Any) -> None:
    with pytest.raises(ValueError, match="cpu_decoder_prompts_per_run"):
        _backend(tiny_model, 0)
