"""samrt.masks.remove_small_regions(_batch) against segment_anything.utils.amg.remove_small_regions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from samrt.masks import remove_small_regions, remove_small_regions_batch
from segment_anything.utils.amg import remove_small_regions as official_remove_small_regions

MODES = ["holes", "islands"]


def assert_same(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    expected, expected_changed = official_remove_small_regions(mask, area_thresh, mode)
    got, changed = remove_small_regions(mask, area_thresh, mode)
    assert changed == expected_changed
    if changed:
        assert got.dtype == np.bool_
        np.testing.assert_array_equal(got, expected)
    else:
        assert got is mask  # returned untouched, as the official function does
    batch, batch_changed = remove_small_regions_batch(mask[None], area_thresh, mode)
    assert batch.dtype == np.bool_ and batch_changed.tolist() == [expected_changed]
    np.testing.assert_array_equal(batch[0], expected.astype(bool))
    return got, changed


def disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def blobs(seed: int, h: int = 120, w: int = 160) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), bool)
    for _ in range(12):
        mask ^= disk(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, 25))
    mask[rng.random((h, w)) < 0.01] ^= True  # specks and pinholes
    return mask


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("area_thresh", [0, 1, 5, 30, 100, 1000.5, 10**6])
def test_blobs(seed: int, mode: str, area_thresh: float) -> None:
    assert_same(blobs(seed), area_thresh, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("area_thresh", [20, 50, 200, 400])
def test_rings_with_holes(mode: str, area_thresh: int) -> None:
    h, w = 80, 90
    mask = disk(h, w, 40, 45, 30) & ~disk(h, w, 40, 45, 8)  # ring around a ~200 px hole
    mask &= ~disk(h, w, 20, 30, 2)  # a small pinhole in the ring
    mask |= disk(h, w, 40, 45, 3)  # an island inside the hole
    mask |= disk(h, w, 5, 85, 2)  # an island outside
    _, changed = assert_same(mask, area_thresh, mode)
    assert changed  # every threshold here finds something small


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("area_thresh", [3, 40, 41, 1000])
def test_stripes(mode: str, area_thresh: int) -> None:
    mask = np.zeros((40, 41), bool)
    mask[::3] = True  # horizontal lines of 41 px, separated by 2 background rows
    assert_same(mask, area_thresh, mode)
    assert_same(np.ascontiguousarray(mask.T), area_thresh, mode)


@pytest.mark.parametrize("mode", MODES)
def test_diagonal_pixels_are_connected(mode: str) -> None:
    mask = np.zeros((9, 9), bool)
    mask[np.arange(9), np.arange(9)] = True  # one 9-pixel diagonal line (8-connected)
    _, changed = assert_same(mask, 5, mode)
    if mode == "islands":
        assert not changed  # a 4-connected labeling would see nine 1-pixel islands
    # Background cells on either side of the diagonal touch only diagonally too.
    checker = (np.indices((6, 7)).sum(axis=0) % 2).astype(bool)
    assert_same(checker, 2, mode)
    assert_same(~checker, 2, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 1), (1, 300), (300, 1), (2, 2), (3, 5)])
@pytest.mark.parametrize("area_thresh", [0, 1, 2, 4, 1000])
def test_tiny_and_thin_images(mode: str, shape: tuple[int, int], area_thresh: int) -> None:
    rng = np.random.default_rng(sum(shape))
    for density in (0.0, 0.3, 0.7, 1.0):
        assert_same(rng.random(shape) < density, area_thresh, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("area_thresh", [0, 1, 2, 50, 10**9])
def test_one_pixel_empty_and_full_masks(mode: str, area_thresh: int) -> None:
    one = np.zeros((30, 40), bool)
    one[13, 21] = True
    assert_same(one, area_thresh, mode)
    assert_same(~one, area_thresh, mode)
    assert_same(np.zeros((30, 40), bool), area_thresh, mode)
    assert_same(np.ones((30, 40), bool), area_thresh, mode)


def test_nothing_small_returns_input() -> None:
    mask = disk(50, 50, 25, 25, 10)
    for mode in MODES:
        got, changed = assert_same(mask, 20, mode)
        assert got is mask and not changed


def test_every_island_small_keeps_the_largest() -> None:
    mask = np.zeros((40, 40), bool)
    mask[2:5, 2:5] = True  # 9 px
    mask[20:24, 20:24] = True  # 16 px, the largest
    mask[30, 30] = True
    got, changed = assert_same(mask, 100, "islands")
    assert changed and got.sum() == 16 and got[20:24, 20:24].all()


@pytest.mark.parametrize(
    "pixels",
    [
        [(1, 0), (0, 3)],  # raster order would pick (0, 3); OpenCV's 2x2 blocks pick (1, 0)
        [(0, 3), (1, 0)],
        [(3, 0), (2, 6), (5, 9)],
        [(1, 1), (0, 2)],  # same 2x2 block row, block (0, 0) comes first
        [(2, 8), (3, 2), (3, 9)],
    ],
)
def test_every_island_small_equal_sizes_keeps_the_one_opencv_labels_first(
    pixels: list[tuple[int, int]],
) -> None:
    mask = np.zeros((7, 11), bool)
    for y, x in pixels:
        mask[y, x] = True
    assert_same(mask, 2, "islands")
    # The same with equal 2x2 squares anchored at those pixels, on an odd-sized image.
    squares = np.zeros((13, 23), bool)
    for y, x in pixels:
        squares[2 * y + 1 : 2 * y + 3, 2 * x + 1 : 2 * x + 3] = True
    assert_same(squares, 5, "islands")


@pytest.mark.parametrize("mode", MODES)
def test_uint8_masks(mode: str) -> None:
    mask = blobs(11)
    assert_same(mask.astype(np.uint8), 30, mode)  # 0/1 uint8: same as the official
    # Any nonzero byte is inside (the official function misreads values other than 0/1).
    got255, _ = remove_small_regions(mask.astype(np.uint8) * 255, 30, mode)
    got_bool, _ = remove_small_regions(mask, 30, mode)
    np.testing.assert_array_equal(got255.astype(bool), got_bool)


def test_non_contiguous_mask() -> None:
    wide = blobs(5, 60, 160)
    view = wide[:, ::2]
    for mode in MODES:
        got, _ = remove_small_regions(view, 20, mode)
        expected, _ = official_remove_small_regions(np.ascontiguousarray(view), 20, mode)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", MODES)
def test_batch_matches_single_calls(mode: str) -> None:
    masks = np.stack(
        [blobs(s, 64, 96) for s in range(12)] + [np.zeros((64, 96), bool), np.ones((64, 96), bool)]
    )
    got, changed = remove_small_regions_batch(masks, 40, mode)
    assert got.shape == masks.shape and changed.shape == (len(masks),)
    for k, mask in enumerate(masks):
        expected, expected_changed = official_remove_small_regions(mask, 40, mode)
        assert changed[k] == expected_changed
        np.testing.assert_array_equal(got[k], expected)


def test_batch_holes_then_islands_like_the_generator() -> None:
    masks = np.stack([blobs(s, 100, 130) for s in range(6)])
    holes, _ = remove_small_regions_batch(masks, 25, "holes")
    cleaned, _ = remove_small_regions_batch(holes, 25, "islands")
    for k, mask in enumerate(masks):
        step, _ = official_remove_small_regions(mask, 25, "holes")
        expected, _ = official_remove_small_regions(step, 25, "islands")
        np.testing.assert_array_equal(cleaned[k], expected)


def test_batch_empty_stack() -> None:
    got, changed = remove_small_regions_batch(np.zeros((0, 5, 7), bool), 10, "holes")
    assert got.shape == (0, 5, 7) and got.dtype == np.bool_ and changed.shape == (0,)


def test_concurrent_calls_from_threads() -> None:
    masks = np.stack([blobs(s, 80, 80) for s in range(8)])
    expected = [remove_small_regions_batch(masks, 30, mode)[0] for mode in MODES]
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(lambda k: remove_small_regions_batch(masks, 30, MODES[k % 2])[0], range(16))
        )
    for k, got in enumerate(results):
        np.testing.assert_array_equal(got, expected[k % 2])


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda: remove_small_regions(np.zeros((4, 4), np.float32), 1, "holes"), TypeError, "mask"),
        (lambda: remove_small_regions(np.zeros((4, 4), np.int64), 1, "holes"), TypeError, "mask"),
        (lambda: remove_small_regions([[True]], 1, "holes"), TypeError, "mask"),
        (lambda: remove_small_regions(np.zeros((2, 4, 4), bool), 1, "holes"), ValueError, "mask"),
        (lambda: remove_small_regions(np.zeros(4, bool), 1, "holes"), ValueError, "mask"),
        (lambda: remove_small_regions(np.zeros((0, 4), bool), 1, "holes"), ValueError, "mask"),
        (
            lambda: remove_small_regions(np.zeros((4, 4), bool), -1, "holes"),
            ValueError,
            "area_thresh",
        ),
        (
            lambda: remove_small_regions(np.zeros((4, 4), bool), float("nan"), "holes"),
            ValueError,
            "area_thresh",
        ),
        (
            lambda: remove_small_regions(np.zeros((4, 4), bool), "1", "holes"),
            TypeError,
            "area_thresh",
        ),
        (lambda: remove_small_regions(np.zeros((4, 4), bool), 1, "hole"), ValueError, "mode"),
        (lambda: remove_small_regions(np.zeros((4, 4), bool), 1, None), TypeError, "mode"),
        (
            lambda: remove_small_regions_batch(np.zeros((4, 4), bool), 1, "holes"),
            ValueError,
            "masks",
        ),
        (
            lambda: remove_small_regions_batch(np.zeros((2, 0, 4), bool), 1, "holes"),
            ValueError,
            "masks",
        ),
        (
            lambda: remove_small_regions_batch(np.zeros((2, 4, 4), np.int8), 1, "holes"),
            TypeError,
            "masks",
        ),
        (
            lambda: remove_small_regions_batch(np.zeros((2, 4, 4), bool), -0.5, "islands"),
            ValueError,
            "area_thresh",
        ),
        (
            lambda: remove_small_regions_batch(np.zeros((2, 4, 4), bool), 1, "isles"),
            ValueError,
            "mode",
        ),
    ],
)
def test_validation(call: object, error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=name):
        call()  # type: ignore[operator]


@settings(max_examples=250, deadline=None)
@given(
    hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=20)),
    st.sampled_from(MODES),
    st.integers(0, 40) | st.floats(0, 40),
)
def test_property_equal_to_official(mask: np.ndarray, mode: str, area_thresh: float) -> None:
    assert_same(mask, area_thresh, mode)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30), st.integers(1, 30), st.floats(0.05, 0.95))
def test_property_random_density(seed: int, h: int, w: int, density: float) -> None:
    mask = np.random.default_rng(seed).random((h, w)) < density
    for mode in MODES:
        for area_thresh in (2, 5, 12):
            assert_same(mask, area_thresh, mode)
