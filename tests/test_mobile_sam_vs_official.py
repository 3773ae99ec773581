"""MobileSAM against its official code on the same seeded weights.

The oracle is MobileSAM's TinyViT as the official mobile_sam module defines it (the copy
that samexporter packages; MobileSAM itself is not on the package registry) with
segment_anything's prompt encoder, mask decoder, SamPredictor and SamAutomaticMaskGenerator,
which MobileSAM uses unchanged.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import samrt
from models import ExportedMobileSamModel, official_tiny_vit_class

torch = pytest.importorskip("torch")
samrt_export = pytest.importorskip("samrt_export")
from samrt_export.config import MOBILE_SAM_CONFIG, MOBILE_SAM_TINY_CONFIG
from samrt_export.models import build_sam
from test_amg_vs_official import REAL_MODEL_PARAMS, _downscaled, assert_records_match
from test_predictor_vs_official import Pair


def official_encoder(config: Any, state: dict[str, Any]) -> Any:
    tiny_vit = official_tiny_vit_class()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its learning-rate scales
        encoder = tiny_vit(
            img_size=1024,
            num_classes=1000,
            embed_dims=list(config.embed_dims),
            depths=list(config.depths),
            num_heads=list(config.num_heads),
            window_sizes=list(config.window_sizes),
            drop_path_rate=0.0,
            layer_lr_decay=0.8,
        )
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


@pytest.mark.parametrize(
    "config", [MOBILE_SAM_TINY_CONFIG, MOBILE_SAM_CONFIG], ids=["tiny_test", "mobile_sam"]
)
def test_encoder_matches_official_tiny_vit(config: Any) -> None:
    # The official module layout, parameter for parameter (strict load both ways), and its
    # numbers: a seeded model has random window biases and BatchNorm statistics, so every
    # path (padded windows, the unpadded 7x7 grid aside, MBConv, merging strides) counts.
    ours = build_sam(config, seed=3).image_encoder
    theirs = official_encoder(config, ours.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    image = torch.randn(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = theirs(image)
        actual = ours(image)
    assert actual.shape == expected.shape == (2, 256, 64, 64)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_checkpoint_without_the_unused_head_loads(tmp_path: Any) -> None:
    # The classifier head (norm_head, head) is in the official checkpoint but never runs;
    # a checkpoint stripped of it exports the same encoder.
    sam = build_sam("mobile_sam_tiny_test", seed=0)
    state = {
        k: v for k, v in sam.state_dict().items() if ".head." not in k and "norm_head" not in k
    }
    assert len(state) < len(sam.state_dict())
    path = tmp_path / "stripped.pt"
    torch.save(state, path)
    loaded = build_sam("mobile_sam_tiny_test", checkpoint=path)
    image = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.image_encoder(image), sam.image_encoder(image))


@pytest.fixture(scope="module")
def truck(sample_image: Callable[[str], np.ndarray]) -> np.ndarray:
    return sample_image("truck.jpg")


@pytest.fixture(scope="module")
def mobile_pair(tiny_mobile_sam_model: ExportedMobileSamModel, truck: np.ndarray) -> Pair:
    return Pair(tiny_mobile_sam_model, truck)


def test_manifest_records_mobile_sam(tiny_mobile_sam_model: ExportedMobileSamModel) -> None:
    model = samrt.Model(tiny_mobile_sam_model.engine_dir)
    assert model.manifest.family == "sam"
    assert model.manifest.model_type == "mobile_sam_tiny_test"
    assert model.manifest.model_config == {**MOBILE_SAM_TINY_CONFIG.to_json()}


def test_embedding_matches_official(mobile_pair: Pair) -> None:
    ours = mobile_pair.ours.get_image_embedding()
    theirs = mobile_pair.official.get_image_embedding().numpy()
    assert ours.shape == theirs.shape == (1, 256, 64, 64)
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * float(np.abs(theirs).max()))


@pytest.mark.parametrize("multimask_output", [True, False])
def test_point(mobile_pair: Pair, multimask_output: bool) -> None:
    (masks, _, _), _ = mobile_pair.compare(
        point_coords=np.array([[500.0, 375.0]]),
        point_labels=np.array([1]),
        multimask_output=multimask_output,
    )
    assert masks.shape == (3 if multimask_output else 1, 1200, 1800)


def test_foreground_and_background_points(mobile_pair: Pair) -> None:
    mobile_pair.compare(
        point_coords=np.array([[500, 375], [1125, 625]]), point_labels=np.array([1, 0])
    )


def test_box(mobile_pair: Pair) -> None:
    mobile_pair.compare(box=np.array([425, 600, 700, 875]), multimask_output=False)


def test_box_and_points(mobile_pair: Pair) -> None:
    mobile_pair.compare(
        point_coords=np.array([[575, 750]]),
        point_labels=np.array([0]),
        box=np.array([425, 600, 700, 875]),
    )


def test_mask_input_from_previous_call(mobile_pair: Pair) -> None:
    (_, scores, low_res), _ = mobile_pair.compare(
        point_coords=np.array([[500, 375]]), point_labels=np.array([1])
    )
    mobile_pair.compare(
        point_coords=np.array([[500, 375], [1125, 625]]),
        point_labels=np.array([1, 1]),
        mask_input=low_res[int(np.argmax(scores))][None],
        multimask_output=False,
    )


def test_everything_mode_matches_official(
    tiny_mobile_sam_model: ExportedMobileSamModel, sample_image: Callable[[str], np.ndarray]
) -> None:
    from segment_anything import SamAutomaticMaskGenerator

    params = {**REAL_MODEL_PARAMS, "points_per_side": 4}
    image = _downscaled(sample_image("dog.jpg"), 6)
    ours = samrt.AutomaticMaskGenerator(samrt.Model(tiny_mobile_sam_model.engine_dir), **params)
    theirs = SamAutomaticMaskGenerator(tiny_mobile_sam_model.official_sam(), **params)
    records = ours.generate(image)
    assert len(records) == 3 * params["points_per_side"] ** 2
    assert_records_match(records, theirs.generate(image))


@pytest.mark.slow
def test_mobile_sam_architecture_matches_official(
    mobile_sam_model: ExportedMobileSamModel, truck: np.ndarray
) -> None:
    pair = Pair(mobile_sam_model, truck)
    theirs = pair.official.get_image_embedding().numpy()
    np.testing.assert_allclose(
        pair.ours.get_image_embedding(), theirs, atol=1e-4 * float(np.abs(theirs).max())
    )
    pair.compare(point_coords=np.array([[500, 375]]), point_labels=np.array([1]))
    pair.compare(point_coords=np.array([[500, 375], [1125, 625]]), point_labels=np.array([1, 0]))
    pair.compare(box=np.array([425, 600, 700, 875]), multimask_output=False)
