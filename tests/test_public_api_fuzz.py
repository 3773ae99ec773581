"""Arbitrary inputs at the public functions of samrt.masks and samrt.postprocess.

Oracle: the functions' documented errors. Whatever the input (any dtype, 0-d and empty
arrays, NaN/inf, extreme and negative values, reversed, strided, transposed,
broadcast and read-only views, non-arrays, malformed RLE dicts and counts strings), a
call either returns or raises ValueError or TypeError; any other exception fails the
test, and a crash in the C++ kernels takes the test process down with it. Results are
not checked here (the *_vs_* tests compare them with the reference implementations).

Sizes are drawn so that every *valid* input stays small: huge values appear only where
they are invalid on their own (a side of 2**31 and more, an RLE side of 2**32 and more).
numpy's warnings about out-of-range casts are not errors of the API and are ignored.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from samrt import masks as samrt_masks
from samrt import postprocess

DOCUMENTED = (ValueError, TypeError)
FUZZ_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs), where ValueError and TypeError count as a proper refusal."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(*args, **kwargs)
        except DOCUMENTED:
            return None


# --- arrays ---------------------------------------------------------------------------

DTYPES = [
    np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
    np.float16, np.float32, np.float64, np.longdouble, np.complex64, np.complex128,
    "U3", "S3", "M8[s]", "m8[s]",
]  # fmt: skip


def view(array: np.ndarray, how: str) -> Any:
    """The same data with another memory layout (or no array at all)."""
    if how == "reversed" and array.ndim >= 1:
        return array[::-1]
    if how == "strided" and array.ndim >= 1:
        return array[..., ::2]
    if how == "transposed":
        return array.T
    if how == "fortran":
        return np.asfortranarray(array)
    if how == "readonly":
        array.setflags(write=False)
        return array
    if how == "broadcast" and array.ndim >= 1 and array.shape[-1] >= 1:
        return np.broadcast_to(array[..., :1], array.shape)
    if how == "list":
        return array.tolist()
    if how == "object":
        return array.astype(object)
    return array


VIEWS = st.sampled_from(
    [
        "plain",
        "plain",
        "reversed",
        "strided",
        "transposed",
        "fortran",
        "readonly",
        "broadcast",
        "list",
        "object",
    ]
)


@st.composite
def arrays(draw: st.DrawFn, shape: Any = None, dtypes: Any = None) -> Any:
    dtype = draw(dtypes if dtypes is not None else st.sampled_from(DTYPES))
    shape = (
        shape
        if shape is not None
        else hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)
    )
    array = draw(hnp.arrays(dtype, shape))
    return view(array, draw(VIEWS))


NON_ARRAYS = st.sampled_from([None, 3, 2.5, "abc", b"xy", [], [[1, 2], [3]], {"a": 1}, object()])
ANY_ARRAY = st.one_of(arrays(), NON_ARRAYS)

# Any number-like or not: NaN, infinities, ints too big for a float or a C long.
SCALARS = st.one_of(
    st.sampled_from(
        [
            10**400,
            -(10**400),
            2**64,
            True,
            None,
            "0.5",
            1j,
            np.float32(0.5),
            np.longdouble("1e4000"),
            np.int64(3),
            np.uint64(2**64 - 1),
            np.nan,
            -np.inf,
            np.array(0.5),
            np.array([0.5]),
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
)

# Sides: small ones, and huge ones that are invalid by themselves.
SIDES = st.one_of(
    st.integers(-2, 40),
    st.sampled_from(
        [2**31 - 1, 2**31, 2**32, 2**63, 2**64, 10**30, 1.5, True, None, "3", np.int32(7)]
    ),
)
# Valid pairs often enough that the later arguments get checked too.
VALID_PAIRS = st.tuples(st.integers(1, 40), st.integers(1, 40))
PAIRS = st.one_of(
    VALID_PAIRS, st.tuples(SIDES, SIDES), st.lists(SIDES, max_size=3), NON_ARRAYS, arrays()
)

# --- samrt.masks: NMS and small regions -----------------------------------------------


@FUZZ_SETTINGS
@given(
    boxes=st.one_of(ANY_ARRAY, arrays(shape=st.tuples(st.integers(0, 6), st.just(4)))),
    scores=st.one_of(ANY_ARRAY, arrays(shape=st.tuples(st.integers(0, 6)))),
    idxs=st.one_of(ANY_ARRAY, arrays(shape=st.tuples(st.integers(0, 6)))),
    iou_threshold=SCALARS,
)
def test_batched_nms_raises_only_documented_errors(
    boxes: Any, scores: Any, idxs: Any, iou_threshold: Any
) -> None:
    call(samrt_masks.batched_nms, boxes, scores, idxs, iou_threshold)


MASK_SIDES = st.integers(0, 8)


@FUZZ_SETTINGS
@given(
    mask=st.one_of(ANY_ARRAY, arrays(shape=st.tuples(MASK_SIDES, MASK_SIDES))),
    masks=st.one_of(ANY_ARRAY, arrays(shape=st.tuples(st.integers(0, 3), MASK_SIDES, MASK_SIDES))),
    area_thresh=SCALARS,
    mode=st.one_of(st.sampled_from(["holes", "islands"]), st.text(max_size=8), NON_ARRAYS),
)
def test_small_regions_raise_only_documented_errors(
    mask: Any, masks: Any, area_thresh: Any, mode: Any
) -> None:
    call(samrt_masks.remove_small_regions, mask, area_thresh, mode)
    call(samrt_masks.remove_small_regions_batch, masks, area_thresh, mode)


# --- samrt.masks: RLE -----------------------------------------------------------------

RLE_SIDES = st.one_of(
    st.integers(-1, 8),
    st.sampled_from([65536, 2**32, 2**40, 2**64, 1.0, True, None, "4", np.int64(3), np.uint8(2)]),
)
COUNTS = st.one_of(
    st.binary(max_size=24),
    st.text(max_size=24),
    st.text(alphabet=[chr(c) for c in range(48, 112)], max_size=24),  # COCO's digit characters
    st.lists(st.integers(-3, 2**65), max_size=8),
    st.lists(st.integers(0, 20), max_size=8),
    arrays(shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=6)),
    NON_ARRAYS,
)


@st.composite
def valid_uncompressed(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed small RLE: the other tests' inputs then also reach the kernels."""
    h, w = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    cuts = sorted(draw(st.lists(st.integers(0, h * w), max_size=6)))
    counts = [b - a for a, b in zip([0, *cuts], [*cuts, h * w])]
    return {"size": [h, w], "counts": counts}


