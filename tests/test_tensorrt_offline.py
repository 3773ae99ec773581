"""The TensorRT path without TensorRT: profiles from the manifest, engine naming and lookup,
manifest records, the hash check before deserialization, missing-package errors, the auto
order, and the backend's data flow on an emulated GPU against ONNX Runtime.

Named for its oracle where there is one: the emulated engines' results are compared with
OnnxRuntimeBackend on the same graphs, through Backend.run and through samrt.Predictor;
the GPU tests at the end compare real TensorRT engines with ONNX Runtime on the CPU and
run only where TensorRT and a GPU are present.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import shutil
import subprocess
import sys
import threading
import types
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import samrt
from samrt import contract
from samrt.backends import BACKEND_NAMES, create_backend
from samrt.backends import tensorrt as trt_backend
from samrt.backends.onnxruntime import CPU, OnnxRuntimeBackend
from samrt.backends.tensorrt import (
    DeviceTensor,
    EngineRecord,
    GpuInfo,
    ProfileLimits,
    ShapeRange,
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

ENCODER, DECODER_IMAGE, DECODER_PROMPTS, DECODER_MASKS = contract.ROLES
IOU, MASK_WEIGHTS, PROMPT_TOKENS = contract.DECODER_PROMPTS_OUTPUTS
(LOW_RES,) = contract.DECODER_MASKS_OUTPUTS


# -- a tiny engine directory: four small ONNX graphs with the contract's I/O ----------------------


def _exporter_specs() -> Mapping[str, Any]:
    """The exporter's GraphSpecs (names, dtypes, symbolic dims B, P, N, M), so that the
    synthetic graphs have exactly the interface of an exported model."""
    graphs = pytest.importorskip("samrt_export.graphs")
    specs: Mapping[str, Any] = graphs.SPECS
    return specs


def _nodes(role: str) -> tuple[list[Any], list[Any]]:
    """Trivial arithmetic from a graph's inputs to its outputs, in which every output
    depends on every input (and each prompt's rows on that prompt's inputs)."""
    from onnx import helper, numpy_helper

    def const(name: str, value: Any) -> Any:
        return numpy_helper.from_array(np.asarray(value), name)

    node = helper.make_node
    dim, tokens = contract.EMBEDDING_DIM, contract.EMBEDDING_SIZE**2
    heads, head_dim = contract.DECODER_HEADS, contract.DECODER_HEAD_DIM
    if role == ENCODER:
        rng = np.random.default_rng(0)
        weights = [
            const("w", rng.standard_normal((dim, 3, 1, 1)).astype(np.float32)),
            const("b", rng.standard_normal(dim).astype(np.float32)),
        ]
        return [
            node("AveragePool", ["image"], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]),
            node("Conv", ["pooled", "w", "b"], [contract.ENCODER_OUTPUT]),
        ], weights
    if role == DECODER_IMAGE:
        t, k, v, q = contract.DECODER_IMAGE_OUTPUTS
        half = heads * head_dim
        return [
            node("Reshape", [contract.ENCODER_OUTPUT, "flat"], ["flat_emb"]),
            node("Transpose", ["flat_emb"], ["seq"], perm=[0, 2, 1]),
            node("Add", ["seq", "one"], [t]),
            node("Slice", [t, "zero", "half", "two"], ["first"]),
            node("Slice", [t, "half", "full", "two"], ["second"]),
            node("Reshape", ["first", "split"], ["first4"]),
            node("Reshape", ["second", "split"], ["second4"]),
            node("Transpose", ["first4"], ["h1"], perm=[0, 2, 1, 3]),
            node("Transpose", ["second4"], ["h2"], perm=[0, 2, 1, 3]),
            node("Mul", ["h1", "two_f"], [k]),
            node("Sub", ["h1", "one"], [v]),
            node("Mul", ["h2", "half_f"], [q]),
        ], [
            const("flat", np.array([1, dim, tokens], np.int64)),
            const("split", np.array([1, tokens, heads, head_dim], np.int64)),
            const("zero", np.array([0], np.int64)),
            const("half", np.array([half], np.int64)),
            const("full", np.array([dim], np.int64)),
            const("two", np.array([2], np.int64)),
            const("one", np.float32(1.0)),
            const("two_f", np.float32(2.0)),
            const("half_f", np.float32(0.5)),
        ]
    if role == DECODER_PROMPTS:
        t, k, v, q = contract.DECODER_IMAGE_OUTPUTS
        coords, labels, masks, has_mask = contract.PROMPT_INPUTS
        rng = np.random.default_rng(1)
        return [
            # Sums over N are 0 for prompts without points (N = 0).
            node("ReduceSum", [coords, "axes12"], ["coord_sum"], keepdims=0),
            node("ReduceSum", [labels, "axes1"], ["label_sum"], keepdims=0),
            node("ReduceMean", [masks], ["mask_mean"], axes=[1, 2, 3], keepdims=0),
            node("Mul", ["mask_mean", has_mask], ["mask_term"]),
            node("ReduceMean", [k], ["k_mean"], keepdims=0),
            node("ReduceMean", [v], ["v_mean"], keepdims=0),
            node("ReduceMean", [q], ["q_mean"], keepdims=0),
            node("Add", ["k_mean", "v_mean"], ["kv"]),
            node("Add", ["kv", "q_mean"], ["image_term"]),
            node("Mul", ["coord_sum", "hundredth"], ["coord_term"]),
            node("Add", ["coord_term", "label_sum"], ["point_term"]),
            node("Add", ["point_term", "mask_term"], ["prompt_term"]),
            node("Add", ["prompt_term", "image_term"], ["score"]),  # [P]
            node("Unsqueeze", ["score", "axes1"], ["score2"]),  # [P,1]
            node("Mul", ["score2", "iou_scale"], [IOU]),  # [P,4]
            node("Unsqueeze", [IOU, "axes2"], ["iou3"]),  # [P,4,1]
            node("Mul", ["iou3", "weight_basis"], [MASK_WEIGHTS]),  # [P,4,32]
            node("Unsqueeze", ["score", "axes12"], ["score3"]),  # [P,1,1]
            node("Mul", [t, "score3"], ["scaled"]),  # [P,4096,256]
            node("Add", ["scaled", t], [PROMPT_TOKENS]),
        ], [
            const("axes1", np.array([1], np.int64)),
            const("axes2", np.array([2], np.int64)),
            const("axes12", np.array([1, 2], np.int64)),
            const("hundredth", np.float32(0.01)),
            const("iou_scale", np.array([[0.5, 1.0, 1.5, 2.0]], np.float32)),
            const(
                "weight_basis",
                rng.standard_normal(
                    (1, contract.NUM_MASK_OUTPUTS, contract.MASK_WEIGHT_DIM)
                ).astype(np.float32),
            ),
        ]
    # decoder_masks: [P,M,32] x [P,32,4096] -> [P,M,64,64], tiled to [P,M,256,256].
    tokens_in, weights_in = contract.DECODER_MASKS_INPUTS
    side = contract.EMBEDDING_SIZE
    repeat = contract.LOW_RES_SIZE // side
    return [
        node("Slice", [tokens_in, "zero", "width", "two"], ["narrow"]),
        node("Transpose", ["narrow"], ["narrow_t"], perm=[0, 2, 1]),
        node("MatMul", [weights_in, "narrow_t"], ["products"]),
        node("Reshape", ["products", "grid"], ["grid4"]),
        node("Tile", ["grid4", "repeats"], [LOW_RES]),
    ], [
        const("zero", np.array([0], np.int64)),
        const("width", np.array([contract.MASK_WEIGHT_DIM], np.int64)),
        const("two", np.array([2], np.int64)),
        const("grid", np.array([0, 0, side, side], np.int64)),
        const("repeats", np.array([1, 1, repeat, repeat], np.int64)),
    ]


def _write_graphs(root: Path) -> None:
    """Writes the four graphs of contract.GRAPH_FILES, checked against the exporter's own
    interface check."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    specs = _exporter_specs()
    graphs = pytest.importorskip("samrt_export.graphs")

    def value(spec: TensorSpec) -> Any:
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
        return helper.make_tensor_value_info(spec.name, elem, list(spec.shape))

    for role in contract.ROLES:
        nodes, initializers = _nodes(role)
        spec = specs[role]
        graph = helper.make_graph(
            nodes,
            role,
            [value(t) for t in spec.inputs],
            [value(t) for t in spec.outputs],
            initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        path = root / contract.GRAPH_FILES[role]
        onnx.save(model, str(path))
        graphs.check_graph_interface(path, spec)


def _manifest(root: Path, extra: dict[str, Any] | None = None) -> Manifest:
    specs = _exporter_specs()
    variant = {
        role: ModelFile(
            contract.GRAPH_FILES[role],
            sha256_file(root / contract.GRAPH_FILES[role]),
            specs[role].inputs,
            specs[role].outputs,
        )
        for role in contract.ROLES
    }
    return Manifest(
        format_version=contract.MANIFEST_FORMAT_VERSION,
        samrt_version="0.1.0",
        family="sam",
        model_type="vit_b",
        model_config={"synthetic": True},
        image_size=contract.IMAGE_SIZE,
        pixel_mean=contract.PIXEL_MEAN,
        pixel_std=contract.PIXEL_STD,
        mask_threshold=contract.MASK_THRESHOLD,
        opset=17,
        source={"random_init_seed": 0},
        variants={"fp32": variant},
        extra=dict(extra or {}),
    )


@pytest.fixture(scope="module")
def graphs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("graphs")
    _write_graphs(root)
    return root


def _copy_graphs(graphs_dir: Path, root: Path) -> None:
    for name in contract.GRAPH_FILES.values():
        (root / name).write_bytes((graphs_dir / name).read_bytes())
    write_manifest(root, _manifest(root))


@pytest.fixture
def engine_dir(graphs_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "engine"
    root.mkdir()
    _copy_graphs(graphs_dir, root)
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
        profiles=profiles_for(source, limits or ProfileLimits()),
        workspace_bytes=1 << 30,
        build_seconds=12.5,
        built_at="2026-01-01T00:00:00+00:00",
    )


def _with_fake_engines(root: Path, *gpus: GpuInfo, version: str = TRT) -> Manifest:
    manifest = load_manifest(root)
    records = {}
    for gpu in gpus:
        for role in contract.ROLES:
            record = _fake_engine(
                root, manifest, role, gpu, f"{role} for {gpu.name}".encode(), version
            )
            records[record.file] = record
    manifest = with_engine_records(manifest, records)
    write_manifest(root, manifest)
    return manifest


# -- profiles: from the manifest's TensorSpecs ---------------------------------------------------


def test_profiles_follow_the_manifests_symbolic_dims(engine_dir: Path) -> None:
    manifest = load_manifest(engine_dir)
    size, low = contract.IMAGE_SIZE, contract.LOW_RES_SIZE
    assert profiles_for(manifest.model(ENCODER)) == {
        "image": ShapeRange((1, 3, size, size), (1, 3, size, size), (8, 3, size, size))
    }
    # decoder_image has fixed shapes only.
    image_side = profiles_for(manifest.model(DECODER_IMAGE))
    assert all(shape.fixed for shape in image_side.values())
    prompts = profiles_for(manifest.model(DECODER_PROMPTS))
    # N (points per prompt) starts at 0: a mask input alone, or no prompt at all.
    assert prompts["point_coords"] == ShapeRange((1, 0, 2), (64, 2, 2), (256, 16, 2))
    assert prompts["point_labels"] == ShapeRange((1, 0), (64, 2), (256, 16))
    assert prompts["mask_input"] == ShapeRange(
        (1, 1, low, low), (64, 1, low, low), (256, 1, low, low)
    )
    assert prompts["has_mask_input"] == ShapeRange((1,), (64,), (256,))
    tokens = (contract.EMBEDDING_SIZE**2, contract.EMBEDDING_DIM)
    assert prompts["image_tokens"] == ShapeRange((1, *tokens), (1, *tokens), (1, *tokens))
    masks = profiles_for(manifest.model(DECODER_MASKS))
    # M: the single mask, or the three multimask outputs; at most NUM_MASK_OUTPUTS.
    weights = contract.MASK_WEIGHT_DIM
    assert masks["mask_weights"] == ShapeRange(
        (1, 1, weights), (64, 3, weights), (256, contract.NUM_MASK_OUTPUTS, weights)
    )
    assert masks["prompt_image_tokens"] == ShapeRange((1, *tokens), (64, *tokens), (256, *tokens))


def test_profile_limits_are_configurable(engine_dir: Path) -> None:
    manifest = load_manifest(engine_dir)
    limits = ProfileLimits(max_prompts=32, opt_prompts=8, max_points=4, opt_points=1, opt_masks=1)
    assert profiles_for(manifest.model(DECODER_PROMPTS), limits)["point_coords"] == ShapeRange(
        (1, 0, 2), (8, 1, 2), (32, 4, 2)
    )
    assert profiles_for(manifest.model(DECODER_MASKS), limits)["mask_weights"].opt == (8, 1, 32)
    encoder = profiles_for(manifest.model(ENCODER), ProfileLimits(max_batch=2, opt_batch=2))
    assert encoder["image"].opt == (2, 3, 1024, 1024)


def test_profile_of_an_unknown_dimension(engine_dir: Path) -> None:
    model = load_manifest(engine_dir).model(DECODER_PROMPTS)
    odd = replace(model, inputs=(TensorSpec("point_coords", "float32", ("P", "Q", 2)),))
    with pytest.raises(ValueError, match=r"dimension 'Q'.*samrt export"):
        profiles_for(odd)


@pytest.mark.parametrize(
    "limits",
    [
        {"max_batch": 0},
        {"opt_batch": 9},
        {"opt_prompts": 300},
        {"max_points": 1, "opt_points": 2},
        {"opt_points": -1},
        {"opt_masks": 0},
        {"opt_masks": contract.NUM_MASK_OUTPUTS + 1},
    ],
)
def test_bad_profile_limits(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="opt_"):
        ProfileLimits(**limits)


def test_shape_range_allows_empty_dims() -> None:
    assert ShapeRange((1, 0, 2), (4, 2, 2), (8, 16, 2)).max == (8, 16, 2)
    assert ShapeRange((0,), (0,), (0,)).fixed
    # Engines for prompts without points only.
    assert ProfileLimits(max_points=0, opt_points=0).ranges()["N"] == (0, 0, 0)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeRange((2,), (1,), (4,))
    with pytest.raises(ValueError, match="min <= opt"):
        ShapeRange((-1,), (1,), (1,))
    with pytest.raises(ValueError, match="one rank"):
        ShapeRange((1,), (1, 1), (1,))


def test_build_fits_profile_to_static_dimensions(engine_dir: Path) -> None:
    from samrt.trt_build import _fit_profile

    wanted = profiles_for(load_manifest(engine_dir).model(ENCODER))["image"]
    assert _fit_profile(wanted, (-1, 3, 1024, 1024)) == wanted
    # A graph exported with a fixed batch of 1 gets an engine for batch 1 only.
    one = (1, 3, 1024, 1024)
    assert _fit_profile(wanted, one) == ShapeRange(one, one, one)
    assert _fit_profile(wanted, (-1, 3, 512, 512)) is None
    assert _fit_profile(wanted, (-1, 3, 1024)) is None
    # A graph with a fixed number of points (here 0: mask prompts only) fits N's range.
    coords = profiles_for(load_manifest(engine_dir).model(DECODER_PROMPTS))["point_coords"]
    assert _fit_profile(coords, (-1, 0, 2)) == ShapeRange((1, 0, 2), (64, 0, 2), (256, 0, 2))
    assert _fit_profile(coords, (-1, 17, 2)) is None


# -- the backend's data flow on an emulated GPU, against ONNX Runtime ------------------------------
#
# No GPU here, so cuda-python and TensorRT are replaced by an emulation: device memory is a
# set of host byte arrays addressed by fake pointers, and an "engine" is its ONNX graph run
# by ONNX Runtime on whatever the backend bound, in the I/O dtypes the engine declares, as
# TensorRT would with the shapes set on its context (outputs' shapes from the manifest's
# symbolic dims, as TensorRT's shape inference would compute them). This checks what the
# backend does with its buffers: uploads into lane buffers, device tensors bound in place,
# outputs in their own memory or copied back, row selection on the device, lanes shared
# between threads, and that every allocation is freed.

_EMULATED = b"emulated-engine:"


class _EmulatedCuda:
    """cuda.bindings.runtime as the backend uses it: (error, value) tuples, fake pointers."""

    class cudaError_t:  # the names cuda-python uses
        cudaSuccess = 0
        cudaErrorInvalidValue = 1

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2
        cudaMemcpyDeviceToDevice = 3

    cudaStreamNonBlocking = 1

    def __init__(self) -> None:
        self.allocations: dict[int, bytearray] = {}
        self.streams: set[int] = set()
        self.copies: list[tuple[int, int]] = []  # (kind, bytes)
        self._next = 1 << 20
        self._lock = threading.Lock()

    def cudaMalloc(self, nbytes: int) -> tuple[int, int]:
        assert nbytes > 0, "cudaMalloc(0)"
        with self._lock:
            ptr = self._next
            self._next += (nbytes + 511) // 256 * 256
            self.allocations[ptr] = bytearray(nbytes)
        return (0, ptr)

    def cudaFree(self, ptr: int) -> tuple[int]:
        with self._lock:
            return (0,) if self.allocations.pop(ptr, None) is not None else (1,)

    def memory(self, ptr: int, nbytes: int) -> memoryview:
        # Like TensorRT, even an empty tensor needs an address inside an allocation.
        with self._lock:
            for base, buffer in self.allocations.items():
                if base <= ptr and ptr + nbytes <= base + len(buffer) and ptr < base + len(buffer):
                    return memoryview(buffer)[ptr - base : ptr - base + nbytes]
        raise AssertionError(f"{nbytes} bytes at {ptr:#x} are not inside one allocation")

    def cudaMemcpy(self, dst: int, src: int, nbytes: int, kind: int) -> tuple[int]:
        with self._lock:
            self.copies.append((kind, nbytes))
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            self.memory(dst, nbytes)[:] = ctypes.string_at(src, nbytes)
        elif kind == self.cudaMemcpyKind.cudaMemcpyDeviceToHost:
            ctypes.memmove(dst, bytes(self.memory(src, nbytes)), nbytes)
        else:
            assert kind == self.cudaMemcpyKind.cudaMemcpyDeviceToDevice
            self.memory(dst, nbytes)[:] = bytes(self.memory(src, nbytes))
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


class _DataType:
    def __init__(self, name: str) -> None:
        self.name = name


class _EmulatedEngine:
    """A graph as a TensorRT engine built from it would present it."""

    def __init__(
        self,
        role: str,
        device: _EmulatedCuda,
        graph: Path,
        model: ModelFile,
        profile: Mapping[str, ShapeRange],
        half: frozenset[str],
    ) -> None:
        import onnxruntime as ort

        self.role = role
        self.device = device
        # The tensors of its source graph, as the manifest lists them (whatever the family).
        self.inputs = tuple(t.name for t in model.inputs)
        self.outputs = tuple(t.name for t in model.outputs)
        self.specs = {t.name: t for t in (*model.inputs, *model.outputs)}
        self.profile = profile
        self.half = half
        self.session = ort.InferenceSession(str(graph), providers=[CPU])
        self.contexts: list[_EmulatedContext] = []

    @property
    def num_io_tensors(self) -> int:
        return len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, index: int) -> str:
        return (*self.inputs, *self.outputs)[index]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name in self.inputs else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> _DataType:
        return _DataType("HALF" if name in self.half else "FLOAT")

    def dtype(self, name: str) -> np.dtype[Any]:
        return np.dtype(np.float16 if name in self.half else np.float32)

    def create_execution_context(self) -> _EmulatedContext:
        context = _EmulatedContext(self)
        self.contexts.append(context)
        return context


