"""The decoder's graphs as the SAM family chains them on ONNX Runtime's CPU backend: large
prompt batches run in parts (to bound activation memory), and a score threshold leaves
out the upscaling of prompts with no mask above it. Both must give the numbers of one
unfiltered run over the whole batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import samrt
from samrt import contract
from samrt.backends.onnxruntime import CPU, OnnxRuntimeBackend


def _backend(model: Any, prompts_per_run: int) -> OnnxRuntimeBackend:
    manifest = samrt.Model(model.engine_dir, "onnxruntime-cpu").manifest
    graphs = {
        role: (model.engine_dir / m.file, m)
        for role, m in manifest.graphs("fp32", contract.ROLES).items()
    }
    return OnnxRuntimeBackend(graphs, [CPU], cpu_decoder_prompts_per_run=prompts_per_run)


def _predictor(model: Any, prompts_per_run: int) -> samrt.Predictor:
    predictor = samrt.Predictor(model.engine_dir, "onnxruntime-cpu")
    predictor.model.backend = _backend(model, prompts_per_run)
    rng = np.random.default_rng(0)
    predictor.set_image_embedding(rng.standard_normal((1, 256, 64, 64)).astype(np.float32), (600, 800))
    return predictor


PROMPTS = 11  # parts of 4, 4 and 3


def _prompts() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "point_coords": rng.uniform(0, 600, (PROMPTS, 2, 2)),
        "point_labels": np.tile(np.array([[1.0, 0.0]]), (PROMPTS, 1)),
        "mask_input": rng.standard_normal((PROMPTS, 1, 256, 256)).astype(np.float32),
    }


def test_decoder_in_parts_equals_one_run(tiny_model: Any) -> None:
    whole_iou, whole_masks = _predictor(tiny_model, PROMPTS).predict_low_res(**_prompts())
    part_iou, part_masks = _predictor(tiny_model, 4).predict_low_res(**_prompts())
    assert part_iou.shape == whole_iou.shape == (PROMPTS, 3)
    assert part_masks.shape == whole_masks.shape == (PROMPTS, 3, 256, 256)
    np.testing.assert_allclose(part_iou, whole_iou, rtol=0, atol=1e-5)
    np.testing.assert_allclose(part_masks, whole_masks, rtol=0, atol=1e-4)


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("keep", ["none", "some", "all"])
def test_threshold_upscales_exactly_the_prompts_above_it(
    tiny_model: Any, keep: str, multimask: bool
) -> None:
    predictor = _predictor(tiny_model, 4)
    scores, low_res = predictor.predict_low_res(**_prompts(), multimask_output=multimask)
    best = np.sort(scores.max(axis=1))
    threshold = {"none": best[-1], "some": float(best[PROMPTS // 2]), "all": best[0] - 1.0}[keep]
    got_scores, index, got_low_res = predictor.predict_low_res_above(
        threshold, **_prompts(), multimask_output=multimask
    )
    want = np.flatnonzero((scores > np.float32(threshold)).any(axis=1))
    assert {"none": 0, "all": PROMPTS}.get(keep, len(want)) == len(want)
    if keep == "some":
        assert 0 < len(want) < PROMPTS
    np.testing.assert_array_equal(index, want)
    np.testing.assert_array_equal(got_scores, scores)
    assert got_low_res.shape == (len(want), 3 if multimask else 1, 256, 256)
    np.testing.assert_array_equal(got_low_res, low_res[want])


def test_prompts_per_run_must_be_positive(tiny_model: Any) -> None:
    with pytest.raises(ValueError, match="cpu_decoder_prompts_per_run"):
        _backend(tiny_model, 0)
