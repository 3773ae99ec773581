"""samrt serve's contract against a real uvicorn on 127.0.0.1, its masks compared with
``samrt.Predictor.predict`` (and its proposals with ``samrt.AutomaticMaskGenerator``) on
the same image and prompt."""

from __future__ import annotations

import hashlib
import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from models import shared_image
from pycocotools import mask as mask_utils
from serve_server import LiveServer

import samrt
from samrt.imageio import load_image

pytest.importorskip("fastapi")
from samrt.serve import create_app  # noqa: E402


def _decode(rle: dict[str, Any]) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


@pytest.fixture(scope="module")
def model(tiny_model: Any) -> samrt.Model:
    return samrt.Model(tiny_model.engine_dir)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images")
    for name in ("truck.jpg", "dog.jpg"):
        shutil.copy(shared_image(name), path / name)
    (path / "notes.txt").write_text("not an image\n")
    (path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return path


@pytest.fixture(scope="module")
def server(model: samrt.Model, folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    db = tmp_path_factory.mktemp("db") / "annotations.sqlite3"
    app = create_app(engine=model.engine_dir, images=folder, db=db, prefetch=0, model=model)
    with LiveServer(app) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def _image_id(folder: Path, name: str) -> str:
    return hashlib.sha256((folder / name).read_bytes()).hexdigest()


def test_healthz(client: httpx.Client, model: samrt.Model) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["model_type"] == model.manifest.model_type
    assert body["backend"] == model.backend_name


def test_list_images_of_the_folder(client: httpx.Client, folder: Path) -> None:
    images = client.get("/v1/images").json()["images"]
    by_name = {i["file_name"]: i for i in images if i["source"] == "folder"}
    assert set(by_name) == {"dog.jpg", "truck.jpg"}  # the text file and the truncated JPEG are skipped
    truck = by_name["truck.jpg"]
    assert truck["image_id"] == _image_id(folder, "truck.jpg")
    assert (truck["width"], truck["height"]) == (1800, 1200)
    assert isinstance(truck["annotations"], int)


def test_upload_raw_and_multipart_give_the_sha256_and_one_encode(client: httpx.Client, server: LiveServer) -> None:
    from PIL import Image

    rng = np.random.default_rng(7)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(buffer, format="PNG")
    data = buffer.getvalue()
    expected = hashlib.sha256(data).hexdigest()

    raw = client.post("/v1/images", content=data, headers={"content-type": "image/png"})
    assert raw.status_code == 200, raw.text
    assert raw.json()["image_id"] == expected
    assert (raw.json()["width"], raw.json()["height"]) == (120, 90)
    encodes = server.service.m_encodes.value()
    for _ in range(2):
        r = client.post(f"/v1/images/{expected}/predict", json={"points": [[60, 45]], "labels": [1]})
        assert r.status_code == 200, r.text
    again = client.post("/v1/images", files={"file": ("anything.png", data, "image/png")})
    assert again.status_code == 200, again.text
    assert again.json()["image_id"] == expected
    r = client.post(f"/v1/images/{expected}/predict", json={"points": [[10, 10]], "labels": [1]})
    assert r.status_code == 200
    assert server.service.m_encodes.value() == encodes + 1  # the same bytes are encoded once
    listed = [i["image_id"] for i in client.get("/v1/images").json()["images"]]
    assert listed.count(expected) == 1
    assert client.get(f"/v1/images/{expected}/file").content == data


@pytest.mark.parametrize(
    "prompt",
    [
        {"points": [[900.0, 600.0]], "labels": [1]},
        {"points": [[900.0, 600.0], [300.5, 200.25]], "labels": [1, 0], "multimask": False},
        {"box": [200.0, 150.0, 1400.0, 1000.0]},
        {"points": [[700.0, 500.0]], "labels": [1], "box": [200.0, 150.0, 1400.0, 1000.0]},
    ],
    ids=["click", "fg-bg-single", "box", "click-and-box"],
)
def test_predict_masks_equal_the_predictor(
    client: httpx.Client, folder: Path, model: samrt.Model, prompt: dict[str, Any]
) -> None:
    image_id = _image_id(folder, "truck.jpg")
    r = client.post(f"/v1/images/{image_id}/predict", json=prompt)
    assert r.status_code == 200, r.text
    body = r.json()

    predictor = samrt.Predictor(model)
    predictor.set_image(load_image(folder / "truck.jpg"))
    masks, scores, _ = predictor.predict(
        point_coords=None if "points" not in prompt else np.array(prompt["points"]),
        point_labels=None if "labels" not in prompt else np.array(prompt["labels"]),
        box=None if "box" not in prompt else np.array(prompt["box"]),
        multimask_output=prompt.get("multimask", True),
    )
    assert len(body["masks"]) == len(masks)
    for got, mask, score in zip(body["masks"], masks, scores, strict=True):
        assert got["rle"]["size"] == [1200, 1800]
        decoded = _decode(got["rle"])
        np.testing.assert_array_equal(decoded, mask)
        assert got["score"] == pytest.approx(float(score), rel=1e-6, abs=1e-7)
        assert got["area"] == int(mask.sum())
        encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert got["bbox"] == [int(v) for v in mask_utils.toBbox(encoded)]


def test_refining_click_with_mask_input_equals_the_predictor(client: httpx.Client, folder: Path, model: samrt.Model) -> None:
    image_id = _image_id(folder, "truck.jpg")
    first = client.post(f"/v1/images/{image_id}/predict", json={"points": [[900, 600]], "labels": [1]}).json()
    second_prompt = {"points": [[900, 600], [1300, 400]], "labels": [1, 0], "mask_input": first["result_id"]}
    second = client.post(f"/v1/images/{image_id}/predict", json=second_prompt)
    assert second.status_code == 200, second.text
    chosen = client.post(
        f"/v1/images/{image_id}/predict",
        json={**second_prompt, "mask_input_index": 2, "multimask": False},
    )
    assert chosen.status_code == 200, chosen.text

    predictor = samrt.Predictor(model)
    predictor.set_image(load_image(folder / "truck.jpg"))
    _, scores, low_res = predictor.predict(point_coords=np.array([[900, 600]]), point_labels=np.array([1]))
    for body, index, multimask in ((second.json(), int(np.argmax(scores)), True), (chosen.json(), 2, False)):
        masks, _, _ = predictor.predict(
            point_coords=np.array([[900, 600], [1300, 400]]),
            point_labels=np.array([1, 0]),
            mask_input=low_res[index][None],
            multimask_output=multimask,
        )
        for got, mask in zip(body["masks"], masks, strict=True):
            np.testing.assert_array_equal(_decode(got["rle"]), mask)


def test_preview_is_the_low_res_mask(client: httpx.Client, folder: Path, model: samrt.Model) -> None:
    image_id = _image_id(folder, "truck.jpg")
    prompt = {"points": [[900, 600]], "labels": [1]}
    r = client.post(f"/v1/images/{image_id}/preview", json=prompt)
    assert r.status_code == 200, r.text
    body = r.json()

    predictor = samrt.Predictor(model)
    predictor.set_image(load_image(folder / "truck.jpg"))
    _, scores, low_res = predictor.predict(point_coords=np.array([[900, 600]]), point_labels=np.array([1]))
    best = int(np.argmax(scores))
    h, w = (int(np.ceil(s / 4)) for s in predictor.input_size)  # 1024 input -> 256 low-res
    assert body["rle"]["size"] == [h, w] == [171, 256]
    np.testing.assert_array_equal(_decode(body["rle"]), low_res[best, :h, :w] > 0)
    assert body["score"] == pytest.approx(float(scores[best]), rel=1e-6)
    assert body["image_size"] == [1200, 1800]

    png = client.post(f"/v1/images/{image_id}/preview?format=png", json=prompt)
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    from PIL import Image

    with Image.open(io.BytesIO(png.content)) as im:
        np.testing.assert_array_equal(np.asarray(im) > 127, low_res[best, :h, :w] > 0)


def test_everything_job_proposals_equal_the_generator_and_can_be_accepted(tmp_path: Path) -> None:
    # The deterministic test decoder: masks of real sizes and overlaps, unlike a random SAM's.
    from fake_decoder import fake_model, make_scene
    from PIL import Image

    folder = tmp_path / "scenes"
    folder.mkdir()
    scene = make_scene(240, 320, seed=3)
    Image.fromarray(scene).save(folder / "scene.png")
    image_id = _image_id(folder, "scene.png")
    fake = fake_model()
    app = create_app(engine=tmp_path, images=folder, db=tmp_path / "db.sqlite3", prefetch=0, model=fake)
    params = {"points_per_side": 8, "points_per_batch": 16}
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=60) as client:
        r = client.post(f"/v1/images/{image_id}/everything", json=params)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["state"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        assert job["state"] == "done", job
        assert job["progress"] == 1.0 and job["done_batches"] == job["total_batches"] == 4

        # The paper's confident-mask thresholds by default, as the official generator's.
        generator = samrt.AutomaticMaskGenerator(samrt.Predictor(fake), **params, output_mode="coco_rle")
        assert (generator.pred_iou_thresh, generator.stability_score_thresh) == (0.88, 0.95)
        records = generator.generate(load_image(folder / "scene.png"))
        assert len(records) >= 3
        assert [p["rle"]["counts"] for p in job["proposals"]] == [rec["segmentation"]["counts"] for rec in records]
        assert [p["predicted_iou"] for p in job["proposals"]] == pytest.approx([rec["predicted_iou"] for rec in records])
        assert all(p["max_iou_with_annotations"] == 0.0 for p in job["proposals"])

        accepted = client.post(f"/v1/jobs/{job_id}/accept", json={"proposals": [0, 1], "category": "prefill"})
        assert accepted.status_code == 200, accepted.text
        ids = accepted.json()["ids"]
        stored = {a["id"]: a for a in client.get(f"/v1/images/{image_id}/annotations").json()["annotations"]}
        assert sorted(stored) == sorted(ids)
        assert stored[ids[0]]["rle"]["counts"] == records[0]["segmentation"]["counts"]
        assert stored[ids[0]]["source"] == "everything" and stored[ids[0]]["category"] == "prefill"
        # Accepted proposals now overlap the image's annotations; the others are what is missing.
        job = client.get(f"/v1/jobs/{job_id}").json()
        overlaps = [p["max_iou_with_annotations"] for p in job["proposals"]]
        assert overlaps[0] == pytest.approx(1.0) and overlaps[1] == pytest.approx(1.0)
        assert min(overlaps) < 1.0
        # One encode for the job and the clicks after it: the job's state went to the cache.
        encodes = live.service.m_encodes.value()
        r = client.post(f"/v1/images/{image_id}/predict", json={"points": [[100, 100]], "labels": [1]})
        assert r.status_code == 200
        assert live.service.m_encodes.value() == encodes


def test_annotation_create_list_delete_restore(client: httpx.Client, folder: Path) -> None:
    image_id = _image_id(folder, "truck.jpg")
    masks = client.post(f"/v1/images/{image_id}/predict", json={"box": [100, 100, 600, 500]}).json()["masks"]
    rle = masks[0]["rle"]
    r = client.post(
        f"/v1/images/{image_id}/annotations",
        json={"rle": rle, "category": "truck", "seconds": 4.25,
              "prompts": [{"points": [], "labels": [], "box": [100, 100, 600, 500]}]},
    )
    assert r.status_code == 201, r.text
    created = r.json()
    annotation_id = created["id"]
    assert created["rle"] == rle and created["category"] == "truck" and created["seconds"] == 4.25
    assert created["area"] == masks[0]["area"] and created["bbox"] == masks[0]["bbox"]

    listed = client.get(f"/v1/images/{image_id}/annotations").json()["annotations"]
    assert annotation_id in [a["id"] for a in listed]
    count = next(i for i in client.get("/v1/images").json()["images"] if i["image_id"] == image_id)["annotations"]
    assert count == len(listed)

    deleted = client.delete(f"/v1/annotations/{annotation_id}")
    assert deleted.status_code == 200 and deleted.json()["deleted_at"] is not None
    assert annotation_id not in [a["id"] for a in client.get(f"/v1/images/{image_id}/annotations").json()["annotations"]]
    with_deleted = client.get(f"/v1/images/{image_id}/annotations", params={"include_deleted": "true"}).json()
    assert annotation_id in [a["id"] for a in with_deleted["annotations"]]
    restored = client.post(f"/v1/annotations/{annotation_id}/restore")
    assert restored.status_code == 200 and restored.json()["deleted_at"] is None
    assert restored.json()["rle"] == rle
    history = client.get(f"/v1/annotations/{annotation_id}/history").json()["events"]
    assert [e["action"] for e in history] == ["create", "delete", "restore"]
    assert "truck" in [c["name"] for c in client.get("/v1/categories").json()["categories"]]


def test_openapi_schema_documents_the_contract(client: httpx.Client) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    schema = r.json()
    paths = schema["paths"]
    for path, method in [
        ("/healthz", "get"), ("/v1/images", "post"), ("/v1/images", "get"),
        ("/v1/images/{image_id}/predict", "post"), ("/v1/images/{image_id}/preview", "post"),
        ("/v1/images/{image_id}/everything", "post"), ("/v1/jobs/{job_id}", "get"),
        ("/v1/images/{image_id}/annotations", "post"), ("/v1/images/{image_id}/annotations", "get"),
        ("/v1/annotations/{annotation_id}", "delete"), ("/v1/export/coco", "get"), ("/metrics", "get"),
    ]:
        assert method in paths[path], (path, method)
    request = schema["components"]["schemas"]["PredictRequest"]
    assert {"points", "labels", "box", "multimask", "mask_input"} <= set(request["properties"])
    upload = paths["/v1/images"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload and "application/octet-stream" in upload
    assert "ErrorOut" in schema["components"]["schemas"]


def test_metrics_in_prometheus_text_format(client: httpx.Client) -> None:
    client.get("/v1/images")
    text = client.get("/metrics").text
    assert '# TYPE samrt_http_requests_total counter' in text
    assert 'samrt_http_requests_total{method="GET",route="/v1/images",status="200"}' in text
    assert 'samrt_http_request_duration_seconds_bucket{method="GET",route="/v1/images",le="+Inf"}' in text
    for name in ("samrt_queue_depth", "samrt_embedding_cache_bytes", "samrt_embedding_cache_hits_total",
                 "samrt_encodes_total"):
        assert f"# TYPE {name} " in text
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name_and_labels, value = line.rsplit(" ", 1)
            float(value)


def test_mounted_in_another_app(model: samrt.Model, folder: Path, tmp_path: Path) -> None:
    from fastapi import FastAPI

    outer = FastAPI()

    @outer.get("/healthz")
    def outer_health() -> dict[str, str]:
        return {"app": "outer"}

    outer.mount("/sam", create_app(engine=model.engine_dir, images=folder, db=tmp_path / "m.sqlite3", prefetch=0,
                                   model=model))
    with LiveServer(outer) as live, httpx.Client(base_url=live.url, timeout=60) as client:
        assert client.get("/healthz").json() == {"app": "outer"}
        assert client.get("/sam/healthz").json()["status"] == "ok"
        image_id = _image_id(folder, "dog.jpg")
        r = client.post(f"/sam/v1/images/{image_id}/predict", json={"points": [[400, 250]], "labels": [1]})
        assert r.status_code == 200 and len(r.json()["masks"]) == 3
        assert client.get("/sam/v1/nothing").status_code == 404


def test_structured_access_log(client: httpx.Client, folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    image_id = _image_id(folder, "dog.jpg")
    with caplog.at_level(logging.INFO, logger="samrt.serve.access"):
        r = client.post(f"/v1/images/{image_id}/predict", json={"points": [[10, 10]], "labels": [3]})
        assert r.status_code == 422
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not [x for x in caplog.records if x.name == "samrt.serve.access"]:
            time.sleep(0.01)
    (record,) = [x for x in caplog.records if x.name == "samrt.serve.access"]
    fields = record.__dict__
    assert fields["method"] == "POST" and fields["status"] == 422
    assert fields["route"] == "/v1/images/{image_id}/predict"
    assert fields["path"] == f"/v1/images/{image_id}/predict"
    assert fields["duration_ms"] >= 0 and fields["request_id"] == r.headers["x-request-id"]
