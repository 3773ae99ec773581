"""Caches bounded in bytes: image states in memory, embeddings on disk.

:class:`ByteLRU` holds values up to a total size in bytes (each value's size given when it
is stored; for a :class:`samrt.ImageState` that is its ``nbytes``), evicting the least
recently used. Counting entries instead would let a cache of vit_h states on a GPU and one
of tiny states share a limit that means nothing for either.

:class:`EmbeddingDiskCache` keeps image embeddings in a folder so that a restarted service
does not recompute them: one ``.npy`` file per (engine, image), written atomically and owner-only, the
folder bounded in bytes (oldest files removed first).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from .. import contract
from .._atomic import atomic_writer

__all__ = ["ByteLRU", "EmbeddingDiskCache"]

log = logging.getLogger("samrt.serve")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteLRU(Generic[K, V]):
    """A thread-safe LRU map whose values' sizes add up to at most ``capacity_bytes``."""

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0, got {capacity_bytes}")
        self.capacity_bytes = int(capacity_bytes)
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def peek(self, key: K) -> V | None:
        """The value without counting a hit or refreshing its place."""
        with self._lock:
            item = self._items.get(key)
            return None if item is None else item[0]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def put(self, key: K, value: V, nbytes: int) -> bool:
        """Stores ``value``; False (and nothing stored) when it alone exceeds the capacity."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if nbytes > self.capacity_bytes:
                return False
            while self._bytes + nbytes > self.capacity_bytes and self._items:
                _, (_, size) = self._items.popitem(last=False)
                self._bytes -= size
                self.evictions += 1
            self._items[key] = (value, nbytes)
            self._bytes += nbytes
            return True

    def pop(self, key: K) -> V | None:
        with self._lock:
            item = self._items.pop(key, None)
            if item is None:
                return None
            self._bytes -= item[1]
            return item[0]

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class EmbeddingDiskCache:
    """Embeddings ([1, 256, 64, 64] float32) in ``folder/<engine key>/<image sha256>-<H>x<W>.npy``."""

    def __init__(self, folder: str | os.PathLike[str], engine_key: str, capacity_bytes: int) -> None:
        self.folder = Path(folder) / engine_key
        self.folder.mkdir(parents=True, exist_ok=True)
        self.capacity_bytes = int(capacity_bytes)
        self._lock = threading.Lock()
        for stale in self.folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def _path(self, image_sha256: str, original_size: tuple[int, int]) -> Path:
        return self.folder / f"{image_sha256}-{original_size[0]}x{original_size[1]}.npy"

    def load(self, image_sha256: str, original_size: tuple[int, int]) -> npt.NDArray[np.float32] | None:
        path = self._path(image_sha256, original_size)
        try:
            array: npt.NDArray[np.float32] = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("embedding cache file %s is unreadable (%s); it is removed and recomputed", path, e)
            path.unlink(missing_ok=True)
            return None
        shape = (1, contract.EMBEDDING_DIM, contract.EMBEDDING_SIZE, contract.EMBEDDING_SIZE)
        if array.shape != shape or array.dtype != np.float32:
            log.warning("embedding cache file %s holds %s %s, not %s float32; it is removed", path,
                        array.shape, array.dtype, shape)
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recently used: evicted last
        return array

    def store(self, image_sha256: str, original_size: tuple[int, int], embedding: npt.NDArray[np.float32]) -> None:
        path = self._path(image_sha256, original_size)
        # Owner-only on purpose (0600 less the umask), unlike the files samrt writes for its
        # user: the cache is the service's private state, not a result anyone reads, and an
        # embedding tells a good deal about an image that may be private (uploads, or a
        # folder others cannot read), while --cache-dir may be a shared place such as /tmp.
        with atomic_writer(path, mode=0o600) as f:
            np.save(f, np.ascontiguousarray(embedding, dtype=np.float32), allow_pickle=False)
        self._evict()

    def _evict(self) -> None:
        with self._lock:
            files = []
            for entry in os.scandir(self.folder):
                if entry.name.endswith(".npy"):
                    st = entry.stat()
                    files.append((st.st_mtime_ns, st.st_size, entry.path))
            total = sum(size for _, size, _ in files)
            for _, size, path in sorted(files):
                if total <= self.capacity_bytes:
                    break
                Path(path).unlink(missing_ok=True)
                total -= size