class _EmulatedContext:
    def __init__(self, engine: _EmulatedEngine) -> None:
        self.engine = engine
        # Static inputs have their shape from the start, dynamic ones once set.
        self.shapes: dict[str, tuple[int, ...]] = {
            name: shape.min for name, shape in engine.profile.items() if shape.fixed
        }
        self.addresses: dict[str, int] = {}
        self.busy = threading.Lock()

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        assert name in self.engine.inputs
        shape = tuple(int(d) for d in shape)
        profile = self.engine.profile[name]
        if len(shape) != len(profile.min) or not all(
            lo <= d <= hi for lo, d, hi in zip(profile.min, shape, profile.max, strict=True)
        ):
            return False
        self.shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        spec = self.engine.specs[name]
        if name in self.engine.inputs:
            return self.shapes.get(name, tuple(-1 for _ in spec.shape))
        dims: dict[str, int] = {}
        for input_name in self.engine.inputs:
            for want, got in zip(
                self.engine.specs[input_name].shape, self.shapes.get(input_name, ())
            ):
                if isinstance(want, str):
                    dims[want] = got
        return tuple(d if isinstance(d, int) else dims.get(d, -1) for d in spec.shape)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        assert ptr % 256 == 0, f"{name} at {ptr:#x}: TensorRT's I/O addresses are 256-byte aligned"
        self.addresses[name] = ptr
        return True

    def _view(self, name: str) -> np.ndarray:
        shape = self.get_tensor_shape(name)
        assert min(shape, default=0) >= 0, f"{name}: shape not set"
        dtype = self.engine.dtype(name)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        memory = self.engine.device.memory(self.addresses[name], nbytes)
        return np.frombuffer(memory, dtype).reshape(shape)

    def execute_async_v3(self, stream: int) -> bool:
        assert stream in self.engine.device.streams
        # An execution context runs one inference at a time: two at once is the bug lanes prevent.
        assert self.busy.acquire(blocking=False), "one execution context used by two calls at once"
        try:
            feeds = {name: self._view(name).astype(np.float32) for name in self.engine.inputs}
            produced = self.engine.session.run(list(self.engine.outputs), feeds)
            for name, value in zip(self.engine.outputs, produced, strict=True):
                out = self._view(name)
                assert out.shape == value.shape, (name, out.shape, value.shape)
                out[...] = value.astype(out.dtype)
        finally:
            self.busy.release()
        return True


