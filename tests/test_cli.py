"""The samrt command line, driven as a user would: subprocesses and temporary folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

FAST = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


def samrt(*args: str, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "samrt.cli", *args], capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"samrt {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _photo(seed: int, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(6, 8, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(base).resize((size[1], size[0]), Image.Resampling.BILINEAR))


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(_photo(0)).save(folder / "good.jpg", quality=95)
    rgba = np.dstack([_photo(1), np.full((96, 128), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    Image.fromarray(_photo(2)[..., 0]).save(folder / "gray.tiff")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image\n")
    return folder


def test_folder_with_good_and_bad_files(tiny_model: Any, mixed_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = samrt("segment", str(mixed_folder), "--engine", str(tiny_model.engine_dir), "--out", str(out), *FAST)
    assert result.returncode == 1, result.stderr  # some images failed
    assert sorted(p.name for p in out.iterdir()) == ["alpha.png.json", "good.jpg.json", "gray.tiff.json"]
    assert "empty.jpg" in result.stderr and "text.jpg" in result.stderr
    assert "3 segmented" in result.stdout and "2 failed" in result.stdout
    record = json.loads((out / "good.jpg.json").read_text())
    assert record["image"]["height"] == 96 and record["image"]["width"] == 128
    assert record["annotations"], "thresholds at 0 keep masks"
    ann = record["annotations"][0]
    assert list(ann) == ["segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"]


def test_up_to_date_outputs_are_skipped(tiny_model: Any, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(_photo(3)).save(folder / "a.png")
    out = tmp_path / "out"
    args = ["segment", str(folder), "--engine", str(tiny_model.engine_dir), "--out", str(out), *FAST]
    samrt(*args, check=True)
    first = (out / "a.png.json").stat().st_mtime_ns
    assert "1 up to date" in samrt(*args, check=True).stdout
    assert (out / "a.png.json").stat().st_mtime_ns == first
    samrt(*args, "--overwrite", check=True)
    assert (out / "a.png.json").stat().st_mtime_ns > first


def test_killed_run_resumes_to_identical_outputs(tiny_model: Any, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(_photo(10 + i, (120, 90))).save(folder / f"img{i}.png")
    args = ["--engine", str(tiny_model.engine_dir), "--overlay", *FAST]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    samrt("segment", str(folder), "--out", str(reference), *args, check=True)

    proc = subprocess.Popen(
        [sys.executable, "-m", "samrt.cli", "segment", str(folder), "--out", str(resumed), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(resumed.glob("*.json"))) < 2:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(resumed.glob("*.json"))) < 8, "the run finished before it could be killed"

    samrt("segment", str(folder), "--out", str(resumed), *args, check=True)
    ref_files = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    got_files = sorted(p.relative_to(resumed) for p in resumed.rglob("*") if p.is_file())
    assert got_files == ref_files
    for rel in ref_files:
        assert (resumed / rel).read_bytes() == (reference / rel).read_bytes(), rel


def test_coco_output_loads_in_pycocotools(tiny_model: Any, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(_photo(20 + i)).save(folder / f"p{i}.jpg")
    out = tmp_path / "out"
    samrt("segment", str(folder), "--engine", str(tiny_model.engine_dir), "--out", str(out), "--format", "coco",
          *FAST, check=True)
    coco = COCO(str(out / "coco_annotations.json"))
    assert len(coco.getImgIds()) == 2
    ann_ids = coco.getAnnIds()
    assert ann_ids
    for ann in coco.loadAnns(ann_ids):
        mask = coco.annToMask(ann)
        assert mask.shape == (96, 128)
        assert int(mask.sum()) == ann["area"]


def test_point_prompt_mode(tiny_model: Any, tmp_path: Path) -> None:
    image = tmp_path / "one.png"
    Image.fromarray(_photo(30)).save(image)
    out = tmp_path / "out"
    samrt("segment", str(image), "--engine", str(tiny_model.engine_dir), "--out", str(out),
          "--point", "40,30", "--point", "100,80,0", "--single-mask", check=True)
    anns = json.loads((out / "one.png.json").read_text())["annotations"]
    assert len(anns) == 1 and anns[0]["point_coords"] == [[40.0, 30.0], [100.0, 80.0]]


def test_bad_prompt_is_a_one_line_error(tiny_model: Any, tmp_path: Path) -> None:
    image = tmp_path / "one.png"
    Image.fromarray(_photo(31)).save(image)
    result = samrt("segment", str(image), "--engine", str(tiny_model.engine_dir), "--out", str(tmp_path / "o"),
                   "--box", "10,10,5")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "--box" in result.stderr


def test_info(tiny_model: Any) -> None:
    result = samrt("info", str(tiny_model.engine_dir), check=True)
    assert "verified" in result.stdout and "CPUExecutionProvider" in result.stdout


def _on_a_terminal(*args: str, timeout: float = 300) -> tuple[int, str, str]:
    """Runs ``samrt ARGS`` with stderr on a pseudo-terminal: (status, stdout, what the
    terminal showed)."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "samrt.cli", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    stdout, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    return proc.returncode, stdout, shown.decode(errors="replace")


