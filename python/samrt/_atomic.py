"""Atomic, durable file writes whose files get the permissions the umask says.

Every file samrt writes for its user (segment outputs and reports, manifests, TensorRT
engines, uploads, checkpoints made by the exporter) goes through :func:`atomic_writer` or
:func:`write_atomic`: the bytes go to a temporary file in the target's folder, which is
flushed and fsynced, renamed over the target (``os.replace``: a reader sees the old file or
the new one, never part of one), and the folder is fsynced so the rename survives a crash.

The temporary file is created with ``os.open(..., 0o666)``, so the kernel applies the umask
(and a default ACL, where the folder has one) exactly as for a plain ``open()``: 0644 under
umask 022, 0600 under 077. ``tempfile.mkstemp`` would make it 0600 whatever the umask, and
another user or a service could not read the results.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_writer", "current_umask", "fsync_dir", "write_atomic"]

# What a plain open() creates files with, before the umask.
DEFAULT_MODE = 0o666
_ATTEMPTS = 100
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells (Linux 4.7+:
    /proc/self/status). Elsewhere ``os.umask`` has to set it to read it; that is done under a
    lock and at once restored, but a file another thread creates in that instant gets the
    umask 077 put there meanwhile (never a looser one)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Makes the entries of ``folder`` (a rename into it) durable. Windows cannot open a
    folder; there NTFS's metadata journal is all there is."""
    if sys.platform == "win32":
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temporary(folder: Path, name: str, suffix: str, mode: int) -> tuple[int, Path]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_ATTEMPTS):
        tmp = folder / f".{name}.{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file for {name} in {folder}")


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str], *, mode: int = DEFAULT_MODE, tmp_suffix: str = ".tmp"
) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new contents to; on a clean exit it is fsynced and
    renamed over ``path`` (then the folder is fsynced), on an exception removed, leaving
    ``path`` as it was. The file gets ``mode`` less the umask (default 0o666: what
    ``open()`` gives; 0o600 for private files). The temporary file is
    ``.NAME.RANDOM{tmp_suffix}`` beside ``path``; the folder must exist."""
    target = Path(path)
    fd, tmp = _create_temporary(target.parent, target.name, tmp_suffix, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | bytearray | memoryview,
    *,
    mode: int = DEFAULT_MODE,
    tmp_suffix: str = ".tmp",
) -> None:
    """Writes ``data`` to ``path`` whole or not at all, durably (see :func:`atomic_writer`)."""
    with atomic_writer(path, mode=mode, tmp_suffix=tmp_suffix) as f:
        f.write(data)
