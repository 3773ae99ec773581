"""``samrt segment --format coco``: the COCO annotations file's boxes against pycocotools.

Oracles: ``pycocotools.mask.toBbox`` of each annotation's segmentation for the COCO file
(COCO's box: [x, y, width, height] counting pixels), and segment_anything's own
``batched_mask_to_box`` + ``box_xyxy_to_xywh`` for the per-image records, which stay the
official generator's (SAM's box, one pixel short of the mask in width and height).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from samrt.segment import COCO_FILE, Job, write_coco

FAST = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


def _sam_box(mask: np.ndarray) -> list[int]:
    import torch
    from segment_anything.utils.amg import batched_mask_to_box, box_xyxy_to_xywh

    xyxy = batched_mask_to_box(torch.as_tensor(mask[None], dtype=torch.bool))[0]
    return [int(v) for v in box_xyxy_to_xywh(xyxy)]


def _record(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "area": int(mask.sum()),
        "bbox": _sam_box(mask),
        "predicted_iou": 0.9,
        "point_coords": [[1.0, 1.0]],
        "stability_score": 0.96,
        "crop_box": [0, 0, mask.shape[1], mask.shape[0]],
    }


def test_the_issues_full_mask_gets_cocos_box(tmp_path: Path) -> None:
    full = np.ones((534, 800), bool)
    corner = np.zeros((534, 800), bool)
    corner[10:20, 30:35] = True
    records = [_record(full), _record(corner), _record(np.zeros((534, 800), bool))]
    assert [r["bbox"] for r in records] == [[0, 0, 799, 533], [30, 10, 4, 9], [0, 0, 0, 0]]  # SAM's
    (tmp_path / "dog.jpg.json").write_text(json.dumps(
        {"image": {"file_name": "dog.jpg", "height": 534, "width": 800}, "annotations": records}))
    coco = json.loads(write_coco(tmp_path, [Job("dog.jpg", "dog.jpg")]).read_text())
    boxes = [a["bbox"] for a in coco["annotations"]]
    assert boxes == [[0, 0, 800, 534], [30, 10, 5, 10], [0, 0, 0, 0]]
    assert boxes == [[int(v) for v in mask_utils.toBbox(a["segmentation"])] for a in coco["annotations"]]
    # Everything else is the record's.
    for ann, record in zip(coco["annotations"], records, strict=True):
        assert {k: v for k, v in ann.items() if k != "bbox"} == {
            "id": ann["id"], "image_id": 1, "category_id": 1, "iscrowd": 0, "score": 0.9,
            **{k: v for k, v in record.items() if k != "bbox"}}


@pytest.mark.parametrize("prompt", [[], ["--point", "40,30"]], ids=["everything", "point"])
def test_samrt_segment_coco_boxes_are_pycocotools_tobbox(prompt: list[str], tiny_model: Any, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(2):
        base = rng.integers(0, 255, size=(6, 8, 3)).astype(np.uint8)
        Image.fromarray(base).resize((128, 96), Image.Resampling.BILINEAR).save(folder / f"p{i}.png")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "samrt.cli", "segment", str(folder), "--engine", str(tiny_model.engine_dir),
         "--out", str(out), "--format", "coco", *FAST, *prompt],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    coco = json.loads((out / COCO_FILE).read_text())
    records = [r for i in range(2) for r in json.loads((out / f"p{i}.png.json").read_text())["annotations"]]
    assert len(coco["annotations"]) == len(records) > 0
    differ = 0
    for ann, record in zip(coco["annotations"], records, strict=True):
        assert ann["segmentation"] == record["segmentation"]
        assert ann["bbox"] == [int(v) for v in mask_utils.toBbox(ann["segmentation"])]
        mask = mask_utils.decode(record["segmentation"]).astype(bool)
        assert record["bbox"] == _sam_box(mask)  # the per-image records keep SAM's box
        differ += ann["bbox"] != record["bbox"]
    assert differ > 0, "no non-empty mask: the two conventions were not told apart"
