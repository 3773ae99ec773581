"""The fp16 variant of an engine directory, against the fp32 variant and PyTorch.

samrt.Predictor on the fp16 graphs must give the fp32 graphs' masks on a real photo. ONNX
Runtime's CPU provider runs most fp16 ops in fp32, so the overflow tests use the
exporter's fp16 twins (every fp16 tensor rounded as a GPU stores it), whose rounding is
checked against numpy's float16 here too.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import samrt
import samrt_export
import torch
from onnx import TensorProto, helper, numpy_helper
from samrt import contract
from samrt.errors import EngineDirError
from samrt.manifest import ModelFile, load_manifest, sha256_file, write_manifest
from samrt_export import ExportCheckError, ExportError, cli, export_engine, fp16, graphs
from samrt_export import check as export_check
from tolerances import FP16_MAX_EMBEDDING_REL_DIFF, FP16_MIN_MASK_IOU, FP16_SCORE_ATOL

# Masks of the fp16 graphs against the fp32 graphs' (each mask of each prompt), the
# embedding's fp16 rounding and the scores: tests/tolerances.py (the GPU check's too).
MIN_MASK_IOU = FP16_MIN_MASK_IOU
MAX_EMBEDDING_REL_DIFF = FP16_MAX_EMBEDDING_REL_DIFF
SCORE_ATOL = FP16_SCORE_ATOL

FP32_COMPUTE = {"LayerNormalization", "Softmax", "Erf", "Sin", "Cos", "ReduceMean", "Pow", "Sqrt"}
FP16_COMPUTE = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum"}


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def relative_max_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


# ---------------------------------------------------------------------------------------
# The engine directory


def test_fp16_variant_sits_next_to_the_fp32_one(
    tiny_model: Any, tiny_fp16_model: Any, record_property: Callable[[str, Any], None]
) -> None:
    engine = tiny_fp16_model.engine_dir
    manifest = load_manifest(engine)
    assert sorted(manifest.variants) == ["fp16", "fp32"]
    # The fp32 graphs are the base directory's, untouched.
    assert manifest.variants["fp32"] == load_manifest(tiny_model.engine_dir).variants["fp32"]
    graph_files = list(contract.GRAPH_FILES.values())
    assert sorted(p.name for p in engine.iterdir()) == sorted(
        ["manifest.json", *graph_files, *(f.replace(".onnx", ".fp16.onnx") for f in graph_files)]
    )
    for role in contract.ROLES:
        fp32, half = manifest.model(role, "fp32"), manifest.model(role, "fp16")
        assert half.file == f"{role}.fp16.onnx" and half.external_data == {}
        assert half.sha256 == sha256_file(engine / half.file)
        # Same interface, float32 in and out: the runtime's contract is unchanged.
        assert half.inputs == fp32.inputs and half.outputs == fp32.outputs
        assert graphs.graph_specs(engine / half.file) == graphs.graph_specs(engine / fp32.file)
        size, size32 = _float_weight_bytes(engine / half.file), _float_weight_bytes(engine / fp32.file)
        record_property(f"{role}_weight_bytes", {"fp32": size32, "fp16": size})
        assert size < 0.6 * size32, "the weights should be stored in fp16"

    check = manifest.export_check
    record_property("export_check", {k: v for k, v in check.items() if k.startswith("fp16")})
    for run in ("fp16_", "fp16_ort_cpu_"):
        assert 0 < check[run + "encoder_max_rel_diff"] <= export_check.FP16_ENCODER_TOLERANCE
        assert export_check.FP16_MASK_IOU_TOLERANCE <= check[run + "mask_iou_min"] <= 1
        assert 0 < check[run + "masks_max_rel_diff"] < 1e-2
    assert 0 < check["fp16_decoder_masks_max_rel_diff"] < 1e-2
    # The fp32 check is the base directory's.
    assert check["encoder_max_rel_diff"] <= export_check.ENCODER_TOLERANCE
    record = manifest.extra["export"]["fp16"]
    assert record["fp32_ops"] == list(fp16.FP32_OP_TYPES)


def _value_types(model: Any) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.value_info}
    types |= {v.name: v.type.tensor_type.elem_type for v in (*inferred.input, *inferred.output)}
    types |= {t.name: t.data_type for t in inferred.initializer}
    return types


def _float_weight_bytes(path: Path) -> int:
    """Bytes of a graph's float weights: initializers and Constant tensors (integer
    constants, such as decoder_masks' pixel order, are not weights)."""
    model = onnx.load(str(path))
    tensors = [*model.graph.initializer]
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16)
    return sum(numpy_helper.to_array(t).nbytes for t in tensors if t.data_type in floats)


