"""The TensorRT path without TensorRT: profiles, engine naming and lookup, manifest records,
the hash check before deserialization, missing-package errors and the auto order.

Named for its oracle where there is one: the GPU tests at the end compare the TensorRT
backend with ONNX Runtime on the CPU; they run only where TensorRT and a GPU are present.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from samrt import contract
from samrt.backends import BACKEND_NAMES, create_backend
from samrt.backends import tensorrt as trt_backend
from samrt.backends.tensorrt import (
    EngineRecord,
    GpuInfo,
    ProfileLimits,
    ShapeRange,
    decoder_profile,
    encoder_profile,
    engine_file_name,
    engine_records,
    find_engine,
    profiles_for,
    read_verified_engine,
    timing_cache_file_name,
    with_engine_records,
)
from samrt.errors import BackendUnavailableError, EngineDirError
from samrt.manifest import (
    Manifest,
    ModelFile,
    TensorSpec,
    load_manifest,
    sha256_file,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[1]
H100 = GpuInfo("NVIDIA H100 80GB HBM3", 9, 0)
A100 = GpuInfo("NVIDIA A100-SXM4-40GB", 8, 0)
L4 = GpuInfo("NVIDIA L4", 8, 9)
TRT = "10.13.0.35"


# -- a tiny engine directory: two small ONNX graphs with SAM's names and shapes ------------------


def _write_graphs(root: Path) -> None:
    """Writes encoder.onnx and decoder.onnx: SAM's I/O contract, trivial arithmetic inside."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    size, dim, emb, low = (
        contract.IMAGE_SIZE,
        contract.EMBEDDING_DIM,
        contract.EMBEDDING_SIZE,
        contract.LOW_RES_SIZE,
    )
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((dim, 3, 1, 1)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(dim).astype(np.float32), "b")
    encoder = helper.make_graph(
        [
            helper.make_node(
                "AveragePool", ["image"], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]
            ),
            helper.make_node("Conv", ["pooled", "w", "b"], [contract.ENCODER_OUTPUT]),
        ],
        "encoder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", 3, size, size])],
        [
            helper.make_tensor_value_info(
                contract.ENCODER_OUTPUT, TensorProto.FLOAT, ["B", dim, emb, emb]
            )
        ],
        [weight, bias],
    )
    emb_in, coords, labels, masks, has_mask = contract.DECODER_INPUTS
    iou, low_res = contract.DECODER_OUTPUTS
    consts = [
        numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes12"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axes1"),
        numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes23"),
        numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "axes123"),
        numpy_helper.from_array(np.array([[0.5, 1.0, 1.5, 2.0]], dtype=np.float32), "scale"),
    ]
    decoder = helper.make_graph(
        [
            helper.make_node("ReduceMean", [emb_in], ["emb_mean"], keepdims=0),
            helper.make_node("ReduceSum", [coords, "axes12"], ["coord_sum"], keepdims=0),  # [P]
            helper.make_node("ReduceSum", [labels, "axes1"], ["label_sum"], keepdims=0),  # [P]
            helper.make_node("Add", ["coord_sum", "label_sum"], ["prompt_sum"]),
            helper.make_node("Add", ["prompt_sum", "emb_mean"], ["score_p"]),
            helper.make_node("Unsqueeze", ["score_p", "axes1"], ["score"]),  # [P,1]
            helper.make_node("Mul", ["score", "scale"], [iou]),  # [P,4]
            helper.make_node("Unsqueeze", [iou, "axes23"], ["iou4"]),  # [P,4,1,1]
            helper.make_node("Unsqueeze", [has_mask, "axes123"], ["has4"]),  # [P,1,1,1]
            helper.make_node("Mul", [masks, "has4"], ["masked"]),  # [P,1,256,256]
            helper.make_node("Add", ["masked", "iou4"], [low_res]),  # [P,4,256,256]
        ],
        "decoder",
        [
            helper.make_tensor_value_info(emb_in, TensorProto.FLOAT, [1, dim, emb, emb]),
            helper.make_tensor_value_info(coords, TensorProto.FLOAT, ["P", "N", 2]),
            helper.make_tensor_value_info(labels, TensorProto.FLOAT, ["P", "N"]),
            helper.make_tensor_value_info(masks, TensorProto.FLOAT, ["P", 1, low, low]),
            helper.make_tensor_value_info(has_mask, TensorProto.FLOAT, ["P"]),
        ],
        [
            helper.make_tensor_value_info(iou, TensorProto.FLOAT, ["P", 4]),
            helper.make_tensor_value_info(low_res, TensorProto.FLOAT, ["P", 4, low, low]),
        ],
        consts,
    )
    for graph, name in ((encoder, contract.ENCODER_FILE), (decoder, contract.DECODER_FILE)):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(root / name))


def _specs(names: tuple[str, ...]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(n, "float32", ()) for n in names)


def _manifest(root: Path, extra: dict[str, Any] | None = None) -> Manifest:
    variant = {
        "encoder": ModelFile(
            contract.ENCODER_FILE,
            sha256_file(root / contract.ENCODER_FILE),
            _specs((contract.ENCODER_INPUT,)),
            _specs((contract.ENCODER_OUTPUT,)),
        ),
        "decoder": ModelFile(
            contract.DECODER_FILE,
            sha256_file(root / contract.DECODER_FILE),
            _specs(contract.DECODER_INPUTS),
            _specs(contract.DECODER_OUTPUTS),
        ),
    }
    return Manifest(
        format_version=contract.MANIFEST_FORMAT_VERSION,
        samrt_version="0.1.0",
        model_type="vit_b",
        model_config={"synthetic": True},
        image_size=contract.IMAGE_SIZE,
        pixel_mean=contract.PIXEL_MEAN,
        pixel_std=contract.PIXEL_STD,
        mask_threshold=contract.MASK_THRESHOLD,
        opset=17,
        source={"seed": 0},
        variants={"fp32": variant},
        extra=dict(extra or {}),
    )


