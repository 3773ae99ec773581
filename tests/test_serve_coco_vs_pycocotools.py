"""samrt serve's COCO export loaded by ``pycocotools.coco.COCO``: its masks decode to the
stored ones; importing the file into a fresh database is the inverse of the export."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from models import shared_image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from serve_server import LiveServer

import samrt

pytest.importorskip("fastapi")
from samrt.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def model(tiny_model: Any) -> samrt.Model:
    return samrt.Model(tiny_model.engine_dir)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images")
    (path / "sub").mkdir()
    for name, target in (("dog.jpg", "dog.jpg"), ("groceries.jpg", "sub/groceries.jpg")):
        shutil.copy(shared_image(name), path / target)
    return path


def _annotate(client: httpx.Client, image: dict[str, Any], prompt: dict[str, Any], category: str) -> dict[str, Any]:
    masks = client.post(f"/v1/images/{image['image_id']}/predict", json=prompt).json()["masks"]
    r = client.post(f"/v1/images/{image['image_id']}/annotations",
                    json={"rle": masks[-1]["rle"], "category": category, "seconds": 2.5})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def test_export_loads_in_pycocotools_and_import_is_its_inverse(
    model: samrt.Model, folder: Path, tmp_path: Path
) -> None:
    app = create_app(engine=model.engine_dir, images=folder, db=tmp_path / "first.sqlite3", prefetch=0, model=model)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=60) as client:
        images = {i["file_name"]: i for i in client.get("/v1/images").json()["images"]}
        assert set(images) == {"dog.jpg", "sub/groceries.jpg"}
        dog, groceries = images["dog.jpg"], images["sub/groceries.jpg"]
        made = [
            _annotate(client, dog, {"points": [[400, 250]], "labels": [1]}, "dog"),
            _annotate(client, dog, {"box": [50, 60, 300, 400]}, "background"),
            _annotate(client, groceries, {"points": [[100, 100], [300, 200]], "labels": [1, 0]}, "food"),
            _annotate(client, groceries, {"box": [10, 10, 200, 150]}, "food"),
        ]
        assert client.delete(f"/v1/annotations/{made[1]['id']}").status_code == 200
        r = client.get("/v1/export/coco")
        assert r.status_code == 200
        exported = r.json()

    path = tmp_path / "export.json"
    path.write_text(json.dumps(exported))
    coco = COCO(str(path))
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"dog", "background", "food"}
    assert len(coco.getAnnIds()) == 3  # the deleted one is not exported
    kept = {a["id"]: a for a in made if a["id"] != made[1]["id"]}
    for ann in coco.loadAnns(coco.getAnnIds()):
        ours = kept[ann["id"]]
        image = coco.loadImgs(ann["image_id"])[0]
        assert image["samrt_image_id"] == ours["image_id"]
        assert image["file_name"] == next(n for n, i in images.items() if i["image_id"] == ours["image_id"])
        mask = coco.annToMask(ann)
        assert mask.shape == (image["height"], image["width"])
        stored = mask_utils.decode({"size": ours["rle"]["size"], "counts": ours["rle"]["counts"].encode()})
        np.testing.assert_array_equal(mask, stored)
        assert ann["area"] == int(mask_utils.area(coco.annToRLE(ann))) == ours["area"]
        assert ann["bbox"] == [int(v) for v in mask_utils.toBbox(coco.annToRLE(ann))]
        assert coco.loadCats(ann["category_id"])[0]["name"] == ours["category"]
        assert ann["iscrowd"] == 0
    for name, image in images.items():
        (entry,) = [i for i in exported["images"] if i["samrt_image_id"] == image["image_id"]]
        assert (entry["width"], entry["height"]) == (image["width"], image["height"])
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == image["image_id"]

    # Into a fresh database (matched by samrt_image_id), and again by file name alone.
    by_name = json.loads(json.dumps(exported))
    for entry in by_name["images"]:
        del entry["samrt_image_id"]
    app = create_app(engine=model.engine_dir, images=folder, db=tmp_path / "second.sqlite3", prefetch=0, model=model)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=60) as client:
        r = client.post("/v1/import/coco", json=exported)
        assert r.status_code == 200, r.text
        assert r.json()["annotations"] == 3
        again = client.get("/v1/export/coco").json()

        def masks_of(data: dict[str, Any]) -> list[tuple[str, str, str, int]]:
            names = {c["id"]: c["name"] for c in data["categories"]}
            shas = {i["id"]: i.get("samrt_image_id") or i["file_name"] for i in data["images"]}
            return sorted((shas[a["image_id"]], names[a["category_id"]], a["segmentation"]["counts"], a["area"])
                          for a in data["annotations"])

        assert masks_of(again) == masks_of(exported)
        r = client.post("/v1/import/coco", json=by_name)
        assert r.status_code == 200 and r.json()["annotations"] == 3

        polygons = json.loads(json.dumps(exported))
        polygons["annotations"][0]["segmentation"] = [[0, 0, 10, 0, 10, 10]]
        r = client.post("/v1/import/coco", json=polygons)
        assert r.status_code == 422 and r.json()["field"] == "body.annotations.0.segmentation"
        wrong_size = json.loads(json.dumps(exported))
        wrong_size["annotations"][0]["segmentation"]["size"] = [5, 5]
        r = client.post("/v1/import/coco", json=wrong_size)
        assert r.status_code == 422 and "segmentation.size" in r.json()["field"]
        # A refused file adds nothing.
        assert len(client.get("/v1/export/coco").json()["annotations"]) == 6