# The sensitive ops each graph has (all of them must compute in fp32). The encoder's neck
# writes LayerNorm2d out (ReduceMean, Pow, Sqrt); the decoder expresses its LayerNorm2d as
# LayerNormalization over channels-last tokens; GELU is Erf; the prompts' positional
# encoding is Sin/Cos (the image's too, computed once per image by decoder_image).
SENSITIVE_OPS = {
    "encoder": {"LayerNormalization", "Softmax", "Erf", "ReduceMean", "Pow", "Sqrt"},
    "decoder_image": {"Sin", "Cos"},
    "decoder_prompts": {"LayerNormalization", "Softmax", "Erf", "Sin", "Cos"},
    "decoder_masks": {"LayerNormalization", "Erf"},
}


@pytest.mark.parametrize("role", sorted(SENSITIVE_OPS))
def test_sensitive_ops_compute_in_fp32_and_the_rest_in_fp16(
    tiny_fp16_model: Any, role: str
) -> None:
    model = onnx.load(str(tiny_fp16_model.engine_dir / fp16.SPECS[role].file))
    onnx.checker.check_model(model, full_check=True)  # typed and topologically sorted
    types = _value_types(model)
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    float_types = (TensorProto.FLOAT, TensorProto.FLOAT16)

    def float_inputs(node: Any) -> list[int]:
        return [types[i] for i in node.input if i and types.get(i) in float_types]

    # The random-Fourier positional encodings: everything upstream of a Sin/Cos.
    positional_encoding: set[str] = set()
    stack = [n for n in graph.node if n.op_type in ("Sin", "Cos")]
    while stack:
        node = stack.pop()
        positional_encoding.add(node.name)
        stack += [producer[i] for i in node.input if i in producer]
    # Coordinates through the Gaussian projection: small, and all of it fp32.
    expected = {"Add", "Constant", "Cos", "Div", "MatMul", "Mul", "Sin", "Sub"}
    assert {n.op_type for n in graph.node if n.name in positional_encoding} <= expected

    seen: set[str] = set()
    for node in graph.node:
        if node.name in positional_encoding:
            assert types[node.output[0]] != TensorProto.FLOAT16, node.name
        if node.op_type in FP32_COMPUTE:
            seen.add(node.op_type)
            assert set(float_inputs(node)) == {TensorProto.FLOAT}, node.name
            assert types[node.output[0]] == TensorProto.FLOAT, node.name
        if node.op_type in FP16_COMPUTE and node.name not in positional_encoding:
            assert set(float_inputs(node)) == {TensorProto.FLOAT16}, node.name
        if node.op_type == "Sqrt":
            # LayerNorm2d, written out: the division by the deviation is fp32 too.
            (divide,) = [n for n in graph.node if node.output[0] in n.input]
            assert types[divide.output[0]] == TensorProto.FLOAT
        if node.op_type == "Cast" and node.attribute[0].i == TensorProto.FLOAT:
            source = producer.get(node.input[0])
            round_trip = (
                source is not None
                and source.op_type == "Cast"
                and types.get(source.input[0]) == TensorProto.FLOAT
            )
            assert not round_trip, f"{node.name} restores an fp32 value rounded to fp16"
    assert SENSITIVE_OPS[role] <= seen | {n.op_type for n in graph.node if n.op_type in ("Sin", "Cos")}
    assert seen <= SENSITIVE_OPS[role]
    if role == "decoder_prompts":
        # Point coordinates go into the positional encoding unrounded.
        readers = [n for n in graph.node if "point_coords" in n.input]
        assert readers and all(types[n.output[0]] == TensorProto.FLOAT for n in readers)


# ---------------------------------------------------------------------------------------
# The fp16 twin of the export check


