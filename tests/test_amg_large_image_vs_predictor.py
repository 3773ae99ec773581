"""Automatic generation on an 8000x6000 photo (issue 7: large images without full-resolution
float masks), against samrt.Predictor prompted with each record's point.

The official generator would upsample each batch to float32 at full resolution (192 MB a
mask here), which is the very thing under test, so the oracle is the Predictor: its point
path is compared with the official SamPredictor in test_predictor_vs_official.py, and it
reaches full-resolution masks through a different kernel (upsample_masks) than the
generator's fused logits-to-RLE one.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest
from PIL import Image

import samrt
from samrt.masks import encode_rle, rle_iou

WIDTH, HEIGHT = 8000, 6000


@pytest.fixture(scope="module")
def large_photo(sample_image: Any) -> np.ndarray:
    photo = Image.fromarray(sample_image("truck.jpg")).resize((WIDTH, HEIGHT), Image.BILINEAR)
    return np.asarray(photo)


def test_large_image_masks_match_predictor_without_full_resolution_floats(
    tiny_model: Any, large_photo: np.ndarray
) -> None:
    model = samrt.Model(tiny_model.engine_dir, backend="onnxruntime-cpu")
    generator = samrt.AutomaticMaskGenerator(
        model,
        points_per_side=2,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,  # keep every mask, so each one is checked
        output_mode="coco_rle",
    )
    tracemalloc.start()
    try:
        records = generator.generate(large_photo)
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # numpy reports its buffers to tracemalloc: nothing the size of one full-resolution
    # float32 mask (192 MB) was allocated, let alone a batch of them. The image (144 MB)
    # was allocated before tracing started.
    assert traced_peak < WIDTH * HEIGHT * 4 // 2, traced_peak
    assert len(records) == 4 * 3
    assert {tuple(r["segmentation"]["size"]) for r in records} == {(HEIGHT, WIDTH)}

    predictor = samrt.Predictor(model)
    predictor.set_image(large_photo)
    for record in records:
        masks, scores, _ = predictor.predict(
            point_coords=np.array(record["point_coords"]), point_labels=np.array([1])
        )
        which = int(np.argmin(np.abs(scores - record["predicted_iou"])))
        assert abs(scores[which] - record["predicted_iou"]) <= 1e-5
        expected = encode_rle(masks[which])
        got = record["segmentation"]
        iou = rle_iou([got], [expected])[0, 0]
        assert iou >= 0.999, (record["point_coords"], iou)
        assert record["area"] == int(masks[which].sum())
