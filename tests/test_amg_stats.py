"""AutomaticMaskGenerator.last_stats: what each filter dropped, against the oracle of the
unfiltered records (every filter off) of the same image and decoder."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from samrt.amg import AutomaticMaskGenerator
from samrt.predictor import Predictor

from fake_decoder import fake_model, make_scene

OPEN = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


@pytest.fixture(scope="module")
def model() -> Any:
    return fake_model()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return make_scene(180, 240, seed=1)


@pytest.fixture(scope="module")
def unfiltered(model: Any, image: np.ndarray) -> list[dict[str, Any]]:
    generator = AutomaticMaskGenerator(Predictor(model), points_per_side=8, **OPEN)
    records = generator.generate(image)
    stats = generator.last_stats
    assert stats is not None
    assert stats.candidates == 8 * 8 * 3 == stats.kept == len(records)
    assert stats.dropped() == {}
    return records


def _run(model: Any, image: np.ndarray, **params: Any) -> tuple[list[dict[str, Any]], Any]:
    generator = AutomaticMaskGenerator(Predictor(model), points_per_side=8, **{**OPEN, **params})
    records = generator.generate(image)
    return records, generator.last_stats


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.95])
def test_pred_iou_drops_equal_the_unfiltered_records_at_or_below_it(
    model: Any, image: np.ndarray, unfiltered: list[dict[str, Any]], threshold: float
) -> None:
    records, stats = _run(model, image, pred_iou_thresh=threshold)
    above = sum(np.float32(r["predicted_iou"]) > np.float32(threshold) for r in unfiltered)
    assert 0 < above < len(unfiltered)  # the case exercises the filter
    assert len(records) == stats.kept == above
    assert stats.pred_iou == len(unfiltered) - above and set(stats.dropped()) == {"pred_iou"}


@pytest.mark.parametrize("threshold", [0.8, 0.95])
def test_stability_drops_equal_the_unfiltered_records_below_it(
    model: Any, image: np.ndarray, unfiltered: list[dict[str, Any]], threshold: float
) -> None:
    records, stats = _run(model, image, stability_score_thresh=threshold)
    kept = sum(np.float32(r["stability_score"]) >= np.float32(threshold) for r in unfiltered)
    assert 0 < kept < len(unfiltered)
    assert len(records) == stats.kept == kept
    assert stats.stability == len(unfiltered) - kept and set(stats.dropped()) == {"stability"}


def test_every_candidate_is_kept_or_dropped_by_one_filter(model: Any, image: np.ndarray) -> None:
    records, stats = _run(
        model, image, pred_iou_thresh=0.88, stability_score_thresh=0.95, box_nms_thresh=0.7,
        crop_n_layers=1, min_mask_region_area=50,
    )
    assert stats.kept == len(records)
    assert stats.candidates == stats.kept + sum(stats.dropped().values())
    assert stats.box_nms > 0  # the defaults' NMS drops the fake decoder's duplicates


def test_zero_masks_name_the_thresholds_to_lower(model: Any, image: np.ndarray) -> None:
    records, stats = _run(model, image, pred_iou_thresh=1.5)
    assert records == [] and stats.kept == 0
    text = stats.describe(lambda param: "--" + param.replace("_", "-"))
    assert text.startswith(f"0 of {stats.candidates} candidate masks kept; dropped ")
    assert "--pred-iou-thresh=1.5" in text and "lower --pred-iou-thresh" in text