def test_twin_rounds_like_numpy_float16(tmp_path: Path) -> None:
    # y = (float16(x) * w + b) * w, all fp16, float32 in and out.
    w = np.array([3.1, -700.0, 0.1, 1000.0], np.float16)
    b = np.array([0.5, 1e-3, -2.0, 6e4], np.float16)
    nodes = [
        helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
        helper.make_node("Mul", ["x16", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["s"]),
        helper.make_node("Mul", ["s", "w"], ["y16"]),
        helper.make_node("Cast", ["y16"], ["y"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    twin = tmp_path / "twin.onnx"
    onnx.save(fp16.emulation_model(path), str(twin))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(twin), options, providers=["CPUExecutionProvider"])

    x = np.array([1.2345678, 0.3337, 1e-3, 2.0], np.float32)
    (got,) = session.run(None, {"x": x})
    with np.errstate(over="ignore"):
        want = ((x.astype(np.float16) * w + b) * w).astype(np.float32)
    np.testing.assert_array_equal(got, want)
    assert np.isinf(got[3]), "(6e4 + 2e3) * 1e3 overflows fp16: it must stay inf"


@pytest.fixture(scope="module")
def loud_fp32_engine(tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with the encoder neck's second convolution scaled by 2000: its outputs
    (thousands) fit fp16, their squares in the last LayerNorm2d's variance (~1e7) do not.
    (The neck's first norm exports as one LayerNormalization since the encoder graph runs
    it on channels-last tokens; the last one is still decomposed into elementwise ops.)"""
    root = tmp_path_factory.mktemp("loud")
    state = torch.load(tiny_model.checkpoint, weights_only=True)
    state["image_encoder.neck.2.weight"] = state["image_encoder.neck.2.weight"] * 2000
    checkpoint = root / "loud.pth"
    torch.save(state, checkpoint)
    export_engine("tiny", checkpoint=checkpoint, out_dir=root / "engine", check=False)
    return root / "engine"


def _copy_engine(engine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "engine"
    shutil.copytree(engine, copy)
    return copy


def _snapshot(engine: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(engine.iterdir())}


def _twin_embedding_rel_diff(engine: Path, checkpoint: Path, out: Path) -> float:
    """Max rel diff of the fp16 twin of ``engine``'s converted encoder against torch."""
    out.mkdir()
    fp16.convert_graph(engine / "encoder.onnx", fp16.SPECS["encoder"], out, external_data=None)
    onnx.save(fp16.emulation_model(out / "encoder.fp16.onnx"), str(out / "twin.onnx"))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        str(out / "twin.onnx"), options, providers=["CPUExecutionProvider"]
    )
    reference = export_check.Reference(samrt_export.build_sam("tiny", checkpoint=checkpoint))
    (embedding,) = session.run(None, {"image": reference.image.numpy()})
    return relative_max_diff(embedding, reference.embeddings.numpy())


def test_fp32_normalizations_keep_large_activations_exact(
    loud_fp32_engine: Path, tmp_path: Path, record_property: Callable[[str, Any], None]
) -> None:
    rel = _twin_embedding_rel_diff(
        loud_fp32_engine, loud_fp32_engine.parent / "loud.pth", tmp_path / "fp16"
    )
    record_property("loud_twin_embedding_max_rel_diff", rel)
    assert rel < 5e-3, f"fp16 twin embedding max rel diff {rel:.3g}"


def test_overflowing_fp16_graph_is_refused_and_the_directory_kept(
    loud_fp32_engine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the fp32 normalizations, the variance overflows: the check must notice,
    # although ONNX Runtime's CPU provider (computing those ops in fp32) would not.
    monkeypatch.setattr(fp16, "FP32_OP_TYPES", ("LayerNormalization", "Softmax", "Erf"))
    monkeypatch.setattr(fp16, "_decomposed_norm", lambda *args: set())
    engine = _copy_engine(loud_fp32_engine, tmp_path)
    before = _snapshot(engine)
    checkpoint = loud_fp32_engine.parent / "loud.pth"
    with pytest.raises(ExportCheckError, match="fp16_encoder_max_rel_diff"):
        export_engine("tiny", checkpoint=checkpoint, out_dir=engine, precision="fp16")
    assert _snapshot(engine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine"], "no staging left behind"


# ---------------------------------------------------------------------------------------
# Precision choices


def test_fp16_only_export_has_no_fp32_graphs(tiny_model: Any, tmp_path: Path) -> None:
    out = export_engine(
        "tiny",
        checkpoint=tiny_model.checkpoint,
        out_dir=tmp_path / "e",
        precision="fp16",
        check=False,
    )
    manifest = load_manifest(out)
    assert list(manifest.variants) == ["fp16"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", *(spec.file for spec in fp16.SPECS.values())]
    )
    samrt.Model(out, "onnxruntime-cpu", precision="fp16")
    with pytest.raises(EngineDirError, match="--precision fp32"):
        samrt.Model(out, "onnxruntime-cpu", precision="fp32")


def test_default_precision_is_what_the_directory_has(
    tiny_model: Any, tiny_fp16_model: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Bug: Predictor(engine_dir) on an fp16-only directory failed with "manifest has no
    fp32 encoder"."""
    out = export_engine(
        "tiny", checkpoint=tiny_model.checkpoint, out_dir=tmp_path / "e", precision="fp16", check=False
    )
    with caplog.at_level("INFO", logger="samrt"):
        assert samrt.Predictor(out, "onnxruntime-cpu").model.precision == "fp16"
    assert "samrt precision: fp16" in caplog.text
    # fp32 where there are both.
    assert samrt.Model(tiny_fp16_model.engine_dir, "onnxruntime-cpu").precision == "fp32"


def test_fp16_variant_of_external_data_graphs(
    tiny_fp16_model: Any, tmp_path: Path, sample_image: Callable[[str], np.ndarray]
) -> None:
    # The fp32 graphs of the tiny directory, re-saved with their weights in .data files
    # (as vit_h's encoder is), and fp16 added with external data too.
    engine = _copy_engine(tiny_fp16_model.engine_dir, tmp_path)
    manifest = load_manifest(engine)
    for name in ("manifest.json", *(spec.file for spec in fp16.SPECS.values())):
        (engine / name).unlink()
    fp32: dict[str, ModelFile] = {}
    for role, model in manifest.variants["fp32"].items():
        data = model.file + ".data"
        graph = onnx.load(str(engine / model.file))
        onnx.save(graph, str(engine / model.file), save_as_external_data=True, location=data)
        fp32[role] = dataclasses.replace(
            model,
            sha256=sha256_file(engine / model.file),
            external_data={data: sha256_file(engine / data)},
        )
    write_manifest(engine, dataclasses.replace(manifest, variants={"fp32": fp32}))

    export_engine(
        "tiny",
        checkpoint=tiny_fp16_model.checkpoint,
        out_dir=engine,
        precision="fp16",
        external_data=True,
        check=False,
    )
    half = load_manifest(engine).variants["fp16"]
    for role, model in half.items():
        data = f"{role}.fp16.onnx.data"
        assert model.external_data == {data: sha256_file(engine / data)}
        # Every weight of some size lives in the .data file (Constant nodes, such as the
        # coordinate grid and decoder_masks' pixel order, stay in the graph).
        graph = onnx.load(str(engine / model.file), load_external_data=False)
        inline = [
            t.name
            for t in graph.graph.initializer
            if t.data_location != TensorProto.EXTERNAL and np.prod(t.dims) * 2 > 1024
        ]
        assert not inline, role
        # The twin reads external data as well.
        fp16.emulation_model(engine / model.file)
    # Same conversion as the inline fixture's: the same embedding.
    image = sample_image("truck.jpg")
    inline = samrt.Predictor(tiny_fp16_model.engine_dir, "onnxruntime-cpu", precision="fp16")
    external = samrt.Predictor(engine, "onnxruntime-cpu", precision="fp16")
    inline.set_image(image)
    external.set_image(image)
    np.testing.assert_array_equal(external.get_image_embedding(), inline.get_image_embedding())


def test_adding_a_variant_needs_the_same_weights(tiny_fp16_model: Any, tmp_path: Path) -> None:
    engine = _copy_engine(tiny_fp16_model.engine_dir, tmp_path)
    before = _snapshot(engine)
    checkpoint = tiny_fp16_model.checkpoint
    # Variants it already has, from the same weights: up to date, returned untouched.
    assert export_engine("tiny", checkpoint=checkpoint, out_dir=engine, precision="fp16") == engine
    assert export_engine("tiny", checkpoint=checkpoint, out_dir=engine, precision="both") == engine
    # ...but not at another opset.
    with pytest.raises(ExportError, match="already has fp16 graphs"):
        export_engine("tiny", checkpoint=checkpoint, out_dir=engine, precision="fp16", opset=18)
    with pytest.raises(ExportError, match="other weights"):
        export_engine("tiny", random_seed=0, out_dir=engine, precision="fp16")
    with pytest.raises(ExportError, match="precision must be one of fp32, fp16, both"):
        export_engine("tiny", checkpoint=checkpoint, out_dir=tmp_path / "x", precision="int8")
    assert _snapshot(engine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine"]


def test_cli_passes_the_precision(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    def fake_export(model_type: str, **kwargs: Any) -> Path:
        calls.append(kwargs)
        out = Path(kwargs["out_dir"])
        out.mkdir(exist_ok=True)
        return out

    from samrt_export import export as export_module

    monkeypatch.setattr(export_module, "export_engine", fake_export)
    base = ["--model-type", "tiny", "--random-weights", "--out", str(tmp_path / "e")]
    assert cli.main(base) == 0
    assert cli.main([*base, "--precision", "both"]) == 0
    assert [c["precision"] for c in calls] == ["fp32", "both"]
    with pytest.raises(SystemExit):
        cli.main([*base, "--precision", "int8"])


# ---------------------------------------------------------------------------------------
# samrt.Predictor on the fp16 graphs against the fp32 graphs


class PrecisionPair:
    """samrt.Predictor on the fp32 and on the fp16 variant, with the same image set."""

    def __init__(self, engine_dir: Path, image: np.ndarray) -> None:
        self.fp32 = samrt.Predictor(engine_dir, "onnxruntime-cpu", precision="fp32")
        self.fp16 = samrt.Predictor(engine_dir, "onnxruntime-cpu", precision="fp16")
        self.fp32.set_image(image)
        self.fp16.set_image(image)

    def embedding_rel_diff(self) -> float:
        return relative_max_diff(self.fp16.get_image_embedding(), self.fp32.get_image_embedding())

    def compare(self, **prompt: Any) -> float:
        """Asserts the two agree on ``prompt``; returns the smallest mask IoU."""
        masks, scores, _ = self.fp16.predict(**prompt)
        want_masks, want_scores, _ = self.fp32.predict(**prompt)
        assert masks.shape == want_masks.shape and masks.dtype == np.bool_
        np.testing.assert_allclose(scores, want_scores, atol=SCORE_ATOL)
        ious = [mask_iou(a, b) for a, b in zip(masks, want_masks, strict=True)]
        assert min(ious) >= MIN_MASK_IOU, f"mask IoU {ious} for {prompt}"
        return min(ious)


# The foundation parity cases (tests/test_predictor_vs_official.py), on truck.jpg.
PROMPTS: dict[str, dict[str, Any]] = {
    "single_point_multimask": {
        "point_coords": np.array([[500.0, 375.0]]),
        "point_labels": np.array([1]),
        "multimask_output": True,
    },
    "single_point_single_mask": {
        "point_coords": np.array([[500.0, 375.0]]),
        "point_labels": np.array([1]),
        "multimask_output": False,
    },
    "fg_bg_points": {
        "point_coords": np.array([[500, 375], [1125, 625]]),
        "point_labels": np.array([1, 0]),
    },
    "box": {"box": np.array([425, 600, 700, 875]), "multimask_output": False},
    "box_and_points": {
        "point_coords": np.array([[575, 750]]),
        "point_labels": np.array([0]),
        "box": np.array([425, 600, 700, 875]),
    },
}


def _check_pair(pair: PrecisionPair, record_property: Callable[[str, Any], None]) -> None:
    rel = pair.embedding_rel_diff()
    record_property("embedding_max_rel_diff", rel)
    assert rel <= MAX_EMBEDDING_REL_DIFF, f"fp16 embedding max rel diff {rel:.3g}"
    ious = {name: pair.compare(**prompt) for name, prompt in PROMPTS.items()}
    # mask_input: the fp32 predictor's best low-res logits, fed to both.
    _, scores, low_res = pair.fp32.predict(**PROMPTS["single_point_multimask"])
    refine = {
        "point_coords": np.array([[500, 375], [1125, 625]]),
        "point_labels": np.array([1, 1]),
        "mask_input": low_res[int(np.argmax(scores))][None],
    }
    for multimask in (False, True):
        ious[f"mask_input_multimask_{multimask}"] = pair.compare(
            **refine, multimask_output=multimask
        )
    record_property("min_mask_iou", ious)


@pytest.fixture(scope="module")
def tiny_pair(tiny_fp16_model: Any, sample_image: Callable[[str], np.ndarray]) -> PrecisionPair:
    return PrecisionPair(tiny_fp16_model.engine_dir, sample_image("truck.jpg"))


def test_tiny_fp16_predictor_matches_fp32(
    tiny_pair: PrecisionPair, record_property: Callable[[str, Any], None]
) -> None:
    _check_pair(tiny_pair, record_property)


def test_fp16_model_reports_its_precision(tiny_pair: PrecisionPair) -> None:
    assert tiny_pair.fp16.model.precision == "fp16"
    assert "precision='fp16'" in repr(tiny_pair.fp16.model)


@pytest.mark.slow
def test_vit_b_fp16_predictor_matches_fp32(
    vit_b_fp16_model: Any,
    sample_image: Callable[[str], np.ndarray],
    record_property: Callable[[str, Any], None],
) -> None:
    manifest = load_manifest(vit_b_fp16_model.engine_dir)
    check = {k: v for k, v in manifest.export_check.items() if k.startswith("fp16")}
    record_property("export_check", json.dumps(check))
    for role in contract.ROLES:
        model = manifest.model(role, "fp16")
        sizes = {
            p: (vit_b_fp16_model.engine_dir / manifest.model(role, p).file).stat().st_size
            for p in ("fp32", "fp16")
        }
        record_property(f"{role}_bytes", sizes)
        assert model.external_data == {}
    _check_pair(
        PrecisionPair(vit_b_fp16_model.engine_dir, sample_image("truck.jpg")), record_property
    )


def test_onnxruntime_warnings_do_not_reach_the_terminal(tiny_fp16_model: Any) -> None:
    # Bug: loading an fp16 engine printed ONNX Runtime's "Could not find a CPU kernel and
    # hence can't constant fold" warnings on stderr (a plain session does, see below). The
    # library must not print: only errors, which it raises, may surface.
    engine = tiny_fp16_model.engine_dir
    plain = (
        "import onnxruntime as ort, sys\n"
        "ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
    )
    ours = (
        "import numpy as np, samrt, sys\n"
        "p = samrt.Predictor(sys.argv[1], 'onnxruntime-cpu', precision='fp16')\n"
        "p.set_image(np.zeros((64, 96, 3), np.uint8))\n"
        "p.predict(point_coords=np.array([[10, 20]]), point_labels=np.array([1]))\n"
    )
    graph = engine / fp16.SPECS[contract.DECODER_PROMPTS].file
    control = subprocess.run([sys.executable, "-c", plain, str(graph)], capture_output=True, text=True, check=True)
    assert "constant fold" in control.stderr  # the warnings this test is about exist
    quiet = subprocess.run([sys.executable, "-c", ours, str(engine)], capture_output=True, text=True, check=True)
    assert quiet.stdout == "" and quiet.stderr == ""


def test_onnxruntime_warnings_of_the_exporters_checks_do_not_reach_the_terminal(
    tmp_path: Path, tiny_model: Any
) -> None:
    # Bug: `samrt export --precision fp16` printed the same ONNX Runtime warnings from the
    # sessions of its own self-check (samrt_export.check made plain SessionOptions).
    script = (
        "import sys\n"
        "from samrt_export import export_engine\n"
        "export_engine('tiny', checkpoint=sys.argv[1], out_dir=sys.argv[2], precision='both')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tiny_model.checkpoint), str(tmp_path / "engine")],
        capture_output=True, text=True, check=True,
    )
    assert "onnxruntime" not in done.stderr and "constant fold" not in done.stderr, done.stderr