class _FakeTensorRT(types.ModuleType):
    """Just enough of `tensorrt` to reach deserialization, recording what it is given; with
    an emulated device, it deserializes emulated engines."""

    def __init__(self) -> None:
        super().__init__("tensorrt")
        self.__version__ = TRT
        self.deserialized: list[bytes] = []
        self.device: _EmulatedCuda | None = None
        self.engine_dir: Path | None = None
        self.half: frozenset[str] = frozenset()
        self.engines: list[_EmulatedEngine] = []
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
                if fake.device is None or not bytes(data).startswith(_EMULATED):
                    return None
                return fake.emulated_engine(bytes(data).removeprefix(_EMULATED).decode())

        class TensorIOMode:
            INPUT, OUTPUT = "INPUT", "OUTPUT"

        self.ILogger = ILogger
        self.Runtime = Runtime
        self.TensorIOMode = TensorIOMode

    def emulated_engine(self, role: str) -> _EmulatedEngine:
        assert self.device is not None and self.engine_dir is not None
        manifest = load_manifest(self.engine_dir, verify=False)
        model = manifest.model(role)
        (record,) = (r for r in engine_records(manifest).values() if r.role == role)
        engine = _EmulatedEngine(
            role, self.device, self.engine_dir / model.file, model, record.profiles, self.half
        )
        self.engines.append(engine)
        return engine

    def engine(self, role: str) -> _EmulatedEngine:
        (engine,) = (e for e in self.engines if e.role == role)
        return engine


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


# -- engine names and lookup ---------------------------------------------------------------------


