"""Where ``samrt serve`` keeps its data: images, categories and annotations.

Everything the handlers store goes through :class:`Storage`; :class:`SqliteStorage` is
the embedded default and the only module that speaks SQL. Another database is one more
class with these methods, and a case in :func:`open_storage`.

Guarantees every implementation keeps:

- A method that writes returns only once the write is durable (committed and synced):
  the service acknowledges a request after that, so killing the process right after the
  response loses nothing.
- A write is all or nothing (one transaction): a killed process leaves no half-written row.
- Annotations are never removed: ``delete_annotation`` marks one deleted (it stays in the
  history and ``restore_annotation`` brings it back); ids are never reused.

SQLite specifics: WAL journal with ``synchronous=FULL`` (each commit is fsynced), foreign
keys on, a schema version (``PRAGMA user_version``) brought up to date by the ordered
:data:`MIGRATIONS` when the file is opened, each migration in its own transaction. A file
written by a newer samrt (a higher version) is refused rather than guessed at.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "AnnotationEvent",
    "AnnotationRow",
    "AnnotationStats",
    "CategoryRow",
    "ImageRow",
    "NewAnnotation",
    "NewImage",
    "NotFoundError",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "open_storage",
]


class StorageError(Exception):
    """The database cannot be used (newer schema, corrupt file, failed migration)."""


class NotFoundError(LookupError):
    """No row with that id."""


@dataclass(frozen=True)
class NewImage:
    sha256: str
    width: int
    height: int
    source: str  # "folder" or "upload"
    file_name: str  # relative to the images folder, or to the uploads folder
    format: str  # Pillow format name
    file_size: int
    file_mtime_ns: int | None = None


@dataclass(frozen=True)
class ImageRow:
    id: int  # also the COCO image id
    sha256: str  # the public image id
    width: int
    height: int
    source: str
    file_name: str
    format: str
    file_size: int
    file_mtime_ns: int | None
    available: bool
    done: bool
    created_at: str
    annotations: int  # not deleted


@dataclass(frozen=True)
class CategoryRow:
    id: int
    name: str


@dataclass(frozen=True)
class NewAnnotation:
    image_sha256: str
    category: str
    height: int
    width: int
    counts: str  # COCO compressed RLE counts
    area: int
    bbox: tuple[int, int, int, int]  # XYWH
    source: str = "manual"
    score: float | None = None
    seconds: float | None = None
    prompts: dict[str, Any] | None = None


@dataclass(frozen=True)
class AnnotationRow:
    id: int
    image_sha256: str
    image_row_id: int
    category_id: int
    category: str
    height: int
    width: int
    counts: str
    area: int
    bbox: tuple[int, int, int, int]
    source: str
    score: float | None
    seconds: float | None
    prompts: dict[str, Any] | None
    created_at: str
    deleted_at: str | None


@dataclass(frozen=True)
class AnnotationStats:
    """Over the annotations not deleted: how many, how many drawn by hand, and the mean
    time per hand-drawn mask among those that recorded one (first click to accept)."""

    annotations: int
    manual: int
    timed: int
    mean_seconds: float | None


@dataclass(frozen=True)
class AnnotationEvent:
    annotation_id: int
    action: str  # "create", "delete" or "restore"
    at: str


class Storage(Protocol):
    """What the service needs from a database. Every write is durable when it returns."""

    schema_version: int

    # images
    def upsert_image(self, image: NewImage) -> ImageRow: ...
    def sync_folder(self, present: Sequence[NewImage]) -> None: ...
    def get_image(self, sha256: str) -> ImageRow: ...
    def list_images(self) -> list[ImageRow]: ...
    def set_image_done(self, sha256: str, done: bool) -> ImageRow: ...

    # categories
    def list_categories(self) -> list[CategoryRow]: ...
    def add_category(self, name: str) -> CategoryRow: ...

    # annotations
    def add_annotations(self, annotations: Sequence[NewAnnotation]) -> list[int]: ...
    def get_annotation(self, annotation_id: int) -> AnnotationRow: ...
    def list_annotations(self, image_sha256: str | None = None, *, include_deleted: bool = False) -> list[AnnotationRow]: ...
    def delete_annotation(self, annotation_id: int) -> AnnotationRow: ...
    def restore_annotation(self, annotation_id: int) -> AnnotationRow: ...
    def annotation_history(self, annotation_id: int) -> list[AnnotationEvent]: ...
    def annotation_stats(self) -> AnnotationStats: ...

    def close(self) -> None: ...


def open_storage(url: str | os.PathLike[str]) -> Storage:
    """A Storage for ``url``: a file path or ``sqlite:///path`` (the only kind so far)."""
    text = os.fspath(url)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///") :]
    elif "://" in text:
        raise StorageError(f"unsupported database URL {text!r}: only SQLite files (a path or sqlite:///path)")
    return SqliteStorage(Path(text))


