"""samrt.postprocess against the official torch path: Sam.postprocess_masks,
calculate_stability_score, batched_mask_to_box, uncrop_masks and mask_to_rle_pytorch.

Agreement bars: upsampled logits within 1e-4 absolute, per-mask IoU >= 0.999, boxes within
1 pixel, stability scores within 1e-3. Where the comparison is with our own thresholded
output (RLE encoding, placement in a crop), results must be identical.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from samrt import _core, contract
from samrt.postprocess import MaskStats, masks_from_logits, upsample_logits, upsample_masks
from segment_anything.modeling.sam import Sam
from segment_anything.utils.amg import (
    batched_mask_to_box,
    calculate_stability_score,
    mask_to_rle_pytorch,
    uncrop_masks,
)

LOW_RES = contract.LOW_RES_SIZE
THRESHOLD = contract.MASK_THRESHOLD
OFFSET = 1.0

# -- oracle ------------------------------------------------------------------------------


def official_logits(
    low_res: npt.NDArray[np.float32], input_size: tuple[int, int], original_size: tuple[int, int]
) -> torch.Tensor:
    """Sam.postprocess_masks on [M, 256, 256] logits -> [M, H, W]."""
    sam: Any = types.SimpleNamespace(
        image_encoder=types.SimpleNamespace(img_size=contract.IMAGE_SIZE)
    )
    masks = torch.from_numpy(np.ascontiguousarray(low_res, dtype=np.float32))[:, None]
    out: torch.Tensor = Sam.postprocess_masks(sam, masks, input_size, original_size)[:, 0]
    return out


def official_rles(
    masks: torch.Tensor, crop_box: list[int] | None = None, image_hw: tuple[int, int] | None = None
) -> list[list[int]]:
    if crop_box is not None:
        assert image_hw is not None
        masks = uncrop_masks(masks, crop_box, image_hw[0], image_hw[1])
    return [rle["counts"] for rle in mask_to_rle_pytorch(masks)]


def decode(
    counts: npt.NDArray[np.uint32] | list[int], hw: tuple[int, int]
) -> npt.NDArray[np.bool_]:
    """An uncompressed column-major RLE (background first) as an H x W bool mask."""
    h, w = hw
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, np.asarray(counts, dtype=np.int64))
    assert flat.size == h * w, "RLE counts must sum to h*w"
    return flat.reshape(w, h).T


def iou(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


# -- inputs ------------------------------------------------------------------------------


def smooth_logits(n: int, seed: int, scale: float = 8.0, grid: int = 8) -> npt.NDArray[np.float32]:
    """Low-frequency noise: a coarse normal grid, bicubically upsampled to 256 x 256."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 1, grid, grid, generator=gen) * scale
    return F.interpolate(coarse, (LOW_RES, LOW_RES), mode="bicubic", align_corners=False)[
        :, 0
    ].numpy()