def test_engine_file_name() -> None:
    assert (
        engine_file_name("encoder", "fp32", H100, TRT)
        == "encoder.fp32.NVIDIA_H100_80GB_HBM3.sm90.trt10.13.0.engine"
    )
    assert (
        engine_file_name("decoder_prompts", "fp16", L4, "11.0.1.4")
        == "decoder_prompts.fp16.NVIDIA_L4.sm89.trt11.0.1.engine"
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
    path, record = find_engine(engine_dir, manifest, "decoder_prompts", "fp32", A100, TRT)
    assert path == engine_dir / "decoder_prompts.fp32.NVIDIA_A100_SXM4_40GB.sm80.trt10.13.0.engine"
    assert record.gpu == A100.name and record.role == "decoder_prompts"
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
    (engine_dir / engine_file_name("decoder_prompts", "fp32", H100, TRT)).unlink()
    with pytest.raises(EngineDirError, match="decoder_prompts.fp32.*is missing.*samrt build"):
        find_engine(engine_dir, manifest, "decoder_prompts", "fp32", H100, TRT)


def test_engine_built_from_another_export(engine_dir: Path) -> None:
    manifest = _with_fake_engines(engine_dir, H100)
    (engine_dir / contract.DECODER_PROMPTS_FILE).write_bytes(b"re-exported")
    variants = dict(manifest.variants)
    old = variants["fp32"]["decoder_prompts"]
    variants["fp32"] = {
        **variants["fp32"],
        "decoder_prompts": ModelFile(
            old.file, sha256_file(engine_dir / old.file), old.inputs, old.outputs
        ),
    }
    reexported = replace(manifest, variants=variants)
    with pytest.raises(
        EngineDirError, match="built from another decoder_prompts export.*samrt build"
    ):
        find_engine(engine_dir, reexported, "decoder_prompts", "fp32", H100, TRT)
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
    for role in contract.ROLES:
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


def test_backend_refuses_tampered_engine_before_deserializing(
    engine_dir: Path, fake_machine: _FakeTensorRT
) -> None:
    manifest = _with_fake_engines(engine_dir, H100)
    (engine_dir / engine_file_name("decoder_prompts", "fp32", H100, TRT)).write_bytes(
        b"not what samrt build wrote"
    )
    with pytest.raises(
        EngineDirError,
        match="decoder_prompts.fp32.NVIDIA_H100_80GB_HBM3.sm90.trt10.13.0.engine has sha256.*samrt build",
    ):
        create_backend(engine_dir, manifest, "tensorrt", roles=contract.ROLES)
    # Not even the untampered encoder was handed to TensorRT.
    assert fake_machine.deserialized == []


def test_backend_deserializes_exactly_the_verified_bytes(
    engine_dir: Path, fake_machine: _FakeTensorRT
) -> None:
    # The control for the test above: with intact engines, deserialization is reached.
    manifest = _with_fake_engines(engine_dir, H100)
    with pytest.raises(EngineDirError, match="TensorRT could not load .*encoder.*samrt build"):
        create_backend(engine_dir, manifest, "tensorrt", roles=contract.ROLES)
    assert fake_machine.deserialized == [b"encoder for NVIDIA H100 80GB HBM3"]


def test_backend_without_engines_for_this_gpu(
    engine_dir: Path, fake_machine: _FakeTensorRT
) -> None:
    manifest = _with_fake_engines(engine_dir, A100)
    with pytest.raises(
        EngineDirError, match="no TensorRT fp32 encoder engine for NVIDIA H100.*samrt build"
    ):
        create_backend(engine_dir, manifest, "tensorrt", roles=contract.ROLES)
    assert fake_machine.deserialized == []


# -- missing packages ---------------------------------------------------------------------------


def test_tensorrt_is_a_backend_name() -> None:
    assert "tensorrt" in BACKEND_NAMES


def test_tensorrt_not_installed(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(
        BackendUnavailableError, match=r"tensorrt package cannot be imported.*pip install tensorrt"
    ):
        create_backend(engine_dir, load_manifest(engine_dir), "tensorrt", roles=contract.ROLES)


def test_only_tensorrt_stubs_installed(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tensorrt-stubs leaves a tensorrt/ folder of .pyi files, which imports as an empty package.
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(BackendUnavailableError, match=r"only type stubs.*pip install tensorrt"):
        create_backend(engine_dir, load_manifest(engine_dir), "tensorrt", roles=contract.ROLES)


def test_tensorrt_too_old(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _FakeTensorRT()
    old.__version__ = "8.6.1"
    monkeypatch.setitem(sys.modules, "tensorrt", old)
    with pytest.raises(
        BackendUnavailableError, match=r"TensorRT 8.6.1 is too old.*pip install -U tensorrt"
    ):
        create_backend(engine_dir, load_manifest(engine_dir), "tensorrt", roles=contract.ROLES)


def test_cuda_python_not_installed(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTensorRT())
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    with pytest.raises(
        BackendUnavailableError, match=r"cuda-python cannot be imported.*pip install cuda-python"
    ):
        create_backend(engine_dir, load_manifest(engine_dir), "tensorrt", roles=contract.ROLES)


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
        create_backend(engine_dir, load_manifest(engine_dir), "tensorrt", roles=contract.ROLES)


def test_build_without_tensorrt(engine_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from samrt.trt_build import build_engines, main

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match="pip install tensorrt"):
        build_engines(engine_dir)
    assert main([str(engine_dir)]) == 1
    with pytest.raises(EngineDirError, match="no fp16 encoder"):
        build_engines(engine_dir, precision="fp16")
    assert main([str(engine_dir), "--role", DECODER_MASKS, "--max-points", "0"]) == 1
    with pytest.raises(ValueError, match="roles must be some of"):
        build_engines(engine_dir, roles=("mask_decoder",))
    with pytest.raises(SystemExit):
        main([str(engine_dir), "--role", "mask_decoder"])
    # SAM 2.1's decoder is a role, but not one of this SAM engine directory's graphs.
    with pytest.raises(EngineDirError, match="no fp32 decoder"):
        build_engines(engine_dir, roles=(contract.SAM2_DECODER,))
    # Profiles come from the manifest before TensorRT is needed: a dimension without a range
    # is refused first.
    manifest = load_manifest(engine_dir)
    variant = dict(manifest.variants["fp32"])
    odd = TensorSpec(contract.ENCODER_INPUT, "float32", ("B", 3, "H", "W"))
    variant[ENCODER] = replace(variant[ENCODER], inputs=(odd,))
    write_manifest(engine_dir, replace(manifest, variants={"fp32": variant}))
    with pytest.raises(ValueError, match=r"dimension 'H'"):
        build_engines(engine_dir)
    assert main([str(engine_dir)]) == 1


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
        backend = create_backend(
            engine_dir, load_manifest(engine_dir), "auto", roles=contract.ROLES
        )
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


# -- the emulated backend's results against ONNX Runtime ---------------------------------------------

SMALL = ProfileLimits(max_batch=2, max_prompts=8, opt_prompts=4, max_points=4)


def _emulate(
    engine_dir: Path,
    fake_machine: _FakeTensorRT,
    monkeypatch: pytest.MonkeyPatch,
    *,
    limits: ProfileLimits = SMALL,
    half: frozenset[str] = frozenset(),
) -> _EmulatedCuda:
    device = _EmulatedCuda()
    fake_machine.device, fake_machine.engine_dir, fake_machine.half = device, engine_dir, half
    monkeypatch.setattr(trt_backend, "require_cuda", lambda: device)
    manifest = load_manifest(engine_dir)
    records = {}
    for role in manifest.variants["fp32"]:
        payload = _EMULATED + role.encode()
        record = _fake_engine(engine_dir, manifest, role, H100, payload, limits=limits)
        records[record.file] = record
    write_manifest(engine_dir, with_engine_records(manifest, records))
    return device


@pytest.fixture
def emulated(
    engine_dir: Path, fake_machine: _FakeTensorRT, monkeypatch: pytest.MonkeyPatch
) -> _EmulatedCuda:
    return _emulate(engine_dir, fake_machine, monkeypatch)


def _reference(engine_dir: Path) -> OnnxRuntimeBackend:
    backend = create_backend(
        engine_dir, load_manifest(engine_dir), "onnxruntime-cpu", roles=contract.ROLES
    )
    assert isinstance(backend, OnnxRuntimeBackend)
    return backend


def _tensorrt(engine_dir: Path, **kwargs: Any) -> trt_backend.TensorRTBackend:
    backend = trt_backend.TensorRTBackend(
        engine_dir, load_manifest(engine_dir), roles=contract.ROLES, **kwargs
    )
    return backend


def _prompt_inputs(n_prompts: int, n_points: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    coords, labels, masks, has_mask = contract.PROMPT_INPUTS
    return {
        coords: rng.uniform(0, 1024, (n_prompts, n_points, 2)).astype(np.float32),
        labels: rng.integers(-1, 4, (n_prompts, n_points)).astype(np.float32),
        masks: rng.standard_normal((n_prompts, 1, 256, 256)).astype(np.float32),
        has_mask: (rng.uniform(size=n_prompts) > 0.5).astype(np.float32),
    }


def _assert_close(got: Any, want: np.ndarray, rtol: float, atol: float) -> None:
    assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def _check_run_against_onnxruntime(
    ours: trt_backend.TensorRTBackend,
    reference: OnnxRuntimeBackend,
    *,
    rtol: float,
    atol: float,
    cases: tuple[tuple[int, int], ...],
) -> None:
    """The four graphs chained as the SAM family chains them, every result against ONNX
    Runtime fed the same inputs: device tensors where the family keeps them on the device,
    host arrays for what it asks back."""
    images = np.random.default_rng(1).standard_normal((2, 3, 1024, 1024)).astype(np.float32)
    (want_embedding,) = reference.run(
        ENCODER, {"image": images}, (contract.ENCODER_OUTPUT,)
    ).values()
    (embedding,) = ours.run(ENCODER, {"image": images}, (contract.ENCODER_OUTPUT,)).values()
    assert isinstance(embedding, DeviceTensor) and embedding.shape == (2, 256, 64, 64)
    _assert_close(ours.to_numpy(embedding), want_embedding, rtol, atol)
    for index in range(2):
        image = embedding.rows(index, index + 1)  # a view of the batch: no copy
        assert image.buffer is embedding.buffer
        side = ours.run(
            DECODER_IMAGE, {contract.ENCODER_OUTPUT: image}, contract.DECODER_IMAGE_OUTPUTS
        )
        want_side = reference.run(
            DECODER_IMAGE,
            {contract.ENCODER_OUTPUT: want_embedding[index : index + 1]},
            contract.DECODER_IMAGE_OUTPUTS,
        )
        for name in contract.DECODER_IMAGE_OUTPUTS:
            assert isinstance(side[name], DeviceTensor)
            _assert_close(ours.to_numpy(side[name]), want_side[name], rtol, atol)
        for n_prompts, n_points in cases:
            prompts = _prompt_inputs(n_prompts, n_points, seed=index)
            out = ours.run(
                DECODER_PROMPTS,
                {**side, **prompts},
                contract.DECODER_PROMPTS_OUTPUTS,
                to_host=(IOU, MASK_WEIGHTS),
            )
            want = reference.run(
                DECODER_PROMPTS,
                {**want_side, **prompts},
                contract.DECODER_PROMPTS_OUTPUTS,
                to_host=(IOU, MASK_WEIGHTS),
            )
            assert list(out) == list(contract.DECODER_PROMPTS_OUTPUTS)
            _assert_close(out[IOU], want[IOU], rtol, atol)
            _assert_close(out[MASK_WEIGHTS], want[MASK_WEIGHTS], rtol, atol)
            tokens = out[PROMPT_TOKENS]
            assert isinstance(tokens, DeviceTensor)
            _assert_close(ours.to_numpy(tokens), want[PROMPT_TOKENS], rtol, atol)
            rows = np.arange(n_prompts)[::-2].copy()  # some prompts, out of order
            for chosen in (slice(0, 1), slice(1, None)):  # M = 1 and M = 3
                for picked, weights, want_tokens in (
                    (tokens, out[MASK_WEIGHTS][:, chosen], want[PROMPT_TOKENS]),
                    (
                        ours.take(tokens, rows),
                        out[MASK_WEIGHTS][rows, chosen],
                        want[PROMPT_TOKENS][rows],
                    ),
                ):
                    inputs = dict(
                        zip(contract.DECODER_MASKS_INPUTS, (picked, weights), strict=True)
                    )
                    (masks,) = ours.run(
                        DECODER_MASKS, inputs, (LOW_RES,), to_host=(LOW_RES,)
                    ).values()
                    want_inputs = dict(
                        zip(contract.DECODER_MASKS_INPUTS, (want_tokens, weights), strict=True)
                    )
                    (want_masks,) = reference.run(
                        DECODER_MASKS, want_inputs, (LOW_RES,), to_host=(LOW_RES,)
                    ).values()
                    _assert_close(masks, want_masks, rtol, atol)


def test_emulated_backend_run_matches_onnxruntime(
    engine_dir: Path, emulated: _EmulatedCuda
) -> None:
    ours = create_backend(engine_dir, load_manifest(engine_dir), "tensorrt", roles=contract.ROLES)
    assert isinstance(ours, trt_backend.TensorRTBackend)
    assert ours.name.startswith("tensorrt 10.13.0.35 (NVIDIA H100 80GB HBM3, sm90")
    assert ours.on_device and ours.prompts_per_run == 8
    assert ours.max_dims == {"B": 2, "P": 8, "N": 4, "M": 4}
    # N = 0: prompts of a mask input alone, or of nothing.
    _check_run_against_onnxruntime(
        ours, _reference(engine_dir), rtol=1e-5, atol=1e-5, cases=((1, 2), (8, 4), (5, 0))
    )


def test_emulated_backend_binds_device_tensors_in_place(
    engine_dir: Path, emulated: _EmulatedCuda, fake_machine: _FakeTensorRT
) -> None:
    ours = _tensorrt(engine_dir)
    embedding = ours.from_numpy(np.ones((1, 256, 64, 64), np.float32))
    side = ours.run(
        DECODER_IMAGE, {contract.ENCODER_OUTPUT: embedding}, contract.DECODER_IMAGE_OUTPUTS
    )
    prompts = _prompt_inputs(3, 2, seed=0)
    emulated.copies.clear()
    out = ours.run(
        DECODER_PROMPTS, {**side, **prompts}, contract.DECODER_PROMPTS_OUTPUTS, to_host=(IOU,)
    )
    (context,) = fake_machine.engine(DECODER_PROMPTS).contexts
    for name, tensor in side.items():
        assert context.addresses[name] == tensor.ptr
    # Up: the prompts only; down: the scores only. The tokens and weights stay on the device.
    kinds = _EmulatedCuda.cudaMemcpyKind
    up = sum(n for kind, n in emulated.copies if kind == kinds.cudaMemcpyHostToDevice)
    down = sum(n for kind, n in emulated.copies if kind == kinds.cudaMemcpyDeviceToHost)
    assert up == sum(a.nbytes for a in prompts.values())
    assert down == out[IOU].nbytes == 3 * 4 * 4
    assert isinstance(out[MASK_WEIGHTS], DeviceTensor) and isinstance(
        out[PROMPT_TOKENS], DeviceTensor
    )
    assert out[PROMPT_TOKENS].buffer is not out[MASK_WEIGHTS].buffer
    assert ours.nbytes(out[PROMPT_TOKENS]) == 3 * 4096 * 256 * 4
    assert sum(ours.nbytes(t) for t in side.values()) == (4096 * 256 + 3 * 8 * 4096 * 16) * 4
    # A view that starts off TensorRT's alignment is read through the lane's buffer.
    host_tokens = np.random.default_rng(1).standard_normal((2, 4096, 256)).astype(np.float32)
    tokens = ours.from_numpy(host_tokens)
    odd = DeviceTensor(tokens.buffer, 4, (1, 4096, 256), tokens.dtype)
    weights = np.ones((1, 1, 32), np.float32)
    (masks,) = ours.run(
        DECODER_MASKS, {PROMPT_TOKENS: odd, MASK_WEIGHTS: weights}, (LOW_RES,), to_host=(LOW_RES,)
    ).values()
    shifted = host_tokens.reshape(-1)[1 : 1 + 4096 * 256].reshape(1, 4096, 256)
    (want,) = (
        _reference(engine_dir)
        .run(
            DECODER_MASKS,
            {PROMPT_TOKENS: shifted, MASK_WEIGHTS: weights},
            (LOW_RES,),
            to_host=(LOW_RES,),
        )
        .values()
    )
    np.testing.assert_allclose(masks, want, rtol=1e-5, atol=1e-5)
    # Only the outputs asked for come back.
    (only,) = ours.run(DECODER_PROMPTS, {**side, **prompts}, (IOU,), to_host=(IOU,)).values()
    np.testing.assert_array_equal(only, out[IOU])


def test_emulated_backend_take(engine_dir: Path, emulated: _EmulatedCuda) -> None:
    ours = _tensorrt(engine_dir)
    host = np.arange(6 * 4 * 3, dtype=np.float32).reshape(6, 4, 3)
    tensor = ours.from_numpy(host)
    for rows in ([3, 1, 2], [0, 1, 2, 5], [5, -1], [], list(range(6))):
        index = np.asarray(rows, dtype=np.intp)
        picked = ours.take(tensor, index)
        assert isinstance(picked, DeviceTensor) and picked.buffer is not tensor.buffer
        assert picked.shape == (len(rows), 4, 3)
        np.testing.assert_array_equal(ours.to_numpy(picked), host[index])
    # Device to device, one copy per run of consecutive rows.
    emulated.copies.clear()
    ours.take(tensor, np.array([0, 1, 2, 5]))
    assert emulated.copies == [(3, 3 * 48), (3, 48)]
    with pytest.raises(IndexError, match="out of range"):
        ours.take(tensor, np.array([6]))
    with pytest.raises(TypeError, match="1-D integer"):
        ours.take(tensor, np.array([[0]]))
    view = tensor.rows(2, 4)
    assert view.buffer is tensor.buffer and ours.nbytes(view) == host[2:4].nbytes
    np.testing.assert_array_equal(ours.to_numpy(view), host[2:4])
    with pytest.raises(IndexError):
        tensor.rows(5, 7)
    # Host arrays are taken on the host.
    np.testing.assert_array_equal(ours.take(host, np.array([1])), host[[1]])


def test_emulated_backend_refuses_what_its_engines_cannot_take(
    engine_dir: Path, emulated: _EmulatedCuda
) -> None:
    ours = _tensorrt(engine_dir)
    side = ours.run(
        DECODER_IMAGE,
        {contract.ENCODER_OUTPUT: np.zeros((1, 256, 64, 64), np.float32)},
        contract.DECODER_IMAGE_OUTPUTS,
    )

    def prompts_run(**prompts: np.ndarray) -> None:
        ours.run(DECODER_PROMPTS, {**side, **prompts}, contract.DECODER_PROMPTS_OUTPUTS)

    with pytest.raises(
        ValueError, match=r"9 prompts per call \(P\).*built for 1 to 8.*samrt build --max-prompts"
    ):
        prompts_run(**_prompt_inputs(9, 2, seed=0))
    with pytest.raises(
        ValueError, match=r"5 points per prompt \(N\).*0 to 4.*samrt build --max-points"
    ):
        prompts_run(**_prompt_inputs(1, 5, seed=0))
    with pytest.raises(ValueError, match=r"3 images per call \(B\).*samrt build --max-batch"):
        ours.run(
            ENCODER, {"image": np.zeros((3, 3, 1024, 1024), np.float32)}, (contract.ENCODER_OUTPUT,)
        )
    tokens = ours.from_numpy(np.zeros((1, 4096, 256), np.float32))
    with pytest.raises(ValueError, match=r"5 masks per prompt \(M\).*1 to 4.*no other size"):
        ours.run(
            DECODER_MASKS,
            {PROMPT_TOKENS: tokens, MASK_WEIGHTS: np.zeros((1, 5, 32), np.float32)},
            (LOW_RES,),
        )
    mismatched = {**_prompt_inputs(2, 2, seed=0), "point_labels": np.zeros((3, 2), np.float32)}
    with pytest.raises(ValueError, match="does not fit"):
        prompts_run(**mismatched)
    with pytest.raises(ValueError, match="does not fit"):
        prompts_run(
            **{**_prompt_inputs(1, 2, seed=0), "mask_input": np.zeros((1, 1, 128, 128), np.float32)}
        )
    with pytest.raises(ValueError, match="must have 2 dimensions"):
        prompts_run(
            **{**_prompt_inputs(1, 2, seed=0), "point_labels": np.zeros((1, 2, 1), np.float32)}
        )
    with pytest.raises(ValueError, match="takes the inputs"):
        ours.run(DECODER_PROMPTS, side, contract.DECODER_PROMPTS_OUTPUTS)
    with pytest.raises(ValueError, match="outputs are"):
        ours.run(DECODER_IMAGE, {contract.ENCODER_OUTPUT: tokens}, ("low_res_masks",))
    with pytest.raises(ValueError, match="to_host"):
        ours.run(
            DECODER_PROMPTS,
            {**side, **_prompt_inputs(1, 1, seed=0)},
            (IOU,),
            to_host=(MASK_WEIGHTS,),
        )
    with pytest.raises(ValueError, match="no decoder engine"):
        ours.run("decoder", {}, ())
    with pytest.raises(TypeError, match="numpy arrays and its own DeviceTensors"):
        ours.run(DECODER_IMAGE, {contract.ENCODER_OUTPUT: [[0.0]]}, contract.DECODER_IMAGE_OUTPUTS)
    wide = ours.from_numpy(np.zeros((1, 256, 64, 64), np.float64))
    with pytest.raises(TypeError, match="float64 device tensor, the engine takes float32"):
        ours.run(DECODER_IMAGE, {contract.ENCODER_OUTPUT: wide}, contract.DECODER_IMAGE_OUTPUTS)
    with pytest.raises(TypeError, match="DeviceTensors it made"):
        ours.to_numpy([1.0])


def test_emulated_backend_refuses_a_record_that_does_not_fit_the_manifest(
    engine_dir: Path, emulated: _EmulatedCuda
) -> None:
    manifest = load_manifest(engine_dir)
    records = engine_records(manifest)
    name = engine_file_name(DECODER_PROMPTS, "fp32", H100, TRT)
    profiles = dict(records[name].profiles)
    profiles["point_labels"] = ShapeRange((1,), (1,), (8,))
    records[name] = replace(records[name], profiles=profiles)
    manifest = with_engine_records(manifest, records)
    with pytest.raises(
        EngineDirError, match="profile for point_labels .* does not fit.*samrt build"
    ):
        trt_backend.TensorRTBackend(engine_dir, manifest, roles=contract.ROLES)
    # Only the graphs asked for are loaded.
    ours = trt_backend.TensorRTBackend(engine_dir, manifest, roles=(ENCODER, DECODER_IMAGE))
    with pytest.raises(ValueError, match="no decoder_prompts engine .*encoder, decoder_image"):
        ours.run(DECODER_PROMPTS, {}, ())
    assert ours.prompts_per_run == trt_backend.DEFAULT_LIMITS.max_prompts


def test_emulated_backend_converts_to_and_from_the_engines_io_types(
    engine_dir: Path, fake_machine: _FakeTensorRT, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine may take or give float16 where the graph's I/O (the manifest's) is float32:
    host inputs go up in the engine's type, results come back in the manifest's."""
    half = frozenset({contract.ENCODER_INPUT, "mask_input", IOU, LOW_RES})
    device = _emulate(engine_dir, fake_machine, monkeypatch, half=half)
    ours = _tensorrt(engine_dir)
    reference = _reference(engine_dir)
    images = np.random.default_rng(0).standard_normal((1, 3, 1024, 1024)).astype(np.float32)
    device.copies.clear()
    (embedding,) = ours.run(ENCODER, {"image": images}, (contract.ENCODER_OUTPUT,)).values()
    assert device.copies == [(1, images.nbytes // 2)]
    want_embedding = reference.run(ENCODER, {"image": images}, (contract.ENCODER_OUTPUT,))
    np.testing.assert_allclose(
        ours.to_numpy(embedding), want_embedding[contract.ENCODER_OUTPUT], rtol=1e-2, atol=1e-2
    )
    side = ours.run(
        DECODER_IMAGE, {contract.ENCODER_OUTPUT: embedding}, contract.DECODER_IMAGE_OUTPUTS
    )
    prompts = _prompt_inputs(4, 2, seed=3)
    out = ours.run(
        DECODER_PROMPTS, {**side, **prompts}, contract.DECODER_PROMPTS_OUTPUTS, to_host=(IOU,)
    )
    assert out[IOU].dtype == np.float32
    host_side = {name: ours.to_numpy(t) for name, t in side.items()}
    want = reference.run(DECODER_PROMPTS, {**host_side, **prompts}, (IOU,), to_host=(IOU,))
    np.testing.assert_allclose(out[IOU], want[IOU], rtol=1e-2, atol=1e-2)


def test_emulated_predictor_matches_onnxruntime(engine_dir: Path, emulated: _EmulatedCuda) -> None:
    _check_predictor_against_onnxruntime(engine_dir, rtol=1e-5, atol=1e-4)


def _check_predictor_against_onnxruntime(engine_dir: Path, *, rtol: float, atol: float) -> None:
    """samrt.Predictor on TensorRT against samrt.Predictor on ONNX Runtime's CPU, through
    the public API: every kind of prompt, batches larger than one decoder run, and the
    prompts above a score threshold (their rows picked on the device)."""
    ours = samrt.Predictor(engine_dir, "tensorrt")
    reference = samrt.Predictor(engine_dir, "onnxruntime-cpu")
    assert ours.backend_name.startswith("tensorrt ")
    rng = np.random.default_rng(5)
    height, width = 96, 128
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    ours.set_image(image)
    reference.set_image(image)
    np.testing.assert_allclose(
        ours.get_image_embedding(), reference.get_image_embedding(), rtol=rtol, atol=atol
    )
    assert ours.image_state.nbytes == reference.image_state.nbytes

    def same(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> None:
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)

    previous = reference.predict(point_coords=[[30, 40]], point_labels=[1])[2][:1]
    cases: list[dict[str, Any]] = [
        {"point_coords": [[30, 40]], "point_labels": [1]},
        {"box": [10, 10, 90, 70]},
        {"point_coords": [[30, 40], [100, 20]], "point_labels": [1, 0], "box": [10, 10, 90, 70]},
        {"mask_input": previous},  # no points: N = 0
        {},  # no prompt at all: N = 0 too
    ]
    for kwargs in cases:
        for multimask in (True, False):
            got = ours.predict(**kwargs, multimask_output=multimask, return_logits=True)
            same(got, reference.predict(**kwargs, multimask_output=multimask, return_logits=True))
    # 11 prompts: more than one TensorRT run (prompts_per_run is the profile's maximum).
    coords = rng.uniform(0, width, (11, 2, 2))
    labels = np.tile([[1.0, 0.0]], (11, 1))
    same(ours.predict_low_res(coords, labels), reference.predict_low_res(coords, labels))
    scores, _ = reference.predict_low_res(coords, labels)
    # Between two of the prompts' best scores, at the widest gap that keeps some and not all.
    best = np.sort(scores.max(axis=1))
    gap = 2 + int(np.argmax(np.diff(best)[2:9]))
    threshold = float(best[gap] + best[gap + 1]) / 2
    got_scores, got_index, got_low = ours.predict_low_res_above(threshold, coords, labels)
    want_scores, want_index, want_low = reference.predict_low_res_above(threshold, coords, labels)
    assert 0 < len(want_index) < 11
    np.testing.assert_array_equal(got_index, want_index)
    same((got_scores, got_low), (want_scores, want_low))
    # A saved embedding, and a state handed between predictors of one model.
    ours.set_image_embedding(reference.get_image_embedding(), (height, width))
    same(ours.predict(box=[10, 10, 90, 70]), reference.predict(box=[10, 10, 90, 70]))
    other = samrt.Predictor(ours.model)
    other.set_image_state(ours.image_state)
    same(other.predict(box=[10, 10, 90, 70]), reference.predict(box=[10, 10, 90, 70]))


def test_emulated_backend_frees_everything(engine_dir: Path, emulated: _EmulatedCuda) -> None:
    with _tensorrt(engine_dir) as ours:
        (embedding,) = ours.run(
            ENCODER, {"image": np.zeros((2, 3, 1024, 1024), np.float32)}, (contract.ENCODER_OUTPUT,)
        ).values()
        view = embedding.rows(1, 2)
        side = ours.run(
            DECODER_IMAGE, {contract.ENCODER_OUTPUT: view}, contract.DECODER_IMAGE_OUTPUTS
        )
        out = ours.run(
            DECODER_PROMPTS,
            {**side, **_prompt_inputs(4, 2, seed=0)},
            contract.DECODER_PROMPTS_OUTPUTS,
            to_host=(IOU, MASK_WEIGHTS),
        )
        rows = np.array([2, 0])
        picked = ours.take(out[PROMPT_TOKENS], rows)
        ours.run(
            DECODER_MASKS,
            {PROMPT_TOKENS: picked, MASK_WEIGHTS: out[MASK_WEIGHTS][rows, 1:]},
            (LOW_RES,),
            to_host=(LOW_RES,),
        )
        assert emulated.streams
    # Closed: lanes (streams, buffers) are gone; the tensors returned keep their own memory.
    assert not emulated.streams
    kept = {embedding.buffer.ptr, picked.buffer.ptr, out[PROMPT_TOKENS].buffer.ptr}
    kept |= {t.buffer.ptr for t in side.values()}
    assert set(emulated.allocations) == kept
    with pytest.raises(trt_backend.BackendClosedError):
        ours.run(DECODER_IMAGE, {contract.ENCODER_OUTPUT: view}, contract.DECODER_IMAGE_OUTPUTS)
    with pytest.raises(trt_backend.BackendClosedError):
        ours.take(picked, np.array([1]))
    with pytest.raises(trt_backend.BackendClosedError):
        ours.from_numpy(np.zeros(3, np.float32))
    del embedding
    assert len(emulated.allocations) == len(kept)  # the view still holds the batch
    del view
    assert len(emulated.allocations) == len(kept) - 1
    del side, out, picked
    assert emulated.allocations == {}
    ours.close()  # idempotent


def test_emulated_backend_failed_run_frees_its_outputs(
    engine_dir: Path, emulated: _EmulatedCuda, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _tensorrt(engine_dir) as ours:
        embedding = ours.from_numpy(np.zeros((1, 256, 64, 64), np.float32))
        monkeypatch.setattr(_EmulatedContext, "execute_async_v3", lambda self, stream: False)
        with pytest.raises(trt_backend.CudaError, match="TensorRT decoder_image execution failed"):
            ours.run(
                DECODER_IMAGE, {contract.ENCODER_OUTPUT: embedding}, contract.DECODER_IMAGE_OUTPUTS
            )
        # The lane that failed was dropped, with its buffers; so were the run's outputs.
        assert set(emulated.allocations) == {embedding.buffer.ptr}
        assert not emulated.streams


def _decode_on_lanes(
    backend: trt_backend.TensorRTBackend, side: Mapping[str, Any], prompts: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    out = backend.run(
        DECODER_PROMPTS,
        {**side, **prompts},
        contract.DECODER_PROMPTS_OUTPUTS,
        to_host=(IOU, MASK_WEIGHTS),
    )
    rows = np.arange(0, len(out[IOU]), 2)
    picked = backend.take(out[PROMPT_TOKENS], rows)
    (masks,) = backend.run(
        DECODER_MASKS,
        {PROMPT_TOKENS: picked, MASK_WEIGHTS: out[MASK_WEIGHTS][rows, 1:]},
        (LOW_RES,),
        to_host=(LOW_RES,),
    ).values()
    return out[IOU], masks


def _check_threads_agree(backend: trt_backend.TensorRTBackend) -> None:
    embedding = backend.from_numpy(
        np.random.default_rng(3).standard_normal((1, 256, 64, 64)).astype(np.float32)
    )
    side = backend.run(
        DECODER_IMAGE, {contract.ENCODER_OUTPUT: embedding}, contract.DECODER_IMAGE_OUTPUTS
    )
    prompts = [_prompt_inputs(8, s % 3, seed=s) for s in range(12)]
    expected = [_decode_on_lanes(backend, side, p) for p in prompts]
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    errors: list[Exception] = []

    def work(index: int) -> None:
        try:
            results[index] = _decode_on_lanes(backend, side, prompts[index])
        except Exception as e:  # noqa: BLE001 - reported below, on the test's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for index, (iou, masks) in enumerate(expected):
        np.testing.assert_array_equal(results[index][0], iou)
        np.testing.assert_array_equal(results[index][1], masks)


def test_emulated_backend_lanes_under_threads(
    engine_dir: Path, emulated: _EmulatedCuda, fake_machine: _FakeTensorRT
) -> None:
    with _tensorrt(engine_dir, max_contexts=2) as ours:
        _check_threads_agree(ours)
        # At most max_contexts lanes, each with one context per engine and one stream.
        created = {role: len(fake_machine.engine(role).contexts) for role in contract.ROLES}
        assert len(set(created.values())) == 1 and 1 <= created[ENCODER] <= 2
        assert len(emulated.streams) == created[ENCODER]


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
GPU_LIMITS = ProfileLimits(max_batch=2, max_prompts=32, opt_prompts=8)


@pytest.fixture(scope="module", params=["synthetic", "tiny_model"])
def built_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, graphs_dir: Path
) -> Iterator[Path]:
    from samrt.trt_build import build_engines

    root = tmp_path_factory.mktemp(f"built-{request.param}")
    if request.param == "tiny_model":
        import shutil

        tiny = request.getfixturevalue("tiny_model")
        shutil.copytree(tiny.engine_dir, root, dirs_exist_ok=True)
    else:
        _copy_graphs(graphs_dir, root)
    build_engines(root, workspace_gib=2, limits=GPU_LIMITS)
    yield root


@gpu
@pytest.mark.gpu
def test_gpu_build_records_and_reuse(built_dir: Path) -> None:
    from samrt.trt_build import build_engines

    manifest = load_manifest(built_dir)
    gpu_info = trt_backend.current_gpu()
    version = trt_backend.require_tensorrt()
    for role in contract.ROLES:
        path, record = find_engine(built_dir, manifest, role, "fp32", gpu_info, version)
        assert read_verified_engine(path, record)
        assert record.source_sha256 == manifest.model(role).sha256
        assert record.profiles == profiles_for(manifest.model(role), GPU_LIMITS)
    assert (built_dir / timing_cache_file_name(gpu_info, version)).is_file()
    before = {p.name: p.stat().st_mtime_ns for p in built_dir.glob("*.engine")}
    assert len(before) == len(contract.ROLES)
    build_engines(built_dir, workspace_gib=2, limits=GPU_LIMITS)
    after = {p.name: p.stat().st_mtime_ns for p in built_dir.glob("*.engine")}
    assert after == before  # up to date: kept


@gpu
@pytest.mark.gpu
def test_gpu_run_matches_onnxruntime(built_dir: Path) -> None:
    with _tensorrt(built_dir, max_contexts=2) as ours:
        assert ours.prompts_per_run == GPU_LIMITS.max_prompts
        _check_run_against_onnxruntime(
            ours, _reference(built_dir), rtol=1e-3, atol=5e-3, cases=((1, 2), (32, 3), (4, 0))
        )
        with pytest.raises(ValueError, match="max-points"):
            ours.run(
                DECODER_PROMPTS,
                {
                    **ours.run(
                        DECODER_IMAGE,
                        {contract.ENCODER_OUTPUT: np.zeros((1, 256, 64, 64), np.float32)},
                        contract.DECODER_IMAGE_OUTPUTS,
                    ),
                    **_prompt_inputs(1, GPU_LIMITS.max_points + 1, seed=0),
                },
                contract.DECODER_PROMPTS_OUTPUTS,
            )


@gpu
@pytest.mark.gpu
def test_gpu_take_matches_numpy(built_dir: Path) -> None:
    with _tensorrt(built_dir) as ours:
        host = np.random.default_rng(0).standard_normal((7, 4096, 256)).astype(np.float32)
        tensor = ours.from_numpy(host)
        for rows in ([6, 0, 3], [1, 2, 3, 5], []):
            index = np.asarray(rows, dtype=np.intp)
            np.testing.assert_array_equal(ours.to_numpy(ours.take(tensor, index)), host[index])


@gpu
@pytest.mark.gpu
def test_gpu_predictor_matches_onnxruntime(built_dir: Path) -> None:
    _check_predictor_against_onnxruntime(built_dir, rtol=1e-3, atol=5e-3)


@gpu
@pytest.mark.gpu
def test_gpu_concurrent_calls_agree(built_dir: Path) -> None:
    with _tensorrt(built_dir, max_contexts=2) as ours:
        _check_threads_agree(ours)
    with pytest.raises(trt_backend.BackendClosedError):
        ours.from_numpy(np.zeros(1, np.float32))


def test_emulated_backend_runs_a_sam2_engine_as_onnxruntime_does(
    tiny_sam2_model: Any,
    tmp_path: Path,
    fake_machine: _FakeTensorRT,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Bug: the backend and `samrt build` knew only the SAM family's four graphs (the engines'
    # tensors were checked against SAM's contract), so a SAM 2.1 engine directory, with its
    # encoder of three outputs and its one decoder, could not be built or run on TensorRT.
    engine_dir = tmp_path / "engine"
    shutil.copytree(tiny_sam2_model.engine_dir, engine_dir)
    _emulate(engine_dir, fake_machine, monkeypatch)
    ours = samrt.Predictor(engine_dir, "tensorrt")
    assert ours.model.backend_name.startswith("tensorrt 10.13.0.35")
    assert ours.model.backend.prompts_per_run == SMALL.max_prompts
    reference = samrt.Predictor(engine_dir, "onnxruntime-cpu")
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), np.uint8)
    for predictor in (ours, reference):
        predictor.set_image(image)
    prompts: list[dict[str, Any]] = [
        {"point_coords": np.array([[40, 50]]), "point_labels": np.array([1])},
        {
            "point_coords": np.array([[40, 50], [100, 90]]),
            "point_labels": np.array([1, 0]),
            "multimask_output": False,
        },
        {"box": np.array([10, 20, 120, 100])},
    ]
    for kwargs in prompts:
        got, want = ours.predict(**kwargs), reference.predict(**kwargs)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)  # scores
        np.testing.assert_allclose(got[2], want[2], rtol=1e-4, atol=1e-4)  # low-res logits
        assert (got[0] == want[0]).mean() > 0.999
    # A generator batch of 16 prompts runs in parts of the engine's 8.
    generated = samrt.AutomaticMaskGenerator(
        ours, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    ).generate(image)
    expected = samrt.AutomaticMaskGenerator(
        reference, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    ).generate(image)
    assert len(generated) == len(expected) > 0
    for a, b in zip(generated, expected, strict=True):
        assert a["bbox"] == b["bbox"]
        assert abs(a["predicted_iou"] - b["predicted_iou"]) < 1e-5
    # samrt build takes the family's graphs by default: profiles for both, then TensorRT.
    from samrt.trt_build import build_engines

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match="pip install tensorrt"):
        build_engines(engine_dir)
