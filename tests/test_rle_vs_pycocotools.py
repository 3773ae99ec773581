"""samrt.masks RLE functions against pycocotools.mask (and segment_anything's
uncompressed RLE helpers, which pair with pycocotools in SAM's automatic mask generator)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

pycoco = pytest.importorskip("pycocotools.mask")

from samrt import _core
from samrt.masks import (
    compress_rle,
    decode_rle,
    decompress_rle,
    encode_rle,
    rle_area,
    rle_iou,
    rle_to_bbox,
)

Masks = npt.NDArray[np.bool_]
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def coco_encode(masks: Masks) -> list[dict[str, Any]]:
    """pycocotools.mask.encode of [N, H, W] masks (it wants [H, W, N] uint8, Fortran order)."""
    encoded: list[dict[str, Any]] = pycoco.encode(
        np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))
    )
    return encoded


def coco_decode(rles: list[dict[str, Any]]) -> Masks:
    """pycocotools.mask.decode as [N, H, W] bool."""
    decoded: npt.NDArray[np.uint8] = pycoco.decode(rles)
    return decoded.transpose(2, 0, 1).astype(bool)


# ---- Masks ---------------------------------------------------------------------------


def _grid(h: int, w: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    ys, xs = np.mgrid[0:h, 0:w]
    return ys, xs


def blobs(h: int, w: int, n: int, seed: int) -> Masks:
    """Unions of random ellipses: the kind of masks SAM produces."""
    rng = np.random.default_rng(seed)
    ys, xs = _grid(h, w)
    out = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(-0.1, 1.1) * h, rng.uniform(-0.1, 1.1) * w
            ry, rx = rng.uniform(0.05, 0.5) * h + 0.5, rng.uniform(0.05, 0.5) * w + 0.5
            out[i] |= ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
    return out


def rings(h: int, w: int) -> Masks:
    ys, xs = _grid(h, w)
    r = np.hypot(ys - h / 2, xs - w / 2)
    return np.stack([(r > 3) & (r < 8), (r % 4) < 2, (r > min(h, w) / 3)])


def stripes(h: int, w: int) -> Masks:
    ys, xs = _grid(h, w)
    return np.stack([ys % 3 == 0, xs % 2 == 1, (xs + ys) % 5 < 2, (xs // 4 + ys // 4) % 2 == 0])


def one_pixel(h: int, w: int) -> Masks:
    out = np.zeros((5, h, w), dtype=bool)
    for i, (y, x) in enumerate([(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 2)]):
        out[i, y, x] = True
    return out


def column_wraps(h: int, w: int) -> Masks:
    """Runs that continue from the bottom of one column into the top of the next (the
    box then spans the full height although no run starts at row 0)."""
    out = np.zeros((3, h, w), dtype=bool)
    out[0, h - 1, 2] = out[0, 0, 3] = True
    out[1, h - 3 :, 4] = out[1, :2, 5] = True
    out[2, h - 1, 0 : w - 1 : 2] = out[2, 0, 1:w:2] = True
    return out


def noise(h: int, w: int, seed: int) -> Masks:
    rng = np.random.default_rng(seed)
    return np.stack([rng.random((h, w)) < p for p in (0.02, 0.5, 0.98)])


STRUCTURED: dict[str, Masks] = {
    "blobs": blobs(37, 53, 6, seed=1),
    "blobs_large": blobs(300, 420, 4, seed=2),
    "rings": rings(29, 31),
    "stripes": stripes(17, 23),
    "one_pixel": one_pixel(13, 11),
    "empty_and_full": np.stack([np.zeros((9, 14), bool), np.ones((9, 14), bool)]),
    "row_1xW": np.stack([np.arange(40) % 7 < 3, np.zeros(40, bool), np.ones(40, bool)])[:, None, :],
    "column_Hx1": np.stack([np.arange(40) % 5 < 2, np.zeros(40, bool), np.ones(40, bool)])[
        :, :, None
    ],
    "one_by_one": np.array([[[False]], [[True]]]),
    "column_wraps": column_wraps(7, 9),
    "noise": noise(31, 45, seed=3),
    "long_runs": np.pad(np.ones((1, 1500, 900), bool), ((0, 0), (3, 0), (0, 0))),
}


@pytest.fixture(params=sorted(STRUCTURED))
def masks(request: pytest.FixtureRequest) -> Masks:
    return STRUCTURED[request.param]


# ---- Equality with pycocotools --------------------------------------------------------


def test_encode_is_byte_identical(masks: Masks) -> None:
    ours = encode_rle(masks)
    assert isinstance(ours, list)
    assert ours == coco_encode(masks)
    assert all(type(r["counts"]) is bytes for r in ours)


def test_single_mask_gives_single_dict(masks: Masks) -> None:
    ours = encode_rle(masks[0])
    assert isinstance(ours, dict)
    assert ours == coco_encode(masks[:1])[0]
    np.testing.assert_array_equal(decode_rle(ours), masks[0])
    assert rle_area(ours) == int(pycoco.area(coco_encode(masks[:1])[0]))
    np.testing.assert_array_equal(rle_to_bbox(ours), pycoco.toBbox(coco_encode(masks[:1])[0]))


def test_decode_equals_pycocotools(masks: Masks) -> None:
    coco = coco_encode(masks)
    ours = decode_rle(coco)
    assert ours.dtype == np.bool_ and ours.shape == masks.shape and ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, coco_decode(coco))
    np.testing.assert_array_equal(ours, masks)


def test_decode_reads_str_counts(masks: Masks) -> None:
    as_json = [
        {"size": r["size"], "counts": r["counts"].decode("ascii")} for r in coco_encode(masks)
    ]
    np.testing.assert_array_equal(decode_rle(as_json), masks)


def test_area_and_bbox_equal_pycocotools(masks: Masks) -> None:
    coco = coco_encode(masks)
    areas = rle_area(coco)
    assert areas.dtype == np.int64
    np.testing.assert_array_equal(areas, pycoco.area(coco))
    boxes = rle_to_bbox(coco)
    assert boxes.dtype == np.float64 and boxes.shape == (len(coco), 4)
    np.testing.assert_array_equal(boxes, pycoco.toBbox(coco))


def test_iou_equals_pycocotools(masks: Masks) -> None:
    coco = coco_encode(masks)
    shifted = coco_encode(np.roll(masks, (1, 2), axis=(1, 2)))
    gt = coco + shifted
    for iscrowd in ([0] * len(gt), [i % 2 for i in range(len(gt))]):
        ours = rle_iou(coco, gt, iscrowd)
        assert ours.dtype == np.float64 and ours.shape == (len(coco), len(gt))
        np.testing.assert_array_equal(ours, pycoco.iou(coco, gt, iscrowd))


def test_iou_matches_on_many_overlapping_blobs() -> None:
    dt, gt = coco_encode(blobs(60, 80, 40, seed=4)), coco_encode(blobs(60, 80, 30, seed=5))
    iscrowd = [i % 3 == 0 for i in range(len(gt))]
    ours = rle_iou(dt, gt, iscrowd)
    assert (ours > 0).sum() > 100  # the test is about real overlaps
    np.testing.assert_array_equal(ours, pycoco.iou(dt, gt, [int(c) for c in iscrowd]))
    np.testing.assert_array_equal(rle_iou(dt, gt), pycoco.iou(dt, gt, [0] * len(gt)))


def test_compress_equals_pycocotools_frPyObjects(masks: Masks) -> None:
    coco = coco_encode(masks)
    uncompressed = decompress_rle(coco)
    assert all(isinstance(c, int) for r in uncompressed for c in r["counts"])
    assert sum(uncompressed[0]["counts"]) == masks.shape[1] * masks.shape[2]
    assert compress_rle(uncompressed) == coco
    for r in uncompressed:
        assert compress_rle(r) == pycoco.frPyObjects(r, *r["size"])


# ---- Layouts and dtypes ----------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    [
        "c_order",
        "fortran_per_mask",
        "strided",
        "reversed",
        "uint8_255",
        "int64",
        "nested_lists",
        "pycocotools_layout",
    ],
)
def test_any_layout_and_integer_dtype_reads_the_same(layout: str) -> None:
    base = blobs(41, 57, 5, seed=6)
    expected = coco_encode(base)
    padded = np.zeros((5, 82, 171), dtype=bool)
    padded[:, ::2, ::3] = base
    variants: dict[str, Callable[[], Any]] = {
        "c_order": lambda: base,
        "fortran_per_mask": lambda: np.asfortranarray(base.transpose(1, 2, 0)).transpose(2, 0, 1),
        "strided": lambda: padded[:, ::2, ::3],
        "reversed": lambda: base[:, ::-1, ::-1].copy()[:, ::-1, ::-1],
        "uint8_255": lambda: base.astype(np.uint8) * 255,
        "int64": lambda: base.astype(np.int64) * -7,
        "nested_lists": lambda: base.tolist(),
        "pycocotools_layout": lambda: np.asfortranarray(
            base.transpose(1, 2, 0).astype(np.uint8)
        ).transpose(2, 0, 1),
    }
    assert encode_rle(variants[layout]()) == expected


def test_fortran_order_path_matches_row_major_path_on_noise() -> None:
    masks = noise(23, 37, seed=7)
    fortran = np.asfortranarray(masks.transpose(1, 2, 0)).transpose(2, 0, 1)
    assert not fortran.flags.c_contiguous
    assert encode_rle(fortran) == encode_rle(masks) == coco_encode(masks)
    # Nonzero bytes other than 1 inside whole 8-byte words of the column-major scan.
    bytes_255 = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8) * 255).transpose(
        2, 0, 1
    )
    assert encode_rle(bytes_255) == encode_rle(masks)


def test_empty_images_and_empty_stacks() -> None:
    for shape in [(0, 5), (5, 0), (0, 0)]:
        ours = encode_rle(np.zeros(shape, dtype=bool))
        assert isinstance(ours, dict)
        assert ours == pycoco.encode(np.zeros((*shape, 1), dtype=np.uint8, order="F"))[0]
        assert decode_rle(ours).shape == shape
        assert rle_area(ours) == 0
        np.testing.assert_array_equal(rle_to_bbox(ours), np.zeros(4))
    assert encode_rle(np.zeros((0, 4, 6), dtype=bool)) == []
    assert decode_rle([]).shape == (0, 0, 0)
    assert rle_area([]).shape == (0,)
    assert rle_to_bbox([]).shape == (0, 4)
    assert compress_rle([]) == [] and decompress_rle([]) == []
    some = coco_encode(blobs(8, 9, 3, seed=8))
    assert rle_iou([], some).shape == (0, 3)
    assert rle_iou(some, []).shape == (3, 0)
    assert rle_iou([], []).shape == (0, 0)


def test_iou_of_single_dicts_is_a_1x1_matrix() -> None:
    a, b = coco_encode(blobs(20, 20, 2, seed=9))
    np.testing.assert_array_equal(rle_iou(a, b), pycoco.iou([a], [b], [0]))
    assert rle_iou(a, b).shape == (1, 1)


def test_many_masks_on_many_threads_agree() -> None:
    masks = blobs(50, 70, 64, seed=10)
    expected = coco_encode(masks)
    results: list[Any] = [None] * 4

    def work(slot: int) -> None:
        results[slot] = encode_rle(masks)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results)
    previous = _core.get_num_threads()
    try:
        _core.set_num_threads(1)
        assert encode_rle(masks) == expected
        np.testing.assert_array_equal(decode_rle(expected), masks)
    finally:
        _core.set_num_threads(previous)


# ---- Property tests ----------------------------------------------------------------------

mask_stacks = hnp.arrays(
    np.bool_,
    st.tuples(st.integers(0, 3), st.integers(0, 13), st.integers(0, 13)),
)


@PROPERTY
@given(mask_stacks)
def test_property_encode_decode_area_bbox_match_pycocotools(masks: Masks) -> None:
    ours = encode_rle(masks)
    np.testing.assert_array_equal(decode_rle(ours).reshape(masks.shape), masks)
    if masks.shape[0] == 0:
        assert ours == []
        return
    coco = coco_encode(masks)
    assert ours == coco
    np.testing.assert_array_equal(rle_area(ours), pycoco.area(coco))
    np.testing.assert_array_equal(rle_to_bbox(ours), pycoco.toBbox(coco))
    assert compress_rle(decompress_rle(ours)) == ours


@PROPERTY
@given(mask_stacks, st.data())
def test_property_iou_matches_pycocotools(masks: Masks, data: st.DataObject) -> None:
    dt, flipped, first = (
        encode_rle(masks),
        encode_rle(np.flip(masks, axis=2)),
        encode_rle(masks[:1]),
    )
    assert isinstance(dt, list) and isinstance(flipped, list) and isinstance(first, list)
    gt = flipped + first
    iscrowd = data.draw(st.lists(st.booleans(), min_size=len(gt), max_size=len(gt)))
    ours = rle_iou(dt, gt, iscrowd)
    assert ours.shape == (len(dt), len(gt))
    if dt and gt:
        np.testing.assert_array_equal(ours, pycoco.iou(dt, gt, [int(c) for c in iscrowd]))


@st.composite
def uncompressed_rles(draw: st.DrawFn) -> dict[str, Any]:
    """Any valid counts, zero-length runs included (pycocotools reads those too)."""
    h, w = draw(st.integers(0, 9)), draw(st.integers(0, 9))
    cuts = sorted(draw(st.lists(st.integers(0, h * w), max_size=12)))
    bounds = [0, *cuts, h * w]
    counts: list[int] = np.diff(bounds).tolist()
    return {"size": [h, w], "counts": counts}


def _mask_from_counts(rle: Mapping[str, Any]) -> Masks:
    h, w = rle["size"]
    flat = np.repeat(np.arange(len(rle["counts"])) % 2 == 1, rle["counts"])
    return flat.reshape(w, h).T


@PROPERTY
@given(uncompressed_rles())
def test_property_uncompressed_round_trips(rle: dict[str, Any]) -> None:
    h, w = rle["size"]
    compressed = compress_rle(rle)
    assert compressed == pycoco.frPyObjects(rle, h, w)
    assert decompress_rle(compressed) == rle
    expected = _mask_from_counts(rle)
    np.testing.assert_array_equal(decode_rle(compressed), expected)
    np.testing.assert_array_equal(decode_rle(rle), expected)
    if h * w:
        np.testing.assert_array_equal(
            decode_rle(compressed), pycoco.decode(compressed).astype(bool)
        )
    assert rle_area(rle) == int(expected.sum())
    # pycocotools also counts the pixels around a zero-length foreground run into the
    # box; ours is the box of the decoded mask, which is the same for canonical RLEs.
    np.testing.assert_array_equal(
        rle_to_bbox(rle),
        pycoco.toBbox(pycoco.encode(np.asfortranarray(expected[..., None].astype(np.uint8))))[0],
    )


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3000),
    st.integers(1, 3000),
    st.floats(0.0, 1.0),
    st.integers(0, 2**32 - 1),
)
def test_property_random_sizes_match_pycocotools(h: int, w: int, density: float, seed: int) -> None:
    # Sizes up to 3000 on a side with few pixels in total: long runs, large deltas.
    w = max(1, min(w, 60_000 // h))
    rng = np.random.default_rng(seed)
    masks = blobs(h, w, 2, seed=seed) ^ (rng.random((2, h, w)) < density * 0.01)
    ours = encode_rle(masks)
    assert ours == coco_encode(masks)
    np.testing.assert_array_equal(decode_rle(ours), masks)


# ---- segment_anything's uncompressed RLE helpers ------------------------------------------


def test_uncompressed_form_matches_segment_anything(masks: Masks) -> None:
    torch = pytest.importorskip("torch")
    amg = pytest.importorskip("segment_anything.utils.amg")
    sam_rles = amg.mask_to_rle_pytorch(torch.from_numpy(masks))
    assert decompress_rle(encode_rle(masks)) == sam_rles
    for sam_rle, mask in zip(sam_rles, masks):
        assert (
            compress_rle(sam_rle)["counts"].decode("utf-8")
            == amg.coco_encode_rle(sam_rle)["counts"]
        )
        np.testing.assert_array_equal(decode_rle(sam_rle), amg.rle_to_mask(sam_rle))
        np.testing.assert_array_equal(decode_rle(sam_rle), mask)
        assert rle_area(sam_rle) == amg.area_from_rle(sam_rle)


# ---- Malformed input ----------------------------------------------------------------------

GOOD = {"size": [3, 4], "counts": b"723"}  # pixels 7 and 8 set


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        (b"72", "counts sum to 9, expected H\\*W = 3\\*4 = 12"),
        (b"7233", "counts sum to 17"),  # the 4th count is 3 + counts[1]
        ([7, 2], "counts sum to 9"),
        ([7, 2, 3, 1], "counts sum to 13"),
        (b"", "counts sum to 0"),
        (b"7Q", "truncated"),  # 'Q' = 0x21: a digit with the continuation flag, then nothing
        (b"7\x7f23", "byte 127 at position 1"),
        (b"7 23", "byte 32 at position 1"),
        ("7é23", "outside '0'..'o'"),
        (b"P" * 13 + b"0", "longer than 12 characters"),
        (b"oooooo?", "count 0 .* to 17179869183, outside \\[0, 2\\^32\\)"),  # 16 * 2**30 - 1
        (b"723@", "count 3 .* to -14, outside \\[0, 2\\^32\\)"),  # counts[1] + (-16)
        ([7, 2, -3], "count 2 is -3"),
        ([7, 2, 2**32], "count 2 is 4294967296"),
    ],
)
def test_malformed_counts_raise_value_error_naming_the_argument(counts: Any, message: str) -> None:
    for rles, name in (
        ({"size": [3, 4], "counts": counts}, "rles"),
        ([GOOD, {"size": [3, 4], "counts": counts}], "rles\\[1\\]"),
    ):
        for function in (decode_rle, rle_area, rle_to_bbox):
            with pytest.raises(ValueError, match=f"^{name}: .*{message}"):
                function(rles)
    with pytest.raises(ValueError, match=f"^gt\\[1\\]: .*{message}"):
        rle_iou([GOOD], [GOOD, {"size": [3, 4], "counts": counts}])


def test_negative_deltas_that_stay_in_range_are_read() -> None:
    rle = {"size": [5, 10], "counts": [7, 20, 3, 4, 16]}  # counts[3] - counts[1] = -16
    compressed = pycoco.frPyObjects(rle, 5, 10)
    assert compressed["counts"] == b"7d03@="  # '@' is the lone digit -16
    assert decompress_rle(compressed) == rle


@pytest.mark.parametrize(
    "size",
    [[3, -4], [-1, 4], [3.0, 4], [3, 4.5], ["3", 4], [3], [3, 4, 1], None, 12, [True, 4], b"34"],
)
def test_bad_sizes_raise_value_error(size: Any) -> None:
    with pytest.raises(ValueError, match="^rles: size must be \\[H, W\\]"):
        rle_area({"size": size, "counts": b"723"})
    with pytest.raises(ValueError, match="^rles\\[1\\]: size must be"):
        decode_rle([GOOD, {"size": size, "counts": b"723"}])


def test_sizes_as_numpy_integers_are_accepted() -> None:
    assert rle_area({"size": np.array([3, 4]), "counts": b"723"}) == 2
    assert rle_area({"size": (np.int32(3), np.uint16(4)), "counts": [7, 2, 3]}) == 2


def test_uncompressed_counts_may_be_numpy_arrays() -> None:
    for dtype in (np.int32, np.int64, np.uint16, np.uint64):
        rle = {"size": [3, 4], "counts": np.array([7, 2, 3], dtype=dtype)}
        assert rle_area(rle) == 2
        assert compress_rle(rle) == GOOD
    with pytest.raises(TypeError, match="^rles: counts must be bytes or str .* 1-D sequence"):
        rle_area({"size": [3, 4], "counts": np.array([[7, 2, 3]])})


def test_too_many_pixels_raise_value_error() -> None:
    with pytest.raises(ValueError, match="more than 2\\^32-1 pixels"):
        rle_area({"size": [2**16, 2**16], "counts": [0]})


def test_sizes_that_are_combined_must_agree() -> None:
    other = encode_rle(np.ones((4, 3), dtype=bool))
    assert isinstance(other, dict)
    with pytest.raises(
        ValueError, match="^rles\\[1\\] has size \\[4, 3\\] but rles\\[0\\] has \\[3, 4\\]"
    ):
        decode_rle([GOOD, other])
    with pytest.raises(
        ValueError, match="^gt\\[0\\] has size \\[4, 3\\] but dt\\[0\\] has \\[3, 4\\]"
    ):
        rle_iou([GOOD], [other])
    # Areas and boxes do not combine masks: mixed sizes are fine.
    np.testing.assert_array_equal(rle_area([GOOD, other]), [2, 12])
    np.testing.assert_array_equal(rle_to_bbox([GOOD, other]), [[2, 1, 1, 2], [0, 0, 3, 4]])


def test_wrong_types_raise_type_error() -> None:
    with pytest.raises(
        TypeError, match="^masks must be a bool or integer array .* got dtype float32"
    ):
        encode_rle(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(TypeError, match="got dtype float64"):
        encode_rle([[0.0, 1.0]])
    with pytest.raises(TypeError, match="got dtype object"):
        encode_rle(np.array([[None]]))
    with pytest.raises(
        ValueError, match="^masks must be \\[H, W\\] or \\[N, H, W\\], got shape \\(4,\\)"
    ):
        encode_rle(np.zeros(4, dtype=bool))
    with pytest.raises(TypeError, match="^rles must be an RLE dict or a sequence of them"):
        rle_area(b"723")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="^rles\\[0\\] must be an RLE dict"):
        rle_area([b"723"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="^rles has no 'counts' key"):
        rle_area({"size": [3, 4]})
    with pytest.raises(TypeError, match="^rles: counts must be integers, got dtype float64"):
        rle_area({"size": [3, 4], "counts": [7.0, 2.0, 3.0]})
    with pytest.raises(TypeError, match="^rles: counts must be bytes or str .* or a 1-D sequence"):
        rle_area({"size": [3, 4], "counts": None})
    with pytest.raises(TypeError, match="^rles: counts must be integers, got dtype bool"):
        rle_area({"size": [3, 4], "counts": [True, False]})
    with pytest.raises(TypeError, match="^rles: counts must be uncompressed"):
        compress_rle(GOOD)
    with pytest.raises(TypeError, match="^rles\\[0\\]: counts must be compressed"):
        decompress_rle([{"size": [3, 4], "counts": [7, 2, 3]}])
    with pytest.raises(TypeError, match="^iscrowd must hold bools or integers"):
        rle_iou(GOOD, GOOD, [0.5])
    with pytest.raises(ValueError, match="^iscrowd must have one flag per gt \\(2\\)"):
        rle_iou(GOOD, [GOOD, GOOD], [0])


def test_core_refuses_what_the_python_layer_would_never_pass() -> None:
    with pytest.raises(TypeError, match="masks must have dtype bool or uint8, got float64"):
        _core.rle_encode(np.zeros((1, 2, 2)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="masks must be \\[N, H, W\\]"):
        _core.rle_encode(np.zeros((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="h must be >= 0"):
        _core.rle_decode([b"0"], -1, 0)
    with pytest.raises(ValueError, match="rles: sizes must have shape \\[1, 2\\]"):
        _core.rle_area([b"723"], np.array([[3, 4, 5]]))
    with pytest.raises(TypeError, match="rles: sizes must be integers"):
        _core.rle_area([b"723"], np.array([[3.0, 4.0]]))
    with pytest.raises(ValueError, match="rles\\[0\\]: size must be non-negative"):
        _core.rle_area([b"723"], np.array([[-3, -4]]))
