"""samrt_export: engine directories, checked against the official segment_anything model.

The parity tests run the exported graphs in ONNX Runtime and the official SamPredictor
(same checkpoint, built by segment_anything itself) on a real photo and compare.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import samrt_export
import torch
from samrt import checkpoints, contract
from samrt.errors import EngineDirError
from samrt.manifest import load_manifest, sha256_file
from samrt_export import ExportCheckError, ExportError, cli, export_engine, graphs
from samrt_export import check as export_check_module
from samrt_export.check import DecoderSessions
from segment_anything import SamPredictor

# fp32 ONNX Runtime vs PyTorch: float reordering only (measured ~1e-6 on the tiny model).
RELATIVE_TOLERANCE = 1e-4


def relative_max_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def engine_sessions(tiny_model: Any) -> tuple[ort.InferenceSession, DecoderSessions]:
    """The encoder's session and the decoder's three, chained as the runtime chains them."""
    return (
        session(tiny_model.engine_dir / contract.ENCODER_FILE),
        DecoderSessions.of_engine(tiny_model.engine_dir),
    )


@pytest.fixture(scope="module")
def truck_predictor(tiny_model: Any, sample_image: Any) -> tuple[SamPredictor, np.ndarray]:
    """The official predictor, built by segment_anything from the tiny checkpoint, with truck.jpg set."""
    predictor = SamPredictor(tiny_model.official_sam())
    image = sample_image("truck.jpg")
    predictor.set_image(image)
    return predictor, image


def graph_inputs(
    features: np.ndarray,
    *,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    mask_input: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Decoder inputs laid out by the contract: points, then box corners or (after points)
    one padding point; no points and no box, no point."""
    count = next((a.shape[0] for a in (points, boxes, mask_input) if a is not None), 1)
    coords = [np.zeros((count, 0, 2))] if points is None else [points]
    point_labels = [np.zeros((count, 0))] if labels is None else [labels]
    if boxes is None:
        if points is not None:
            coords.append(np.zeros((count, 1, 2)))
            point_labels.append(np.full((count, 1), -1.0))
    else:
        coords.append(boxes.reshape(count, 2, 2))
        point_labels.append(np.tile([2.0, 3.0], (count, 1)))
    size = contract.LOW_RES_SIZE
    return {
        "image_embeddings": features.astype(np.float32),
        "point_coords": np.concatenate(coords, axis=1).astype(np.float32),
        "point_labels": np.concatenate(point_labels, axis=1).astype(np.float32),
        "mask_input": (
            np.zeros((count, 1, size, size)) if mask_input is None else mask_input
        ).astype(np.float32),
        "has_mask_input": np.full(count, 0.0 if mask_input is None else 1.0, np.float32),
    }


# ---------------------------------------------------------------------------------------
# Engine directory and manifest


def test_tiny_export_writes_a_complete_engine_directory(tiny_model: Any) -> None:
    manifest = load_manifest(tiny_model.engine_dir)
    raw = json.loads((tiny_model.engine_dir / contract.MANIFEST_FILE).read_text())
    sam = tiny_model.official_sam()

    assert raw["format_version"] == contract.MANIFEST_FORMAT_VERSION
    assert manifest.model_type == "custom"
    assert manifest.model_config == {
        "encoder_embed_dim": 32,
        "encoder_depth": 2,
        "encoder_num_heads": 2,
        "encoder_global_attn_indexes": [1],
    }
    assert manifest.image_size == contract.IMAGE_SIZE
    assert manifest.pixel_mean == pytest.approx(sam.pixel_mean.flatten().tolist())
    assert manifest.pixel_std == pytest.approx(sam.pixel_std.flatten().tolist())
    assert manifest.pixel_mean == pytest.approx(contract.PIXEL_MEAN)
    assert manifest.mask_threshold == contract.MASK_THRESHOLD
    assert manifest.opset >= 17
    assert manifest.source == {
        "checkpoint": tiny_model.checkpoint.name,
        "sha256": sha256_file(tiny_model.checkpoint),
    }
    import samrt

    assert manifest.samrt_version == samrt.__version__

    assert manifest.family == "sam"
    for role in contract.ROLES:
        model = manifest.model(role)
        assert model.file == contract.GRAPH_FILES[role]
        assert model.external_data == {}
        assert model.sha256 == sha256_file(tiny_model.engine_dir / model.file)
        inputs, outputs = contract.GRAPH_IO[role]
        assert [t.name for t in model.inputs] == list(inputs)
        assert [t.name for t in model.outputs] == list(outputs)
    assert manifest.model("decoder_masks").outputs[0].shape == ("P", "M", 256, 256)
    assert manifest.model("decoder_prompts").outputs[0].shape == ("P", 4)
    assert sorted(p.name for p in tiny_model.engine_dir.iterdir()) == sorted(
        [contract.MANIFEST_FILE, *contract.GRAPH_FILES.values()]
    )

    check = manifest.export_check
    assert 0 < check["encoder_max_rel_diff"] <= export_check_module.ENCODER_TOLERANCE
    assert check["decoder_masks_max_rel_diff"] <= export_check_module.DECODER_TOLERANCE
    assert check["decoder_iou_max_rel_diff"] <= export_check_module.DECODER_TOLERANCE


