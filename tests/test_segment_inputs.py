"""samrt.segment's inputs and resumability: folders, glob patterns, list files and URIs
(pyarrow's file:// filesystem as the stand-in for an object store), checked against the
files on disk and Python's glob module; the run against the CLI's outputs."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from ray_helpers import FakeModelFactory, scene_folder
from samrt.cli import main
from samrt.imageio import decode_image, load_image
from samrt.segment import (
    Job,
    SegmentOptions,
    collect_jobs,
    needs_work,
    read_source,
    segment_local,
)


def _tree(root: Path) -> Path:
    for rel in ("a.png", "b.jpg", "sub/c.png", "sub/deeper/d.tiff", "notes.txt", "sub/e.json"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix in (".txt", ".json"):
            path.write_text("not an image\n")
        else:
            Image.new("RGB", (8, 6), (10, 20, 30)).save(path)
    return root


def test_folder_lists_its_images_recursively_mirroring_the_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path / "photos")
    jobs = collect_jobs([root])
    assert [j.rel for j in jobs] == ["a.png", "b.jpg", "sub/c.png", "sub/deeper/d.tiff"]
    assert [j.source for j in jobs] == [str(root / j.rel) for j in jobs]
    assert jobs[2].output(tmp_path / "out", ".json") == tmp_path / "out" / "sub" / "c.png.json"


def test_glob_patterns_match_as_python_glob(tmp_path: Path) -> None:
    root = _tree(tmp_path / "photos")
    pattern = str(root / "**" / "*.png")
    jobs = collect_jobs([pattern])
    assert sorted(j.source for j in jobs) == sorted(glob.glob(pattern, recursive=True))
    assert [j.rel for j in jobs] == ["a.png", "sub/c.png"]  # below the first wildcard
    assert [j.rel for j in collect_jobs([str(root / "sub" / "*")])] == ["c.png"]


def test_list_file_paths_are_relative_to_it(tmp_path: Path) -> None:
    root = _tree(tmp_path / "photos")
    listing = tmp_path / "images.txt"
    listing.write_text(
        f"# a comment\nphotos/a.png\n\n  photos/sub/c.png  \n{root / 'b.jpg'}\nmissing.png\n"
    )
    jobs = collect_jobs([listing])
    assert [(j.source, j.rel) for j in jobs] == [
        (str(tmp_path / "photos/a.png"), "photos/a.png"),
        (str(tmp_path / "photos/sub/c.png"), "photos/sub/c.png"),
        (str(root / "b.jpg"), "b.jpg"),  # absolute: its name
        (str(tmp_path / "missing.png"), "missing.png"),  # a failure of the run, not of the listing
    ]


def test_file_uri_folder_is_listed_and_read_like_a_local_one(tmp_path: Path) -> None:
    root = _tree(tmp_path / "photos")
    uri = root.as_uri()
    jobs = collect_jobs([uri])
    assert [j.rel for j in jobs] == [j.rel for j in collect_jobs([root])]
    assert all(j.source == f"{uri}/{j.rel}" and j.mtime is not None for j in jobs)
    assert jobs[0].mtime == pytest.approx(os.stat(root / "a.png").st_mtime, abs=1e-3)
    assert read_source(jobs[2].source) == (root / "sub" / "c.png").read_bytes()
    (single,) = collect_jobs([(root / "b.jpg").as_uri()])
    assert single.rel == "b.jpg"


def test_two_images_for_one_output_are_refused_and_one_named_twice_kept_once(
    tmp_path: Path,
) -> None:
    root = _tree(tmp_path / "photos")
    other = tmp_path / "other"
    other.mkdir()
    Image.new("RGB", (8, 6)).save(other / "a.png")
    with pytest.raises(ValueError, match="would both write a.png.json"):
        collect_jobs([root, other / "a.png"])
    assert len(collect_jobs([root, root / "a.png", root])) == 4


def test_needs_work_until_every_output_is_newer_than_the_image(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 6)).save(image)
    (job,) = collect_jobs([image])
    out = tmp_path / "out"
    out.mkdir()
    plain, overlay = SegmentOptions(), SegmentOptions(overlay=True)
    assert needs_work(job, out, plain)
    (out / "a.png.json").write_text("{}")
    assert not needs_work(job, out, plain)
    assert needs_work(job, out, overlay)  # the overlay is missing
    assert needs_work(job, out, SegmentOptions(overwrite=True))
    later = os.stat(out / "a.png.json").st_mtime + 10
    os.utime(image, (later, later))
    assert needs_work(job, out, plain)
    assert needs_work(Job("s3://bucket/x.png", "x.png"), out, plain)  # no known time: redo


def test_decode_image_equals_load_image(tmp_path: Path) -> None:
    folder = scene_folder(tmp_path / "images", 1)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        np.testing.assert_array_equal(decode_image(path.read_bytes(), str(path)), load_image(path))


def test_list_file_and_glob_on_the_command_line(tiny_model: Any, tmp_path: Path) -> None:
    root = _tree(tmp_path / "photos")
    listing = tmp_path / "list.lst"
    listing.write_text("photos/sub/c.png\n")
    out = tmp_path / "out"
    status = main(
        [
            "segment",
            str(root / "*.png"),
            str(listing),
            "--engine",
            str(tiny_model.engine_dir),
            "--out",
            str(out),
            "--points-per-side",
            "2",
        ]
    )
    assert status == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json")) == [
        "a.png.json",
        "photos/sub/c.png.json",
    ]


def test_segment_local_writes_the_report_with_failures(tmp_path: Path) -> None:
    folder = scene_folder(tmp_path / "images", 2, kinds=False)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    summary = segment_local(
        collect_jobs([folder]),
        "<fake>",
        tmp_path / "out",
        SegmentOptions(points_per_side=8),
        model_factory=FakeModelFactory(),
    )
    assert (summary.done, summary.failed) == (2, 1)
    assert "broken.png" in summary.failures[0]["image"]
    report = tmp_path / "report.json"
    summary.write(report)
    assert json.loads(report.read_text())["failures"] == summary.failures