# -- SQLite ------------------------------------------------------------------------------

_V1 = """
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE CHECK (length(sha256) = 64),
    width INTEGER NOT NULL CHECK (width > 0),
    height INTEGER NOT NULL CHECK (height > 0),
    source TEXT NOT NULL CHECK (source IN ('folder', 'upload')),
    file_name TEXT NOT NULL,
    format TEXT NOT NULL,
    file_size INTEGER NOT NULL,
    file_mtime_ns INTEGER,
    available INTEGER NOT NULL DEFAULT 1,
    done INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE TABLE categories (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE annotations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL REFERENCES images(id),
    category_id INTEGER NOT NULL REFERENCES categories(id),
    height INTEGER NOT NULL CHECK (height > 0),
    width INTEGER NOT NULL CHECK (width > 0),
    counts TEXT NOT NULL,
    area INTEGER NOT NULL CHECK (area >= 0),
    bbox TEXT NOT NULL,
    source TEXT NOT NULL,
    score REAL,
    seconds REAL,
    prompts TEXT,
    created_at TEXT NOT NULL,
    deleted_at TEXT
);
CREATE INDEX annotations_by_image ON annotations(image_id, deleted_at);
CREATE TABLE annotation_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    annotation_id INTEGER NOT NULL REFERENCES annotations(id),
    action TEXT NOT NULL CHECK (action IN ('create', 'delete', 'restore')),
    at TEXT NOT NULL
);
CREATE INDEX annotation_events_by_annotation ON annotation_events(annotation_id);
"""