RLE_DICTS = st.one_of(
    st.fixed_dictionaries(
        {
            "size": st.one_of(st.lists(RLE_SIDES, max_size=3), st.tuples(RLE_SIDES, RLE_SIDES)),
            "counts": COUNTS,
        }
    ),
    st.fixed_dictionaries({"size": st.just([2, 3]), "counts": COUNTS}),
    valid_uncompressed(),
    valid_uncompressed().map(
        lambda rle: {**rle, "counts": samrt_masks.compress_rle(rle)["counts"]}
    ),
    st.sampled_from([{}, {"size": [1, 1]}, {"counts": b"1"}]),
)
RLES = st.one_of(
    RLE_DICTS,
    st.lists(RLE_DICTS, max_size=3),
    st.lists(RLE_DICTS, max_size=3).map(tuple),
    st.lists(RLE_DICTS, max_size=3).map(lambda items: np.array(items + [None], dtype=object)[:-1]),
    NON_ARRAYS,
)


@FUZZ_SETTINGS
@given(
    rles=RLES,
    other=RLES,
    iscrowd=st.one_of(st.none(), ANY_ARRAY, arrays(shape=st.tuples(st.integers(0, 3)))),
)
def test_rle_readers_raise_only_documented_errors(rles: Any, other: Any, iscrowd: Any) -> None:
    for reader in (
        samrt_masks.decode_rle,
        samrt_masks.rle_area,
        samrt_masks.rle_to_bbox,
        samrt_masks.compress_rle,
        samrt_masks.decompress_rle,
    ):
        call(reader, rles)
    call(samrt_masks.rle_iou, rles, other, iscrowd)


