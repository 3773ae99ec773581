"""The exporter's graph modules, in PyTorch, against the official segment_anything modules.

EncoderGraph and the decoder (samrt_export.decoder) rearrange the official computation for
ONNX Runtime; these tests pin the rearrangement itself, before any export, on the tiny
architecture (its encoder has a padded windowed block and a global block; its prompt
encoder and mask decoder are the official full-size ones).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from samrt import contract
from samrt_export import encoder, graphs
from samrt_export.encoder import EncoderGraph
from samrt_export.models import build_sam

# Float reordering only; measured ~2e-6 (encoder) and ~1e-6 (decoder).
RELATIVE_TOLERANCE = 1e-4


def relative_max_diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.fixture(scope="module")
def sam() -> Any:
    return build_sam("tiny", seed=3)


@pytest.mark.parametrize("heads_per_group", [1, 2], ids=["heads-in-groups", "all-heads-at-once"])
def test_encoder_graph_matches_official_image_encoder(
    sam: Any, heads_per_group: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The global block's heads run in groups for vit_b and larger (one group for tiny's
    two heads unless the budget is cut to one head's scores)."""
    seq = (contract.IMAGE_SIZE // 16) ** 2
    monkeypatch.setattr(encoder, "MAX_SCORE_BYTES_PER_IMAGE", heads_per_group * 4 * seq * seq)
    images = torch.randn(2, 3, contract.IMAGE_SIZE, contract.IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = sam.image_encoder(images)
        got = EncoderGraph(sam.image_encoder)(images)
    assert got.shape == expected.shape
    assert relative_max_diff(got, expected) <= RELATIVE_TOLERANCE


def test_decoder_graph_matches_official_for_a_batch_mixing_prompt_kinds(sam: Any) -> None:
    """One call with point prompts, a box prompt and mask inputs on some prompts only (the
    first layer shares the image-side work between prompts and adds the mask terms per
    prompt), against the official prompt encoder + mask decoder one prompt at a time."""
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(1)
    embeddings = torch.randn(1, 256, 64, 64, generator=generator)
    masks_in = torch.randn(4, 1, 256, 256, generator=generator) * 4
    has_mask = torch.tensor([0.0, 1.0, 0.0, 1.0])
    # Prompts 0, 1: two points each (foreground, background) + the padding point;
    # prompts 2, 3: a box (corners labelled 2, 3) after a padding-free point pair.
    points = torch.as_tensor(rng.uniform(0, 1023, size=(4, 2, 2)), dtype=torch.float32)
    boxes = torch.tensor([[100.0, 120.0, 700.0, 500.0], [30.0, 400.0, 900.0, 1000.0]])
    coords = torch.cat(
        [
            torch.cat([points[:2], torch.zeros(2, 1, 2)], dim=1),
            torch.cat([points[2:, :1], boxes.reshape(2, 2, 2)], dim=1),
        ]
    )
    labels = torch.tensor([[1.0, 0.0, -1.0], [1.0, 1.0, -1.0], [0.0, 2.0, 3.0], [1.0, 2.0, 3.0]])

    with torch.no_grad():
        image_side = graphs.DecoderImageGraph(sam)(embeddings)
        iou, weights, tokens = graphs.DecoderPromptsGraph(sam)(
            *image_side, coords, labels, masks_in, has_mask
        )
        low_res = graphs.DecoderMasksGraph(sam)(tokens, weights)
        # decoder_masks makes the masks it is given weights for: the multimask three alone.
        multimask = graphs.DecoderMasksGraph(sam)(tokens, weights[:, 1:])
        # Equal up to float rounding, not bit for bit: a product with 3 columns instead of 4
        # may take another BLAS kernel (bug: torch.equal failed on an AMD EPYC, passed on a Xeon).
        torch.testing.assert_close(multimask, low_res[:, 1:], rtol=1e-5, atol=1e-6)
        for i in range(4):
            if i < 2:
                prompt: dict[str, Any] = {"points": (points[i : i + 1], labels[i : i + 1, :2]), "boxes": None}
            else:
                prompt = {"points": (points[i : i + 1, :1], labels[i : i + 1, :1]), "boxes": boxes[i - 2 : i - 1]}
            sparse, dense = sam.prompt_encoder(masks=masks_in[i : i + 1] if has_mask[i] else None, **prompt)
            want_masks, want_iou = sam.mask_decoder.predict_masks(
                image_embeddings=embeddings,
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
            )
            assert relative_max_diff(low_res[i : i + 1], want_masks) <= RELATIVE_TOLERANCE, i
            assert relative_max_diff(iou[i : i + 1], want_iou) <= RELATIVE_TOLERANCE, i
