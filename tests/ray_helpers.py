"""What the Ray tests share: the test decoder as a model factory that Ray's workers can
import (the tests put this folder on their PYTHONPATH), test folders, and the comparison of
two output folders.

A function of a test module would be pickled by reference to a module the workers cannot
import; this module and fake_decoder can be."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fake_decoder import fake_model, make_scene
from PIL import Image
from samrt.masks import decode_rle
from samrt.ray import REPORT_FILE

TESTS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class FakeModelFactory:
    """``model_factory`` for samrt.segment / samrt.ray: the deterministic test decoder, whose
    masks look like a real model's. With ``record_dir``, each call writes the intra-op
    thread count it was given to ``record_dir/<pid>.threads``."""

    record_dir: str | None = None

    def __call__(self, intra_op_num_threads: int | None) -> Any:
        if self.record_dir is not None:
            Path(self.record_dir, f"{os.getpid()}.threads").write_text(f"{intra_op_num_threads}\n")
        return fake_model()


def recorded_threads(record_dir: Path) -> list[int | None]:
    values = [p.read_text().strip() for p in sorted(record_dir.glob("*.threads"))]
    return [None if v == "None" else int(v) for v in values]


def scene_folder(folder: Path, n: int, *, seed: int = 0, kinds: bool = True) -> Path:
    """``n`` painted test scenes (the test decoder finds their objects) of mixed sizes; with
    ``kinds``, also the forms the CLI decodes: an EXIF-rotated JPEG, 16-bit and 8-bit
    grayscale PNGs, an RGBA PNG, in a subfolder too."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [(96, 128), (120, 90), (64, 160), (100, 100)]
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        Image.fromarray(make_scene(h, w, seed=seed + i, n_objects=8)).save(
            folder / f"scene{i:02d}.png"
        )
    if kinds:
        sub = folder / "sub"
        sub.mkdir(exist_ok=True)
        scene = make_scene(80, 120, seed=seed + 100, n_objects=8)
        rotated = Image.fromarray(scene)
        exif = rotated.getexif()
        exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
        rotated.save(sub / "rotated.jpg", quality=98, exif=exif)
        gray = make_scene(72, 96, seed=seed + 101, n_objects=6)[..., 1]
        Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "gray16.png")
        Image.fromarray(gray).save(sub / "gray8.png")
        rgba = np.dstack(
            [make_scene(90, 70, seed=seed + 102, n_objects=6), np.full((90, 70), 200, np.uint8)]
        )
        Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    return folder


def output_files(out: Path) -> list[Path]:
    """The per-image outputs and the COCO file (not the run report)."""
    return sorted(
        p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.name != REPORT_FILE
    )


def assert_same_results(got_dir: Path, want_dir: Path, *, min_iou: float = 0.999) -> int:
    """The same files; per image the same size, the same number of records, each mask with
    IoU >= ``min_iou`` against the one at its place and its numbers within float noise
    (thread counts may change the last bits). Returns the number of masks compared."""
    got_files, want_files = output_files(got_dir), output_files(want_dir)
    assert got_files == want_files
    compared = 0
    for rel in want_files:
        if rel.suffix != ".json" or rel.name == "coco_annotations.json":
            continue
        got = json.loads((got_dir / rel).read_text())
        want = json.loads((want_dir / rel).read_text())
        assert got["image"] == want["image"], rel
        assert len(got["annotations"]) == len(want["annotations"]), rel
        for i, (a, b) in enumerate(zip(got["annotations"], want["annotations"], strict=True)):
            mask_a, mask_b = decode_rle(a["segmentation"]), decode_rle(b["segmentation"])
            union = np.logical_or(mask_a, mask_b).sum()
            iou = 1.0 if union == 0 else np.logical_and(mask_a, mask_b).sum() / union
            assert iou >= min_iou, (rel, i, iou)
            for key in ("predicted_iou", "stability_score"):
                assert abs(a[key] - b[key]) <= 1e-4, (rel, i, key, a[key], b[key])
            assert abs(a["area"] - b["area"]) <= max(2, 0.001 * b["area"]), (rel, i)
            compared += 1
    coco = "coco_annotations.json"
    if (want_dir / coco).exists():
        got_coco = json.loads((got_dir / coco).read_text())
        want_coco = json.loads((want_dir / coco).read_text())
        assert got_coco["images"] == want_coco["images"]
        assert len(got_coco["annotations"]) == len(want_coco["annotations"])
    return compared


def no_temporaries(out: Path) -> bool:
    return not any(".samrt-tmp" in p.name for p in out.rglob("*"))


@dataclass(frozen=True)
class BrokenModelFactory:
    """A ``model_factory`` whose model cannot load, as an engine missing on a worker."""

    def __call__(self, intra_op_num_threads: int | None) -> Any:
        from samrt.errors import EngineDirError

        raise EngineDirError("no engine directory on this worker (test)")