def test_everything_mode_shows_progress_on_a_terminal_only(tiny_model: Any, tmp_path: Path) -> None:
    image = tmp_path / "one.png"
    Image.fromarray(_photo(32)).save(image)
    args = ["segment", str(image), "--engine", str(tiny_model.engine_dir), *FAST, "--points-per-batch", "4"]
    status, stdout, shown = _on_a_terminal(*args, "--out", str(tmp_path / "a"))
    assert status == 0, shown
    assert "[1/1] one.png: batch 4/4" in shown  # 16 points, 4 a batch
    assert "1 segmented" in stdout
    status, stdout, shown = _on_a_terminal(*args, "--out", str(tmp_path / "b"), "--quiet")
    assert status == 0 and shown == "", shown
    piped = samrt(*args, "--out", str(tmp_path / "c"), check=True)
    assert piped.stderr == ""


def test_export_shows_its_stages_on_a_terminal(tmp_path: Path) -> None:
    status, stdout, shown = _on_a_terminal("export", "--model-type", "tiny", "--random-weights",
                                           "--out", str(tmp_path / "engine"))
    assert status == 0, shown
    for stage in ("loading the weights", "exporting encoder", "checking the decoder against PyTorch"):
        assert f"samrt export: {stage}" in shown
    assert "exported tiny" in stdout


def test_zero_masks_are_explained(tiny_model: Any, tmp_path: Path) -> None:
    image = tmp_path / "one.png"
    Image.fromarray(_photo(33)).save(image)
    out = tmp_path / "out"
    # The default thresholds drop every mask of random weights.
    result = samrt("segment", str(image), "--engine", str(tiny_model.engine_dir), "--out", str(out),
                   "--points-per-side", "4", check=True)
    assert "0 masks" in result.stdout
    assert json.loads((out / "one.png.json").read_text())["annotations"] == []
    line = next(line for line in result.stderr.splitlines() if "0 masks for" in line)
    assert f"0 masks for {image}: 0 of 48 candidate masks kept; dropped " in line
    assert "--pred-iou-thresh=0.88" in line and "lower --pred-iou-thresh" in line, line


# -- first contact: the small error paths, each one line naming what was expected ---------------


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_a_run_that_cannot_start_leaves_no_output_folder(tmp_path: Path) -> None:
    image = tmp_path / "one.png"
    Image.fromarray(_photo(34)).save(image)
    readme = Path(__file__).resolve().parent.parent / "README.md"
    for engine in (tmp_path / "no-engine", readme):
        out = tmp_path / "out"
        error = _one_line_error(samrt("segment", str(image), "--engine", str(engine), "--out", str(out)))
        assert str(engine) in error
        assert not out.exists(), f"a failed run (engine {engine}) created {out}"


def test_info_on_a_file_says_an_engine_directory_was_expected(tiny_model: Any, tmp_path: Path) -> None:
    readme = Path(__file__).resolve().parent.parent / "README.md"
    error = _one_line_error(samrt("info", str(readme)))
    assert f"'{readme}' is a file, not an engine directory" in error
    assert "samrt export --out DIR" in error and "manifest.json" in error
    # The manifest itself: the folder is what was meant.
    error = _one_line_error(samrt("info", str(tiny_model.engine_dir / "manifest.json")))
    assert f"did you mean '{tiny_model.engine_dir}'?" in error
    # A folder that is no engine directory at all.
    (tmp_path / "photos").mkdir()
    error = _one_line_error(samrt("info", str(tmp_path / "photos")))
    assert f"'{tmp_path / 'photos'}' is not an engine directory" in error and "no manifest.json" in error


def test_a_missing_input_is_named_before_any_work(tiny_model: Any, tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(_photo(35)).save(good)
    missing = tmp_path / "typo.jpg"
    out = tmp_path / "out"
    error = _one_line_error(samrt("segment", str(good), str(missing), "--engine", str(tiny_model.engine_dir),
                                  "--out", str(out), *FAST))
    assert f"samrt: error: input '{missing}' does not exist" in error
    assert "cannot read" not in error and "as an image" not in error
    assert not out.exists()
    # A list file's missing entry is a failure of the run, named, and the others are done.
    listing = tmp_path / "list.txt"
    listing.write_text("good.png\ngone.png\n")
    result = samrt("segment", str(listing), "--engine", str(tiny_model.engine_dir), "--out", str(out), *FAST)
    assert result.returncode == 1 and "1 segmented" in result.stdout and "1 failed" in result.stdout
    assert f"samrt: failed: '{tmp_path / 'gone.png'}' does not exist" in result.stderr
