"""samrt.AutomaticMaskGenerator against the official SamAutomaticMaskGenerator.

Both generators run on the same images with the same decoder outputs: the label-map
fake of tests/fake_decoder.py (whose masks have the sizes, holes, islands and overlaps
that exercise the filters, NMS, crops and cleanup), and the real tiny exported model.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import threading
import types
import warnings
from typing import Any

import numpy as np
import pytest
import samrt
from hypothesis import given, settings
from hypothesis import strategies as st
from samrt.amg import (
    AutomaticMaskGenerator,
    build_all_layer_point_grids,
    generate_crop_boxes,
    is_box_near_crop_edge,
)
from samrt.predictor import Predictor

torch = pytest.importorskip("torch")
official_amg = pytest.importorskip("segment_anything.automatic_mask_generator")
official_utils = pytest.importorskip("segment_anything.utils.amg")
mask_utils = pytest.importorskip("pycocotools.mask")

from fake_decoder import (
    fake_model,
    make_scene,
    official_generator,
    single_colour_image,
)

RECORD_KEYS = [
    "segmentation",
    "area",
    "bbox",
    "predicted_iou",
    "point_coords",
    "stability_score",
    "crop_box",
]

SCENES = {
    "small": lambda: make_scene(180, 240, seed=1),
    "wide": lambda: make_scene(200, 320, seed=2),
    "tall": lambda: make_scene(260, 150, seed=3),
}


@pytest.fixture(scope="module")
def scenes() -> dict[str, np.ndarray]:
    return {name: make() for name, make in SCENES.items()}


@pytest.fixture(scope="module")
def shared_fake_model() -> Any:
    return fake_model()


# The official generator's cost is its full-size upsampling in _generate_masks, which does
# not depend on output_mode or min_mask_region_area. Cases differing only in those reuse
# one official _generate_masks result; the official generate() still runs its own region
# cleanup, encoding and records on a copy of it.
_official_masks: dict[str, Any] = {}


def run_official(
    image_name: str, image: np.ndarray, params: dict[str, Any]
) -> list[dict[str, Any]]:
    generator = official_generator(**params)
    shared = {k: v for k, v in params.items() if k not in ("output_mode", "min_mask_region_area")}
    key = f"{image_name}:{sorted((k, repr(v)) for k, v in shared.items())}"
    if key not in _official_masks:
        _official_masks[key] = generator._generate_masks(image)
    data = copy.deepcopy(_official_masks[key])
    generator._generate_masks = lambda _image: data
    return generator.generate(image)  # type: ignore[no-any-return]


def as_bool_mask(segmentation: Any) -> np.ndarray:
    if isinstance(segmentation, np.ndarray):
        return segmentation
    if isinstance(segmentation["counts"], str):
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
        with warnings.catch_warnings():
            # pycocotools' decode trips numpy 2's __array__ copy-keyword deprecation.
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode(rle).astype(bool)
    return official_utils.rle_to_mask(segmentation)


def _type_signature(value: Any) -> Any:
    """The nested Python types of a record value (the official's exact types)."""
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.ndim)
    if isinstance(value, dict):
        return ("dict", [(k, _type_signature(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", sorted({repr(_type_signature(v)) for v in value}))
    return type(value).__name__


def _close(a: float, b: float, tol: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or abs(a - b) <= tol


def assert_records_match(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    assert len(ours) == len(theirs), f"samrt gave {len(ours)} masks, the official {len(theirs)}"
    if not ours:
        return
    for record in ours:
        assert list(record) == RECORD_KEYS
    ours_masks = np.stack([as_bool_mask(r["segmentation"]) for r in ours]).reshape(len(ours), -1)
    theirs_masks = np.stack([as_bool_mask(r["segmentation"]) for r in theirs]).reshape(
        len(theirs), -1
    )
    inter = ours_masks.astype(np.float32) @ theirs_masks.T.astype(np.float32)
    union = ours_masks.sum(1)[:, None] + theirs_masks.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    # Greedy one-to-one matching, best pairs first.
    matched: dict[int, int] = {}
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if i not in matched and j not in matched.values():
            matched[i] = j
    for i, j in sorted(matched.items()):
        a, b = ours[i], theirs[j]
        where = f"samrt mask {i} / official mask {j}"
        assert iou[i, j] >= 0.99, f"{where}: mask IoU {iou[i, j]:.4f}"
        assert _close(a["predicted_iou"], b["predicted_iou"], 1e-3), where
        # An empty mask has stability 0/0 = NaN on both sides (kept when the threshold is 0).
        assert _close(a["stability_score"], b["stability_score"], 1e-3), where
        assert np.abs(np.subtract(a["bbox"], b["bbox"])).max() <= 1, (
            f"{where}: {a['bbox']} vs {b['bbox']}"
        )
        assert a["crop_box"] == b["crop_box"], where
        assert a["point_coords"] == b["point_coords"], where
        assert abs(a["area"] - b["area"]) <= max(1, 0.01 * b["area"]), where
        for key in RECORD_KEYS:
            assert _type_signature(a[key]) == _type_signature(b[key]), f"{where}: type of {key}"


# -- the fake decoder: same outputs on both sides ------------------------------------------

GRID_50 = np.random.default_rng(5).uniform(0, 1, (50, 2))

CASES = {
    "defaults": ("small", {}),
    "defaults-uncompressed-rle": ("small", {"output_mode": "uncompressed_rle"}),
    "defaults-coco-rle": ("small", {"output_mode": "coco_rle"}),
    "defaults-min-region-100": ("small", {"min_mask_region_area": 100}),
    "crop-layer": (
        "wide",
        {"points_per_side": 12, "crop_n_layers": 1, "crop_n_points_downscale_factor": 2},
    ),
    "crop-layer-min-region-coco": (
        "wide",
        {
            "points_per_side": 12,
            "crop_n_layers": 1,
            "crop_n_points_downscale_factor": 2,
            "min_mask_region_area": 100,
            "output_mode": "coco_rle",
        },
    ),
    "two-crop-layers": (
        "tall",
        {
            "points_per_side": 3,
            "crop_n_layers": 2,
            "crop_overlap_ratio": 0.25,
            "min_mask_region_area": 40,
        },
    ),
    "no-thresholds-odd-batches": (
        "small",
        {
            "points_per_side": 8,
            "points_per_batch": 10,
            "pred_iou_thresh": 0.0,
            "stability_score_thresh": 0.0,
            "box_nms_thresh": 0.5,
            "output_mode": "uncompressed_rle",
        },
    ),
    "point-grids": (
        "tall",
        {
            "points_per_side": None,
            "point_grids": [GRID_50],
            "stability_score_offset": 0.5,
            "pred_iou_thresh": 0.8,
        },
    ),
}


_ours: dict[str, list[dict[str, Any]]] = {}


def run_ours(case: str, scenes: dict[str, np.ndarray], model: Any) -> list[dict[str, Any]]:
    if case not in _ours:
        image_name, params = CASES[case]
        _ours[case] = AutomaticMaskGenerator(model, **params).generate(scenes[image_name])
    return _ours[case]


@pytest.mark.parametrize("case", list(CASES))
def test_fake_decoder_matches_official(
    case: str, scenes: dict[str, np.ndarray], shared_fake_model: Any
) -> None:
    image_name, params = CASES[case]
    ours = run_ours(case, scenes, shared_fake_model)
    theirs = run_official(image_name, scenes[image_name], params)
    assert_records_match(ours, theirs)
    # The scenes are built to leave many masks; a case that kept none would test nothing.
    assert len(ours) >= 5


def test_cases_exercise_cleanup_and_crops(
    scenes: dict[str, np.ndarray], shared_fake_model: Any
) -> None:
    plain = run_ours("defaults-uncompressed-rle", scenes, shared_fake_model)
    cleaned = [
        r["segmentation"] for r in run_ours("defaults-min-region-100", scenes, shared_fake_model)
    ]
    assert [official_utils.rle_to_mask(r["segmentation"]).tolist() for r in plain] != [
        m.tolist() for m in cleaned
    ]

    full = [0, 0, 320, 200]
    crops = run_ours("crop-layer", scenes, shared_fake_model)
    assert any(r["crop_box"] != full for r in crops) and any(r["crop_box"] == full for r in crops)


# -- real exported models --------------------------------------------------------------------

# Thresholds at 0 so every mask reaches post-processing. A randomly initialized SAM answers
# every point with about the same image-wide blob, so default NMS would leave one mask:
# box_nms_thresh=1.0 keeps them all, and each one is compared.
REAL_MODEL_PARAMS = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


def _downscaled(image: np.ndarray, factor: int) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    return np.asarray(
        Image.fromarray(image).resize((w // factor, h // factor), Image.Resampling.BILINEAR)
    )


def _compare_on_real_model(exported: Any, image: np.ndarray, params: dict[str, Any]) -> None:
    from segment_anything import SamAutomaticMaskGenerator

    ours = AutomaticMaskGenerator(samrt.Model(exported.engine_dir), **params).generate(image)
    theirs = SamAutomaticMaskGenerator(exported.official_sam(), **params).generate(image)
    assert len(ours) == 3 * params["points_per_side"] ** 2
    assert_records_match(ours, theirs)


def test_tiny_model_matches_official(tiny_model: Any, sample_image: Any) -> None:
    image = _downscaled(sample_image("dog.jpg"), 6)
    _compare_on_real_model(tiny_model, image, {**REAL_MODEL_PARAMS, "points_per_side": 4})


@pytest.mark.slow
def test_vit_b_matches_official(vit_b_model: Any, sample_image: Any) -> None:
    image = _downscaled(sample_image("truck.jpg"), 2)
    _compare_on_real_model(vit_b_model, image, {**REAL_MODEL_PARAMS, "points_per_side": 8})


# -- empty results -------------------------------------------------------------------------


def test_single_colour_image_gives_nothing(shared_fake_model: Any) -> None:
    image = single_colour_image(120, 160)
    params = {"points_per_side": 8}
    assert AutomaticMaskGenerator(shared_fake_model, **params).generate(image) == []
    assert official_generator(**params).generate(image) == []


def test_no_mask_survives(scenes: dict[str, np.ndarray], shared_fake_model: Any) -> None:
    params = {"points_per_side": 6, "pred_iou_thresh": 0.999}
    assert AutomaticMaskGenerator(shared_fake_model, **params).generate(scenes["small"]) == []
    assert official_generator(**params).generate(scenes["small"]) == []


def test_no_mask_survives_with_crops(shared_fake_model: Any) -> None:
    # The official fails here (it takes box areas of an empty list of crop boxes).
    generator = AutomaticMaskGenerator(shared_fake_model, points_per_side=4, crop_n_layers=1)
    assert generator.generate(single_colour_image(90, 120)) == []


def test_image_too_small_for_a_crop_layer(
    shared_fake_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = make_scene(1, 3, seed=4, n_objects=3)
    params = {
        "points_per_side": 2,
        "crop_n_layers": 1,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
    }
    boxes, _ = generate_crop_boxes((1, 3), 1, 512 / 1500)
    assert any(b[2] <= b[0] or b[3] <= b[1] for b in boxes), "the case must contain empty crops"
    ours = AutomaticMaskGenerator(shared_fake_model, **params).generate(image)

    # The official fails on the empty crops; without them it is the oracle.
    with pytest.raises((ValueError, ZeroDivisionError)):
        official_generator(**params).generate(image)
    original = official_amg.generate_crop_boxes

    def nonempty_crop_boxes(*args: Any) -> tuple[list[list[int]], list[int]]:
        boxes, layers = original(*args)
        kept = [(b, l) for b, l in zip(boxes, layers) if b[2] > b[0] and b[3] > b[1]]
        return [b for b, _ in kept], [l for _, l in kept]

    monkeypatch.setattr(official_amg, "generate_crop_boxes", nonempty_crop_boxes)
    assert_records_match(ours, official_generator(**params).generate(image))


# -- parameters ----------------------------------------------------------------------------

INVALID = [
    ({"points_per_side": 0}, "points_per_side"),
    ({"points_per_side": -3}, "points_per_side"),
    ({"points_per_side": 2.5}, "points_per_side"),
    ({"points_per_side": True}, "points_per_side"),
    ({"points_per_side": None}, "points_per_side"),
    ({"points_per_side": 8, "point_grids": [GRID_50]}, "point_grids"),
    ({"points_per_side": None, "point_grids": [GRID_50[:, :1]]}, "point_grids"),
    ({"points_per_side": None, "point_grids": [GRID_50 * 2]}, "point_grids"),
    ({"points_per_side": None, "point_grids": [np.zeros((0, 2))]}, "point_grids"),
    ({"points_per_side": None, "point_grids": [GRID_50], "crop_n_layers": 1}, "point_grids"),
    ({"points_per_side": None, "point_grids": GRID_50}, "point_grids"),
    ({"points_per_batch": 0}, "points_per_batch"),
    ({"points_per_batch": 1.5}, "points_per_batch"),
    ({"pred_iou_thresh": -0.1}, "pred_iou_thresh"),
    ({"pred_iou_thresh": float("nan")}, "pred_iou_thresh"),
    ({"stability_score_thresh": -1.0}, "stability_score_thresh"),
    ({"stability_score_offset": -0.5}, "stability_score_offset"),
    ({"stability_score_offset": float("inf")}, "stability_score_offset"),
    ({"box_nms_thresh": -0.1}, "box_nms_thresh"),
    ({"box_nms_thresh": 1.5}, "box_nms_thresh"),
    ({"crop_nms_thresh": 2.0}, "crop_nms_thresh"),
    ({"crop_n_layers": -1}, "crop_n_layers"),
    ({"crop_overlap_ratio": 1.0}, "crop_overlap_ratio"),
    ({"crop_overlap_ratio": -0.1}, "crop_overlap_ratio"),
    ({"crop_n_points_downscale_factor": 0}, "crop_n_points_downscale_factor"),
    (
        {"points_per_side": 2, "crop_n_layers": 1, "crop_n_points_downscale_factor": 4},
        "crop_n_points_downscale_factor",
    ),
    ({"min_mask_region_area": -1}, "min_mask_region_area"),
    ({"output_mode": "png"}, "output_mode"),
    ({"output_mode": None}, "output_mode"),
    ({"progress": "yes"}, "progress"),
]


@pytest.mark.parametrize(
    ("params", "name"), INVALID, ids=[f"{n}-{i}" for i, (_, n) in enumerate(INVALID)]
)
def test_invalid_parameters(params: dict[str, Any], name: str, shared_fake_model: Any) -> None:
    with pytest.raises(ValueError, match=name):
        AutomaticMaskGenerator(shared_fake_model, **params)


def test_defaults_are_the_official_ones(shared_fake_model: Any) -> None:
    import inspect

    ours = inspect.signature(AutomaticMaskGenerator.__init__).parameters
    theirs = inspect.signature(official_amg.SamAutomaticMaskGenerator.__init__).parameters
    generator = AutomaticMaskGenerator(shared_fake_model)
    for name, parameter in theirs.items():
        if name in ("self", "model"):
            continue
        assert name in ours, name
        if name == "pred_iou_thresh":  # None: the family's default, SAM's for a SAM model
            assert ours[name].default is None and generator.pred_iou_thresh == parameter.default == 0.88
        else:
            assert ours[name].default == parameter.default, name
    assert list(ours)[2 : len(theirs)] == list(theirs)[2:]
    # SAM 2.1's additions (keyword-only here, so SAM's positional order stays).
    assert (generator.use_m2m, generator.multimask_output, generator.mask_threshold) == (False, True, 0.0)


def test_invalid_model_and_image(shared_fake_model: Any) -> None:
    with pytest.raises(TypeError, match="predictor_or_engine_dir"):
        AutomaticMaskGenerator(42)  # type: ignore[arg-type]
    generator = AutomaticMaskGenerator(shared_fake_model, points_per_side=4)
    with pytest.raises(TypeError, match="uint8"):
        generator.generate(np.zeros((20, 20, 3), dtype=np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="3 channels"):
        generator.generate(np.zeros((20, 20, 4), dtype=np.uint8))


def test_accepts_predictor_model_and_reuses_predictor(
    scenes: dict[str, np.ndarray], shared_fake_model: Any
) -> None:
    predictor = Predictor(shared_fake_model)
    by_predictor = AutomaticMaskGenerator(predictor, points_per_side=6)
    assert by_predictor.predictor is predictor
    by_model = AutomaticMaskGenerator(shared_fake_model, points_per_side=6)
    assert by_model.predictor.model is shared_fake_model
    assert _plain(by_predictor.generate(scenes["small"])) == _plain(
        by_model.generate(scenes["small"])
    )
    assert not predictor.is_image_set  # reset after each crop, as the official does


def _plain(records: list[dict[str, Any]]) -> list[Any]:
    return [{**r, "segmentation": np.packbits(r["segmentation"]).tobytes()} for r in records]


# -- progress ------------------------------------------------------------------------------


def test_progress_callback(scenes: dict[str, np.ndarray], shared_fake_model: Any) -> None:
    calls: list[tuple[int, int]] = []
    params = {"points_per_side": 6, "points_per_batch": 10, "crop_n_layers": 1}
    AutomaticMaskGenerator(
        shared_fake_model, **params, progress=lambda d, t: calls.append((d, t))
    ).generate(scenes["small"])
    total = 5 * 4  # 5 crops of 36 points in batches of 10
    assert calls == [(i, total) for i in range(1, total + 1)]


def test_progress_true_needs_tqdm(shared_fake_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with pytest.raises(ImportError, match="tqdm"):
        AutomaticMaskGenerator(shared_fake_model, progress=True)


def test_progress_true_uses_tqdm(
    scenes: dict[str, np.ndarray], shared_fake_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars: list[Any] = []

    class FakeBar:
        def __init__(self, total: int, **kwargs: Any) -> None:
            self.total, self.n, self.closed = total, 0, False
            bars.append(self)

        def update(self, n: int) -> None:
            self.n += n

        def close(self) -> None:
            self.closed = True

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeBar))
    AutomaticMaskGenerator(shared_fake_model, points_per_side=6, progress=True).generate(
        scenes["small"]
    )
    assert [(b.total, b.n, b.closed) for b in bars] == [(1, 1, True)]


# -- concurrency -----------------------------------------------------------------------------


def test_one_generator_per_thread_over_a_shared_model(
    scenes: dict[str, np.ndarray], shared_fake_model: Any
) -> None:
    names = ["small", "wide", "tall"]
    params = {"points_per_side": 6, "output_mode": "uncompressed_rle"}
    expected = {
        n: AutomaticMaskGenerator(shared_fake_model, **params).generate(scenes[n]) for n in names
    }
    results: dict[str, Any] = {}
    errors: list[Exception] = []

    def work(name: str) -> None:
        try:
            generator = AutomaticMaskGenerator(shared_fake_model, **params)
            for _ in range(2):
                results[name] = generator.generate(scenes[name])
        except Exception as e:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    assert results == expected


# -- grids, crops and edge tests against the official utils ------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 3000),
    w=st.integers(1, 3000),
    n_layers=st.integers(0, 3),
    overlap=st.floats(0, 0.99),
)
def test_crop_boxes_match_official(h: int, w: int, n_layers: int, overlap: float) -> None:
    assert generate_crop_boxes((h, w), n_layers, overlap) == official_utils.generate_crop_boxes(
        (h, w), n_layers, overlap
    )


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 64), n_layers=st.integers(0, 3), scale=st.integers(1, 3))
def test_point_grids_match_official(n: int, n_layers: int, scale: int) -> None:
    if any(int(n / scale**i) < 1 for i in range(n_layers + 1)):
        return
    ours = build_all_layer_point_grids(n, n_layers, scale)
    theirs = official_utils.build_all_layer_point_grids(n, n_layers, scale)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and np.array_equal(a, b)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), x0=st.integers(0, 300), y0=st.integers(0, 300))
def test_box_near_crop_edge_matches_official(seed: int, x0: int, y0: int) -> None:
    rng = np.random.default_rng(seed)
    crop = [x0, y0, x0 + int(rng.integers(1, 400)), y0 + int(rng.integers(1, 400))]
    orig = [0, 0, crop[2] + int(rng.integers(0, 50)), crop[3] + int(rng.integers(0, 50))]
    corners = rng.integers(0, max(crop[2] - x0, crop[3] - y0), size=(20, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1).astype(np.int64)
    theirs = official_utils.is_box_near_crop_edge(torch.as_tensor(boxes), crop, orig).numpy()
    assert np.array_equal(is_box_near_crop_edge(boxes, crop, orig), theirs)


def test_generator_does_not_import_torch() -> None:
    code = (
        "import sys, samrt.amg\n"
        "heavy = [m for m in ('torch', 'torchvision', 'segment_anything', 'cv2', 'pycocotools') if m in sys.modules]\n"
        "sys.exit(str(heavy) if heavy else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_exported_from_package() -> None:
    assert samrt.AutomaticMaskGenerator is AutomaticMaskGenerator