def blob_logits(
    n: int, seed: int, valid_hw: tuple[int, int] = (LOW_RES, LOW_RES)
) -> npt.NDArray[np.float32]:
    """Elliptic blobs inside the valid (un-padded) area, edges from very sharp (20 logits
    per low-res pixel) to soft (0.3), values clipped to [-25, 20]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:LOW_RES, 0:LOW_RES].astype(np.float32)
    out = np.empty((n, LOW_RES, LOW_RES), np.float32)
    for m in range(n):
        cy, cx = rng.uniform(0, valid_hw[0]), rng.uniform(0, valid_hw[1])
        ry, rx = rng.uniform(2, 50, size=2)
        d = (1 - np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)) * min(ry, rx)
        steepness = (20.0, 0.3, 2.0)[m % 3]
        out[m] = np.clip(steepness * d, -25, 20)
    return out


def mixed_logits(n_each: int, seed: int) -> npt.NDArray[np.float32]:
    return np.concatenate([smooth_logits(n_each, seed), blob_logits(n_each, seed + 1)])


# (input_size, original_size) as SAM's ResizeLongestSide pairs them, plus odd ones.
GEOMETRIES = {
    "landscape": ((683, 1024), (1200, 1800)),
    "portrait": ((1024, 576), (640, 360)),
    "square-down": ((1024, 1024), (500, 500)),
    "up-odd": ((765, 1024), (1531, 2049)),
    "row-1xW": ((3, 1024), (1, 300)),
    "col-Hx1": ((1024, 3), (300, 1)),
    "pixel-1x1": ((1024, 1024), (1, 1)),
}


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = _core.get_num_threads()
    yield
    _core.set_num_threads(before)


# -- upsample_logits / upsample_masks ---------------------------------------------------


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_upsample_logits_matches_postprocess_masks(name: str) -> None:
    input_size, original_size = GEOMETRIES[name]
    low_res = mixed_logits(2, seed=len(name))
    ours = upsample_logits(low_res, input_size, original_size)
    ref = official_logits(low_res, input_size, original_size).numpy()
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_upsample_masks_matches_thresholded_postprocess_masks(name: str) -> None:
    input_size, original_size = GEOMETRIES[name]
    low_res = mixed_logits(2, seed=10 + len(name))
    ours = upsample_masks(low_res, input_size, original_size)
    ref = (official_logits(low_res, input_size, original_size) > THRESHOLD).numpy()
    assert ours.dtype == np.bool_
    assert ours.shape == ref.shape
    for i in range(len(ours)):
        assert iou(ours[i], ref[i]) >= 0.999
    # The skipping path and the computed path agree with plain thresholding of our logits.
    logits = upsample_logits(low_res, input_size, original_size)
    assert (ours != (logits > THRESHOLD)).sum() <= 2


@given(
    input_h=st.integers(1, 1024),
    input_w=st.integers(1, 1024),
    out_h=st.integers(1, 90),
    out_w=st.integers(1, 90),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_upsample_logits_any_geometry(
    input_h: int, input_w: int, out_h: int, out_w: int, seed: int
) -> None:
    low_res = smooth_logits(1, seed, grid=32)
    ours = upsample_logits(low_res, (input_h, input_w), (out_h, out_w))
    ref = official_logits(low_res, (input_h, input_w), (out_h, out_w)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


def test_upsample_accepts_batched_prompts_and_keeps_their_shape() -> None:
    low_res = smooth_logits(6, seed=3).reshape(2, 3, LOW_RES, LOW_RES)
    logits = upsample_logits(low_res, (768, 1024), (300, 400))
    masks = upsample_masks(low_res, (768, 1024), (300, 400))
    assert logits.shape == masks.shape == (2, 3, 300, 400)
    np.testing.assert_array_equal(
        logits.reshape(6, 300, 400),
        upsample_logits(low_res.reshape(6, 256, 256), (768, 1024), (300, 400)),
    )


@pytest.mark.parametrize("value", [0.5, -0.5, 7.0, -30.0, 0.0])
def test_constant_logits(value: float) -> None:
    low_res = np.full((1, LOW_RES, LOW_RES), value, np.float32)
    ref = official_logits(low_res, (683, 1024), (120, 180))
    logits = upsample_logits(low_res, (683, 1024), (120, 180))
    np.testing.assert_allclose(logits, ref.numpy(), rtol=0, atol=1e-5)
    masks = upsample_masks(low_res, (683, 1024), (120, 180))
    np.testing.assert_array_equal(masks, (ref > THRESHOLD).numpy())
    stats = masks_from_logits(low_res, (683, 1024), (120, 180))
    ref_stability = calculate_stability_score(ref, THRESHOLD, OFFSET).numpy()
    np.testing.assert_array_equal(np.isnan(stats.stability), np.isnan(ref_stability))
    np.testing.assert_allclose(stats.stability, ref_stability, atol=1e-6)
    np.testing.assert_array_equal(stats.boxes, batched_mask_to_box(ref > THRESHOLD).numpy())
    assert [c.tolist() for c in stats.rle_counts if c is not None] == official_rles(ref > THRESHOLD)


# -- masks_from_logits ---------------------------------------------------------------------


def check_stats_against_official(
    stats: MaskStats,
    low_res: npt.NDArray[np.float32],
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    threshold: float = THRESHOLD,
    offset: float = OFFSET,
    crop_box: list[int] | None = None,
    image_hw: tuple[int, int] | None = None,
) -> None:
    ref_logits = official_logits(low_res, input_size, original_size)
    ref_stability = calculate_stability_score(ref_logits, threshold, offset).numpy()
    ref_masks = ref_logits > threshold
    ref_boxes = batched_mask_to_box(ref_masks).numpy()
    ref_rles = official_rles(ref_masks, crop_box, image_hw)
    full_hw = image_hw or original_size
    assert stats.rle_size == full_hw
    assert len(stats) == len(low_res)
    assert stats.areas.dtype == np.int64 and stats.boxes.dtype == np.int64
    assert stats.stability.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(stats.stability), np.isnan(ref_stability))
    np.testing.assert_allclose(stats.stability, ref_stability, rtol=0, atol=1e-3)
    assert np.abs(stats.boxes - ref_boxes).max(initial=0) <= 1
    ours_masks = upsample_masks(low_res, input_size, original_size, threshold)
    np.testing.assert_array_equal(stats.areas, ours_masks.sum(axis=(1, 2)))
    # Exactly mask_to_rle_pytorch(uncrop_masks(...)) of the same binary masks.
    assert [c.tolist() if c is not None else None for c in stats.rle_counts] == official_rles(
        torch.from_numpy(ours_masks), crop_box, image_hw
    )
    for counts, ref_counts in zip(stats.rle_counts, ref_rles, strict=True):
        assert counts is not None and counts.dtype == np.uint32
        assert iou(decode(counts, full_hw), decode(ref_counts, full_hw)) >= 0.999


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_masks_from_logits_matches_amg_helpers(name: str) -> None:
    input_size, original_size = GEOMETRIES[name]
    low_res = mixed_logits(2, seed=20 + len(name))
    low_res = np.concatenate([low_res, np.full((1, LOW_RES, LOW_RES), -5.0, np.float32)])  # empty
    stats = masks_from_logits(low_res, input_size, original_size)
    check_stats_against_official(stats, low_res, input_size, original_size)
    assert stats.areas[-1] == 0 and stats.boxes[-1].tolist() == [0, 0, 0, 0]


def test_all_positive_and_all_negative_masks() -> None:
    low_res = np.stack(
        [
            np.full((LOW_RES, LOW_RES), 9.0, np.float32),
            np.full((LOW_RES, LOW_RES), -9.0, np.float32),
        ]
    )
    stats = masks_from_logits(low_res, (683, 1024), (600, 900))
    assert stats.areas.tolist() == [600 * 900, 0]
    assert stats.boxes.tolist() == [[0, 0, 899, 599], [0, 0, 0, 0]]
    assert stats.stability[0] == 1.0 and np.isnan(stats.stability[1])  # 0/0, as torch
    assert [c.tolist() for c in stats.rle_counts if c is not None] == [[0, 600 * 900], [600 * 900]]
    check_stats_against_official(stats, low_res, (683, 1024), (600, 900))


def test_masks_reaching_the_image_edges() -> None:
    # Upsampling 1024 -> 1500 gives runs of output rows that all read only the last source
    # row, so the bottom rows are filled in bulk rather than computed.
    low_res = np.full((3, LOW_RES, LOW_RES), -4.0, np.float32)
    low_res[0] = 4.0
    low_res[1, 128:, :] = 4.0  # bottom half
    low_res[2, :, 200:] = 4.0  # right side
    stats = masks_from_logits(low_res, (1024, 1024), (1500, 1500))
    assert stats.boxes[0].tolist() == [0, 0, 1499, 1499]
    assert stats.boxes[1, 2:].tolist() == [1499, 1499]
    assert stats.boxes[2, 2:].tolist() == [1499, 1499]
    check_stats_against_official(stats, low_res, (1024, 1024), (1500, 1500))


@pytest.mark.parametrize(
    ("crop_box", "image_hw"),
    [
        ([0, 0, 400, 300], (700, 1000)),  # top-left corner
        ([600, 400, 1000, 700], (700, 1000)),  # bottom-right corner
        ([300, 200, 700, 500], (700, 1000)),  # inside
        ([0, 100, 400, 400], (700, 400)),  # full width, inside vertically
        ([100, 0, 500, 300], (300, 1000)),  # full height
        ([0, 0, 400, 300], (300, 400)),  # the whole image
    ],
)
def test_masks_from_logits_in_crop_matches_uncrop_masks(
    crop_box: list[int], image_hw: tuple[int, int]
) -> None:
    original_size = (crop_box[3] - crop_box[1], crop_box[2] - crop_box[0])
    input_size = (768, 1024)
    low_res = mixed_logits(2, seed=sum(crop_box))
    x0, y0, x1, y1 = crop_box
    stats = masks_from_logits(
        low_res, input_size, original_size, crop_box=(x0, y0, x1, y1), image_size=image_hw
    )
    check_stats_against_official(
        stats, low_res, input_size, original_size, crop_box=crop_box, image_hw=image_hw
    )


def test_threshold_and_offset_are_honoured() -> None:
    low_res = mixed_logits(3, seed=5)
    stats = masks_from_logits(
        low_res, (683, 1024), (400, 600), threshold=2.5, stability_offset=0.25
    )
    check_stats_against_official(
        stats, low_res, (683, 1024), (400, 600), threshold=2.5, offset=0.25
    )


def test_rle_min_stability_drops_unstable_masks() -> None:
    low_res = np.concatenate(
        [blob_logits(3, seed=8), np.full((1, LOW_RES, LOW_RES), -3.0, np.float32)]
    )
    everything = masks_from_logits(low_res, (683, 1024), (300, 450))
    cut = float(np.sort(everything.stability[:3])[1])
    kept = masks_from_logits(low_res, (683, 1024), (300, 450), rle_min_stability=cut)
    np.testing.assert_array_equal(kept.stability, everything.stability)
    np.testing.assert_array_equal(kept.areas, everything.areas)
    for score, counts, full in zip(
        kept.stability, kept.rle_counts, everything.rle_counts, strict=True
    ):
        if score >= cut:  # NaN (the empty mask) is dropped, as the generator drops it
            assert counts is not None and full is not None
            np.testing.assert_array_equal(counts, full)
        else:
            assert counts is None
    assert kept.rle_counts[3] is None
    assert sum(c is None for c in kept.rle_counts) >= 2


def test_batched_input_is_flattened() -> None:
    low_res = smooth_logits(6, seed=2)
    flat = masks_from_logits(low_res, (768, 1024), (150, 200))
    batched = masks_from_logits(low_res.reshape(2, 3, LOW_RES, LOW_RES), (768, 1024), (150, 200))
    np.testing.assert_array_equal(flat.areas, batched.areas)
    np.testing.assert_array_equal(flat.boxes, batched.boxes)
    np.testing.assert_array_equal(flat.stability, batched.stability)


def test_no_masks() -> None:
    empty = np.zeros((0, LOW_RES, LOW_RES), np.float32)
    stats = masks_from_logits(empty, (683, 1024), (1200, 1800))
    assert (
        stats.areas.shape == (0,) and stats.boxes.shape == (0, 4) and stats.stability.shape == (0,)
    )
    assert stats.rle_counts == []
    assert upsample_masks(empty, (683, 1024), (12, 18)).shape == (0, 12, 18)
    assert upsample_logits(empty, (683, 1024), (12, 18)).shape == (0, 12, 18)


def test_nan_logits_are_background_as_in_torch() -> None:
    low_res = np.full((1, LOW_RES, LOW_RES), 6.0, np.float32)
    low_res[0, 40:80, 100:150] = np.nan
    ours = upsample_masks(low_res, (683, 1024), (600, 900))
    ref_logits = official_logits(low_res, (683, 1024), (600, 900))
    ref = (ref_logits > THRESHOLD).numpy()
    assert iou(ours[0], ref[0]) >= 0.99  # the NaN footprint may differ by a low-res pixel's reach
    assert not ours[0, 200, 400] and ours[0, 10, 10]
    stats = masks_from_logits(low_res, (683, 1024), (600, 900))
    assert stats.areas[0] == ours[0].sum()
    counts = stats.rle_counts[0]
    assert counts is not None
    np.testing.assert_array_equal(decode(counts, (600, 900)), ours[0])
    ref_stability = calculate_stability_score(ref_logits, THRESHOLD, OFFSET).numpy()
    np.testing.assert_allclose(stats.stability, ref_stability, atol=1e-3)


def test_input_layout_and_dtype_do_not_matter() -> None:
    low_res = smooth_logits(3, seed=4)
    expected = masks_from_logits(low_res, (683, 1024), (200, 300))
    strided = np.asfortranarray(low_res)
    as_f64 = low_res.astype(np.float64)
    for variant in (strided, as_f64, low_res[::-1][::-1]):
        got = masks_from_logits(variant, (683, 1024), (200, 300))
        np.testing.assert_array_equal(got.areas, expected.areas)
        np.testing.assert_array_equal(got.stability, expected.stability)


@pytest.mark.usefixtures("restore_threads")
@pytest.mark.parametrize("n_masks", [1, 3, 9])
def test_results_do_not_depend_on_thread_count(n_masks: int) -> None:
    # Few masks are split into column chunks whose RLEs are stitched back together.
    low_res = mixed_logits(n_masks, seed=n_masks)[:n_masks]
    results = []
    for threads in (1, 2, 5):
        _core.set_num_threads(threads)
        stats = masks_from_logits(low_res, (683, 1024), (1200, 1800))
        results.append((stats, upsample_masks(low_res, (683, 1024), (1200, 1800))))
    for stats, masks in results[1:]:
        np.testing.assert_array_equal(stats.areas, results[0][0].areas)
        np.testing.assert_array_equal(stats.boxes, results[0][0].boxes)
        np.testing.assert_array_equal(stats.stability, results[0][0].stability)
        for a, b in zip(stats.rle_counts, results[0][0].rle_counts, strict=True):
            assert a is not None and b is not None
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(masks, results[0][1])


def test_concurrent_calls_from_python_threads() -> None:
    low_res = mixed_logits(4, seed=9)
    expected = masks_from_logits(low_res, (683, 1024), (300, 450))
    results: list[MaskStats] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(masks_from_logits(low_res, (683, 1024), (300, 450)))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 4
    for got in results:
        np.testing.assert_array_equal(got.areas, expected.areas)


# -- argument checks -----------------------------------------------------------------------

GOOD = np.zeros((1, LOW_RES, LOW_RES), np.float32)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"low_res": np.zeros((1, 128, 128), np.float32)}, ValueError, "low_res must be"),
        ({"low_res": np.zeros((LOW_RES, LOW_RES), np.float32)}, ValueError, "low_res must be"),
        ({"low_res": np.zeros((1, LOW_RES, LOW_RES), np.int32)}, TypeError, "floating-point"),
        ({"low_res": np.zeros((1, LOW_RES, LOW_RES), bool)}, TypeError, "floating-point"),
        ({"input_size": (0, 1024)}, ValueError, "input_size"),
        ({"input_size": (1025, 1024)}, ValueError, "input_size"),
        ({"input_size": (683,)}, ValueError, "input_size"),
        ({"input_size": (683.0, 1024)}, TypeError, "input_size"),
        ({"original_size": (0, 5)}, ValueError, "original_size"),
        ({"original_size": (True, 5)}, TypeError, "original_size"),
    ],
)
def test_bad_arguments_are_rejected(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    args: dict[str, Any] = {
        "low_res": GOOD,
        "input_size": (683, 1024),
        "original_size": (12, 18),
    } | kwargs
    for fn in (upsample_logits, upsample_masks, masks_from_logits):
        with pytest.raises(error, match=message):
            fn(**args)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"threshold": float("nan")}, ValueError, "threshold"),
        ({"stability_offset": float("inf")}, ValueError, "stability_offset"),
        ({"rle_min_stability": float("nan")}, ValueError, "rle_min_stability"),
        ({"crop_box": (0, 0, 18, 12)}, ValueError, "image_size"),
        ({"crop_box": (0, 0, 18, 12), "image_size": (10, 18)}, ValueError, "inside the image"),
        ({"crop_box": (5, 0, 23, 12), "image_size": (12, 20)}, ValueError, "inside the image"),
        ({"crop_box": (-1, 0, 17, 12), "image_size": (12, 20)}, ValueError, "inside the image"),
        ({"crop_box": (0, 0, 17, 12), "image_size": (12, 20)}, ValueError, "original_size"),
        ({"crop_box": (0, 0, 18), "image_size": (12, 20)}, ValueError, "crop_box"),
        ({"image_size": (24, 36)}, ValueError, "crop_box"),
    ],
)
def test_bad_stats_arguments_are_rejected(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        masks_from_logits(GOOD, (683, 1024), (12, 18), **kwargs)


def test_bad_threshold_for_masks() -> None:
    with pytest.raises(ValueError, match="threshold"):
        upsample_masks(GOOD, (683, 1024), (12, 18), threshold=float("nan"))


def test_core_checks_its_own_arguments() -> None:
    with pytest.raises(ValueError, match="3 dimensions"):
        _core.upsample_logits(np.zeros((LOW_RES, LOW_RES), np.float32), (683, 1024), (12, 18), 1024)
    with pytest.raises(ValueError, match="exceeds the padded size"):
        _core.upsample_masks(GOOD, (683, 2000), (12, 18), 1024, 0.0)
    with pytest.raises(ValueError, match="must be >= 1"):
        _core.upsample_logits(GOOD, (683, 1024), (12, 0), 1024)
    with pytest.raises(ValueError, match="does not fit"):
        _core.mask_stats(GOOD, (683, 1024), (12, 18), 1024, 0.0, 1.0, (3, 0), (12, 18), None)
    with pytest.raises(ValueError, match="2\\^32"):
        _core.mask_stats(GOOD, (683, 1024), (12, 18), 1024, 0.0, 1.0, (0, 0), (70000, 70000), None)