def test_graph_interfaces_match_the_manifest(tiny_model: Any) -> None:
    manifest = load_manifest(tiny_model.engine_dir)
    for role in contract.ROLES:
        declared = manifest.model(role)
        sess = session(tiny_model.engine_dir / declared.file)
        got = [(i.name, i.type, list(i.shape)) for i in sess.get_inputs()]
        want = [(t.name, "tensor(float)", list(t.shape)) for t in declared.inputs]
        assert got == want
        got = [(o.name, o.type, list(o.shape)) for o in sess.get_outputs()]
        want = [(t.name, "tensor(float)", list(t.shape)) for t in declared.outputs]
        assert got == want


@pytest.mark.parametrize("victim", list(contract.GRAPH_FILES.values()))
def test_load_manifest_refuses_a_corrupted_or_missing_file(
    tiny_model: Any, tmp_path: Path, victim: str
) -> None:
    engine = tmp_path / "engine"
    shutil.copytree(tiny_model.engine_dir, engine)
    with open(engine / victim, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(EngineDirError, match="sha256"):
        load_manifest(engine)
    (engine / victim).unlink()
    with pytest.raises(EngineDirError, match="missing"):
        load_manifest(engine)


# ---------------------------------------------------------------------------------------
# Parity with the official segment_anything model


def test_encoder_matches_official_segment_anything(
    truck_predictor: tuple[SamPredictor, np.ndarray], engine_sessions: Any
) -> None:
    predictor, image = truck_predictor
    resized = predictor.transform.apply_image(image)
    pixels = torch.as_tensor(resized).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        encoder_input = predictor.model.preprocess(pixels).numpy()
    (embeddings,) = engine_sessions[0].run(None, {"image": encoder_input})
    expected = predictor.features.numpy()
    assert embeddings.shape == expected.shape == (1, 256, 64, 64)
    assert relative_max_diff(embeddings, expected) <= RELATIVE_TOLERANCE


# Prompts in the original 1800x1200 image's pixels (the truck notebook's window and tyre).
DECODER_CASES: dict[str, dict[str, Any]] = {
    "single_point": {"points": [[[500, 375]]], "labels": [[1]]},
    "point_and_background": {"points": [[[500, 375], [1125, 625]]], "labels": [[1, 0]]},
    "box": {"boxes": [[425, 600, 700, 875]]},
    "box_and_points": {
        "points": [[[575, 750], [450, 700]]],
        "labels": [[0, 1]],
        "boxes": [[425, 600, 700, 875]],
    },
    "several_prompts_with_padding": {
        "points": [[[500, 375], [1125, 625]], [[575, 750], [1500, 800]], [[100, 100], [900, 1100]]],
        "labels": [[1, 0], [1, 1], [1, 0]],
    },
    "several_boxes_and_points": {
        "points": [[[575, 750]], [[1300, 500]]],
        "labels": [[0], [1]],
        "boxes": [[425, 600, 700, 875], [1100, 250, 1750, 900]],
    },
}


def _official_and_onnx(
    predictor: SamPredictor,
    decoder: DecoderSessions,
    case: dict[str, Any],
    mask_input: np.ndarray | None = None,
    multimask_output: bool = True,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((official iou, official low-res), (onnx iou, onnx low-res)) for one prompt set."""
    size = predictor.original_size
    points = labels = boxes = None
    if "points" in case:
        points = predictor.transform.apply_coords(np.asarray(case["points"], np.float64), size)
        labels = np.asarray(case["labels"], np.float64)
    if "boxes" in case:
        boxes = predictor.transform.apply_boxes(np.asarray(case["boxes"], np.float64), size)

    def tensor(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.as_tensor(a, dtype=torch.float32)

    _, iou, low_res = predictor.predict_torch(
        tensor(points),
        tensor(labels),
        boxes=tensor(boxes),
        mask_input=tensor(mask_input),
        multimask_output=multimask_output,
        return_logits=True,
    )
    feeds = graph_inputs(
        predictor.features.numpy(), points=points, labels=labels, boxes=boxes, mask_input=mask_input
    )
    got_iou, got_masks = decoder.run(feeds)
    return (iou.numpy(), low_res.numpy()), (got_iou, got_masks)


@pytest.mark.parametrize("case", sorted(DECODER_CASES))
def test_decoder_matches_official_segment_anything(
    truck_predictor: tuple[SamPredictor, np.ndarray], engine_sessions: Any, case: str
) -> None:
    predictor, _ = truck_predictor
    (iou, low_res), (got_iou, got_masks) = _official_and_onnx(
        predictor, engine_sessions[1], DECODER_CASES[case]
    )
    prompts = low_res.shape[0]
    assert got_iou.shape == (prompts, 4) and got_masks.shape == (prompts, 4, 256, 256)
    # Masks 1..3 are the multimask outputs.
    assert relative_max_diff(got_iou[:, 1:], iou) <= RELATIVE_TOLERANCE
    assert relative_max_diff(got_masks[:, 1:], low_res) <= RELATIVE_TOLERANCE


@pytest.mark.parametrize("case", ["single_point", "box_and_points"])
def test_decoder_mask_zero_is_official_single_mask_output(
    truck_predictor: tuple[SamPredictor, np.ndarray], engine_sessions: Any, case: str
) -> None:
    predictor, _ = truck_predictor
    (iou, low_res), (got_iou, got_masks) = _official_and_onnx(
        predictor, engine_sessions[1], DECODER_CASES[case], multimask_output=False
    )
    assert relative_max_diff(got_iou[:, :1], iou) <= RELATIVE_TOLERANCE
    assert relative_max_diff(got_masks[:, :1], low_res) <= RELATIVE_TOLERANCE


def test_decoder_with_mask_input_matches_official_segment_anything(
    truck_predictor: tuple[SamPredictor, np.ndarray], engine_sessions: Any
) -> None:
    predictor, _ = truck_predictor
    case = DECODER_CASES["point_and_background"]
    # Feed back the best previous low-res logits, as SAM's interactive refinement does.
    (iou, low_res), _ = _official_and_onnx(predictor, engine_sessions[1], case)
    previous = low_res[:, [int(np.argmax(iou[0]))]]
    (iou, low_res), (got_iou, got_masks) = _official_and_onnx(
        predictor, engine_sessions[1], case, mask_input=previous
    )
    assert relative_max_diff(got_iou[:, 1:], iou) <= RELATIVE_TOLERANCE
    assert relative_max_diff(got_masks[:, 1:], low_res) <= RELATIVE_TOLERANCE
    # The mask input must matter, or has_mask_input=1 would be indistinguishable from 0.
    feeds = graph_inputs(
        predictor.features.numpy(),
        points=predictor.transform.apply_coords(
            np.asarray(case["points"], float), predictor.original_size
        ),
        labels=np.asarray(case["labels"], float),
    )
    _, without_mask = engine_sessions[1].run(feeds)
    assert np.max(np.abs(without_mask - got_masks)) > 1e-3


@pytest.mark.parametrize("with_mask", [False, True], ids=["no_prompt", "mask_input_alone"])
def test_decoder_without_points_or_box_matches_official_segment_anything(
    truck_predictor: tuple[SamPredictor, np.ndarray], engine_sessions: Any, with_mask: bool
) -> None:
    """The official prompt encoder takes no points and no box (a mask input alone, or
    nothing): the output tokens alone go through the transformer."""
    predictor, _ = truck_predictor
    previous = None
    if with_mask:
        (iou, low_res), _ = _official_and_onnx(predictor, engine_sessions[1], DECODER_CASES["box"])
        previous = low_res[:, [int(np.argmax(iou[0]))]]
    (iou, low_res), (got_iou, got_masks) = _official_and_onnx(
        predictor, engine_sessions[1], {}, mask_input=previous
    )
    assert got_masks.shape == (1, 4, 256, 256)
    assert relative_max_diff(got_iou[:, 1:], iou) <= RELATIVE_TOLERANCE
    assert relative_max_diff(got_masks[:, 1:], low_res) <= RELATIVE_TOLERANCE


# ---------------------------------------------------------------------------------------
# Dynamic shapes


def test_encoder_batch_dimension_is_dynamic(engine_sessions: Any) -> None:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 3, 1024, 1024)).astype(np.float32)
    (batched,) = engine_sessions[0].run(None, {"image": images})
    assert batched.shape == (2, 256, 64, 64)
    for i in range(2):
        (single,) = engine_sessions[0].run(None, {"image": images[i : i + 1]})
        assert relative_max_diff(batched[i : i + 1], single) <= RELATIVE_TOLERANCE


@pytest.mark.parametrize(("prompts", "points"), [(1, 1), (3, 2), (64, 5), (1, 5), (3, 1)])
def test_decoder_prompt_and_point_dimensions_are_dynamic(
    engine_sessions: Any, prompts: int, points: int
) -> None:
    rng = np.random.default_rng(prompts * 10 + points)
    features = rng.normal(size=(1, 256, 64, 64)).astype(np.float32)
    feeds = graph_inputs(
        features,
        points=rng.uniform(0, 1023, size=(prompts, points, 2)),
        labels=rng.integers(0, 2, size=(prompts, points)).astype(float),
        mask_input=rng.normal(size=(prompts, 1, 256, 256)),
    )
    feeds["has_mask_input"] = (np.arange(prompts) % 2).astype(np.float32)
    iou, masks = engine_sessions[1].run(feeds)
    assert iou.shape == (prompts, 4) and masks.shape == (prompts, 4, 256, 256)
    assert np.isfinite(masks).all()
    # Prompts are independent: the last one alone gives the same result as within the batch.
    last = {k: (v if k == "image_embeddings" else v[-1:]) for k, v in feeds.items()}
    iou_last, masks_last = engine_sessions[1].run(last)
    assert relative_max_diff(masks[-1:], masks_last) <= RELATIVE_TOLERANCE
    assert relative_max_diff(iou[-1:], iou_last) <= RELATIVE_TOLERANCE


# ---------------------------------------------------------------------------------------
# Refusals, external data, arguments


def _perturb_after_tracing(monkeypatch: pytest.MonkeyPatch, role: str) -> None:
    """Changes the torch weights right after a graph is written, so ONNX no longer matches."""
    original = graphs.export_graph

    def export_then_perturb(module: Any, example: Any, spec: Any, out: Path, **kw: Any) -> Any:
        extra = original(module, example, spec, out, **kw)
        with torch.no_grad():
            if role == "encoder" and spec is graphs.ENCODER_SPEC:
                module.neck[-1].bias.add_(0.1)  # the final LayerNorm2d's shift
            if role == "decoder" and spec is graphs.DECODER_PROMPTS_SPEC:
                module.mask_decoder.iou_prediction_head.layers[-1].bias.add_(0.1)
        return extra

    monkeypatch.setattr(graphs, "export_graph", export_then_perturb)


@pytest.mark.parametrize(
    ("role", "measure"),
    [("encoder", "encoder_max_rel_diff"), ("decoder", "decoder_iou_max_rel_diff")],
)
def test_export_refuses_graphs_that_disagree_with_torch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, role: str, measure: str
) -> None:
    _perturb_after_tracing(monkeypatch, role)
    out = tmp_path / "engine"
    with pytest.raises(ExportCheckError, match=measure):
        export_engine("tiny", random_seed=0, out_dir=out)
    assert list(tmp_path.iterdir()) == [], "a refused export must leave nothing behind"


def test_external_data_is_written_hashed_and_loadable(
    tiny_model: Any, engine_sessions: Any, tmp_path: Path
) -> None:
    out = export_engine(
        "tiny",
        checkpoint=tiny_model.checkpoint,
        out_dir=tmp_path / "engine",
        external_data=True,
        check=False,
    )
    manifest = load_manifest(out)
    for role in contract.ROLES:
        model = manifest.model(role)
        data = model.file + ".data"
        assert model.external_data == {data: sha256_file(out / data)}
        # The graph file holds structure only; the weights are in the data file.
        import onnx

        graph = onnx.load(str(out / model.file), load_external_data=False).graph
        inline = [t.name for t in graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL and len(t.raw_data) > 1024]
        assert inline == [] and (out / data).stat().st_size > 0

    # Same weights as the fixture's inline export: identical outputs.
    rng = np.random.default_rng(3)
    image = rng.normal(size=(1, 3, 1024, 1024)).astype(np.float32)
    (with_data,) = session(out / "encoder.onnx").run(None, {"image": image})
    (inline,) = engine_sessions[0].run(None, {"image": image})
    np.testing.assert_allclose(with_data, inline, rtol=0, atol=1e-6)
    feeds = graph_inputs(inline, points=np.array([[[300.0, 200.0]]]), labels=np.array([[1.0]]))
    with_data_dec = DecoderSessions.of_engine(out).run(feeds)
    inline_dec = engine_sessions[1].run(feeds)
    for a, b in zip(with_data_dec, inline_dec, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)

    with open(out / "encoder.onnx.data", "r+b") as f:
        f.seek(64)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(EngineDirError, match="encoder.onnx.data"):
        load_manifest(out)


def test_export_needs_a_source_of_weights(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="--checkpoint FILE.*--random-weights"):
        export_engine("vit_b", out_dir=tmp_path / "e")
    with pytest.raises(ExportError, match="exactly one"):
        export_engine("tiny", checkpoint=tmp_path / "x.pth", random_seed=0, out_dir=tmp_path / "e")


def test_export_refuses_bad_requests(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        export_engine("tiny", random_seed=0, out_dir=tmp_path / "taken")
    with pytest.raises(ExportError, match="unknown model_type"):
        export_engine("vit_x", random_seed=0, out_dir=tmp_path / "e")
    with pytest.raises(ExportError, match="precision"):
        export_engine("tiny", random_seed=0, out_dir=tmp_path / "e", precision="int8")
    with pytest.raises(ExportError, match="does not exist"):
        export_engine("tiny", checkpoint=tmp_path / "missing.pth", out_dir=tmp_path / "e")
    vit_b_shaped = samrt_export.OFFICIAL_CONFIGS["vit_b"]
    with pytest.raises(ExportError, match="not the official vit_l"):
        export_engine("vit_l", config=vit_b_shaped, random_seed=0, out_dir=tmp_path / "e")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_checkpoint_of_another_architecture_is_refused(tiny_model: Any, tmp_path: Path) -> None:
    config = {
        "encoder_embed_dim": 64,
        "encoder_depth": 2,
        "encoder_num_heads": 2,
        "encoder_global_attn_indexes": [1],
    }
    with pytest.raises(ExportError, match="does not fit"):
        export_engine(
            "custom", config=config, checkpoint=tiny_model.checkpoint, out_dir=tmp_path / "e"
        )


# ---------------------------------------------------------------------------------------
# Random weights


def test_random_init_is_deterministic_and_loads_through_the_official_builder(
    tiny_model: Any, tmp_path: Path
) -> None:
    first = samrt_export.build_sam("tiny", seed=0).state_dict()
    again = samrt_export.build_sam(samrt_export.TINY_CONFIG, seed=0).state_dict()
    other = samrt_export.build_sam("tiny", seed=1).state_dict()
    official = tiny_model.official_sam().state_dict()  # segment_anything's own loader
    assert first.keys() == again.keys() == other.keys() == official.keys()
    for name in first:
        assert torch.equal(first[name], again[name]), name
        assert torch.equal(first[name], official[name]), name
    assert not torch.equal(
        first["mask_decoder.iou_token.weight"], other["mask_decoder.iou_token.weight"]
    )
    # The position tables the official init leaves at zero get seeded noise too.
    assert first["image_encoder.pos_embed"].abs().max() > 0
    assert first["image_encoder.blocks.1.attn.rel_pos_h"].abs().max() > 0

    state = torch.get_rng_state()
    samrt_export.save_random_checkpoint("tiny", 0, tmp_path / "ckpt.pth")
    assert torch.equal(torch.get_rng_state(), state), "seeding must not disturb the global RNG"
    assert sha256_file(tmp_path / "ckpt.pth") and list(tmp_path.iterdir()) == [
        tmp_path / "ckpt.pth"
    ]


# ---------------------------------------------------------------------------------------
# Command line


def test_cli_runs_export_engine_with_the_arguments(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_export(model_type: str, **kwargs: Any) -> Path:
        calls.append({"model_type": model_type, **kwargs})
        out = Path(kwargs["out_dir"])
        out.mkdir()
        (out / "manifest.json").write_text("{}")
        return out

    from samrt_export import export as export_module

    monkeypatch.setattr(export_module, "export_engine", fake_export)
    out = tmp_path / "engine"
    argv = [
        "--model-type",
        "tiny",
        "--random-weights",
        "--seed",
        "7",
        "--out",
        str(out),
        "--opset",
        "18",
    ]
    assert cli.main(argv) == 0
    # on_stage is the progress display's callback (None off a terminal's progress line).
    on_stage = calls[0].pop("on_stage")
    assert on_stage is None or callable(on_stage)
    assert calls == [
        {
            "model_type": "tiny",
            "out_dir": out,
            "checkpoint": None,
            "random_seed": 7,
            "opset": 18,
            "precision": "fp32",
            "overwrite": False,
        }
    ]
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith(f"exported tiny to {out}")


def test_cli_without_weights_explains_the_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # "tiny" has no official checkpoint to download.
    assert cli.main(["--model-type", "tiny", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "--random-weights" in err
    assert not (tmp_path / "e").exists()


def test_cli_download_offline_says_how_to_pass_a_checkpoint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Point the official vit_b entry at a refused local port: no traffic leaves the machine.
    monkeypatch.setitem(
        checkpoints.OFFICIAL_CHECKPOINTS,
        "vit_b",
        checkpoints.OfficialCheckpoint("http://127.0.0.1:9/sam_vit_b_01ec64.pth", "0" * 64),
    )
    monkeypatch.setenv("SAMRT_CACHE_DIR", str(tmp_path / "cache"))
    assert cli.main(["--model-type", "vit_b", "--out", str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no network" in err[0] and "--checkpoint FILE" in err[0]
    assert not (tmp_path / "e").exists()


def test_cli_reports_export_errors_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pth"
    assert (
        cli.main(
            ["--model-type", "vit_b", "--checkpoint", str(missing), "--out", str(tmp_path / "e")]
        )
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_cli_without_torch_says_what_to_install() -> None:
    # torch set to None in sys.modules makes `import torch` raise ImportError.
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from samrt_export.cli import main\n"
        "sys.exit(main(['--model-type', 'tiny', '--random-weights', '--out', 'unused']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'samrt[export]'" in lines[0], result.stderr


# ---------------------------------------------------------------------------------------
# Full-size and alternative paths


@pytest.mark.slow
def test_vit_b_random_export_matches_official_segment_anything(
    vit_b_model: Any, sample_image: Any
) -> None:
    manifest = load_manifest(vit_b_model.engine_dir)
    assert manifest.model_type == "vit_b"
    assert manifest.model_config["encoder_global_attn_indexes"] == [2, 5, 8, 11]
    assert manifest.model("encoder").external_data == {}  # ~360 MB stays inline
    predictor = SamPredictor(vit_b_model.official_sam())
    image = sample_image("dog.jpg")
    predictor.set_image(image)
    resized = predictor.transform.apply_image(image)
    with torch.no_grad():
        encoder_input = predictor.model.preprocess(
            torch.as_tensor(resized).permute(2, 0, 1)[None].float()
        )
    (embeddings,) = session(vit_b_model.engine_dir / "encoder.onnx").run(
        None, {"image": encoder_input.numpy()}
    )
    assert relative_max_diff(embeddings, predictor.features.numpy()) <= RELATIVE_TOLERANCE
    decoder = DecoderSessions.of_engine(vit_b_model.engine_dir)
    (iou, low_res), (got_iou, got_masks) = _official_and_onnx(
        predictor,
        decoder,
        {"points": [[[400, 250]]], "labels": [[1]], "boxes": [[100, 50, 700, 500]]},
    )
    assert relative_max_diff(got_iou[:, 1:], iou) <= RELATIVE_TOLERANCE
    assert relative_max_diff(got_masks[:, 1:], low_res) <= RELATIVE_TOLERANCE


@pytest.mark.slow
def test_dynamo_exporter_also_passes_the_check(tmp_path: Path) -> None:
    out = export_engine(
        "tiny", random_seed=0, out_dir=tmp_path / "engine", exporter="dynamo", opset=18
    )
    manifest = load_manifest(out)
    assert manifest.extra["export"]["exporter"] == "dynamo"
    assert manifest.opset == 18
    assert manifest.export_check["encoder_max_rel_diff"] <= export_check_module.ENCODER_TOLERANCE