# Migration i (1-based) brings a database from schema version i - 1 to i. Append only:
# a released migration is never edited.
MIGRATIONS: tuple[str, ...] = (_V1,)
SCHEMA_VERSION = len(MIGRATIONS)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class SqliteStorage:
    """The embedded default. One connection, used by one thread at a time under a lock
    (the service calls it from worker threads, never from the event loop)."""

    def __init__(self, path: str | os.PathLike[str], *, migrations: Sequence[str] = MIGRATIONS) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            # isolation_level=None: transactions are opened explicitly (BEGIN IMMEDIATE).
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.row_factory = sqlite3.Row
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"{self.path}: cannot switch the database to WAL mode (got {mode!r})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate(migrations)
        except sqlite3.DatabaseError as e:
            raise StorageError(f"{self.path}: cannot open the annotation database: {e}") from None
        self.schema_version = len(migrations)

    # -- plumbing ------------------------------------------------------------------------

    def _migrate(self, migrations: Sequence[str]) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(migrations):
            raise StorageError(
                f"{self.path} has schema version {version}, newer than this samrt's {len(migrations)}; "
                "upgrade samrt or point --db at another file"
            )
        for target in range(version + 1, len(migrations) + 1):
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for statement in _statements(migrations[target - 1]):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {target}")
                self._db.execute("COMMIT")
            except BaseException as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(e, sqlite3.DatabaseError):
                    raise StorageError(f"{self.path}: migration to schema version {target} failed: {e}") from None
                raise

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One durable transaction: committed (and, with synchronous=FULL, fsynced) on exit."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- images --------------------------------------------------------------------------

    _IMAGE_SELECT = """
        SELECT i.*, (SELECT COUNT(*) FROM annotations a WHERE a.image_id = i.id AND a.deleted_at IS NULL)
               AS n_annotations
        FROM images i
    """

    @staticmethod
    def _image(row: sqlite3.Row) -> ImageRow:
        return ImageRow(
            id=int(row["id"]),
            sha256=str(row["sha256"]),
            width=int(row["width"]),
            height=int(row["height"]),
            source=str(row["source"]),
            file_name=str(row["file_name"]),
            format=str(row["format"]),
            file_size=int(row["file_size"]),
            file_mtime_ns=None if row["file_mtime_ns"] is None else int(row["file_mtime_ns"]),
            available=bool(row["available"]),
            done=bool(row["done"]),
            created_at=str(row["created_at"]),
            annotations=int(row["n_annotations"]),
        )

    def upsert_image(self, image: NewImage) -> ImageRow:
        """Adds an image, or returns the one with the same bytes (a folder file wins the
        file name over an upload of the same bytes; one whose file had gone takes the new one)."""
        with self._write() as db:
            existing = db.execute(
                "SELECT id, source, available FROM images WHERE sha256 = ?", (image.sha256,)
            ).fetchone()
            if existing is None:
                db.execute(
                    "INSERT INTO images (sha256, width, height, source, file_name, format, file_size, "
                    "file_mtime_ns, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (image.sha256, image.width, image.height, image.source, image.file_name, image.format,
                     image.file_size, image.file_mtime_ns, _now()),
                )
            elif image.source == "folder" or existing["source"] == image.source or not existing["available"]:
                db.execute(
                    "UPDATE images SET source = ?, file_name = ?, format = ?, file_size = ?, file_mtime_ns = ?, "
                    "available = 1 WHERE id = ?",
                    (image.source, image.file_name, image.format, image.file_size, image.file_mtime_ns,
                     existing["id"]),
                )
        return self.get_image(image.sha256)

    def sync_folder(self, present: Sequence[NewImage]) -> None:
        """Records the images folder's current files: each is added or updated, and folder
        images no longer there are marked unavailable (their annotations stay)."""
        with self._write() as db:
            db.execute("UPDATE images SET available = 0 WHERE source = 'folder'")
            for image in present:
                existing = db.execute("SELECT id FROM images WHERE sha256 = ?", (image.sha256,)).fetchone()
                if existing is None:
                    db.execute(
                        "INSERT INTO images (sha256, width, height, source, file_name, format, file_size, "
                        "file_mtime_ns, created_at) VALUES (?, ?, ?, 'folder', ?, ?, ?, ?, ?)",
                        (image.sha256, image.width, image.height, image.file_name, image.format,
                         image.file_size, image.file_mtime_ns, _now()),
                    )
                else:
                    db.execute(
                        "UPDATE images SET source = 'folder', file_name = ?, format = ?, file_size = ?, "
                        "file_mtime_ns = ?, available = 1 WHERE id = ?",
                        (image.file_name, image.format, image.file_size, image.file_mtime_ns, existing["id"]),
                    )

    def get_image(self, sha256: str) -> ImageRow:
        rows = self._read(self._IMAGE_SELECT + " WHERE i.sha256 = ?", (sha256,))
        if not rows:
            raise NotFoundError(f"no image {sha256}")
        return self._image(rows[0])

    def list_images(self) -> list[ImageRow]:
        """Available images and unavailable ones that still have annotations: folder files
        by name, then uploads in upload order."""
        rows = self._read(
            self._IMAGE_SELECT + " WHERE i.available = 1 OR n_annotations > 0 "
            "ORDER BY i.source = 'upload', CASE WHEN i.source = 'folder' THEN i.file_name END, i.id"
        )
        return [self._image(r) for r in rows]

    def set_image_done(self, sha256: str, done: bool) -> ImageRow:
        with self._write() as db:
            if db.execute("UPDATE images SET done = ? WHERE sha256 = ?", (int(done), sha256)).rowcount == 0:
                raise NotFoundError(f"no image {sha256}")
        return self.get_image(sha256)

    # -- categories ----------------------------------------------------------------------

    def list_categories(self) -> list[CategoryRow]:
        return [CategoryRow(int(r["id"]), str(r["name"])) for r in self._read("SELECT id, name FROM categories ORDER BY id")]

    def add_category(self, name: str) -> CategoryRow:
        with self._write() as db:
            category_id = self._category_id(db, name)
        return CategoryRow(category_id, name)

    @staticmethod
    def _category_id(db: sqlite3.Connection, name: str) -> int:
        row = db.execute("SELECT id FROM categories WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return int(row["id"])
        cursor = db.execute("INSERT INTO categories (name, created_at) VALUES (?, ?)", (name, _now()))
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)

    # -- annotations ---------------------------------------------------------------------

    _ANNOTATION_SELECT = """
        SELECT a.*, i.sha256 AS image_sha256, c.name AS category_name
        FROM annotations a JOIN images i ON i.id = a.image_id JOIN categories c ON c.id = a.category_id
    """

    @staticmethod
    def _annotation(row: sqlite3.Row) -> AnnotationRow:
        x, y, w, h = (int(v) for v in json.loads(row["bbox"]))
        return AnnotationRow(
            id=int(row["id"]),
            image_sha256=str(row["image_sha256"]),
            image_row_id=int(row["image_id"]),
            category_id=int(row["category_id"]),
            category=str(row["category_name"]),
            height=int(row["height"]),
            width=int(row["width"]),
            counts=str(row["counts"]),
            area=int(row["area"]),
            bbox=(x, y, w, h),
            source=str(row["source"]),
            score=None if row["score"] is None else float(row["score"]),
            seconds=None if row["seconds"] is None else float(row["seconds"]),
            prompts=None if row["prompts"] is None else json.loads(row["prompts"]),
            created_at=str(row["created_at"]),
            deleted_at=None if row["deleted_at"] is None else str(row["deleted_at"]),
        )

    def add_annotations(self, annotations: Sequence[NewAnnotation]) -> list[int]:
        """Adds all of them in one transaction (all or none) and returns their ids."""
        ids: list[int] = []
        with self._write() as db:
            for ann in annotations:
                image = db.execute("SELECT id FROM images WHERE sha256 = ?", (ann.image_sha256,)).fetchone()
                if image is None:
                    raise NotFoundError(f"no image {ann.image_sha256}")
                category_id = self._category_id(db, ann.category)
                now = _now()
                cursor = db.execute(
                    "INSERT INTO annotations (image_id, category_id, height, width, counts, area, bbox, source, "
                    "score, seconds, prompts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (int(image["id"]), category_id, ann.height, ann.width, ann.counts, ann.area,
                     json.dumps(list(ann.bbox)), ann.source, ann.score, ann.seconds,
                     None if ann.prompts is None else json.dumps(ann.prompts), now),
                )
                assert cursor.lastrowid is not None
                ids.append(int(cursor.lastrowid))
                db.execute(
                    "INSERT INTO annotation_events (annotation_id, action, at) VALUES (?, 'create', ?)",
                    (cursor.lastrowid, now),
                )
        return ids

    def get_annotation(self, annotation_id: int) -> AnnotationRow:
        rows = self._read(self._ANNOTATION_SELECT + " WHERE a.id = ?", (annotation_id,))
        if not rows:
            raise NotFoundError(f"no annotation {annotation_id}")
        return self._annotation(rows[0])

    def list_annotations(
        self, image_sha256: str | None = None, *, include_deleted: bool = False
    ) -> list[AnnotationRow]:
        where: list[str] = []
        params: list[Any] = []
        if image_sha256 is not None:
            where.append("i.sha256 = ?")
            params.append(image_sha256)
        if not include_deleted:
            where.append("a.deleted_at IS NULL")
        sql = self._ANNOTATION_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY a.id"
        return [self._annotation(r) for r in self._read(sql, params)]

    def _set_deleted(self, annotation_id: int, deleted: bool) -> AnnotationRow:
        with self._write() as db:
            row = db.execute("SELECT deleted_at FROM annotations WHERE id = ?", (annotation_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no annotation {annotation_id}")
            if (row["deleted_at"] is not None) != deleted:  # a repeated call changes nothing
                now = _now()
                db.execute("UPDATE annotations SET deleted_at = ? WHERE id = ?", (now if deleted else None, annotation_id))
                db.execute(
                    "INSERT INTO annotation_events (annotation_id, action, at) VALUES (?, ?, ?)",
                    (annotation_id, "delete" if deleted else "restore", now),
                )
        return self.get_annotation(annotation_id)

    def delete_annotation(self, annotation_id: int) -> AnnotationRow:
        return self._set_deleted(annotation_id, True)

    def restore_annotation(self, annotation_id: int) -> AnnotationRow:
        return self._set_deleted(annotation_id, False)

    def annotation_history(self, annotation_id: int) -> list[AnnotationEvent]:
        self.get_annotation(annotation_id)
        rows = self._read(
            "SELECT annotation_id, action, at FROM annotation_events WHERE annotation_id = ? ORDER BY id",
            (annotation_id,),
        )
        return [AnnotationEvent(int(r["annotation_id"]), str(r["action"]), str(r["at"])) for r in rows]

    def annotation_stats(self) -> AnnotationStats:
        (row,) = self._read(
            "SELECT COUNT(*) AS n, COALESCE(SUM(source = 'manual'), 0) AS manual, "
            "COALESCE(SUM(source = 'manual' AND seconds IS NOT NULL), 0) AS timed, "
            "AVG(CASE WHEN source = 'manual' THEN seconds END) AS mean_seconds "
            "FROM annotations WHERE deleted_at IS NULL"
        )
        mean = row["mean_seconds"]
        return AnnotationStats(int(row["n"]), int(row["manual"]), int(row["timed"]),
                               None if mean is None else float(mean))

    def integrity_check(self) -> str:
        """SQLite's own check of the file ("ok" when sound)."""
        return str(self._read("PRAGMA integrity_check")[0][0])


def _statements(script: str) -> list[str]:
    """A migration script split into statements (executescript would commit on its own)."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return out