@pytest.fixture(scope="module")
def graphs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("graphs")
    _write_graphs(root)
    return root


@pytest.fixture
def engine_dir(graphs_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "engine"
    root.mkdir()
    for name in (contract.ENCODER_FILE, contract.DECODER_FILE):
        (root / name).write_bytes((graphs_dir / name).read_bytes())
    write_manifest(root, _manifest(root))
    return root


def _fake_engine(
    root: Path,
    manifest: Manifest,
    role: str,
    gpu: GpuInfo,
    payload: bytes,
    version: str = TRT,
    limits: ProfileLimits | None = None,
) -> EngineRecord:
    """Writes fake engine bytes and returns the record `samrt build` would have written."""
    name = engine_file_name(role, "fp32", gpu, version)
    (root / name).write_bytes(payload)
    source = manifest.model(role, "fp32")
    return EngineRecord(
        file=name,
        role=role,
        precision="fp32",
        sha256=hashlib.sha256(payload).hexdigest(),
        size_bytes=len(payload),
        source_file=source.file,
        source_sha256=source.sha256,
        gpu=gpu.name,
        compute_capability=gpu.compute_capability,
        tensorrt_version=version,
        profiles=profiles_for(role, limits or ProfileLimits()),
        workspace_bytes=1 << 30,
        build_seconds=12.5,
        built_at="2026-01-01T00:00:00+00:00",
    )


def _with_fake_engines(root: Path, *gpus: GpuInfo, version: str = TRT) -> Manifest:
    manifest = load_manifest(root)
    records = {}
    for gpu in gpus:
        for role in ("encoder", "decoder"):
            record = _fake_engine(
                root, manifest, role, gpu, f"{role} for {gpu.name}".encode(), version
            )
            records[record.file] = record
    manifest = with_engine_records(manifest, records)
    write_manifest(root, manifest)
    return manifest


# -- profiles ---------------------------------------------------------------------------------


def test_encoder_profile() -> None:
    ((name, shape),) = encoder_profile().items()
    assert name == "image"
    assert shape == ShapeRange((1, 3, 1024, 1024), (1, 3, 1024, 1024), (8, 3, 1024, 1024))


def test_decoder_profile() -> None:
    profile = decoder_profile()
    assert profile == {
        "image_embeddings": ShapeRange((1, 256, 64, 64), (1, 256, 64, 64), (1, 256, 64, 64)),
        "point_coords": ShapeRange((1, 1, 2), (64, 2, 2), (256, 16, 2)),
        "point_labels": ShapeRange((1, 1), (64, 2), (256, 16)),
        "mask_input": ShapeRange((1, 1, 256, 256), (64, 1, 256, 256), (256, 1, 256, 256)),
        "has_mask_input": ShapeRange((1,), (64,), (256,)),
    }
    assert profile["image_embeddings"].fixed and not profile["point_coords"].fixed


def test_profile_limits_are_configurable() -> None:
    profile = decoder_profile(
        ProfileLimits(max_prompts=32, opt_prompts=8, max_points=4, opt_points=1)
    )
    assert profile["point_coords"] == ShapeRange((1, 1, 2), (8, 1, 2), (32, 4, 2))
    assert encoder_profile(ProfileLimits(max_batch=2, opt_batch=2))["image"].opt == (
        2,
        3,
        1024,
        1024,
    )


@pytest.mark.parametrize(
    "limits",
    [{"max_batch": 0}, {"opt_batch": 9}, {"opt_prompts": 300}, {"max_points": 1, "opt_points": 2}],
)
def test_bad_profile_limits(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="opt_"):
        ProfileLimits(**limits)


def test_bad_shape_range() -> None:
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeRange((2,), (1,), (4,))
    with pytest.raises(ValueError, match="one rank"):
        ShapeRange((1,), (1, 1), (1,))


def test_build_fits_profile_to_static_dimensions() -> None:
    from samrt.trt_build import _fit_profile

    wanted = encoder_profile()["image"]
    assert _fit_profile(wanted, (-1, 3, 1024, 1024)) == wanted
    # A graph exported with a fixed batch of 1 gets an engine for batch 1 only.
    one = (1, 3, 1024, 1024)
    assert _fit_profile(wanted, one) == ShapeRange(one, one, one)
    assert _fit_profile(wanted, (-1, 3, 512, 512)) is None
    assert _fit_profile(wanted, (-1, 3, 1024)) is None


# -- engine names and lookup ---------------------------------------------------------------------


def test_engine_file_name() -> None:
    assert (
        engine_file_name("encoder", "fp32", H100, TRT)
        == "encoder.fp32.NVIDIA_H100_80GB_HBM3.sm90.trt10.13.0.engine"
    )
    assert (
        engine_file_name("decoder", "fp16", L4, "11.0.1.4")
        == "decoder.fp16.NVIDIA_L4.sm89.trt11.0.1.engine"
    )
    assert timing_cache_file_name(A100, TRT) == "timing.NVIDIA_A100_SXM4_40GB.sm80.trt10.13.0.cache"


def test_engine_file_name_is_sanitized() -> None:
    odd = GpuInfo("../Tesla T4 / (rev. 2)\\x", 7, 5)
    name = engine_file_name("encoder", "fp32", odd, "10.0.0.6")
    assert name == "encoder.fp32.Tesla_T4_rev_2_x.sm75.trt10.0.0.engine"
    assert "/" not in name and "\\" not in name and ".." not in name
    with pytest.raises(ValueError, match="role"):
        engine_file_name("prompt_encoder", "fp32", H100, TRT)


def test_find_engine_picks_this_machines_engine(engine_dir: Path) -> None:
    manifest = _with_fake_engines(engine_dir, H100, A100)
    path, record = find_engine(engine_dir, manifest, "decoder", "fp32", A100, TRT)
    assert path == engine_dir / "decoder.fp32.NVIDIA_A100_SXM4_40GB.sm80.trt10.13.0.engine"
    assert record.gpu == A100.name and record.role == "decoder"
    path, _ = find_engine(engine_dir, manifest, "encoder", "fp32", H100, TRT)
    assert path.name == "encoder.fp32.NVIDIA_H100_80GB_HBM3.sm90.trt10.13.0.engine"


def test_no_engine_for_this_gpu(engine_dir: Path) -> None:
    manifest = _with_fake_engines(engine_dir, H100)
    with pytest.raises(
        EngineDirError, match=r"no TensorRT fp32 encoder engine for NVIDIA L4 \(sm89\)"
    ) as info:
        find_engine(engine_dir, manifest, "encoder", "fp32", L4, TRT)
    message = str(info.value)
    assert "encoder.fp32.NVIDIA_L4.sm89.trt10.13.0.engine" in message
    assert "encoder.fp32.NVIDIA_H100_80GB_HBM3.sm90.trt10.13.0.engine" in message
    assert f"samrt build {engine_dir} --precision fp32" in message
    assert "\n" not in message


def test_no_engine_for_this_tensorrt_version(engine_dir: Path) -> None:
    manifest = _with_fake_engines(engine_dir, H100, version="10.12.0.36")
    with pytest.raises(EngineDirError, match="TensorRT 10.13.0.35.*samrt build"):
        find_engine(engine_dir, manifest, "encoder", "fp32", H100, TRT)


def test_no_engines_at_all(engine_dir: Path) -> None:
    with pytest.raises(EngineDirError, match="built for other machines: none.*samrt build"):
        find_engine(engine_dir, load_manifest(engine_dir), "encoder", "fp32", H100, TRT)


def test_missing_engine_file(engine_dir: Path) -> None:
    manifest = _with_fake_engines(engine_dir, H100)
    (engine_dir / engine_file_name("decoder", "fp32", H100, TRT)).unlink()
    with pytest.raises(EngineDirError, match="decoder.fp32.*is missing.*samrt build"):
        find_engine(engine_dir, manifest, "decoder", "fp32", H100, TRT)


def test_engine_built_from_another_export(engine_dir: Path) -> None:
    manifest = _with_fake_engines(engine_dir, H100)
    (engine_dir / contract.DECODER_FILE).write_bytes(b"re-exported")
    variants = dict(manifest.variants)
    old = variants["fp32"]["decoder"]
    variants["fp32"] = {
        **variants["fp32"],
        "decoder": ModelFile(old.file, sha256_file(engine_dir / old.file), old.inputs, old.outputs),
    }
    reexported = replace(manifest, variants=variants)
    with pytest.raises(EngineDirError, match="built from another decoder export.*samrt build"):
        find_engine(engine_dir, reexported, "decoder", "fp32", H100, TRT)
    find_engine(engine_dir, reexported, "encoder", "fp32", H100, TRT)


def test_record_that_disagrees_with_its_name(engine_dir: Path) -> None:
    manifest = _with_fake_engines(engine_dir, H100)
    records = engine_records(manifest)
    name = engine_file_name("encoder", "fp32", H100, TRT)
    records[name] = replace(records[name], compute_capability="8.0")
    with pytest.raises(EngineDirError, match="not this machine's"):
        find_engine(
            engine_dir, with_engine_records(manifest, records), "encoder", "fp32", H100, TRT
        )


def test_missing_precision_variant(engine_dir: Path) -> None:
    manifest = _with_fake_engines(engine_dir, H100)
    with pytest.raises(EngineDirError, match="no TensorRT fp16 encoder"):
        find_engine(engine_dir, manifest, "encoder", "fp16", H100, TRT)


# -- manifest records ---------------------------------------------------------------------------


def test_records_round_trip_through_manifest_json(engine_dir: Path) -> None:
    manifest = load_manifest(engine_dir)
    manifest = replace(manifest, extra={"other_tool": {"kept": True}})
    records = {}
    for role in ("encoder", "decoder"):
        record = _fake_engine(engine_dir, manifest, role, H100, b"engine " + role.encode())
        records[record.file] = record
    write_manifest(engine_dir, with_engine_records(manifest, records))
    loaded = load_manifest(engine_dir)
    assert engine_records(loaded) == records
    assert loaded.extra["other_tool"] == {"kept": True}
    assert loaded.extra["tensorrt"]["format_version"] == 1
    entry = loaded.extra["tensorrt"]["engines"][engine_file_name("encoder", "fp32", H100, TRT)]
    assert entry["source"] == {
        "file": "encoder.onnx",
        "sha256": sha256_file(engine_dir / "encoder.onnx"),
    }
    assert entry["profiles"]["image"] == {
        "min": [1, 3, 1024, 1024],
        "opt": [1, 3, 1024, 1024],
        "max": [8, 3, 1024, 1024],
    }
    assert (entry["gpu"], entry["compute_capability"], entry["tensorrt_version"]) == (
        H100.name,
        "9.0",
        TRT,
    )
    assert entry["build_seconds"] == 12.5 and entry["strongly_typed"] is True


def test_records_of_another_format(engine_dir: Path) -> None:
    manifest = replace(
        load_manifest(engine_dir), extra={"tensorrt": {"format_version": 99, "engines": {}}}
    )
    with pytest.raises(EngineDirError, match="format version 99.*samrt build"):
        engine_records(manifest)
    broken = replace(
        manifest,
        extra={"tensorrt": {"format_version": 1, "engines": {"x.engine": {"role": "encoder"}}}},
    )
    with pytest.raises(EngineDirError, match="malformed.*samrt build"):
        engine_records(broken)


def test_no_records_is_empty(engine_dir: Path) -> None:
    assert engine_records(load_manifest(engine_dir)) == {}


# -- an engine is executable code: the hash is checked before TensorRT sees the bytes ------------


def test_engine_with_the_recorded_hash_is_read(engine_dir: Path) -> None:
    manifest = _with_fake_engines(engine_dir, H100)
    path, record = find_engine(engine_dir, manifest, "encoder", "fp32", H100, TRT)
    assert read_verified_engine(path, record) == b"encoder for NVIDIA H100 80GB HBM3"


def test_engine_with_a_wrong_hash_is_refused(engine_dir: Path) -> None:
    manifest = _with_fake_engines(engine_dir, H100)
    path, record = find_engine(engine_dir, manifest, "encoder", "fp32", H100, TRT)
    path.write_bytes(b"encoder for NVIDIA H100 80GB HBM3 plus something else")
    with pytest.raises(
        EngineDirError, match="sha256 .* the manifest records .*executable code.*samrt build"
    ) as info:
        read_verified_engine(path, record)
    assert path.name in str(info.value)


class _FakeTensorRT(types.ModuleType):
    """Just enough of `tensorrt` to reach deserialization, recording what it is given."""

    def __init__(self) -> None:
        super().__init__("tensorrt")
        self.__version__ = TRT
        self.deserialized: list[bytes] = []
        fake = self

        class ILogger:
            class Severity:
                INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

            def __init__(self) -> None:
                pass

        class Runtime:
            def __init__(self, logger: Any) -> None:
                self.logger = logger

            def deserialize_cuda_engine(self, data: bytes) -> Any:
                # Records the bytes; like TensorRT, returns None for bytes it cannot load.
                fake.deserialized.append(bytes(data))
                role = bytes(data).removeprefix(_EMULATED).decode()
                if fake.device is None or not bytes(data).startswith(_EMULATED):
                    return None
                engine = _EmulatedEngine(role, fake.device)
                fake.engines.append(engine)
                return engine

        class TensorIOMode:
            INPUT, OUTPUT = "INPUT", "OUTPUT"

        self.ILogger = ILogger
        self.Runtime = Runtime
        self.TensorIOMode = TensorIOMode
        self.device: _EmulatedCuda | None = None
        self.engines: list[_EmulatedEngine] = []


@pytest.fixture
def fake_machine(monkeypatch: pytest.MonkeyPatch) -> _FakeTensorRT:
    """An H100 with TensorRT 10.13 as far as the backend can tell, without either."""
    fake = _FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    cudart = types.SimpleNamespace(
        cudaError_t=types.SimpleNamespace(cudaSuccess=0), cudaSetDevice=lambda device: (0,)
    )
    monkeypatch.setattr(trt_backend, "require_cuda", lambda: cudart)
    monkeypatch.setattr(trt_backend, "current_gpu", lambda device=0: H100)
    return fake


def test_backend_refuses_tampered_engine_before_deserializing(
    engine_dir: Path, fake_machine: _FakeTensorRT
) -> None:
    manifest = _with_fake_engines(engine_dir, H100)
    (engine_dir / engine_file_name("decoder", "fp32", H100, TRT)).write_bytes(
        b"not what samrt build wrote"
    )
    with pytest.raises(
        EngineDirError,
        match="decoder.fp32.NVIDIA_H100_80GB_HBM3.sm90.trt10.13.0.engine has sha256.*samrt build",
    ):
        create_backend(engine_dir, manifest, "tensorrt")
    # Not even the untampered encoder was handed to TensorRT.
    assert fake_machine.deserialized == []


def test_backend_deserializes_exactly_the_verified_bytes(
    engine_dir: Path, fake_machine: _FakeTensorRT
) -> None:
    # The control for the test above: with intact engines, deserialization is reached.
    manifest = _with_fake_engines(engine_dir, H100)
    with pytest.raises(EngineDirError, match="TensorRT could not load .*encoder.*samrt build"):
        create_backend(engine_dir, manifest, "tensorrt")
    assert fake_machine.deserialized == [b"encoder for NVIDIA H100 80GB HBM3"]


def test_backend_without_engines_for_this_gpu(
    engine_dir: Path, fake_machine: _FakeTensorRT
) -> None:
    manifest = _with_fake_engines(engine_dir, A100)
    with pytest.raises(
        EngineDirError, match="no TensorRT fp32 encoder engine for NVIDIA H100.*samrt build"
    ):
        create_backend(engine_dir, manifest, "tensorrt")
    assert fake_machine.deserialized == []


# -- missing packages ---------------------------------------------------------------------------


def test_tensorrt_is_a_backend_name() -> None:
    assert "tensorrt" in BACKEND_NAMES


def test_tensorrt_not_installed(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(
        BackendUnavailableError, match=r"tensorrt package cannot be imported.*pip install tensorrt"
    ):
        create_backend(engine_dir, load_manifest(engine_dir), "tensorrt")


def test_only_tensorrt_stubs_installed(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tensorrt-stubs leaves a tensorrt/ folder of .pyi files, which imports as an empty package.
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(BackendUnavailableError, match=r"only type stubs.*pip install tensorrt"):
        create_backend(engine_dir, load_manifest(engine_dir), "tensorrt")


def test_tensorrt_too_old(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _FakeTensorRT()
    old.__version__ = "8.6.1"
    monkeypatch.setitem(sys.modules, "tensorrt", old)
    with pytest.raises(
        BackendUnavailableError, match=r"TensorRT 8.6.1 is too old.*pip install -U tensorrt"
    ):
        create_backend(engine_dir, load_manifest(engine_dir), "tensorrt")


def test_cuda_python_not_installed(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTensorRT())
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    with pytest.raises(
        BackendUnavailableError, match=r"cuda-python cannot be imported.*pip install cuda-python"
    ):
        create_backend(engine_dir, load_manifest(engine_dir), "tensorrt")


def test_no_gpu(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTensorRT())
    failing = types.SimpleNamespace(
        cudaError_t=types.SimpleNamespace(cudaSuccess=0),
        cudaGetDeviceCount=lambda: (100, None),
        cudaGetErrorName=lambda error: (0, b"cudaErrorNoDevice"),
        cudaGetErrorString=lambda error: (0, b"no CUDA-capable device is detected"),
    )
    monkeypatch.setattr(trt_backend, "require_cuda", lambda: failing)
    with pytest.raises(BackendUnavailableError, match="no usable CUDA GPU.*cudaErrorNoDevice"):
        create_backend(engine_dir, load_manifest(engine_dir), "tensorrt")


def test_build_without_tensorrt(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from samrt.trt_build import build_engines, main

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match="pip install tensorrt"):
        build_engines(engine_dir)
    assert main([str(engine_dir)]) == 1
    with pytest.raises(EngineDirError, match="no fp16 encoder"):
        build_engines(engine_dir, precision="fp16")


def test_importing_samrt_imports_neither_tensorrt_nor_cuda() -> None:
    code = (
        "import sys, samrt, samrt.backends, samrt.backends.tensorrt, samrt.trt_build\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'tensorrt_bindings', 'cuda'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- backend="auto" ------------------------------------------------------------------------------


def _auto(engine_dir: Path, caplog: pytest.LogCaptureFixture) -> str:
    with caplog.at_level(logging.INFO, logger="samrt"):
        backend = create_backend(engine_dir, load_manifest(engine_dir), "auto")
    assert backend.name.startswith("onnxruntime")
    (line,) = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("samrt backend:")
    ]
    return line


def test_auto_skips_tensorrt_without_engines(
    engine_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_import() -> str:
        raise AssertionError("TensorRT was imported although no engines were built")

    monkeypatch.setattr(trt_backend, "require_tensorrt", must_not_import)
    line = _auto(engine_dir, caplog)
    assert (
        "tensorrt: no fp32 TensorRT engines in the engine directory (build them with `samrt build`)"
        in line
    )


def test_auto_skips_tensorrt_when_not_installed(
    engine_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_fake_engines(engine_dir, H100)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert "tensorrt: the tensorrt package cannot be imported" in _auto(engine_dir, caplog)


def test_auto_skips_tensorrt_without_gpu(
    engine_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_fake_engines(engine_dir, H100)
    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTensorRT())

    def no_gpu(device: int = 0) -> GpuInfo:
        raise BackendUnavailableError("no usable CUDA GPU: cudaGetDeviceCount failed")

    monkeypatch.setattr(trt_backend, "current_gpu", no_gpu)
    assert "tensorrt: no usable CUDA GPU" in _auto(engine_dir, caplog)


def test_auto_skips_engines_of_other_machines(
    engine_dir: Path, caplog: pytest.LogCaptureFixture, fake_machine: _FakeTensorRT
) -> None:
    _with_fake_engines(engine_dir, A100)
    assert (
        "tensorrt: " in (line := _auto(engine_dir, caplog))
        and "no TensorRT fp32 encoder engine for NVIDIA H100" in line
    )
    assert fake_machine.deserialized == []


def test_auto_skips_tampered_engines(
    engine_dir: Path, caplog: pytest.LogCaptureFixture, fake_machine: _FakeTensorRT
) -> None:
    _with_fake_engines(engine_dir, H100)
    (engine_dir / engine_file_name("encoder", "fp32", H100, TRT)).write_bytes(b"tampered")
    line = _auto(engine_dir, caplog)
    assert "tensorrt: " in line and "has sha256" in line
    assert fake_machine.deserialized == []


# -- the backend's data flow on an emulated GPU, against ONNX Runtime ------------------------------
#
# No GPU here, so cuda-python and TensorRT are replaced by an emulation: device memory is a
# set of host byte arrays addressed by fake pointers, and the "engines" compute the tiny
# graphs' function in numpy on whatever the backend bound. This checks what the backend
# does with its buffers: chunking, offsets into the embedding, binding, copies back,
# lanes shared between threads, and that every allocation is freed.

_EMULATED = b"emulated-engine:"


class _EmulatedCuda:
    """cuda.bindings.runtime as the backend uses it: (error, value) tuples, fake pointers."""

    class cudaError_t:  # the names cuda-python uses
        cudaSuccess = 0
        cudaErrorInvalidValue = 1

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    cudaStreamNonBlocking = 1

    def __init__(self) -> None:
        self.allocations: dict[int, bytearray] = {}
        self.streams: set[int] = set()
        self._next = 1 << 20
        self._lock = threading.Lock()

    def cudaMalloc(self, nbytes: int) -> tuple[int, int]:
        with self._lock:
            ptr = self._next
            self._next += (nbytes + 511) // 256 * 256
            self.allocations[ptr] = bytearray(nbytes)
        return (0, ptr)

    def cudaFree(self, ptr: int) -> tuple[int]:
        with self._lock:
            return (0,) if self.allocations.pop(ptr, None) is not None else (1,)

    def memory(self, ptr: int, nbytes: int) -> memoryview:
        with self._lock:
            for base, buffer in self.allocations.items():
                if base <= ptr and ptr + nbytes <= base + len(buffer):
                    return memoryview(buffer)[ptr - base : ptr - base + nbytes]
        raise AssertionError(f"{nbytes} bytes at {ptr:#x} are not inside one allocation")

    def cudaMemcpy(self, dst: int, src: int, nbytes: int, kind: int) -> tuple[int]:
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            self.memory(dst, nbytes)[:] = ctypes.string_at(src, nbytes)
        else:
            ctypes.memmove(dst, bytes(self.memory(src, nbytes)), nbytes)
        return (0,)

    def cudaMemcpyAsync(
        self, dst: int, src: int, nbytes: int, kind: int, stream: int
    ) -> tuple[int]:
        assert stream in self.streams, "copy on a stream that does not exist"
        return self.cudaMemcpy(dst, src, nbytes, kind)

    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[int, int]:
        assert flags == self.cudaStreamNonBlocking
        with self._lock:
            stream = len(self.streams) + 1000 + sum(self.streams)
            self.streams.add(stream)
        return (0, stream)

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (0,) if stream in self.streams else (1,)

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        with self._lock:
            self.streams.remove(stream)
        return (0,)

    def cudaSetDevice(self, device: int) -> tuple[int]:
        return (0,)

    def cudaGetErrorName(self, error: int) -> tuple[int, bytes]:
        return (0, b"cudaErrorInvalidValue")

    def cudaGetErrorString(self, error: int) -> tuple[int, bytes]:
        return (0, b"invalid argument")


class _Float32:
    name = "FLOAT"


def _tiny_weights() -> tuple[np.ndarray, np.ndarray]:
    """The encoder weights _write_graphs uses (same seed, same draws)."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((contract.EMBEDDING_DIM, 3, 1, 1)).astype(np.float32)
    return weight[:, :, 0, 0], rng.standard_normal(contract.EMBEDDING_DIM).astype(np.float32)


class _EmulatedEngine:
    """The tiny graphs as a TensorRT engine would present them."""

    def __init__(self, role: str, device: _EmulatedCuda) -> None:
        self.role = role
        self.device = device
        if role == "encoder":
            self.inputs: tuple[str, ...] = (contract.ENCODER_INPUT,)
            self.outputs: tuple[str, ...] = (contract.ENCODER_OUTPUT,)
        else:
            self.inputs, self.outputs = contract.DECODER_INPUTS, contract.DECODER_OUTPUTS
        self.contexts_created = 0

    @property
    def num_io_tensors(self) -> int:
        return len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, index: int) -> str:
        return (*self.inputs, *self.outputs)[index]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name in self.inputs else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> _Float32:
        return _Float32()

    def create_execution_context(self) -> _EmulatedContext:
        self.contexts_created += 1
        return _EmulatedContext(self)


class _EmulatedContext:
    def __init__(self, engine: _EmulatedEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.busy = threading.Lock()

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        assert name in self.engine.inputs
        self.shapes[name] = tuple(int(d) for d in shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.engine.inputs:
            return self.shapes[name]
        low = contract.LOW_RES_SIZE
        if name == contract.ENCODER_OUTPUT:
            batch = self.shapes[contract.ENCODER_INPUT][0]
            return (batch, contract.EMBEDDING_DIM, contract.EMBEDDING_SIZE, contract.EMBEDDING_SIZE)
        prompts = self.shapes[contract.DECODER_INPUTS[1]][0]
        return (prompts, 4) if name == contract.DECODER_OUTPUTS[0] else (prompts, 4, low, low)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def _tensor(self, name: str) -> np.ndarray:
        shape = self.get_tensor_shape(name)
        nbytes = int(np.prod(shape)) * 4
        return np.frombuffer(
            self.engine.device.memory(self.addresses[name], nbytes), np.float32
        ).reshape(shape)

    def execute_async_v3(self, stream: int) -> bool:
        assert stream in self.engine.device.streams
        # An execution context runs one inference at a time: two at once is the bug lanes prevent.
        assert self.busy.acquire(blocking=False), "one execution context used by two calls at once"
        try:
            if self.engine.role == "encoder":
                image = self._tensor(contract.ENCODER_INPUT)
                b, c, h, w = image.shape
                pooled = image.reshape(b, c, h // 16, 16, w // 16, 16).mean(axis=(3, 5))
                weight, bias = _tiny_weights()
                self._tensor(contract.ENCODER_OUTPUT)[...] = (
                    np.einsum("oc,bchw->bohw", weight, pooled) + bias[None, :, None, None]
                )
            else:
                emb, coords, labels, masks, has_mask = (
                    self._tensor(n) for n in contract.DECODER_INPUTS
                )
                score = coords.sum(axis=(1, 2)) + labels.sum(axis=1) + emb.mean()
                iou = score[:, None] * np.array([0.5, 1.0, 1.5, 2.0], np.float32)
                self._tensor(contract.DECODER_OUTPUTS[0])[...] = iou
                self._tensor(contract.DECODER_OUTPUTS[1])[...] = (
                    masks * has_mask[:, None, None, None] + iou[:, :, None, None]
                )
        finally:
            self.busy.release()
        return True


SMALL = ProfileLimits(max_batch=2, max_prompts=32, opt_prompts=8, max_points=4)


@pytest.fixture
def emulated(
    engine_dir: Path, fake_machine: _FakeTensorRT, monkeypatch: pytest.MonkeyPatch
) -> _EmulatedCuda:
    device = _EmulatedCuda()
    fake_machine.device = device
    monkeypatch.setattr(trt_backend, "require_cuda", lambda: device)
    manifest = load_manifest(engine_dir)
    records = {}
    for role in ("encoder", "decoder"):
        record = _fake_engine(
            engine_dir, manifest, role, H100, _EMULATED + role.encode(), limits=SMALL
        )
        records[record.file] = record
    write_manifest(engine_dir, with_engine_records(manifest, records))
    return device


def test_emulated_backend_matches_onnxruntime(engine_dir: Path, emulated: _EmulatedCuda) -> None:
    manifest = load_manifest(engine_dir)
    reference = create_backend(engine_dir, manifest, "onnxruntime-cpu")
    ours = create_backend(engine_dir, manifest, "tensorrt")
    assert isinstance(ours, trt_backend.TensorRTBackend)
    assert ours.name.startswith("tensorrt 10.13.0.35 (NVIDIA H100 80GB HBM3, sm90")
    assert (ours.max_batch, ours.max_prompts, ours.max_points) == (2, 32, 4)

    images = np.random.default_rng(1).standard_normal((3, 3, 1024, 1024)).astype(np.float32)
    expected = reference.encode(images)
    embedding = ours.encode(images)  # 3 images, engine batch <= 2: two chunks into one buffer
    assert isinstance(embedding, trt_backend.DeviceEmbedding) and embedding.shape == (
        3,
        256,
        64,
        64,
    )
    np.testing.assert_allclose(ours.embedding_to_numpy(embedding), expected, rtol=1e-5, atol=1e-5)
    for index in range(3):
        image = ours.select_embedding(embedding, index)
        np.testing.assert_allclose(
            ours.embedding_to_numpy(image), expected[index : index + 1], rtol=1e-5, atol=1e-5
        )
        for n_prompts, n_points in ((1, 2), (70, 3)):  # 70 prompts, engine <= 32: three chunks
            prompts = _prompts(n_prompts, n_points, seed=index)
            iou, low = ours.decode(image, *prompts)
            ref_iou, ref_low = reference.decode(expected[index : index + 1], *prompts)
            assert iou.dtype == low.dtype == np.float32
            np.testing.assert_allclose(iou, ref_iou, rtol=1e-5, atol=1e-2)
            np.testing.assert_allclose(low, ref_low, rtol=1e-5, atol=1e-2)

    restored = ours.embedding_from_numpy(expected[2:3])
    np.testing.assert_array_equal(ours.embedding_to_numpy(restored), expected[2:3])
    with pytest.raises(ValueError, match="at most 4.*max-points"):
        ours.decode(restored, *_prompts(1, 5, seed=0))
    with pytest.raises(ValueError, match="one image's embedding"):
        ours.decode(embedding, *_prompts(1, 2, seed=0))
    with pytest.raises(TypeError, match="DeviceEmbedding"):
        ours.decode(expected[:1], *_prompts(1, 2, seed=0))
    with pytest.raises(IndexError):
        ours.select_embedding(embedding, 3)


def test_emulated_backend_frees_everything(engine_dir: Path, emulated: _EmulatedCuda) -> None:
    manifest = load_manifest(engine_dir)
    with trt_backend.TensorRTBackend(engine_dir, manifest) as ours:
        embedding = ours.encode(np.zeros((2, 3, 1024, 1024), np.float32))
        view = ours.select_embedding(embedding, 1)
        ours.decode(view, *_prompts(4, 2, seed=0))
        lane_memory = len(emulated.allocations) - 1
        assert lane_memory > 0 and emulated.streams
    # Closed: lanes (streams, buffers) are gone; the embedding keeps its own memory.
    assert not emulated.streams
    assert list(emulated.allocations) == [embedding.buffer.ptr]
    with pytest.raises(trt_backend.BackendClosedError):
        ours.decode(view, *_prompts(1, 2, seed=0))
    del embedding
    assert len(emulated.allocations) == 1  # the view still holds the batch
    del view
    assert emulated.allocations == {}
    ours.close()  # idempotent


def test_emulated_backend_lanes_under_threads(
    engine_dir: Path, emulated: _EmulatedCuda, fake_machine: _FakeTensorRT
) -> None:
    manifest = load_manifest(engine_dir)
    with trt_backend.TensorRTBackend(engine_dir, manifest, max_contexts=2) as ours:
        embedding = ours.encode(
            np.random.default_rng(3).standard_normal((1, 3, 1024, 1024)).astype(np.float32)
        )
        prompts = [_prompts(8, 2, seed=s) for s in range(12)]
        expected = [ours.decode(embedding, *p) for p in prompts]
        results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        errors: list[Exception] = []

        def work(index: int) -> None:
            try:
                results[index] = ours.decode(embedding, *prompts[index])
            except Exception as e:  # reported below, on the test's thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for index, (iou, low) in enumerate(expected):
            np.testing.assert_array_equal(results[index][0], iou)
            np.testing.assert_array_equal(results[index][1], low)
        # At most max_contexts lanes, each with one context per engine and one stream.
        (decoder,) = (e for e in fake_machine.engines if e.role == "decoder")
        assert 1 <= decoder.contexts_created <= 2
        assert len(emulated.streams) == decoder.contexts_created


# -- the CI helper that makes tensorrt-stubs usable by mypy ------------------------------------------


def _stub_tool() -> Any:
    spec = importlib.util.spec_from_file_location(
        "tensorrt_stubs_tool", REPO / "ci" / "tensorrt_stubs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stub_repair() -> None:
    tool = _stub_tool()
    assert (
        tool.repair_signature("    def f(self, in: list[int], out: list[int]) -> int:")
        == "    def f(self, in_: list[int], out: list[int]) -> int:"
    )
    assert (
        tool.repair_signature("    def g(self, a: int, b: W = None, c: int) -> X:")
        == "    def g(self, a: int, b: W = None, c: int = ...) -> X:"
    )
    unchanged = "    def h(self, a: dict[str, int] = {}, *, b: int) -> None:"
    assert tool.repair_signature(unchanged) == unchanged
    source = "class A:\n    def f(self, in: int) -> None:\n        ...\n"
    assert "in_: int" in tool.repair_source(source, "x.pyi")


# -- on a GPU with TensorRT: build, then compare with ONNX Runtime on the CPU -------------------------


def _gpu_skip_reason() -> str | None:
    try:
        trt_backend.require_tensorrt()
        trt_backend.current_gpu()
    except (BackendUnavailableError, trt_backend.CudaError) as e:
        return str(e)
    return None


_GPU_SKIP = _gpu_skip_reason()
gpu = pytest.mark.skipif(
    _GPU_SKIP is not None, reason=f"needs TensorRT and a CUDA GPU: {_GPU_SKIP}"
)


@pytest.fixture(scope="module", params=["synthetic", "tiny_model"])
def built_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, graphs_dir: Path
) -> Iterator[Path]:
    from samrt.trt_build import build_engines

    root = tmp_path_factory.mktemp(f"built-{request.param}")
    if request.param == "tiny_model":
        try:
            tiny = request.getfixturevalue("tiny_model")
        except pytest.FixtureLookupError:
            pytest.skip("the tiny_model fixture (from the exporter's conftest) is not available")
        import shutil

        shutil.copytree(tiny.engine_dir, root, dirs_exist_ok=True)
    else:
        for name in (contract.ENCODER_FILE, contract.DECODER_FILE):
            (root / name).write_bytes((graphs_dir / name).read_bytes())
        write_manifest(root, _manifest(root))
    build_engines(
        root, workspace_gib=2, limits=ProfileLimits(max_batch=2, max_prompts=32, opt_prompts=8)
    )
    yield root


def _prompts(n_prompts: int, n_points: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0, 1024, (n_prompts, n_points, 2)).astype(np.float32)
    labels = rng.integers(-1, 4, (n_prompts, n_points)).astype(np.float32)
    masks = rng.standard_normal((n_prompts, 1, 256, 256)).astype(np.float32)
    has_mask = (rng.uniform(size=n_prompts) > 0.5).astype(np.float32)
    return coords, labels, masks, has_mask


@gpu
@pytest.mark.gpu
def test_gpu_build_records_and_reuse(built_dir: Path) -> None:
    from samrt.trt_build import build_engines

    manifest = load_manifest(built_dir)
    gpu_info = trt_backend.current_gpu()
    version = trt_backend.require_tensorrt()
    for role in ("encoder", "decoder"):
        path, record = find_engine(built_dir, manifest, role, "fp32", gpu_info, version)
        assert read_verified_engine(path, record)
        assert record.source_sha256 == manifest.model(role).sha256
    assert (built_dir / timing_cache_file_name(gpu_info, version)).is_file()
    before = {p.name: p.stat().st_mtime_ns for p in built_dir.glob("*.engine")}
    build_engines(
        built_dir, workspace_gib=2, limits=ProfileLimits(max_batch=2, max_prompts=32, opt_prompts=8)
    )
    assert {
        p.name: p.stat().st_mtime_ns for p in built_dir.glob("*.engine")
    } == before  # up to date: kept


@gpu
@pytest.mark.gpu
def test_gpu_parity_with_onnxruntime(built_dir: Path) -> None:
    manifest = load_manifest(built_dir)
    reference = create_backend(built_dir, manifest, "onnxruntime-cpu")
    with trt_backend.TensorRTBackend(built_dir, manifest, max_contexts=2) as ours:
        images = np.random.default_rng(1).standard_normal((3, 3, 1024, 1024)).astype(np.float32)
        expected_embedding = reference.encode(images)  # 3 > max_batch 2: chunked
        embedding = ours.encode(images)
        np.testing.assert_allclose(
            ours.embedding_to_numpy(embedding), expected_embedding, rtol=1e-3, atol=5e-3
        )
        for index in range(3):
            image = ours.select_embedding(embedding, index)
            for n_prompts, n_points in ((1, 2), (40, 3)):  # 40 > max_prompts 32: chunked
                prompts = _prompts(n_prompts, n_points, seed=index)
                iou, low = ours.decode(image, *prompts)
                ref_iou, ref_low = reference.decode(expected_embedding[index : index + 1], *prompts)
                assert iou.dtype == low.dtype == np.float32
                np.testing.assert_allclose(iou, ref_iou, rtol=1e-3, atol=5e-3)
                np.testing.assert_allclose(low, ref_low, rtol=1e-3, atol=5e-3)
        restored = ours.embedding_from_numpy(expected_embedding[1:2])
        np.testing.assert_allclose(
            ours.embedding_to_numpy(restored), expected_embedding[1:2], rtol=1e-6
        )
        with pytest.raises(ValueError, match="max-points"):
            ours.decode(restored, *_prompts(1, ours.max_points + 1, seed=0))


@gpu
@pytest.mark.gpu
def test_gpu_concurrent_calls_agree(built_dir: Path) -> None:
    manifest = load_manifest(built_dir)
    with trt_backend.TensorRTBackend(built_dir, manifest, max_contexts=2) as ours:
        embedding = ours.encode(
            np.random.default_rng(2).standard_normal((1, 3, 1024, 1024)).astype(np.float32)
        )
        prompts = [_prompts(8, 2, seed=s) for s in range(6)]
        expected = [ours.decode(embedding, *p) for p in prompts]
        results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        errors: list[Exception] = []

        def work(index: int) -> None:
            try:
                results[index] = ours.decode(embedding, *prompts[index])
            except Exception as e:  # reported below, on the test's thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for index, (iou, low) in enumerate(expected):
            np.testing.assert_array_equal(results[index][0], iou)
            np.testing.assert_array_equal(results[index][1], low)
    with pytest.raises(trt_backend.BackendClosedError):
        ours.decode(embedding, *prompts[0])
