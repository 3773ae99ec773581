"""The settings of a ``samrt serve`` application (the CLI's options, and create_app's)."""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..predictor import DEFAULT_MAX_IMAGE_PIXELS

__all__ = ["ServeConfig", "is_loopback", "user_data_dir"]


@dataclass(frozen=True)
class ServeConfig:
    """What to serve and how. Sizes in MiB.

    engine: the engine directory (from ``samrt export``).
    images: a folder whose images are the annotation queue (scanned at start), or None.
    db: the SQLite file; default ``<images>/.samrt/annotations.sqlite3``, or
        ``<user data folder>/samrt/annotations.sqlite3`` without ``images``.
    uploads: where uploaded images are kept; default ``uploads/`` next to the database.
    token: when set, every request but ``/healthz`` must carry ``Authorization: Bearer <token>``.
    """

    engine: Path
    images: Path | None = None
    db: Path | None = None
    uploads: Path | None = None
    backend: str = "auto"
    precision: str = "fp32"
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    cache_mb: float = 1024.0
    cache_dir: Path | None = None
    disk_cache_mb: float = 4096.0
    results_mb: float = 256.0
    workers: int = 2
    queue_size: int = 64
    prefetch: int = 2
    max_jobs: int = 4
    keep_jobs: int = 16
    max_upload_mb: float = 50.0
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
    max_points: int = 64
    intra_op_num_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("cache_mb", "disk_cache_mb", "results_mb", "max_upload_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name, low in (("workers", 1), ("queue_size", 1), ("prefetch", 0), ("max_jobs", 1),
                          ("keep_jobs", 0), ("max_points", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.token is not None and not self.token:
            raise ValueError("token must not be empty")

    @property
    def db_path(self) -> Path:
        if self.db is not None:
            return self.db
        if self.images is not None:
            return self.images / ".samrt" / "annotations.sqlite3"
        return user_data_dir() / "annotations.sqlite3"

    @property
    def uploads_path(self) -> Path:
        return self.uploads if self.uploads is not None else self.db_path.parent / "uploads"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


def user_data_dir() -> Path:
    """The per-user data folder for samrt (XDG on Linux)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "samrt"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` reaches this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
