"""samrt.AutomaticMaskGenerator on a SAM 2.1 engine against the official
sam2.SAM2AutomaticMaskGenerator, on the same seeded weights (the tiny SAM 2.1 of
tests/models.py): its defaults, ``use_m2m``, ``multimask_output`` and ``mask_threshold``.

Random weights give image-wide blobs with low predicted IoUs, so most cases keep every
mask (thresholds 0, NMS off) to compare all of them; the thresholds are compared at the
official defaults and at a threshold that splits the candidates.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from models import require_sam2
from test_amg_vs_official import _downscaled, assert_records_match

import samrt
from samrt import AutomaticMaskGenerator

torch = pytest.importorskip("torch")

KEEP_ALL = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0, "points_per_side": 4}


@pytest.fixture(scope="module")
def dog(sample_image: Callable[[str], np.ndarray]) -> np.ndarray:
    return _downscaled(sample_image("dog.jpg"), 6).copy()  # writable, as torch wants


@pytest.fixture(scope="module")
def model(tiny_sam2_model: Any) -> samrt.Model:
    return samrt.Model(tiny_sam2_model.engine_dir, backend="onnxruntime-cpu")


@pytest.fixture(scope="module")
def official_model(tiny_sam2_model: Any) -> Any:
    return tiny_sam2_model.official_model()


def _both(model: samrt.Model, official_model: Any, image: np.ndarray, **params: Any) -> tuple[list[Any], list[Any]]:
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    ours = AutomaticMaskGenerator(model, **params).generate(image)
    with torch.no_grad():
        theirs = SAM2AutomaticMaskGenerator(official_model, **params).generate(image)
    return ours, theirs


def test_defaults_are_the_official_sam2_generators(model: samrt.Model) -> None:
    require_sam2()
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    official = {name: p.default for name, p in inspect.signature(SAM2AutomaticMaskGenerator).parameters.items()
                if p.default is not inspect.Parameter.empty}
    ours = AutomaticMaskGenerator(model)
    for name in ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
                 "stability_score_offset", "mask_threshold", "box_nms_thresh", "crop_n_layers", "crop_nms_thresh",
                 "crop_overlap_ratio", "crop_n_points_downscale_factor", "min_mask_region_area", "output_mode",
                 "use_m2m", "multimask_output"):
        assert getattr(ours, name) == official[name], name
    assert ours.pred_iou_thresh == 0.8  # SAM's generator has 0.88


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="multimask"),
        pytest.param({"multimask_output": False}, id="single-mask-dynamic"),
        pytest.param({"use_m2m": True}, id="m2m"),
        pytest.param({"use_m2m": True, "multimask_output": False}, id="m2m-single-mask"),
        pytest.param({"mask_threshold": 0.5, "stability_score_offset": 0.5}, id="mask-threshold"),
        pytest.param({"crop_n_layers": 1, "crop_nms_thresh": 1.0}, id="crops"),
    ],
)
def test_records_match_the_official(model: samrt.Model, official_model: Any, dog: np.ndarray,
                                    params: dict[str, Any]) -> None:
    ours, theirs = _both(model, official_model, dog, **{**KEEP_ALL, **params})
    per_point = 1 if params.get("multimask_output") is False else 3
    if "crop_n_layers" not in params:
        assert len(ours) == per_point * KEEP_ALL["points_per_side"] ** 2
    assert_records_match(ours, theirs)


def test_thresholds_match_the_official(model: samrt.Model, official_model: Any, dog: np.ndarray) -> None:
    # At the official defaults, and at a threshold that keeps about half of the candidates.
    ours, theirs = _both(model, official_model, dog, points_per_side=4)
    assert_records_match(ours, theirs)
    everything = AutomaticMaskGenerator(model, **KEEP_ALL).generate(dog)
    middle = float(np.median([r["predicted_iou"] for r in everything]))
    for use_m2m in (False, True):
        params = {"points_per_side": 4, "pred_iou_thresh": middle, "stability_score_thresh": 0.0,
                  "box_nms_thresh": 1.0, "use_m2m": use_m2m}
        ours, theirs = _both(model, official_model, dog, **params)
        if not use_m2m:
            assert 0 < len(ours) < len(everything)
        assert_records_match(ours, theirs)


def test_samrt_segment_on_a_sam2_engine_gives_the_official_records(
    tiny_sam2_model: Any, official_model: Any, dog: np.ndarray, tmp_path: Path
) -> None:
    # The command line takes SAM 2.1's options too: m2m refinement, one mask per point.
    from PIL import Image

    Image.fromarray(dog).save(tmp_path / "dog.png")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "samrt.cli", "segment", str(tmp_path / "dog.png"), "--engine",
         str(tiny_sam2_model.engine_dir), "--out", str(out), "--quiet", "--points-per-side", "4",
         "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--box-nms-thresh", "1",
         "--use-m2m", "--single-mask"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    ours = json.loads((out / "dog.png.json").read_text())["annotations"]
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    with torch.no_grad():
        theirs = SAM2AutomaticMaskGenerator(official_model, **KEEP_ALL, use_m2m=True, multimask_output=False,
                                            output_mode="coco_rle").generate(dog)
    assert len(ours) == len(theirs) == 16
    assert_records_match(ours, theirs)
