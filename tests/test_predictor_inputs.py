"""Bad input to the Predictor and bad engine directories: clear, typed errors, never a crash."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import samrt
from samrt import contract
from samrt.errors import EngineDirError, ImageNotSetError


@pytest.fixture(scope="module")
def predictor(tiny_model: Any) -> samrt.Predictor:
    p = samrt.Predictor(tiny_model.engine_dir, backend="onnxruntime-cpu")
    p.set_image(np.full((48, 64, 3), 128, dtype=np.uint8))
    return p


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((32, 32, 3), dtype=np.float32), TypeError, "uint8"),
        (np.zeros((32, 32), dtype=np.uint8), ValueError, "HxWx3"),
        (np.zeros((2, 32, 32, 3), dtype=np.uint8), ValueError, "HxWx3"),
        (np.zeros((32, 32, 1), dtype=np.uint8), ValueError, "3 channels"),
        (np.zeros((32, 32, 4), dtype=np.uint8), ValueError, "3 channels"),
        (np.zeros((0, 32, 3), dtype=np.uint8), ValueError, "empty"),
        ([[[0, 0, 0]]], TypeError, "numpy array"),
    ],
)
def test_bad_images(predictor: samrt.Predictor, image: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        predictor.set_image(image)


def test_bad_image_format(predictor: samrt.Predictor) -> None:
    with pytest.raises(ValueError, match="image_format"):
        predictor.set_image(np.zeros((8, 8, 3), np.uint8), image_format="RGBA")


def test_image_over_the_size_cap(tiny_model: Any) -> None:
    p = samrt.Predictor(tiny_model.engine_dir, max_image_pixels=100)
    with pytest.raises(ValueError, match="max_image_pixels"):
        p.set_image(np.zeros((11, 10, 3), np.uint8))


@pytest.mark.parametrize(
    ("prompt", "error", "match"),
    [
        (dict(point_labels=np.array([1])), ValueError, "without point_coords"),
        (dict(point_coords=np.array([[1.0, 2.0]])), ValueError, "point_labels must be supplied"),
        (dict(point_coords=np.array([[1.0, 2.0]]), point_labels=np.array([1, 0])), ValueError, "point_labels"),
        (dict(point_coords=np.array([1.0, 2.0]), point_labels=np.array([1])), ValueError, "Nx2"),
        (dict(point_coords=np.array([[np.nan, 2.0]]), point_labels=np.array([1])), ValueError, "NaN"),
        (dict(point_coords=np.array([[np.inf, 2.0]]), point_labels=np.array([1])), ValueError, "NaN or inf"),
        (dict(point_coords=np.array([[1e300, 2.0]]), point_labels=np.array([1])), ValueError, "overflow"),
        (dict(point_coords=np.array([[1.0, 2.0]]), point_labels=np.array([7])), ValueError, "point_labels"),
        (dict(point_coords=np.array([["a", "b"]]), point_labels=np.array([1])), TypeError, "point_coords"),
        (dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0)), ValueError, "no points"),
        (dict(box=np.array([10, 10, 5, 20])), ValueError, "x1 >= x0"),
        (dict(box=np.array([10, 10, 20])), ValueError, "box"),
        (dict(box=np.array([0, 0, 5, np.nan])), ValueError, "NaN"),
        (
            dict(point_coords=np.array([[1.0, 2.0]]), point_labels=np.array([1]), mask_input=np.zeros((1, 64, 64))),
            ValueError,
            "mask_input",
        ),
    ],
)
def test_bad_prompts(predictor: samrt.Predictor, prompt: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        predictor.predict(**prompt)


def test_batched_prompt_counts_must_agree(predictor: samrt.Predictor) -> None:
    with pytest.raises(ValueError, match="first dimension"):
        predictor.predict_batch(np.zeros((2, 1, 2)), np.ones((2, 1)), boxes=np.array([[0, 0, 5, 5]]))


def test_predict_before_set_image(tiny_model: Any) -> None:
    p = samrt.Predictor(tiny_model.engine_dir)
    with pytest.raises(ImageNotSetError, match="set_image"):
        p.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]))
    with pytest.raises(RuntimeError):  # the official predictor raises RuntimeError here too
        p.get_image_embedding()


def test_reset_image(tiny_model: Any) -> None:
    p = samrt.Predictor(tiny_model.engine_dir)
    p.set_image(np.zeros((16, 16, 3), np.uint8))
    assert p.is_image_set
    p.reset_image()
    assert not p.is_image_set and p.original_size is None


def test_bad_saved_embedding(predictor: samrt.Predictor) -> None:
    with pytest.raises(ValueError, match="shape"):
        predictor.set_image_embedding(np.zeros((1, 256, 32, 32), np.float32), (10, 10))
    with pytest.raises(ValueError, match="positive"):
        predictor.set_image_embedding(np.zeros((1, 256, 64, 64), np.float32), (0, 10))


def test_unknown_backend(tiny_model: Any) -> None:
    with pytest.raises(ValueError, match="backend"):
        samrt.Predictor(tiny_model.engine_dir, backend="nope")


# -- engine directory faults: one line naming the file and the fix -----------------------------


@pytest.fixture
def engine_copy(tiny_model: Any, tmp_path: Path) -> Path:
    dst = tmp_path / "engine"
    shutil.copytree(tiny_model.engine_dir, dst)
    return dst


def _assert_one_line_error(engine: Path, match: str) -> None:
    with pytest.raises(EngineDirError, match=match) as info:
        samrt.Predictor(engine)
    assert "\n" not in str(info.value)


def test_missing_engine_dir(tmp_path: Path) -> None:
    _assert_one_line_error(tmp_path / "nowhere", "does not exist.*samrt export")


def test_missing_manifest(engine_copy: Path) -> None:
    (engine_copy / "manifest.json").unlink()
    _assert_one_line_error(engine_copy, "manifest.json is missing")


def test_missing_model_file(engine_copy: Path) -> None:
    graph = contract.GRAPH_FILES[contract.DECODER_PROMPTS]
    (engine_copy / graph).unlink()
    _assert_one_line_error(engine_copy, f"{graph} is missing")


def test_truncated_onnx(engine_copy: Path) -> None:
    path = engine_copy / "encoder.onnx"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_one_line_error(engine_copy, "encoder.onnx has sha256.*modified or truncated")


def test_manifest_from_another_version(engine_copy: Path) -> None:
    path = engine_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = 999
    path.write_text(json.dumps(manifest))
    _assert_one_line_error(engine_copy, "format version 999")


def test_corrupt_manifest(engine_copy: Path) -> None:
    (engine_copy / "manifest.json").write_text("{not json")
    _assert_one_line_error(engine_copy, "not valid JSON")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_model_file(engine_copy: Path) -> None:
    (engine_copy / "decoder.onnx").chmod(0)
    _assert_one_line_error(engine_copy, "not readable")
