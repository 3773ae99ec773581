"""``samrt segment --ray`` / samrt.ray.segment_dataset against the single-process run (the
oracle: ``samrt segment`` without --ray), on a local Ray cluster this module starts
(``ray.init(num_cpus=2)``) and shares across its tests.

Everything-mode comparisons run the deterministic test decoder (tests/fake_decoder.py),
whose masks look like a real model's; the command-line ones the tiny exported engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
from PIL import Image
from ray.util.state import list_actors
from ray_helpers import (
    TESTS_DIR,
    BrokenModelFactory,
    FakeModelFactory,
    assert_same_results,
    no_temporaries,
    output_files,
    recorded_threads,
    scene_folder,
)
from samrt.ray import REPORT_FILE, ActorStartError, segment_dataset
from samrt.ray._pipeline import TEST_EXIT_ONCE_ENV
from samrt.segment import SegmentOptions, collect_jobs, segment_local

FAST = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
SCENE_OPTIONS = SegmentOptions(points_per_side=12, overlay=True, format="coco")
FAKE = "<fake engine>"  # the engine path is not read when a model factory is given


def _worker_pythonpath() -> str:
    return os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A local 2-CPU cluster whose workers can import the tests' helpers; its address."""
    ray.init(num_cpus=2, runtime_env={"env_vars": {"PYTHONPATH": _worker_pythonpath()}})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder of test scenes in every form the CLI decodes, and the single-process run's
    outputs on it (the oracle)."""
    root = tmp_path_factory.mktemp("scenes")
    folder = scene_folder(root / "images", 6)
    reference = root / "reference"
    summary = segment_local(
        collect_jobs([folder]), FAKE, reference, SCENE_OPTIONS, model_factory=FakeModelFactory()
    )
    assert summary.failed == 0 and summary.masks >= 30
    return folder, reference


def _samrt(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "samrt.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )


def test_ray_outputs_equal_single_process_run(
    ray_cluster: str, scenes: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, reference = scenes
    out, threads = tmp_path / "out", tmp_path / "threads"
    threads.mkdir()
    summary = segment_dataset(
        [folder], FAKE, out, SCENE_OPTIONS, actors=2, model_factory=FakeModelFactory(str(threads))
    )
    n_images = len(collect_jobs([folder]))
    assert (summary.done, summary.skipped, summary.failed) == (n_images, 0, 0)
    assert summary.actors == 2 and "connected to" in (summary.cluster or "")
    # Each actor was given one CPU by Ray and ran its engine with one intra-op thread.
    assert recorded_threads(threads) == [1, 1]
    assert len(summary.actor_peak_rss_mib) == 2
    assert all(50 < mib < 4096 for mib in summary.actor_peak_rss_mib.values())
    assert assert_same_results(out, reference) == summary.masks
    for rel in output_files(reference):
        if rel.suffix == ".png":  # overlays: drawn from the same masks, the same bytes
            assert (out / rel).read_bytes() == (reference / rel).read_bytes(), rel
    report = json.loads((out / REPORT_FILE).read_text())
    assert (
        report["done"] == n_images and report["failures"] == [] and report["images_per_minute"] > 0
    )

    # A second run finds everything up to date and schedules nothing.
    again = segment_dataset([folder], FAKE, out, SCENE_OPTIONS, model_factory=FakeModelFactory())
    assert (again.done, again.skipped, again.actors) == (0, n_images, None)


def test_actor_dying_mid_image_is_restarted_and_the_image_written_once(
    ray_cluster: str, scenes: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, reference = scenes
    out, marker = tmp_path / "out", tmp_path / "exited"
    summary = segment_dataset(
        [folder],
        FAKE,
        out,
        SCENE_OPTIONS,
        actors=2,
        model_factory=FakeModelFactory(),
        # The hook: the first actor to reach an image's JSON (its overlay already written)
        # exits abruptly; Ray restarts it and retries what it held.
        runtime_env={
            "env_vars": {TEST_EXIT_ONCE_ENV: str(marker), "PYTHONPATH": _worker_pythonpath()}
        },
    )
    assert marker.exists(), "no actor exited"
    n_images = len(collect_jobs([folder]))
    assert (summary.done, summary.failed) == (n_images, 0)
    assert sorted(f["image"] for f in summary.failures) == []
    assert_same_results(out, reference)
    assert no_temporaries(out)
    restarted = [
        a
        for a in list_actors(detail=True, limit=1000)
        if "SegmentActor" in a.class_name and (a.num_restarts or 0) >= 1
    ]
    assert restarted, "Ray's actor state shows no restarted actor"


def test_unreadable_images_are_reported_and_the_rest_done(ray_cluster: str, tmp_path: Path) -> None:
    folder = scene_folder(tmp_path / "images", 3, seed=40, kinds=False)
    (folder / "empty.jpg").write_bytes(b"")
    good = (folder / "scene00.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 3])
    listing = tmp_path / "more.txt"
    listing.write_text("# listed images\nimages/scene01.png\n\nmissing.png\n")
    out = tmp_path / "out"
    summary = segment_dataset(
        [folder, listing],
        FAKE,
        out,
        SegmentOptions(points_per_side=8),
        model_factory=FakeModelFactory(),
    )
    failed = sorted(Path(f["image"]).name for f in summary.failures)
    assert failed == ["empty.jpg", "missing.png", "truncated.png"]
    assert summary.done == 4  # scene00..02, and scene01 again under its listed path
    assert summary.actors == 2  # as many 1-CPU actors as the cluster's CPUs
    report = json.loads((out / REPORT_FILE).read_text())
    assert sorted(Path(f["image"]).name for f in report["failures"]) == failed
    assert all(f["error"] for f in report["failures"])
    assert sorted(p.name for p in out.rglob("*.json") if p.name != REPORT_FILE) == [
        "scene00.png.json",
        "scene01.png.json",
        "scene01.png.json",
        "scene02.png.json",
    ]


def test_point_prompt_mode_equals_single_process_run(ray_cluster: str, tmp_path: Path) -> None:
    folder = scene_folder(tmp_path / "images", 3, seed=70, kinds=False)
    options = SegmentOptions(points=((30, 40), (60, 50, 0)), single_mask=False, overlay=True)
    reference, out = tmp_path / "reference", tmp_path / "out"
    jobs = collect_jobs([folder])
    segment_local(jobs, FAKE, reference, options, model_factory=FakeModelFactory())
    summary = segment_dataset([folder], FAKE, out, options, model_factory=FakeModelFactory())
    assert (summary.done, summary.failed, summary.masks) == (3, 0, 9)  # three masks a point set
    assert assert_same_results(out, reference) == 9


def test_bad_options_fail_before_any_work_and_actors_that_cannot_start_fail_the_run(
    ray_cluster: str, tmp_path: Path
) -> None:
    folder = scene_folder(tmp_path / "images", 1, kinds=False)
    with pytest.raises(ValueError, match="points_per_side must be >= 1"):
        segment_dataset([folder], FAKE, tmp_path / "out", SegmentOptions(points_per_side=0))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ActorStartError, match="EngineDirError: no engine directory on this worker"):
        segment_dataset(
            [folder], FAKE, tmp_path / "out", SCENE_OPTIONS, model_factory=BrokenModelFactory()
        )
    assert not list((tmp_path / "out").glob("*.json"))


def _photo(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(6, 8, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(base).resize((128, 96), Image.Resampling.BILINEAR))


def _alive_segment_actors() -> int:
    return sum(
        1 for a in list_actors(limit=1000) if "SegmentActor" in a.class_name and a.state != "DEAD"
    )


def test_driver_killed_mid_run_then_rerun_redoes_only_the_missing(
    ray_cluster: str, tiny_model: Any, tmp_path: Path
) -> None:
    """The command line: `samrt segment --ray ADDRESS` killed, run again with `--ray` (auto:
    it joins the cluster RAY_ADDRESS names), equal to `samrt segment` without Ray."""
    folder = tmp_path / "images"
    folder.mkdir()
    n_images = 24
    for i in range(n_images):
        Image.fromarray(_photo(60 + i)).save(folder / f"img{i:02d}.png")
    engine = ["--engine", str(tiny_model.engine_dir), *FAST]
    reference, out = tmp_path / "reference", tmp_path / "out"
    single = _samrt("segment", str(folder), "--out", str(reference), *engine)
    assert single.returncode == 0, single.stderr

    ray_args = [
        "segment",
        str(folder),
        "--out",
        str(out),
        *engine,
        "--ray",
        ray_cluster,
        "--actors",
        "2",
    ]
    driver = subprocess.Popen(
        [sys.executable, "-m", "samrt.cli", *ray_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.glob("*.json"))) < 2:
        assert driver.poll() is None, "the driver ended before it could be killed"
        time.sleep(0.01)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    # Ray ends a dead driver's actors; wait for that before looking at what was done.
    deadline = time.monotonic() + 120
    while _alive_segment_actors() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive_segment_actors()
    done_before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert 2 <= len(done_before) < n_images, "the run finished before it could be killed"

    rerun_args = [*ray_args[: ray_args.index("--ray") + 1], "--actors", "2"]
    rerun = _samrt(*rerun_args, env={"RAY_ADDRESS": ray_cluster})
    assert rerun.returncode == 0, rerun.stderr
    assert f"{n_images - len(done_before)} segmented, {len(done_before)} up to date" in rerun.stdout
    assert f"joined the running Ray cluster at {ray_cluster}" in rerun.stderr
    report = json.loads((out / REPORT_FILE).read_text())
    assert (report["done"], report["skipped"], report["failed"]) == (
        n_images - len(done_before),
        len(done_before),
        0,
    )
    # Nothing that was done was written again.
    assert {name: (out / name).stat().st_mtime_ns for name in done_before} == done_before
    assert no_temporaries(out)
    assert_same_results(out, reference)


def test_ray_local_starts_a_cluster_for_the_run(tiny_model: Any, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(_photo(90 + i)).save(folder / f"p{i}.jpg")
    out = tmp_path / "out"
    result = _samrt(
        "segment",
        str(folder),
        "--engine",
        str(tiny_model.engine_dir),
        "--out",
        str(out),
        "--format",
        "coco",
        *FAST,
        "--ray",
        "local",
        "--threads-per-actor",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert "started a local Ray cluster for this run" in result.stderr
    assert "2 segmented, 0 up to date, 0 failed" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "coco_annotations.json",
        "p0.jpg.json",
        "p1.jpg.json",
        REPORT_FILE,
    ]
    assert len(json.loads((out / "coco_annotations.json").read_text())["images"]) == 2
