"""Malformed requests to a live samrt serve: each is a 4xx with a JSON body naming what was
wrong (never a 500), the server keeps serving; uploads are limited while they are read;
nothing outside the served folders can be read."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from models import shared_image
from PIL import Image
from serve_server import LiveServer

import samrt

pytest.importorskip("fastapi")
from samrt.serve import create_app  # noqa: E402

UPLOAD_LIMIT_MB = 0.25


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    path = root / "images"
    path.mkdir()
    shutil.copy(shared_image("dog.jpg"), path / "dog.jpg")
    secret = root / "secret.jpg"  # outside the images folder
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(secret)
    os.symlink(secret, path / "link-outside.jpg")
    return path


@pytest.fixture(scope="module")
def server(tiny_model: Any, folder: Path) -> Iterator[LiveServer]:
    model = samrt.Model(tiny_model.engine_dir)
    app = create_app(engine=tiny_model.engine_dir, images=folder, db=folder.parent / "db.sqlite3", prefetch=0,
                     max_upload_mb=UPLOAD_LIMIT_MB, model=model)
    with LiveServer(app) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _image_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def _malformed(image_id: str, rle: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any], str | None]]:
    """(name, method, path, httpx kwargs, a field the answer must name)."""
    dog = shared_image("dog.jpg").read_bytes()
    predict = f"/v1/images/{image_id}/predict"
    annotations = f"/v1/images/{image_id}/annotations"
    raw_json = {"headers": {"content-type": "application/json"}}
    return [
        ("empty upload", "POST", "/v1/images", {"content": b""}, "body"),
        ("text upload", "POST", "/v1/images", {"content": b"hello, not an image"}, "body"),
        ("truncated jpeg", "POST", "/v1/images", {"content": dog[:3000]}, "body"),
        ("gif not accepted", "POST", "/v1/images", {"content": _image_bytes("GIF")}, "body"),
        ("decompression bomb", "POST", "/v1/images", {"content": _png_claiming(200_000, 200_000)}, "body"),
        ("multipart without file", "POST", "/v1/images", {"files": {"other": ("a.jpg", dog[:100])}}, "body.file"),
        ("malformed multipart", "POST", "/v1/images",
         {"content": b"--xyz\r\ngarbage", "headers": {"content-type": "multipart/form-data; boundary=xyz"}}, None),
        ("unknown image", "POST", f"/v1/images/{'0' * 64}/predict", {"json": {"points": [[1, 1]], "labels": [1]}},
         "image_id"),
        ("image id not hex", "POST", "/v1/images/not-a-sha/predict", {"json": {"points": [[1, 1]], "labels": [1]}},
         "image_id"),
        ("invalid json", "POST", predict, {"content": b'{"points": [[1, 2]', **raw_json}, "body"),
        ("json list body", "POST", predict, {"json": [1, 2, 3]}, "body"),
        ("points a string", "POST", predict, {"json": {"points": "abc", "labels": [1]}}, "points"),
        ("coordinate a string", "POST", predict, {"json": {"points": [["10", 20]], "labels": [1]}}, "points"),
        ("point with 3 numbers", "POST", predict, {"json": {"points": [[1, 2, 3]], "labels": [1]}}, "points"),
        ("NaN coordinate", "POST", predict, {"content": b'{"points": [[NaN, 5]], "labels": [1]}', **raw_json},
         "points"),
        ("infinite coordinate", "POST", predict,
         {"content": b'{"points": [[Infinity, 5]], "labels": [1]}', **raw_json}, "points"),
        ("negative x", "POST", predict, {"json": {"points": [[-5, 10]], "labels": [1]}}, "points.0"),
        ("y beyond the image", "POST", predict, {"json": {"points": [[10, 10], [10, 10_000]], "labels": [1, 1]}},
         "points.1"),
        ("labels not matching points", "POST", predict, {"json": {"points": [[10, 10]], "labels": [1, 0]}},
         "labels"),
        ("label 2", "POST", predict, {"json": {"points": [[10, 10]], "labels": [2]}}, "labels"),
        ("label true", "POST", predict, {"json": {"points": [[10, 10]], "labels": [True]}}, "labels"),
        ("inverted box", "POST", predict, {"json": {"box": [300, 300, 100, 100]}}, "box"),
        ("box of 3", "POST", predict, {"json": {"box": [1, 2, 3]}}, "box"),
        ("no prompt", "POST", predict, {"json": {}}, "points"),
        ("unknown mask_input", "POST", predict,
         {"json": {"points": [[10, 10]], "labels": [1], "mask_input": "no-such-result"}}, "mask_input"),
        ("mask_input_index alone", "POST", predict,
         {"json": {"points": [[10, 10]], "labels": [1], "mask_input_index": 1}}, "mask_input_index"),
        ("multimask a string", "POST", predict, {"json": {"points": [[10, 10]], "labels": [1], "multimask": "yes"}},
         "multimask"),
        ("misspelt field", "POST", predict,
         {"json": {"points": [[10, 10]], "labels": [1], "multimask_output": False}}, "multimask_output"),
        ("preview NaN", "POST", f"/v1/images/{image_id}/preview",
         {"content": b'{"box": [0, 0, NaN, 4]}', **raw_json}, "box"),
        ("rle counts not matching size", "POST", annotations,
         {"json": {"rle": {"size": rle["size"], "counts": "0a0"}, "category": "x"}}, "rle.counts"),
        ("rle size not the image's", "POST", annotations,
         {"json": {"rle": {"size": [10, 10], "counts": rle["counts"]}}}, "rle.size"),
        ("rle counts bad characters", "POST", annotations,
         {"json": {"rle": {"size": rle["size"], "counts": "\u00ff\u00fe"}}}, "rle.counts"),
        ("rle uncompressed wrong sum", "POST", annotations,
         {"json": {"rle": {"size": rle["size"], "counts": [5, 5]}}}, "rle.counts"),
        ("annotation without rle", "POST", annotations, {"json": {"category": "x"}}, "rle"),
        ("empty category", "POST", annotations, {"json": {"rle": rle, "category": ""}}, "category"),
        ("negative seconds", "POST", annotations, {"json": {"rle": rle, "seconds": -1}}, "seconds"),
        ("delete unknown annotation", "DELETE", "/v1/annotations/999999", {}, "annotation_id"),
        ("delete annotation not a number", "DELETE", "/v1/annotations/abc", {}, "annotation_id"),
        ("restore unknown annotation", "POST", "/v1/annotations/999999/restore", {}, "annotation_id"),
        ("unknown job", "GET", "/v1/jobs/nojob", {}, "job_id"),
        ("everything points_per_side 0", "POST", f"/v1/images/{image_id}/everything",
         {"json": {"points_per_side": 0}}, "points_per_side"),
        ("everything layers without points", "POST", f"/v1/images/{image_id}/everything",
         {"json": {"points_per_side": 2, "crop_n_layers": 2, "crop_n_points_downscale_factor": 4}}, "body"),
        ("patch done a string", "PATCH", f"/v1/images/{image_id}", {"json": {"done": "yes"}}, "done"),
        ("import not json", "POST", "/v1/import/coco", {"content": b"not json"}, "body"),
        ("import unknown image", "POST", "/v1/import/coco",
         {"json": {"images": [{"id": 1, "file_name": "../../etc/passwd"}], "annotations": [], "categories": []}},
         "images.0"),
        ("unknown route", "GET", f"/v1/images/{image_id}/nothing", {}, None),
        ("wrong method", "POST", "/healthz", {}, None),
    ]


def test_malformed_requests_get_4xx_naming_the_field(client: httpx.Client, server: LiveServer, folder: Path) -> None:
    image_id = hashlib.sha256((folder / "dog.jpg").read_bytes()).hexdigest()
    masks = client.post(f"/v1/images/{image_id}/predict", json={"points": [[400, 260]], "labels": [1]}).json()
    rle = masks["masks"][0]["rle"]
    cases = _malformed(image_id, rle)
    assert len(cases) >= 30
    failures = []
    for name, method, path, kwargs, field in cases:
        r = client.request(method, path, **kwargs)
        try:
            body = r.json()
        except json.JSONDecodeError:
            failures.append(f"{name}: {r.status_code} with a body that is not JSON: {r.text[:200]!r}")
            continue
        if not 400 <= r.status_code < 500:
            failures.append(f"{name}: status {r.status_code}: {str(body)[:300]}")
        elif not (isinstance(body.get("error"), str) and isinstance(body.get("detail"), str)):
            failures.append(f"{name}: body {body} has no error and detail")
        elif field is not None and field not in (body.get("field") or "") + body["detail"]:
            failures.append(f"{name}: {body} does not name {field!r}")
    assert not failures, "\n".join(failures)

    assert client.get("/healthz").status_code == 200
    r = client.post(f"/v1/images/{image_id}/predict", json={"points": [[400, 260]], "labels": [1]})
    assert r.status_code == 200
    metrics = client.get("/metrics").text
    assert 'status="5' not in metrics


def test_upload_limit_by_content_length_and_while_streaming(server: LiveServer, client: httpx.Client) -> None:
    limit = int(UPLOAD_LIMIT_MB * 2**20)
    big = os.urandom(limit + 1)
    r = client.post("/v1/images", content=big)
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    r = client.post("/v1/images", files={"file": ("big.jpg", big)})
    assert r.status_code == 413

    # Chunked, no Content-Length: the 413 comes after the limit is passed, while the client
    # still holds most of its body (it is not read to the end first).
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/octet-stream\r\n\r\n")
        chunk = os.urandom(64 * 1024)
        sent = 0
        while sent <= limit + len(chunk):
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += len(chunk)
        response = b""
        while b"\r\n\r\n" not in response:
            data = sock.recv(65536)
            if not data:
                break
            response += data
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert sent < 100 * 2**20  # and the client was never made to send its whole (unbounded) body

    assert client.get("/healthz").status_code == 200
    # Under the limit, fine.
    small = io.BytesIO()
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(small, format="PNG")
    assert client.post("/v1/images", content=small.getvalue()).status_code == 200


def test_nothing_outside_the_folders_can_be_read(server: LiveServer, client: httpx.Client, folder: Path) -> None:
    listed = {i["file_name"] for i in client.get("/v1/images").json()["images"]}
    assert "link-outside.jpg" not in listed  # a symlink leading out of the folder is not served
    secret_id = hashlib.sha256((folder.parent / "secret.jpg").read_bytes()).hexdigest()
    assert client.get(f"/v1/images/{secret_id}/file").status_code == 404

    for path in (
        "/v1/images/..%2F..%2F..%2Fetc%2Fpasswd/file",
        "/v1/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file",
        "/v1/images/....//....//etc/passwd/file",
        "/v1/images/%2Fetc%2Fpasswd/file",
    ):
        r = client.get(path)
        assert 400 <= r.status_code < 500, (path, r.status_code)
        assert b"root:" not in r.content
    # Unnormalized dot segments on the wire.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /v1/images/../../../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = b""
        while data := sock.recv(65536):
            response += data
    assert response.split(b" ", 2)[1].startswith(b"4"), response[:100]
    assert b"root:" not in response

    # A client-given file name is ignored: uploads are stored under their sha256.
    png = io.BytesIO()
    Image.fromarray(np.full((12, 12, 3), 7, np.uint8)).save(png, format="PNG")
    r = client.post("/v1/images", files={"file": ("../../escaped.png", png.getvalue(), "image/png")})
    assert r.status_code == 200
    assert r.json()["file_name"] == r.json()["image_id"] + ".png"
    assert not any(p.name == "escaped.png" for p in folder.parent.parent.rglob("escaped.png"))
