"""samrt serve under concurrent load, on a live uvicorn: single-flight encodes, the bounded
queue (503 + Retry-After), cancelled work of departed clients, priorities, the caches
bounded in bytes, and a bounded load test (16 clients x 50 mixed requests on 3 images)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import socket
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
from samrt.serve.cache import ByteLRU  # noqa: E402
from samrt.serve.scheduler import Priority, QueueFullError, Scheduler  # noqa: E402

PHOTOS = ("dog.jpg", "truck.jpg", "groceries.jpg")


def _until(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture(scope="module")
def model(tiny_model: Any) -> samrt.Model:
    return samrt.Model(tiny_model.engine_dir)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images")
    for name in PHOTOS:
        shutil.copy(shared_image(name), path / name)
    return path


def _ids(folder: Path) -> list[str]:
    return [hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in PHOTOS]


def _png(seed: int, size: tuple[int, int] = (96, 128)) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def make_server(model: samrt.Model, folder: Path, tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def make(**options: Any) -> LiveServer:
        options.setdefault("prefetch", 0)
        options.setdefault("db", tmp_path / f"db{len(started)}.sqlite3")
        app = create_app(engine=model.engine_dir, images=folder, model=model, **options)
        live = LiveServer(app).__enter__()
        started.append(live)
        return live

    yield make
    for live in reversed(started):
        live.__exit__(None, None, None)


def test_twenty_concurrent_first_predicts_cause_one_encode(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(workers=2)
    with httpx.Client(base_url=live.url, timeout=60) as client:
        image_id = client.post("/v1/images", content=_png(1)).json()["image_id"]
    before = live.service.m_encodes.value()
    barrier = threading.Barrier(20)

    def first_predict(i: int) -> tuple[int, Any]:
        with httpx.Client(base_url=live.url, timeout=120) as c:
            barrier.wait(timeout=60)
            r = c.post(f"/v1/images/{image_id}/predict", json={"points": [[64, 48]], "labels": [1]})
            return r.status_code, r.json()["masks"]

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(first_predict, range(20)))
    assert [status for status, _ in results] == [200] * 20
    assert all(masks == results[0][1] for _, masks in results)
    assert live.service.m_encodes.value() - before == 1
    metrics = httpx.get(live.url + "/metrics").text
    assert "samrt_encodes_total" in metrics


def test_full_queue_answers_503_with_retry_after(make_server: Callable[..., LiveServer], folder: Path) -> None:
    live = make_server(workers=1, queue_size=2)
    image_id = _ids(folder)[0]
    prompt = {"points": [[100, 100]], "labels": [1]}
    with httpx.Client(base_url=live.url, timeout=60) as client:
        assert client.post(f"/v1/images/{image_id}/predict", json=prompt).status_code == 200  # encoded now
        release = threading.Event()
        service = live.service
        blocker = service.submit(lambda w: release.wait(60), Priority.INTERACTIVE, "block")
        assert _until(lambda: service.scheduler.running == 1)
        waiting = [service.submit(lambda w: None, Priority.INTERACTIVE, "wait") for _ in range(2)]
        try:
            r = client.post(f"/v1/images/{image_id}/predict", json=prompt)
            assert r.status_code == 503
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"] == "overloaded"
            with pytest.raises(QueueFullError):
                service.submit(lambda w: None, Priority.INTERACTIVE, "more")
            # A prefetch is dropped rather than queued past half the bound.
            service.prefetch([service.storage.get_image(_ids(folder)[1])])
            assert service.scheduler.depth(Priority.PREFETCH) == 0
        finally:
            release.set()
        blocker.future.result(timeout=60)
        for task in waiting:
            task.future.result(timeout=60)
        assert client.post(f"/v1/images/{image_id}/predict", json=prompt).status_code == 200
        assert 'samrt_tasks_rejected_total 2' in client.get("/metrics").text


def test_a_client_that_disconnects_stops_its_queued_work(make_server: Callable[..., LiveServer], folder: Path) -> None:
    live = make_server(workers=1)
    service = live.service
    image_id = _ids(folder)[0]
    with httpx.Client(base_url=live.url, timeout=60) as client:
        assert client.post(f"/v1/images/{image_id}/predict", json={"box": [0, 0, 50, 50]}).status_code == 200
    release = threading.Event()
    blocker = service.submit(lambda w: release.wait(60), Priority.INTERACTIVE, "block")
    try:
        assert _until(lambda: service.scheduler.running == 1)
        decodes, cancelled = service.m_decodes.value(), service.m_cancelled.value()
        body = json.dumps({"points": [[100, 100]], "labels": [1]}).encode()
        with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
            sock.sendall(b"POST /v1/images/%s/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (image_id.encode(), len(body), body))
            assert _until(lambda: service.scheduler.depth(Priority.INTERACTIVE) == 1)
        # The socket is closed: the queued decode is cancelled, never run.
        assert _until(lambda: service.m_cancelled.value() == cancelled + 1)
        assert service.scheduler.depth() == 0
    finally:
        release.set()
    blocker.future.result(timeout=60)
    time.sleep(0.2)
    assert service.m_decodes.value() == decodes
    # And a new image's encode, awaited by one client who leaves, is cancelled too.
    with httpx.Client(base_url=live.url, timeout=60) as client:
        new_id = client.post("/v1/images", content=_png(5)).json()["image_id"]
    release.clear()
    blocker = service.submit(lambda w: release.wait(60), Priority.INTERACTIVE, "block")
    encodes = service.m_encodes.value()
    body = json.dumps({"points": [[50, 40]], "labels": [1]}).encode()
    try:
        assert _until(lambda: service.scheduler.running == 1)
        with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
            sock.sendall(b"POST /v1/images/%s/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (new_id.encode(), len(body), body))
            assert _until(lambda: service.scheduler.depth(Priority.INTERACTIVE) == 1)
        assert _until(lambda: service.scheduler.depth() == 0)
    finally:
        release.set()
    blocker.future.result(timeout=60)
    time.sleep(0.2)
    assert service.m_encodes.value() == encodes


def test_interactive_work_runs_before_background_and_prefetch(model: samrt.Model) -> None:
    scheduler = Scheduler(model, workers=1, max_queue=16, max_image_pixels=None)
    order: list[str] = []
    release = threading.Event()
    try:
        blocker = scheduler.submit(lambda w: release.wait(60), Priority.INTERACTIVE, "block")
        assert _until(lambda: scheduler.running == 1)
        tasks = [
            scheduler.submit(lambda w: order.append("prefetch"), Priority.PREFETCH, "p"),
            scheduler.submit(lambda w: order.append("background"), Priority.BACKGROUND, "b"),
            scheduler.submit(lambda w: order.append("click"), Priority.INTERACTIVE, "c"),
        ]
        promoted = scheduler.submit(lambda w: order.append("promoted prefetch"), Priority.PREFETCH, "p2")
        scheduler.raise_priority(promoted, Priority.INTERACTIVE)
        release.set()
        for task in (blocker, *tasks, promoted):
            task.future.result(timeout=60)
        assert order == ["click", "promoted prefetch", "background", "prefetch"]

        # A long background task hands its worker to clicks between its batches.
        order.clear()
        submitted = threading.Event()

        def background(worker: Any) -> None:
            order.append("background starts")
            assert submitted.wait(60)
            worker.serve_interactive()
            order.append("background ends")

        job = scheduler.submit(background, Priority.BACKGROUND, "job")
        assert _until(lambda: order == ["background starts"])
        click = scheduler.submit(lambda w: order.append("click"), Priority.INTERACTIVE, "c")
        submitted.set()
        job.future.result(timeout=60)
        click.future.result(timeout=60)
        assert order == ["background starts", "click", "background ends"]
    finally:
        release.set()
        scheduler.close()


def test_byte_lru_is_bounded_in_bytes() -> None:
    lru: ByteLRU[str, int] = ByteLRU(100)
    assert lru.put("a", 1, 40) and lru.put("b", 2, 40)
    assert lru.get("a") == 1  # "b" is now the least recently used
    assert lru.put("c", 3, 40)
    assert "b" not in lru and "a" in lru and "c" in lru
    assert lru.nbytes == 80 and lru.evictions == 1
    assert not lru.put("huge", 4, 101) and "huge" not in lru
    assert lru.put("a", 5, 10) and lru.nbytes == 50


def test_embedding_cache_is_bounded_in_bytes_and_persists(
    make_server: Callable[..., LiveServer], folder: Path, tmp_path: Path, tiny_model: Any
) -> None:
    ids = _ids(folder)
    # An image state's size, as the model makes it (the embedding and the decoder's
    # per-image projections).
    probe = samrt.Predictor(tiny_model.engine_dir, "onnxruntime-cpu")
    probe.set_image(np.zeros((32, 48, 3), np.uint8))
    state_bytes = probe.image_state.nbytes
    live = make_server(cache_mb=2.5 * state_bytes / 2**20, cache_dir=tmp_path / "embeddings")
    prompt = {"points": [[50, 50]], "labels": [1]}
    with httpx.Client(base_url=live.url, timeout=60) as client:
        first = [client.post(f"/v1/images/{i}/predict", json=prompt).json()["masks"] for i in ids]
        assert live.service.m_encodes.value() == 3
        assert live.service.states.nbytes <= live.service.states.capacity_bytes
        assert len(live.service.states) == 2 and live.service.cached_state(ids[0]) is None
        assert [i["encoded"] for i in client.get("/v1/images").json()["images"]].count(True) == 2
        # Evicted from memory, read back from the cache folder: no encode.
        assert client.post(f"/v1/images/{ids[0]}/predict", json=prompt).json()["masks"] == first[0]
        assert live.service.m_encodes.value() == 3 and live.service.m_disk_hits.value() == 1

    restarted = make_server(cache_dir=tmp_path / "embeddings")
    with httpx.Client(base_url=restarted.url, timeout=60) as client:
        again = [client.post(f"/v1/images/{i}/predict", json=prompt).json()["masks"] for i in ids]
    assert again == first
    assert restarted.service.m_encodes.value() == 0 and restarted.service.m_disk_hits.value() == 3


def test_next_images_are_encoded_ahead(make_server: Callable[..., LiveServer], folder: Path) -> None:
    live = make_server(prefetch=2)
    ids = _ids(folder)
    queue = [i["image_id"] for i in httpx.get(live.url + "/v1/images").json()["images"]]
    assert sorted(queue) == sorted(ids)
    with httpx.Client(base_url=live.url, timeout=60) as client:
        assert client.post(f"/v1/images/{queue[0]}/encode").status_code == 200
        assert _until(lambda: all(live.service.cached_state(i) is not None for i in queue))
    assert live.service.m_encodes.value() == 3


def test_load_sixteen_clients_fifty_mixed_requests(make_server: Callable[..., LiveServer], folder: Path,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    live = make_server(workers=2, prefetch=2)
    ids = _ids(folder)
    sizes = {i["image_id"]: (i["width"], i["height"]) for i in httpx.get(live.url + "/v1/images").json()["images"]}
    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: dict[int, int] = defaultdict(int)
    acknowledged: dict[str, list[int]] = defaultdict(list)
    lock = threading.Lock()

    def client_run(seed: int) -> None:
        rng = np.random.default_rng(seed)
        last: dict[str, tuple[str, dict[str, Any]]] = {}
        with httpx.Client(base_url=live.url, timeout=120) as client:
            for n in range(50):
                image_id = ids[int(rng.integers(len(ids)))]
                w, h = sizes[image_id]
                point = [float(rng.uniform(0, w)), float(rng.uniform(0, h))]
                kind = ("predict", "preview", "annotate")[n % 3]
                if kind == "annotate" and image_id not in last:
                    kind = "predict"
                started = time.perf_counter()
                if kind == "predict":
                    prompt: dict[str, Any] = {"points": [point], "labels": [1]}
                    if image_id in last and n % 2:
                        prompt = {"points": [point, [w / 2, h / 2]], "labels": [1, 0], "mask_input": last[image_id][0]}
                    r = client.post(f"/v1/images/{image_id}/predict", json=prompt)
                    if r.status_code == 200:
                        last[image_id] = (r.json()["result_id"], r.json()["masks"][0]["rle"])
                elif kind == "preview":
                    r = client.post(f"/v1/images/{image_id}/preview", json={"points": [point], "labels": [1]})
                else:
                    rle = last[image_id][1]
                    r = client.post(f"/v1/images/{image_id}/annotations", json={"rle": rle, "seconds": 1.0})
                    if r.status_code == 201:
                        with lock:
                            acknowledged[image_id].append(r.json()["id"])
                elapsed = time.perf_counter() - started
                with lock:
                    latencies[kind].append(elapsed)
                    statuses[r.status_code] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(client_run, range(16)))
    wall = time.perf_counter() - started

    assert sum(statuses.values()) == 16 * 50
    assert not [s for s in statuses if s >= 500], dict(statuses)
    assert set(statuses) <= {200, 201}, dict(statuses)
    with httpx.Client(base_url=live.url, timeout=60) as client:
        for image_id in ids:
            stored = {a["id"] for a in client.get(f"/v1/images/{image_id}/annotations").json()["annotations"]}
            assert set(acknowledged[image_id]) <= stored
            assert len(stored) == len(acknowledged[image_id])
        assert client.get("/healthz").status_code == 200

    report = {
        route: {"n": len(values), "p50_ms": round(1000 * statistics.median(values), 1),
                "p95_ms": round(1000 * float(np.percentile(values, 95)), 1)}
        for route, values in sorted(latencies.items())
    }
    (tmp_path / "load_report.json").write_text(json.dumps({"wall_s": wall, "routes": report}, indent=2))
    with capsys.disabled():
        line = ", ".join(f"{route} p50 {r['p50_ms']} ms p95 {r['p95_ms']} ms (n={r['n']})" for route, r in report.items())
        print(f"\nsamrt serve load (tiny model, 16 clients x 50): {line}; {wall:.1f} s")