@FUZZ_SETTINGS
@given(
    masks=st.one_of(
        ANY_ARRAY, arrays(shape=hnp.array_shapes(min_dims=2, max_dims=3, min_side=0, max_side=7))
    )
)
def test_encode_rle_raises_only_documented_errors(masks: Any) -> None:
    encoded = call(samrt_masks.encode_rle, masks)
    if encoded is not None:
        call(samrt_masks.decode_rle, encoded)


# --- samrt.postprocess ----------------------------------------------------------------

LOW_RES_DTYPES = st.sampled_from(
    [np.float16, np.float32, np.float64, np.longdouble, np.int8, np.bool_, np.complex64]
)
LOW_RES = st.one_of(
    ANY_ARRAY,
    arrays(shape=st.tuples(st.integers(0, 2), st.just(256), st.just(256)), dtypes=LOW_RES_DTYPES),
    arrays(
        shape=st.tuples(st.integers(0, 2), st.just(256), st.just(256)), dtypes=st.just(np.float32)
    ),
    arrays(
        shape=st.tuples(st.integers(0, 2), st.integers(0, 2), st.just(256), st.just(256)),
        dtypes=LOW_RES_DTYPES,
    ),
)


@FUZZ_SETTINGS
@given(low_res=LOW_RES, input_size=PAIRS, original_size=PAIRS, threshold=SCALARS)
def test_upsampling_raises_only_documented_errors(
    low_res: Any, input_size: Any, original_size: Any, threshold: Any
) -> None:
    call(postprocess.upsample_logits, low_res, input_size, original_size)
    call(postprocess.upsample_masks, low_res, input_size, original_size, threshold)


@FUZZ_SETTINGS
@given(
    low_res=LOW_RES,
    input_size=PAIRS,
    original_size=PAIRS,
    threshold=SCALARS,
    stability_offset=SCALARS,
    crop_box=st.one_of(
        st.none(),
        st.none(),
        st.tuples(SIDES, SIDES, SIDES, SIDES),
        st.lists(SIDES, max_size=5),
        NON_ARRAYS,
    ),
    image_size=st.one_of(st.none(), st.none(), PAIRS),
    rle_min_stability=st.one_of(st.none(), SCALARS),
)
def test_masks_from_logits_raises_only_documented_errors(
    low_res: Any,
    input_size: Any,
    original_size: Any,
    threshold: Any,
    stability_offset: Any,
    crop_box: Any,
    image_size: Any,
    rle_min_stability: Any,
) -> None:
    call(
        postprocess.masks_from_logits,
        low_res,
        input_size,
        original_size,
        threshold=threshold,
        stability_offset=stability_offset,
        crop_box=crop_box,
        image_size=image_size,
        rle_min_stability=rle_min_stability,
    )


# --- regressions ----------------------------------------------------------------------

LOGITS = np.zeros((1, 256, 256), np.float32)


def test_threshold_beyond_float_range_is_value_error_not_overflow_error() -> None:
    """float(10**400) raises OverflowError: numeric arguments past the float64 range
    escaped as OverflowError instead of the documented ValueError."""
    huge = 10**400
    with pytest.raises(ValueError, match="iou_threshold"):
        samrt_masks.batched_nms(np.zeros((1, 4)), [1.0], [0], huge)
    with pytest.raises(ValueError, match="area_thresh"):
        samrt_masks.remove_small_regions(np.zeros((2, 2), bool), huge, "holes")
    with pytest.raises(ValueError, match="area_thresh"):
        samrt_masks.remove_small_regions_batch(np.zeros((1, 2, 2), bool), -huge, "islands")
    with pytest.raises(ValueError, match="threshold"):
        postprocess.upsample_masks(LOGITS, (4, 4), (4, 4), threshold=huge)
    with pytest.raises(ValueError, match="stability_offset"):
        postprocess.masks_from_logits(LOGITS, (4, 4), (4, 4), stability_offset=-huge)
    with pytest.raises(ValueError, match="rle_min_stability"):
        postprocess.masks_from_logits(LOGITS, (4, 4), (4, 4), rle_min_stability=huge)
