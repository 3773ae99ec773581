"""The permissions of the files samrt writes, against what the umask says.

Oracle: the umask itself, and a plain ``open(path, "w")`` in the same folder under the same
umask (what any program of this user would create): every output file must get the same
mode, 0644 under umask 022 and 0600 under 077. (``tempfile.mkstemp``, which the atomic
writes used to go through, gives 0600 whatever the umask.) The serve embedding cache is the
one deliberate exception: owner-only always.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from samrt import _atomic
from samrt._atomic import atomic_writer, current_umask, write_atomic

UMASKS = [0o022, 0o077, 0o002]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=UMASKS, ids=[f"umask{m:03o}" for m in UMASKS])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _plain_open_mode(folder: Path) -> int:
    reference = folder / "reference-plain-open"
    with open(reference, "w") as f:
        f.write("x")
    mode = _mode(reference)
    reference.unlink()
    return mode


def test_current_umask_reads_it_without_changing_it(umask: int) -> None:
    assert current_umask() == umask
    assert current_umask() == umask  # still: reading did not change it


def test_current_umask_without_proc(umask: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Where /proc/self/status cannot be read (macOS, Windows), os.umask is set and restored.
    real_open = open

    def no_proc(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file).startswith("/proc/"):
            raise FileNotFoundError(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    assert current_umask() == umask
    monkeypatch.undo()
    assert current_umask() == umask


def test_write_atomic_gives_what_a_plain_open_gives(umask: int, tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    write_atomic(target, b"{}\n")
    assert target.read_bytes() == b"{}\n"
    assert _mode(target) == _plain_open_mode(tmp_path) == 0o666 & ~umask
    write_atomic(target, b"[]\n")  # replacing a file: the new one follows the umask too
    assert target.read_bytes() == b"[]\n" and _mode(target) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temporary left


def test_private_files_are_owner_only(umask: int, tmp_path: Path) -> None:
    target = tmp_path / "private.bin"
    with atomic_writer(target, mode=0o600) as f:
        f.write(b"secret")
    assert _mode(target) == 0o600 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="mid-write"), atomic_writer(target, tmp_suffix=".samrt-tmp") as f:
        f.write(b"half of the new")
        raise RuntimeError("mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_the_rename_and_the_folder_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("names the fsynced descriptors through /proc/self/fd (Linux)")
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(_atomic.os, "fsync", spy)
    target = tmp_path / "result.json"
    write_atomic(target, b"{}")
    assert len(synced) == 2
    assert Path(synced[0]).parent == tmp_path and Path(synced[0]).name.startswith(".result.json.")
    assert synced[1] == str(tmp_path)


def test_manifest_follows_the_umask(umask: int, tiny_model: Any, tmp_path: Path) -> None:
    from samrt.manifest import load_manifest, write_manifest

    path = write_manifest(tmp_path, load_manifest(tiny_model.engine_dir, verify=False))
    assert _mode(path) == _plain_open_mode(tmp_path)


def test_exported_checkpoint_follows_the_umask(umask: int, tmp_path: Path) -> None:
    from samrt_export import TINY_CONFIG, save_random_checkpoint

    path = save_random_checkpoint(TINY_CONFIG, 0, tmp_path / "tiny.pth")
    assert _mode(path) == _plain_open_mode(tmp_path)


def test_serve_uploads_follow_the_umask_and_the_cache_is_private(umask: int, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from samrt import contract
    from samrt.serve.cache import EmbeddingDiskCache
    from samrt.serve.images import ImageLibrary, probe_image

    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(buffer, format="PNG")
    data = buffer.getvalue()
    library = ImageLibrary(None, tmp_path / "uploads", max_pixels=None)
    new = library.store_upload(data, probe_image(data, None, decode=True))
    upload = tmp_path / "uploads" / new.file_name
    assert upload.read_bytes() == data
    assert _mode(upload) == _plain_open_mode(tmp_path / "uploads")

    cache = EmbeddingDiskCache(tmp_path / "cache", "engine", capacity_bytes=1 << 30)
    shape = (1, contract.EMBEDDING_DIM, contract.EMBEDDING_SIZE, contract.EMBEDDING_SIZE)
    cache.store("ab" * 32, (6, 8), np.zeros(shape, np.float32))
    (stored,) = (tmp_path / "cache" / "engine").glob("*.npy")
    assert _mode(stored) == 0o600 & ~umask


@pytest.mark.parametrize("umask_value", [0o022, 0o077], ids=["umask022", "umask077"])
def test_samrt_segment_outputs_follow_the_umask(umask_value: int, tiny_model: Any, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "samrt.cli", "segment", str(image), "--engine", str(tiny_model.engine_dir),
         "--out", str(out), "--overlay", "--format", "coco", "--report", str(out / "report.json"),
         "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"],
        capture_output=True, text=True, timeout=300, check=False, preexec_fn=lambda: os.umask(umask_value),
    )
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["coco_annotations.json", "photo.png.json", "photo.png.png", "report.json"]
    expected = {0o022: 0o644, 0o077: 0o600}[umask_value]
    assert {name: oct(_mode(out / name)) for name in files} == {name: oct(expected) for name in files}
    assert _mode(out) == 0o777 & ~umask_value
