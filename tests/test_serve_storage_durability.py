"""The annotation store: SQLite settings, migrations, soft delete; and durability of a real
``samrt serve`` process killed with SIGKILL in the middle of a stream of writes."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from models import shared_image
from pycocotools import mask as mask_utils
from serve_server import ServeProcess

pytest.importorskip("fastapi")
from samrt.serve.storage import (  # noqa: E402
    MIGRATIONS,
    SCHEMA_VERSION,
    NewAnnotation,
    NewImage,
    NotFoundError,
    SqliteStorage,
    StorageError,
)

SHA = "ab" * 32


def _image(sha: str = SHA) -> NewImage:
    return NewImage(sha, width=8, height=6, source="upload", file_name=f"{sha}.png", format="PNG", file_size=10)


def _annotation(i: int = 0, sha: str = SHA) -> NewAnnotation:
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, i % 8] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return NewAnnotation(sha, "thing", 6, 8, rle["counts"].decode(), int(mask.sum()), (i % 8, 1, 1, 2))


def test_sqlite_is_wal_with_foreign_keys_and_a_schema_version(tmp_path: Path) -> None:
    db = tmp_path / "a.sqlite3"
    storage = SqliteStorage(db)
    assert storage.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
    assert storage._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert storage._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    storage.close()
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # The schema's own foreign keys hold even for a writer that bypasses the store.
    raw.execute("PRAGMA foreign_keys=ON")
    with pytest.raises(sqlite3.IntegrityError):
        raw.execute("INSERT INTO annotations (image_id, category_id, height, width, counts, area, bbox, source, "
                    "created_at) VALUES (99, 99, 1, 1, '0', 0, '[]', 'manual', 'now')")
    raw.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "a.sqlite3"
    SqliteStorage(db).close()
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StorageError, match="newer"):
        SqliteStorage(db)


def test_migrations_upgrade_in_order_and_a_failed_one_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "a.sqlite3"
    storage = SqliteStorage(db)
    storage.upsert_image(_image())
    (kept,) = storage.add_annotations([_annotation()])
    storage.close()

    broken = (*MIGRATIONS, "CREATE TABLE reviews (id INTEGER PRIMARY KEY);\nNOT SQL AT ALL;")
    with pytest.raises(StorageError, match=f"schema version {SCHEMA_VERSION + 1}"):
        SqliteStorage(db, migrations=broken)
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert raw.execute("SELECT name FROM sqlite_master WHERE name = 'reviews'").fetchone() is None
    raw.close()

    upgrade = (*MIGRATIONS, "ALTER TABLE annotations ADD COLUMN reviewer TEXT;\nCREATE TABLE reviews (id INTEGER);")
    storage = SqliteStorage(db, migrations=upgrade)
    assert storage.schema_version == SCHEMA_VERSION + 1
    assert storage.get_annotation(kept).counts == _annotation().counts
    storage.close()


def test_soft_delete_restore_and_history(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "a.sqlite3")
    storage.upsert_image(_image())
    ids = storage.add_annotations([_annotation(i) for i in range(3)])
    assert ids == sorted(ids) and len(set(ids)) == 3
    storage.delete_annotation(ids[1])
    storage.delete_annotation(ids[1])  # a repeated delete changes nothing
    assert [a.id for a in storage.list_annotations(SHA)] == [ids[0], ids[2]]
    assert [a.id for a in storage.list_annotations(SHA, include_deleted=True)] == ids
    assert storage.get_image(SHA).annotations == 2
    restored = storage.restore_annotation(ids[1])
    assert restored.deleted_at is None and restored.counts == _annotation(1).counts
    assert [e.action for e in storage.annotation_history(ids[1])] == ["create", "delete", "restore"]
    (new,) = storage.add_annotations([_annotation(5)])
    assert new > max(ids)  # ids are never reused
    with pytest.raises(NotFoundError):
        storage.delete_annotation(10_000)
    with pytest.raises(NotFoundError):
        storage.add_annotations([_annotation(0, sha="cd" * 32)])
    # all or nothing: the batch with one bad image added none
    with pytest.raises(NotFoundError):
        storage.add_annotations([_annotation(6), _annotation(0, sha="cd" * 32)])
    assert len(storage.list_annotations(include_deleted=True)) == 4
    storage.close()


def _rle(i: int, height: int, width: int) -> dict[str, Any]:
    mask = np.zeros((height, width), np.uint8)
    y, x = (i * 37) % (height - 20), (i * 53) % (width - 30)
    mask[y : y + 10 + i % 10, x : x + 20 + i % 7] = 1
    encoded = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [height, width], "counts": encoded["counts"].decode()}


def test_sigkill_during_a_stream_of_writes_loses_no_acknowledged_annotation(tiny_model: Any, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(shared_image("dog.jpg"), folder / "dog.jpg")
    image_id = hashlib.sha256((folder / "dog.jpg").read_bytes()).hexdigest()
    db = tmp_path / "annotations.sqlite3"
    args = ("--engine", str(tiny_model.engine_dir), "--images", str(folder), "--db", str(db), "--prefetch", "0")

    acknowledged: dict[int, str] = {}
    deleted: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def writer(worker: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(worker, 4000, 4):  # bounded; the kill ends it long before
                if stop.is_set():
                    return
                rle = _rle(i, 534, 800)
                try:
                    r = client.post(f"/v1/images/{image_id}/annotations", json={"rle": rle, "category": f"c{i % 3}"})
                except httpx.HTTPError:
                    return  # the server is gone
                assert r.status_code == 201, r.text
                with lock:
                    acknowledged[r.json()["id"]] = rle["counts"]
                if i % 10 == 5:
                    try:
                        d = client.delete(f"/v1/annotations/{r.json()['id']}")
                    except httpx.HTTPError:
                        return
                    assert d.status_code == 200
                    with lock:
                        deleted.add(r.json()["id"])

    server = ServeProcess(*args, log=tmp_path / "serve1.log").start()
    threads = [threading.Thread(target=writer, args=(w, server.url)) for w in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(acknowledged) < 60:
            time.sleep(0.01)
        server.kill()  # mid-stream: the writers are still sending
    finally:
        stop.set()
        server.stop()
        for t in threads:
            t.join(timeout=60)
    assert len(acknowledged) >= 60
    assert deleted

    with ServeProcess(*args, log=tmp_path / "serve2.log") as restarted:
        r = httpx.get(f"{restarted.url}/v1/images/{image_id}/annotations", params={"include_deleted": "true"},
                      timeout=60)
        assert r.status_code == 200
        stored = {a["id"]: a for a in r.json()["annotations"]}
    missing = sorted(set(acknowledged) - set(stored))
    assert not missing, f"acknowledged annotations lost: {missing}"
    for annotation_id, counts in acknowledged.items():
        assert stored[annotation_id]["rle"]["counts"] == counts
    for annotation_id in deleted:
        assert stored[annotation_id]["deleted_at"] is not None
    # Writes that were cut off are either absent or whole: each stored mask decodes to its area.
    for a in stored.values():
        mask = mask_utils.decode({"size": a["rle"]["size"], "counts": a["rle"]["counts"].encode()})
        assert mask.shape == (534, 800) and int(mask.sum()) == a["area"] > 0
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
