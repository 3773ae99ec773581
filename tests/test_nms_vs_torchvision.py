"""samrt.masks.batched_nms against torchvision.ops.batched_nms (CPU), tie order included."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from samrt.masks import batched_nms

THRESHOLDS = [0.0, 0.5, 0.7, 1.0]


def torchvision_nms(
    boxes: npt.NDArray[np.floating],
    scores: npt.NDArray[np.number],
    idxs: npt.NDArray[np.integer],
    thr: float,
) -> npt.NDArray[np.int64]:
    # torchvision wants scores in the box dtype, and float boxes (SAM calls .float()).
    box_t = torch.from_numpy(np.ascontiguousarray(boxes))
    if not box_t.is_floating_point():
        box_t = box_t.float()
    score_t = torch.from_numpy(np.ascontiguousarray(scores)).to(box_t.dtype)
    idx_t = torch.from_numpy(np.ascontiguousarray(idxs)).long()
    return torchvision.ops.batched_nms(box_t, score_t, idx_t, thr).numpy()


def assert_same(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, thr: float) -> np.ndarray:
    expected = torchvision_nms(boxes, scores, idxs, thr)
    got = batched_nms(boxes, scores, idxs, thr)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    return got


def random_boxes(
    rng: np.random.Generator, n: int, span: int, max_side: int, dtype: type
) -> np.ndarray:
    corner = rng.integers(0, span, (n, 2))
    side = rng.integers(0, max_side, (n, 2))
    return np.concatenate([corner, corner + side], axis=1).astype(dtype)


# 1000 / 1001 straddle torchvision's switch from the coordinate trick to per-category NMS.
@pytest.mark.parametrize("n", [1, 2, 16, 17, 100, 1000, 1001, 3000])
@pytest.mark.parametrize("thr", THRESHOLDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_tied_scores_several_categories(n: int, thr: float, dtype: type) -> None:
    rng = np.random.default_rng(n * 10 + int(thr * 10))
    boxes = random_boxes(rng, n, 200, 60, dtype)
    scores = rng.integers(0, 4, n).astype(dtype)  # heavy ties
    idxs = rng.integers(0, 3, n)
    assert_same(boxes, scores, idxs, thr)


@pytest.mark.parametrize("n", [50, 1000, 1500])
@pytest.mark.parametrize("thr", THRESHOLDS)
def test_continuous_scores_and_coordinates(n: int, thr: float) -> None:
    rng = np.random.default_rng(n + int(thr * 100))
    xy = rng.random((n, 2)).astype(np.float32) * 500
    wh = rng.random((n, 2)).astype(np.float32) * 120
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.random(n).astype(np.float32)
    assert_same(boxes, scores, rng.integers(0, 5, n), thr)


@pytest.mark.parametrize("n", [40, 1200])
@pytest.mark.parametrize("thr", THRESHOLDS)
def test_degenerate_and_identical_boxes(n: int, thr: float) -> None:
    rng = np.random.default_rng(7 + n)
    boxes = random_boxes(rng, n, 50, 20, np.float32)
    boxes[: n // 4] = boxes[0]  # identical boxes
    flipped = slice(n // 4, n // 2)
    boxes[flipped] = boxes[flipped][:, [2, 3, 0, 1]]  # x1 < x0 and y1 < y0
    boxes[n // 2 : n // 2 + n // 8, 2] = boxes[n // 2 : n // 2 + n // 8, 0] - 3  # x1 < x0 only
    boxes[-5:, 2:] = boxes[-5:, :2]  # zero area: 0/0 IoU is NaN, never suppresses
    scores = rng.integers(0, 2, n).astype(np.float32)
    assert_same(boxes, scores, rng.integers(0, 2, n), thr)


def test_all_scores_equal_keeps_first_of_identical_boxes() -> None:
    boxes = np.tile(np.array([[0, 0, 10, 10]], np.float32), (30, 1))
    got = assert_same(boxes, np.ones(30, np.float32), np.zeros(30, np.int64), 0.5)
    np.testing.assert_array_equal(got, [0])


def test_negative_coordinates_suppress_across_categories_like_torchvision() -> None:
    # The coordinate trick shifts category 1 by max + 1 = 11, which puts box 0 exactly on
    # box 1 of category 0: torchvision then suppresses across categories.
    boxes = np.array([[-11, -11, -1, -1], [0, 0, 10, 10]], np.float32)
    scores = np.array([1.0, 0.5], np.float32)
    idxs = np.array([1, 0])
    got = assert_same(boxes, scores, idxs, 0.5)
    np.testing.assert_array_equal(got, [0])


def test_large_coordinates_round_in_float32_after_the_category_shift() -> None:
    # Shifted by category * (max + 1) ~ 1.6e7, float32 coordinates round to multiples of 1
    # or 2, which changes IoUs: the result must follow torchvision's float32 rounding.
    rng = np.random.default_rng(0)
    n = 400
    base = rng.integers(8_000_000, 8_000_200, (n, 2))
    boxes = np.concatenate([base, base + rng.integers(1, 6, (n, 2))], axis=1)
    scores = rng.random(n).astype(np.float32)
    idxs = rng.integers(0, 3, n)
    got = assert_same(boxes.astype(np.float32), scores, idxs, 0.3)
    in_float64 = assert_same(boxes.astype(np.float64), scores.astype(np.float64), idxs, 0.3)
    assert not np.array_equal(got, in_float64)  # the rounding does decide here


def test_per_category_path_orders_ties_like_torch_sort() -> None:
    # Above 1000 boxes torchvision re-sorts the kept boxes with an unstable sort: with
    # nothing suppressed the output is that sort's order, which is not index order.
    rng = np.random.default_rng(11)
    n = 1500
    boxes = random_boxes(rng, n, 1000, 10, np.float32)
    scores = rng.integers(0, 3, n).astype(np.float32)
    got = assert_same(boxes, scores, np.zeros(n, np.int64), 2.0)
    assert len(got) == n
    assert not np.array_equal(got, np.lexsort((np.arange(n), -scores)))


def test_integer_boxes_are_computed_as_float32() -> None:
    rng = np.random.default_rng(5)
    boxes = random_boxes(rng, 300, 100, 40, np.int64)
    scores = rng.integers(0, 3, 300).astype(np.float32)
    idxs = rng.integers(0, 2, 300)
    expected = torchvision_nms(boxes.astype(np.float32), scores, idxs, 0.7)
    np.testing.assert_array_equal(batched_nms(boxes, scores, idxs, 0.7), expected)


def test_empty_input() -> None:
    for boxes in (np.zeros((0, 4), np.float32), []):
        got = batched_nms(boxes, np.zeros(0, np.float32), np.zeros(0, np.int64), 0.5)
        assert got.dtype == np.int64 and got.shape == (0,)


def test_non_contiguous_inputs_are_read_correctly() -> None:
    rng = np.random.default_rng(9)
    wide = random_boxes(rng, 200, 80, 30, np.float32)
    boxes_f = np.asfortranarray(wide)
    scores = np.repeat(rng.random(200).astype(np.float32), 2)[::2]
    idxs = np.repeat(rng.integers(0, 3, 200), 2)[::2]
    np.testing.assert_array_equal(
        batched_nms(boxes_f, scores, idxs, 0.5), torchvision_nms(wide, scores, idxs, 0.5)
    )


@pytest.mark.parametrize("where", ["scores", "boxes"])
def test_nan_raises(where: str) -> None:
    boxes = np.array([[0, 0, 1, 1], [0, 0, 2, 2]], np.float32)
    scores = np.array([0.5, 0.2], np.float32)
    (scores if where == "scores" else boxes)[1, ...] = np.nan
    with pytest.raises(ValueError, match=where):
        batched_nms(boxes, scores, np.zeros(2, np.int64), 0.5)


def test_nan_threshold_raises() -> None:
    with pytest.raises(ValueError, match="iou_threshold"):
        batched_nms(np.zeros((1, 4), np.float32), np.ones(1), np.zeros(1, np.int64), float("nan"))


@pytest.mark.parametrize(
    ("boxes", "scores", "idxs", "name"),
    [
        (np.zeros((3, 3), np.float32), np.ones(3), np.zeros(3, np.int64), "boxes"),
        (np.zeros(4, np.float32), np.ones(1), np.zeros(1, np.int64), "boxes"),
        (np.zeros((3, 4), np.float32), np.ones(2), np.zeros(3, np.int64), "scores"),
        (np.zeros((3, 4), np.float32), np.ones((3, 1)), np.zeros(3, np.int64), "scores"),
        (np.zeros((3, 4), np.float32), np.ones(3), np.zeros(4, np.int64), "idxs"),
    ],
)
def test_bad_shapes_raise_value_error(
    boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        batched_nms(boxes, scores, idxs, 0.5)


@pytest.mark.parametrize(
    ("boxes", "scores", "idxs", "thr", "name"),
    [
        (np.zeros((2, 4), np.float16), np.ones(2), np.zeros(2, np.int64), 0.5, "boxes"),
        (np.zeros((2, 4), bool), np.ones(2), np.zeros(2, np.int64), 0.5, "boxes"),
        (np.zeros((2, 4), np.float32), np.array(["a", "b"]), np.zeros(2, np.int64), 0.5, "scores"),
        (np.zeros((2, 4), np.float32), np.ones(2), np.zeros(2, np.float32), 0.5, "idxs"),
        (np.zeros((2, 4), np.float32), np.ones(2), np.zeros(2, np.int64), "0.5", "iou_threshold"),
    ],
)
def test_bad_types_raise_type_error(
    boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, thr: object, name: str
) -> None:
    with pytest.raises(TypeError, match=name):
        batched_nms(boxes, scores, idxs, thr)  # type: ignore[arg-type]


@st.composite
def small_nms_inputs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    n = draw(st.integers(0, 40))
    coords = st.integers(-4, 12)  # small integer range: identical, touching, degenerate boxes
    boxes = np.array(
        draw(st.lists(st.tuples(coords, coords, coords, coords), min_size=n, max_size=n)),
        np.float32,
    )
    boxes = boxes.reshape(n, 4)
    score_values = (
        st.sampled_from([0.0, 0.25, 0.5, 1.0]) if draw(st.booleans()) else st.floats(0, 1, width=32)
    )
    scores = np.array(draw(st.lists(score_values, min_size=n, max_size=n)), np.float32)
    idxs = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.int64)
    thr = draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]) | st.floats(-0.1, 1.1))
    return boxes, scores, idxs, thr


@settings(max_examples=300, deadline=None)
@given(small_nms_inputs())
def test_property_equal_to_torchvision(
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray, float],
) -> None:
    assert_same(*inputs)
