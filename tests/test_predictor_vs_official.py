"""samrt.Predictor against the official segment_anything.SamPredictor on the same weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from tolerances import (
    PARITY_EMBEDDING_ATOL_REL,
    PARITY_LOGITS_ATOL_REL,
    PARITY_LOW_RES_ATOL_REL,
    PARITY_MIN_MASK_IOU,
    PARITY_SCORE_ATOL,
)

import samrt


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


class Pair:
    """The official predictor and ours, with the same image set."""

    def __init__(self, model: Any, image: np.ndarray, image_format: str = "RGB") -> None:
        self.official = SamPredictor(model.official_sam())
        self.ours = samrt.Predictor(model.engine_dir, backend="onnxruntime-cpu")
        with torch.no_grad():
            self.official.set_image(image, image_format)
        self.ours.set_image(image, image_format)

    def compare(self, **prompt: Any) -> tuple[Any, Any]:
        with torch.no_grad():
            theirs = self.official.predict(**prompt)
        ours = self.ours.predict(**prompt)
        assert_same_prediction(ours, theirs, logits=prompt.get("return_logits", False))
        return ours, theirs


def assert_same_prediction(ours: Any, theirs: Any, *, logits: bool) -> None:
    masks, scores, low_res = ours
    o_masks, o_scores, o_low_res = (np.asarray(x) for x in theirs)
    assert masks.shape == o_masks.shape
    assert scores.shape == o_scores.shape and low_res.shape == o_low_res.shape
    np.testing.assert_allclose(scores, o_scores, atol=PARITY_SCORE_ATOL)
    scale = max(1.0, float(np.abs(o_low_res).max()))
    np.testing.assert_allclose(low_res, o_low_res, atol=PARITY_LOW_RES_ATOL_REL * scale)
    if logits:
        assert masks.dtype == np.float32
        np.testing.assert_allclose(masks, o_masks, atol=PARITY_LOGITS_ATOL_REL * scale)
        masks, o_masks = masks > 0, o_masks > 0
    else:
        assert masks.dtype == np.bool_
    for ours_mask, official_mask in zip(masks, o_masks):
        assert mask_iou(ours_mask, official_mask) >= PARITY_MIN_MASK_IOU


@pytest.fixture(scope="module")
def truck(sample_image: Callable[[str], np.ndarray]) -> np.ndarray:
    return sample_image("truck.jpg")


@pytest.fixture(scope="module")
def truck_pair(tiny_model: Any, truck: np.ndarray) -> Pair:
    return Pair(tiny_model, truck)


def test_embedding_matches_official(truck_pair: Pair) -> None:
    ours = truck_pair.ours.get_image_embedding()
    theirs = truck_pair.official.get_image_embedding().numpy()
    assert ours.shape == theirs.shape == (1, 256, 64, 64)
    np.testing.assert_allclose(
        ours, theirs, atol=PARITY_EMBEDDING_ATOL_REL * float(np.abs(theirs).max())
    )
    assert truck_pair.ours.input_size == truck_pair.official.input_size
    assert truck_pair.ours.original_size == truck_pair.official.original_size


@pytest.mark.parametrize("multimask_output", [True, False])
def test_single_foreground_point(truck_pair: Pair, multimask_output: bool) -> None:
    (masks, scores, low_res), _ = truck_pair.compare(
        point_coords=np.array([[500.0, 375.0]]), point_labels=np.array([1]), multimask_output=multimask_output
    )
    n = 3 if multimask_output else 1
    assert masks.shape == (n, 1200, 1800) and scores.shape == (n,) and low_res.shape == (n, 256, 256)


def test_foreground_and_background_points(truck_pair: Pair) -> None:
    truck_pair.compare(point_coords=np.array([[500, 375], [1125, 625]]), point_labels=np.array([1, 0]))


def test_box(truck_pair: Pair) -> None:
    truck_pair.compare(box=np.array([425, 600, 700, 875]), multimask_output=False)


def test_box_and_points(truck_pair: Pair) -> None:
    truck_pair.compare(
        point_coords=np.array([[575, 750]]), point_labels=np.array([0]), box=np.array([425, 600, 700, 875])
    )


def test_mask_input_from_previous_call(truck_pair: Pair) -> None:
    (_, scores, low_res), _ = truck_pair.compare(point_coords=np.array([[500, 375]]), point_labels=np.array([1]))
    best = low_res[int(np.argmax(scores))][None]
    truck_pair.compare(
        point_coords=np.array([[500, 375], [1125, 625]]),
        point_labels=np.array([1, 1]),
        mask_input=best,
        multimask_output=False,
    )


def test_mask_input_alone(truck_pair: Pair) -> None:
    # The official model takes a mask with no points or box (the prompt encoder's
    # sparse tokens are then empty); a refinement tool re-sends the previous mask alone.
    (_, scores, low_res), _ = truck_pair.compare(point_coords=np.array([[500, 375]]), point_labels=np.array([1]))
    truck_pair.compare(mask_input=low_res[int(np.argmax(scores))][None])


def test_no_prompt_at_all(truck_pair: Pair) -> None:
    # No points, box or mask: the official decoder answers from its learned tokens alone.
    truck_pair.compare()


def test_return_logits(truck_pair: Pair) -> None:
    truck_pair.compare(point_coords=np.array([[900, 300]]), point_labels=np.array([1]), return_logits=True)


def test_bgr_input(tiny_model: Any, truck: np.ndarray) -> None:
    Pair(tiny_model, np.ascontiguousarray(truck[..., ::-1]), "BGR").compare(
        point_coords=np.array([[500, 375]]), point_labels=np.array([1])
    )


def test_portrait_image(tiny_model: Any, sample_image: Callable[[str], np.ndarray]) -> None:
    portrait = np.ascontiguousarray(np.rot90(sample_image("dog.jpg")))
    assert portrait.shape[0] > portrait.shape[1]
    Pair(tiny_model, portrait).compare(point_coords=np.array([[200, 500]]), point_labels=np.array([1]))


def test_batched_prompts_match_single_calls(truck_pair: Pair) -> None:
    points = np.array([[[500.0, 375.0]], [[1125.0, 625.0]], [[200.0, 900.0]]])
    labels = np.ones((3, 1))
    masks, scores, low_res = truck_pair.ours.predict_batch(points, labels)
    assert masks.shape == (3, 3, 1200, 1800)
    for i in range(3):
        one = truck_pair.ours.predict(points[i], labels[i])
        np.testing.assert_allclose(scores[i], one[1], atol=1e-5)
        np.testing.assert_allclose(low_res[i], one[2], atol=1e-4)


def test_saved_embedding_gives_same_prediction(tiny_model: Any, truck_pair: Pair) -> None:
    other = samrt.Predictor(truck_pair.ours.model)
    other.set_image_embedding(truck_pair.ours.get_image_embedding(), truck_pair.ours.original_size)
    prompt = dict(point_coords=np.array([[500, 375]]), point_labels=np.array([1]))
    a, b = truck_pair.ours.predict(**prompt), other.predict(**prompt)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_image_state_moves_between_predictors_of_one_model(truck_pair: Pair) -> None:
    state = truck_pair.ours.image_state
    # The embedding and the decoder's per-image projections, all counted.
    assert state.nbytes == sum(t.nbytes for t in state.tensors.values())
    assert state.nbytes > truck_pair.ours.get_image_embedding().nbytes
    other = samrt.Predictor(truck_pair.ours.model)
    other.set_image_state(state)
    assert other.original_size == truck_pair.ours.original_size
    assert other.input_size == truck_pair.ours.input_size
    prompt = dict(point_coords=np.array([[500, 375]]), point_labels=np.array([1]))
    for x, y in zip(truck_pair.ours.predict(**prompt), other.predict(**prompt)):
        np.testing.assert_array_equal(x, y)


def test_image_state_of_another_model_is_refused(tiny_model: Any, truck_pair: Pair) -> None:
    stranger = samrt.Predictor(samrt.Model(tiny_model.engine_dir))
    with pytest.raises(ValueError, match="another Model"):
        stranger.set_image_state(truck_pair.ours.image_state)
    with pytest.raises(TypeError, match="ImageState"):
        stranger.set_image_state(truck_pair.ours.get_image_embedding())  # type: ignore[arg-type]
