"""TensorRT backend: encoder and decoder as TensorRT engines built by ``samrt build``.

Engines are compiled for one GPU model and one TensorRT version, so an engine directory
holds one engine per (role, precision, GPU, compute capability, TensorRT version), named
by :func:`engine_file_name`, and the manifest's ``extra["tensorrt"]`` records what each
was built from (:class:`EngineRecord`). An engine file is executable code: this backend
deserializes only bytes whose sha256 equals the manifest's record, and checks that before
TensorRT sees them.

Nothing here imports ``tensorrt`` or ``cuda`` at module import time; they are imported
when a backend starts (or a build runs), and their absence is a BackendUnavailableError
saying what to install.

Concurrency: an ICudaEngine is shared, but an execution context may run one inference at
a time. The backend therefore keeps a pool of *lanes*: each lane owns one CUDA stream, one
encoder and one decoder execution context, and device buffers for the host-fed inputs,
allocated once at the optimization profile's maximum size. A call borrows a lane for its
whole duration, so calls from several threads run concurrently on separate streams, up to
``max_contexts`` at once (further callers wait). Lanes are created on first demand.

Data movement: an image embedding stays on the device (:class:`DeviceEmbedding`); the
encoder writes straight into it and the decoder reads it in place. Only the prompts go up
and only IoU scores and low-res logits come back. Results are copied into fresh numpy
arrays that the caller owns; pinned staging buffers would add a host-to-host copy of the
same size to the device copy they speed up, so they are not used.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self

import numpy as np
import numpy.typing as npt

from .. import contract
from ..errors import BackendUnavailableError, EngineDirError, SamrtError
from ..manifest import Manifest
from .base import Backend, Embedding, FloatArray

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = [
    "DEFAULT_LIMITS",
    "BackendClosedError",
    "CudaError",
    "DeviceBuffer",
    "DeviceEmbedding",
    "EngineRecord",
    "GpuInfo",
    "ProfileLimits",
    "ShapeRange",
    "TensorRTBackend",
    "TrtMessages",
    "cuda_call",
    "current_gpu",
    "decoder_profile",
    "encoder_profile",
    "engine_file_name",
    "engine_records",
    "find_engine",
    "make_logger",
    "numpy_dtype",
    "profiles_for",
    "read_verified_engine",
    "require_cuda",
    "require_tensorrt",
    "timing_cache_file_name",
    "unavailable_reason",
    "with_engine_records",
]

ROLES: Final = ("encoder", "decoder")
MANIFEST_KEY: Final = "tensorrt"
RECORDS_FORMAT_VERSION: Final = 1
ENGINE_SUFFIX: Final = ".engine"
MIN_TENSORRT_MAJOR: Final = 10

_INSTALL_TENSORRT: Final = (
    "install it with `pip install tensorrt` (TensorRT 10 or later, built for your CUDA version)"
)
_INSTALL_CUDA: Final = (
    "install it with `pip install cuda-python` (the CUDA major version TensorRT was built for)"
)

# numpy dtypes of the TensorRT data types an engine's I/O may have, by DataType.name.
_NUMPY_DTYPES: Final[Mapping[str, npt.DTypeLike]] = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT32": np.int32,
    "INT64": np.int64,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


class CudaError(SamrtError, RuntimeError):
    """A CUDA runtime call failed (out of memory, a lost device, a failed kernel)."""


class BackendClosedError(SamrtError, RuntimeError):
    """The backend was used after close()."""


# -- optional imports ------------------------------------------------------------------------


def require_tensorrt() -> str:
    """Checks that TensorRT itself (not only its type stubs) can be imported; returns its
    version. Raises BackendUnavailableError saying what to install."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(
            f"the tensorrt package cannot be imported ({e}); {_INSTALL_TENSORRT}"
        ) from None
    # tensorrt-stubs installs a bare tensorrt/ folder of .pyi files: Python imports it as
    # an empty namespace package, so a successful import proves nothing.
    if not hasattr(trt, "Runtime") or not hasattr(trt, "__version__"):
        raise BackendUnavailableError(
            f"the tensorrt package here holds only type stubs (tensorrt-stubs), not TensorRT; {_INSTALL_TENSORRT}"
        )
    version = str(trt.__version__)
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) < MIN_TENSORRT_MAJOR:
        raise BackendUnavailableError(
            f"TensorRT {version} is too old: samrt needs TensorRT {MIN_TENSORRT_MAJOR} or later; "
            "upgrade it with `pip install -U tensorrt`"
        )
    return version


def require_cuda() -> Any:
    """The cuda-python runtime bindings (``cuda.bindings.runtime``), or BackendUnavailableError."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as e:
        raise BackendUnavailableError(
            f"cuda-python cannot be imported ({e}); {_INSTALL_CUDA}"
        ) from None
    return cudart


def cuda_call(cudart: Any, what: str, result: Any) -> Any:
    """Checks a cuda-python call's (error, *values) result; returns the value(s)."""
    error = result[0]
    if error != cudart.cudaError_t.cudaSuccess:
        raise CudaError(f"{what} failed: {_cuda_error_text(cudart, error)}")
    values = tuple(result[1:])
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _cuda_error_text(cudart: Any, error: Any) -> str:
    name = cudart.cudaGetErrorName(error)
    text = cudart.cudaGetErrorString(error)
    if name[0] != cudart.cudaError_t.cudaSuccess or text[0] != cudart.cudaError_t.cudaSuccess:
        return repr(error)
    return f"{bytes(name[1]).decode(errors='replace')} ({bytes(text[1]).decode(errors='replace')})"


# -- this machine ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    """What a TensorRT engine is specific to: the GPU model and its compute capability."""

    name: str
    major: int
    minor: int

    @property
    def sm(self) -> str:
        return f"sm{self.major}{self.minor}"

    @property
    def compute_capability(self) -> str:
        return f"{self.major}.{self.minor}"


def current_gpu(device: int = 0) -> GpuInfo:
    """The GPU at CUDA device index ``device``; BackendUnavailableError when none is visible."""
    cudart = require_cuda()
    error, count = cudart.cudaGetDeviceCount()
    if error != cudart.cudaError_t.cudaSuccess:
        raise BackendUnavailableError(
            f"no usable CUDA GPU: cudaGetDeviceCount failed with {_cuda_error_text(cudart, error)}"
        )
    if device < 0 or device >= int(count):
        raise BackendUnavailableError(
            f"CUDA device {device} does not exist here ({int(count)} visible)"
        )
    props = cuda_call(cudart, "cudaGetDeviceProperties", cudart.cudaGetDeviceProperties(device))
    raw_name = props.name
    name = (
        raw_name.split(b"\0", 1)[0].decode(errors="replace")
        if isinstance(raw_name, bytes)
        else str(raw_name)
    )
    return GpuInfo(name=name.strip(), major=int(props.major), minor=int(props.minor))


# -- optimization profiles -------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeRange:
    """One input's optimization-profile shapes."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError(
                f"profile shapes must have one rank, got {self.min}, {self.opt}, {self.max}"
            )
        for lo, mid, hi in zip(self.min, self.opt, self.max):
            if not 1 <= lo <= mid <= hi:
                raise ValueError(
                    f"profile needs 1 <= min <= opt <= max per dimension, got {self.min}, {self.opt}, {self.max}"
                )

    @property
    def fixed(self) -> bool:
        return self.min == self.max

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShapeRange:
        return cls(
            min=tuple(int(d) for d in data["min"]),
            opt=tuple(int(d) for d in data["opt"]),
            max=tuple(int(d) for d in data["max"]),
        )


@dataclass(frozen=True)
class ProfileLimits:
    """The dynamic dimensions engines are built for: images per encoder call, prompts (P)
    and points per prompt (N) per decoder call. Larger calls are split into chunks (images,
    prompts) or refused (points)."""

    max_batch: int = 8
    opt_batch: int = 1
    max_prompts: int = 256
    # The automatic mask generator's default points_per_batch.
    opt_prompts: int = 64
    max_points: int = 16
    # One clicked point plus the padding point.
    opt_points: int = 2

    def __post_init__(self) -> None:
        for name, opt, hi in (
            ("batch", self.opt_batch, self.max_batch),
            ("prompts", self.opt_prompts, self.max_prompts),
            ("points", self.opt_points, self.max_points),
        ):
            if not 1 <= opt <= hi:
                raise ValueError(f"need 1 <= opt_{name} <= max_{name}, got opt {opt}, max {hi}")


DEFAULT_LIMITS: Final = ProfileLimits()


def encoder_profile(limits: ProfileLimits = DEFAULT_LIMITS) -> dict[str, ShapeRange]:
    size = contract.IMAGE_SIZE
    return {
        contract.ENCODER_INPUT: ShapeRange(
            (1, 3, size, size), (limits.opt_batch, 3, size, size), (limits.max_batch, 3, size, size)
        )
    }


def decoder_profile(limits: ProfileLimits = DEFAULT_LIMITS) -> dict[str, ShapeRange]:
    embedding = (1, contract.EMBEDDING_DIM, contract.EMBEDDING_SIZE, contract.EMBEDDING_SIZE)
    low = contract.LOW_RES_SIZE
    p_opt, p_max = limits.opt_prompts, limits.max_prompts
    n_opt, n_max = limits.opt_points, limits.max_points
    coords, labels, masks, has_mask = contract.DECODER_INPUTS[1:]
    return {
        contract.DECODER_INPUTS[0]: ShapeRange(embedding, embedding, embedding),
        coords: ShapeRange((1, 1, 2), (p_opt, n_opt, 2), (p_max, n_max, 2)),
        labels: ShapeRange((1, 1), (p_opt, n_opt), (p_max, n_max)),
        masks: ShapeRange((1, 1, low, low), (p_opt, 1, low, low), (p_max, 1, low, low)),
        has_mask: ShapeRange((1,), (p_opt,), (p_max,)),
    }


def profiles_for(role: str, limits: ProfileLimits = DEFAULT_LIMITS) -> dict[str, ShapeRange]:
    if role == "encoder":
        return encoder_profile(limits)
    if role == "decoder":
        return decoder_profile(limits)
    raise ValueError(f"role must be one of {ROLES}, got {role!r}")


# -- engine files and their manifest records ---------------------------------------------


def _sanitize(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")
    return cleaned or "unknown"


def _short_version(tensorrt_version: str) -> str:
    """10.13.0.35 -> 10.13.0: the build number does not change the engine format."""
    parts = tensorrt_version.split(".")
    return ".".join(_sanitize(p) for p in parts[:3])


def engine_file_name(role: str, precision: str, gpu: GpuInfo, tensorrt_version: str) -> str:
    """E.g. ``encoder.fp32.NVIDIA_H100_80GB_HBM3.sm90.trt10.13.0.engine``: one directory can
    hold the engines of several machines side by side."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return (
        f"{role}.{_sanitize(precision)}.{_sanitize(gpu.name)}.{gpu.sm}"
        f".trt{_short_version(tensorrt_version)}{ENGINE_SUFFIX}"
    )


def timing_cache_file_name(gpu: GpuInfo, tensorrt_version: str) -> str:
    """The builder's timing cache, which is as specific to GPU and TensorRT as an engine."""
    return f"timing.{_sanitize(gpu.name)}.{gpu.sm}.trt{_short_version(tensorrt_version)}.cache"


@dataclass(frozen=True)
class EngineRecord:
    """What one engine file was built from, on what, and how; kept in the manifest."""

    file: str
    role: str
    precision: str
    sha256: str
    size_bytes: int
    source_file: str
    source_sha256: str
    gpu: str
    compute_capability: str
    tensorrt_version: str
    profiles: dict[str, ShapeRange]
    workspace_bytes: int = 0
    build_seconds: float = 0.0
    built_at: str = ""
    strongly_typed: bool = True
    # Whether fp32 layers may use TF32 tensor cores (faster, 10-bit mantissa products).
    tf32: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "precision": self.precision,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "source": {"file": self.source_file, "sha256": self.source_sha256},
            "gpu": self.gpu,
            "compute_capability": self.compute_capability,
            "tensorrt_version": self.tensorrt_version,
            "profiles": {name: shape.to_json() for name, shape in self.profiles.items()},
            "workspace_bytes": self.workspace_bytes,
            "build_seconds": self.build_seconds,
            "built_at": self.built_at,
            "strongly_typed": self.strongly_typed,
            "tf32": self.tf32,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, file: str, data: Mapping[str, Any]) -> EngineRecord:
        return cls(
            file=file,
            role=str(data["role"]),
            precision=str(data["precision"]),
            sha256=str(data["sha256"]),
            size_bytes=int(data["size_bytes"]),
            source_file=str(data["source"]["file"]),
            source_sha256=str(data["source"]["sha256"]),
            gpu=str(data["gpu"]),
            compute_capability=str(data["compute_capability"]),
            tensorrt_version=str(data["tensorrt_version"]),
            profiles={str(k): ShapeRange.from_json(v) for k, v in data["profiles"].items()},
            workspace_bytes=int(data.get("workspace_bytes", 0)),
            build_seconds=float(data.get("build_seconds", 0.0)),
            built_at=str(data.get("built_at", "")),
            strongly_typed=bool(data.get("strongly_typed", True)),
            tf32=bool(data.get("tf32", False)),
            extra=dict(data.get("extra", {})),
        )


def engine_records(manifest: Manifest) -> dict[str, EngineRecord]:
    """The manifest's TensorRT engine records by file name (empty when none were built)."""
    section = manifest.extra.get(MANIFEST_KEY)
    if section is None:
        return {}
    try:
        version = section.get("format_version")
        if version != RECORDS_FORMAT_VERSION:
            raise EngineDirError(
                f"the manifest's TensorRT records have format version {version!r}, this samrt reads "
                f"version {RECORDS_FORMAT_VERSION}; rebuild the engines with `samrt build`"
            )
        return {
            str(name): EngineRecord.from_json(str(name), data)
            for name, data in section["engines"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise EngineDirError(
            f"the manifest's TensorRT records are malformed ({type(e).__name__}: {e}); rebuild the engines with `samrt build`"
        ) from None


def with_engine_records(manifest: Manifest, records: Mapping[str, EngineRecord]) -> Manifest:
    """A copy of ``manifest`` whose TensorRT records are ``records`` (other extras kept)."""
    extra = dict(manifest.extra)
    extra[MANIFEST_KEY] = {
        "format_version": RECORDS_FORMAT_VERSION,
        "engines": {name: records[name].to_json() for name in sorted(records)},
    }
    return replace(manifest, extra=extra)


def find_engine(
    engine_dir: str | Path,
    manifest: Manifest,
    role: str,
    precision: str,
    gpu: GpuInfo,
    tensorrt_version: str,
) -> tuple[Path, EngineRecord]:
    """The engine file of ``role``/``precision`` built for this GPU and TensorRT, with its
    record. EngineDirError (naming the file and `samrt build`) when there is none, when its
    record disagrees with the machine, or when it was built from another export."""
    root = Path(engine_dir)
    name = engine_file_name(role, precision, gpu, tensorrt_version)
    fix = f"build it on this machine with `samrt build {root} --precision {precision}`"
    records = engine_records(manifest)
    record = records.get(name)
    if record is None:
        others = sorted(
            n for n, r in records.items() if r.role == role and r.precision == precision
        )
        raise EngineDirError(
            f"{root} has no TensorRT {precision} {role} engine for {gpu.name} ({gpu.sm}) and TensorRT "
            f"{tensorrt_version} (looked for {name}; built for other machines: {', '.join(others) or 'none'}); {fix}"
        )
    if (
        record.role,
        record.precision,
        record.gpu,
        record.compute_capability,
        record.tensorrt_version,
    ) != (
        role,
        precision,
        gpu.name,
        gpu.compute_capability,
        tensorrt_version,
    ):
        raise EngineDirError(
            f"{root / name}: its manifest record says it was built for {record.gpu} "
            f"(compute capability {record.compute_capability}), TensorRT {record.tensorrt_version}, "
            f"{record.precision} {record.role}, which is not this machine's; {fix}"
        )
    source = manifest.model(role, precision)
    if record.source_sha256 != source.sha256:
        raise EngineDirError(
            f"{root / name} was built from another {role} export (sha256 {record.source_sha256[:16]}…, "
            f"the manifest's {source.file} is {source.sha256[:16]}…); {fix}"
        )
    path = root / name
    if not path.is_file():
        raise EngineDirError(f"{path} is missing from the engine directory; {fix}")
    return path, record


def read_verified_engine(path: str | Path, record: EngineRecord) -> bytes:
    """The bytes of an engine file, only if their sha256 is the manifest's record.

    The hash is taken of the very bytes returned (read once), so what TensorRT
    deserializes is what was checked.
    """
    path = Path(path)
    fix = f"rebuild it with `samrt build {path.parent} --precision {record.precision}`"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EngineDirError(f"{path} is missing from the engine directory; {fix}") from None
    except PermissionError:
        raise EngineDirError(f"{path} is not readable: check its permissions") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != record.sha256:
        raise EngineDirError(
            f"{path} has sha256 {actual[:16]}…, the manifest records {record.sha256[:16]}…: an engine is "
            f"executable code and samrt loads only the one `samrt build` recorded; {fix}"
        )
    return data


def unavailable_reason(
    engine_dir: str | Path, manifest: Manifest, precision: str = "fp32", device: int = 0
) -> str | None:
    """Why ``backend="auto"`` cannot use TensorRT here, or None when it can try.

    Cheapest checks first: an engine directory without TensorRT records never imports
    TensorRT. The engines' hashes are checked when the backend starts, not here.
    """
    try:
        records = engine_records(manifest)
        if not any(r.precision == precision for r in records.values()):
            return f"no {precision} TensorRT engines in the engine directory (build them with `samrt build`)"
        version = require_tensorrt()
        gpu = current_gpu(device)
        for role in ROLES:
            find_engine(engine_dir, manifest, role, precision, gpu, version)
    except (BackendUnavailableError, EngineDirError, CudaError) as e:
        return str(e)
    return None


# -- device memory ---------------------------------------------------------------------------


class DeviceBuffer:
    """``nbytes`` of device memory from cudaMalloc, freed by close() (or when collected)."""

    def __init__(self, cudart: Any, nbytes: int) -> None:
        if nbytes <= 0:
            raise ValueError(f"a device buffer needs a positive size, got {nbytes}")
        self._cudart = cudart
        self.nbytes = nbytes
        self._ptr = int(cuda_call(cudart, f"cudaMalloc({nbytes})", cudart.cudaMalloc(nbytes)))

    @property
    def ptr(self) -> int:
        if self._ptr == 0:
            raise BackendClosedError("this device buffer was freed")
        return self._ptr

    @property
    def closed(self) -> bool:
        return self._ptr == 0

    def close(self) -> None:
        ptr, self._ptr = self._ptr, 0
        if ptr:
            cuda_call(self._cudart, "cudaFree", self._cudart.cudaFree(ptr))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter exit the CUDA runtime may already be torn down; nothing to report to.
        with contextlib.suppress(Exception):
            self.close()


@dataclass(frozen=True, eq=False)
class DeviceEmbedding:
    """An image embedding on the GPU: ``shape`` elements of ``dtype`` at ``buffer`` +
    ``offset``. Views of one batch share their buffer, which lives as long as any view."""

    buffer: DeviceBuffer
    offset: int
    shape: tuple[int, int, int, int]
    dtype: np.dtype[Any]

    @property
    def ptr(self) -> int:
        return self.buffer.ptr + self.offset

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]


class _Stream:
    def __init__(self, cudart: Any) -> None:
        self._cudart = cudart
        # Non-blocking: no implicit synchronization with the legacy default stream, so
        # lanes of other threads do not serialize each other.
        self._stream: Any = cuda_call(
            cudart,
            "cudaStreamCreateWithFlags",
            cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
        )
        self.handle = int(self._stream)

    def synchronize(self) -> None:
        cuda_call(
            self._cudart, "cudaStreamSynchronize", self._cudart.cudaStreamSynchronize(self._stream)
        )

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            self.handle = 0
            cuda_call(self._cudart, "cudaStreamDestroy", self._cudart.cudaStreamDestroy(stream))


# -- TensorRT objects ------------------------------------------------------------------------


class TrtMessages:
    """TensorRT's warnings and errors, kept (not printed) to be quoted in exceptions."""

    def __init__(self) -> None:
        self._messages: deque[str] = deque(maxlen=16)

    def add(self, message: str) -> None:
        self._messages.append(message)

    def clear(self) -> None:
        self._messages.clear()

    def summary(self) -> str:
        return " | ".join(self._messages) or "TensorRT reported no error message"


def make_logger(messages: TrtMessages) -> trt.ILogger:
    """A TensorRT logger that keeps warnings and errors in ``messages`` and drops the rest:
    library code does not print, and failures are raised with these messages."""
    import tensorrt as trt

    kept = {
        trt.ILogger.Severity.INTERNAL_ERROR,
        trt.ILogger.Severity.ERROR,
        trt.ILogger.Severity.WARNING,
    }

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity in kept:
                messages.add(f"{severity.name}: {msg}")

    return _Logger()


def numpy_dtype(dtype: trt.DataType) -> np.dtype[Any]:
    """The numpy dtype of a TensorRT I/O data type; EngineDirError for types numpy lacks."""
    try:
        return np.dtype(_NUMPY_DTYPES[dtype.name])
    except KeyError:
        raise EngineDirError(
            f"engine I/O of TensorRT type {dtype.name} has no numpy equivalent; export the model with "
            "float32 or float16 inputs and outputs"
        ) from None


@dataclass(frozen=True)
class _Io:
    name: str
    is_input: bool
    dtype: np.dtype[Any]


def _engine_io(
    engine: trt.ICudaEngine,
    path: Path,
    expected_inputs: tuple[str, ...],
    expected_outputs: tuple[str, ...],
) -> dict[str, _Io]:
    import tensorrt as trt

    io: dict[str, _Io] = {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        mode = engine.get_tensor_mode(name)
        io[name] = _Io(
            name, mode == trt.TensorIOMode.INPUT, numpy_dtype(engine.get_tensor_dtype(name))
        )
    inputs = tuple(sorted(n for n, t in io.items() if t.is_input))
    outputs = tuple(sorted(n for n, t in io.items() if not t.is_input))
    if inputs != tuple(sorted(expected_inputs)) or outputs != tuple(sorted(expected_outputs)):
        raise EngineDirError(
            f"{path} has inputs {list(inputs)} and outputs {list(outputs)}, samrt expects "
            f"{sorted(expected_inputs)} and {sorted(expected_outputs)}; rebuild it with `samrt build`"
        )
    return io


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


class _Lane:
    """One stream, one execution context per engine, and device buffers for the host-fed
    inputs at the profile's maximum size. Used by one call at a time."""

    def __init__(self, backend: TensorRTBackend) -> None:
        cudart = backend._cudart
        self.stream: _Stream | None = None
        self.contexts: dict[str, trt.IExecutionContext] = {}
        self.buffers: dict[str, DeviceBuffer] = {}
        try:
            self.stream = _Stream(cudart)
            for role, engine in backend._engines.items():
                context = engine.create_execution_context()
                if context is None:
                    raise CudaError(
                        f"TensorRT could not create a {role} execution context (out of GPU memory?): "
                        f"{backend._messages.summary()}"
                    )
                self.contexts[role] = context
            for role, context in self.contexts.items():
                io = backend._io[role]
                # Output sizes at the profile's maximum, as the engine computes them.
                for name, shape in backend._profiles[role].items():
                    if not context.set_input_shape(name, shape.max):
                        raise EngineDirError(
                            f"the {role} engine rejects its own profile's maximum {name} shape {shape.max}"
                        )
                for name in backend._lane_tensors[role]:
                    dims = _dims(context.get_tensor_shape(name))
                    if not dims or min(dims) < 1:
                        raise EngineDirError(
                            f"the {role} engine's {name} has no definite maximum shape ({dims})"
                        )
                    self.buffers[name] = DeviceBuffer(
                        cudart, math.prod(dims) * io[name].dtype.itemsize
                    )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        # Contexts go before the engines that made them (the backend drops engines after lanes).
        self.contexts.clear()
        buffers, self.buffers = self.buffers, {}
        for buffer in buffers.values():
            buffer.close()
        if self.stream is not None:
            self.stream.close()
            self.stream = None


class TensorRTBackend(Backend):
    """Runs the engines of an engine directory built for this GPU by ``samrt build``.

    ``max_contexts`` bounds how many calls run at once (each holds one lane: a stream, two
    execution contexts and its input buffers). Thread-safe. close() (or ``with``) releases
    the GPU resources; embeddings already returned keep their own memory.
    """

    def __init__(
        self,
        engine_dir: str | Path,
        manifest: Manifest,
        *,
        precision: str = "fp32",
        device: int = 0,
        max_contexts: int = 2,
    ) -> None:
        if max_contexts < 1:
            raise ValueError(f"max_contexts must be at least 1, got {max_contexts}")
        self._closed = True  # until fully started: close()/__del__ then have nothing to undo
        self._lanes_idle: list[_Lane] = []
        self._lanes_total = 0
        self._cond = threading.Condition()

        version = require_tensorrt()
        self._cudart: Any = require_cuda()
        gpu = current_gpu(device)
        root = Path(engine_dir)
        found = {role: find_engine(root, manifest, role, precision, gpu, version) for role in ROLES}
        # Every hash is checked before TensorRT sees any engine bytes.
        blobs = {role: read_verified_engine(path, record) for role, (path, record) in found.items()}

        import tensorrt as trt

        self._device = device
        self._activate()
        self._messages = TrtMessages()
        self._logger = make_logger(self._messages)
        self._runtime: trt.Runtime = trt.Runtime(self._logger)
        self._engines: dict[str, trt.ICudaEngine] = {}
        for role, blob in blobs.items():
            self._messages.clear()
            engine = self._runtime.deserialize_cuda_engine(blob)
            if engine is None:
                raise EngineDirError(
                    f"TensorRT could not load {found[role][0]} ({self._messages.summary()}); "
                    f"rebuild it with `samrt build {root} --precision {precision}`"
                )
            self._engines[role] = engine
        del blobs

        self._io = {
            "encoder": _engine_io(
                self._engines["encoder"],
                found["encoder"][0],
                (contract.ENCODER_INPUT,),
                (contract.ENCODER_OUTPUT,),
            ),
            "decoder": _engine_io(
                self._engines["decoder"],
                found["decoder"][0],
                contract.DECODER_INPUTS,
                contract.DECODER_OUTPUTS,
            ),
        }
        self._profiles = {role: found[role][1].profiles for role in ROLES}
        self._check_profiles(found)
        embedding_name = contract.DECODER_INPUTS[0]
        self._embedding_dtype = self._io["encoder"][contract.ENCODER_OUTPUT].dtype
        if self._io["decoder"][embedding_name].dtype != self._embedding_dtype:
            raise EngineDirError(
                f"the encoder writes {self._embedding_dtype} embeddings but the decoder reads "
                f"{self._io['decoder'][embedding_name].dtype}; rebuild both with `samrt build {root} --precision {precision}`"
            )
        # Tensors that live in lane buffers: the host-fed inputs and the decoder's outputs.
        # The embedding is not among them: the encoder writes it, and the decoder reads it,
        # in the embedding's own memory.
        self._lane_tensors = {
            "encoder": (contract.ENCODER_INPUT,),
            "decoder": (*contract.DECODER_INPUTS[1:], *contract.DECODER_OUTPUTS),
        }
        encoder_max = self._profiles["encoder"][contract.ENCODER_INPUT].max
        decoder_max = self._profiles["decoder"][contract.DECODER_INPUTS[1]].max
        self.max_batch = encoder_max[0]
        self.max_prompts = decoder_max[0]
        self.max_points = decoder_max[1]
        self.max_contexts = max_contexts
        self.precision = precision
        self.gpu = gpu
        self.tensorrt_version = version
        self.name = f"tensorrt {version} ({gpu.name}, {gpu.sm}, {precision})"
        self._closed = False

    def _check_profiles(self, found: Mapping[str, tuple[Path, EngineRecord]]) -> None:
        for role, (path, record) in found.items():
            names = {n for n, io in self._io[role].items() if io.is_input}
            if set(record.profiles) != names:
                raise EngineDirError(
                    f"{path}: its record has profiles for {sorted(record.profiles)}, the engine's inputs are "
                    f"{sorted(names)}; rebuild it with `samrt build`"
                )

    # -- lanes -----------------------------------------------------------------------------

    def _activate(self) -> None:
        # The CUDA device is per thread; every entry point may be a new thread.
        cuda_call(self._cudart, "cudaSetDevice", self._cudart.cudaSetDevice(self._device))

    @contextmanager
    def _lane(self) -> Iterator[_Lane]:
        lane = self._acquire()
        healthy = False
        try:
            yield lane
            healthy = True
        finally:
            self._release(lane, healthy)

    def _acquire(self) -> _Lane:
        with self._cond:
            while True:
                if self._closed:
                    raise BackendClosedError(f"{self.name} was closed")
                if self._lanes_idle:
                    return self._lanes_idle.pop()
                if self._lanes_total < self.max_contexts:
                    self._lanes_total += 1
                    break
                self._cond.wait()
        # Created outside the lock: allocation takes a while and other lanes may be free.
        try:
            return _Lane(self)
        except BaseException:
            with self._cond:
                self._lanes_total -= 1
                self._cond.notify()
            raise

    def _release(self, lane: _Lane, healthy: bool) -> None:
        with self._cond:
            if healthy and not self._closed:
                self._lanes_idle.append(lane)
                self._cond.notify()
                return
        # A failed call may leave work queued on the lane's stream, so the lane is dropped
        # rather than reused; it is freed before close() may free the engines.
        try:
            lane.close()
        finally:
            with self._cond:
                self._lanes_total -= 1
                self._cond.notify_all()

    def close(self) -> None:
        """Waits for calls in flight, then frees streams, contexts, buffers and engines."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            while self._lanes_total > len(self._lanes_idle):
                self._cond.wait()
            lanes, self._lanes_idle = self._lanes_idle, []
            self._lanes_total = 0
        self._activate()
        for lane in lanes:
            lane.close()
        # Engines before the runtime that deserialized them.
        self._engines.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # No call can be in flight once the object is unreachable, so this never waits;
        # at interpreter exit there is nothing to report a failure to.
        with contextlib.suppress(Exception):
            if not getattr(self, "_closed", True):
                self.close()

    # -- transfers -------------------------------------------------------------------------

    def _upload(self, lane: _Lane, name: str, array: npt.NDArray[Any]) -> None:
        buffer = lane.buffers[name]
        if array.nbytes > buffer.nbytes:
            raise ValueError(f"{name} of shape {array.shape} exceeds the engine profile's maximum")
        assert lane.stream is not None
        cuda_call(
            self._cudart,
            f"cudaMemcpyAsync({name}, host to device)",
            self._cudart.cudaMemcpyAsync(
                buffer.ptr,
                array.ctypes.data,
                array.nbytes,
                self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                lane.stream.handle,
            ),
        )

    def _download(self, lane: _Lane, device_ptr: int, out: npt.NDArray[Any]) -> None:
        assert lane.stream is not None
        cuda_call(
            self._cudart,
            "cudaMemcpyAsync(device to host)",
            self._cudart.cudaMemcpyAsync(
                out.ctypes.data,
                device_ptr,
                out.nbytes,
                self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                lane.stream.handle,
            ),
        )

    def _bind(self, context: trt.IExecutionContext, name: str, ptr: int) -> None:
        if not context.set_tensor_address(name, ptr):
            raise CudaError(f"TensorRT refused the address of {name}: {self._messages.summary()}")

    def _set_shape(self, context: trt.IExecutionContext, name: str, shape: tuple[int, ...]) -> None:
        if not context.set_input_shape(name, shape):
            raise ValueError(
                f"{name} of shape {shape} is outside the engine's optimization profile"
            )

    def _execute(self, lane: _Lane, role: str) -> None:
        assert lane.stream is not None
        if not lane.contexts[role].execute_async_v3(lane.stream.handle):
            raise CudaError(f"TensorRT {role} execution failed: {self._messages.summary()}")

    # -- Backend ---------------------------------------------------------------------------

    def encode(self, images: FloatArray) -> Embedding:
        size = contract.IMAGE_SIZE
        if images.ndim != 4 or images.shape[1:] != (3, size, size) or images.shape[0] < 1:
            raise ValueError(
                f"images must have shape [B,3,{size},{size}] with B >= 1, got {images.shape}"
            )
        images = np.ascontiguousarray(
            images, dtype=self._io["encoder"][contract.ENCODER_INPUT].dtype
        )
        batch = images.shape[0]
        shape = (batch, contract.EMBEDDING_DIM, contract.EMBEDDING_SIZE, contract.EMBEDDING_SIZE)
        per_image = math.prod(shape[1:]) * self._embedding_dtype.itemsize
        self._activate()
        output = DeviceBuffer(self._cudart, batch * per_image)
        try:
            with self._lane() as lane:
                context = lane.contexts["encoder"]
                for start in range(0, batch, self.max_batch):
                    chunk = images[start : start + self.max_batch]
                    self._upload(lane, contract.ENCODER_INPUT, chunk)
                    self._set_shape(context, contract.ENCODER_INPUT, chunk.shape)
                    self._bind(
                        context, contract.ENCODER_INPUT, lane.buffers[contract.ENCODER_INPUT].ptr
                    )
                    # The encoder writes straight into the embedding's own memory.
                    self._bind(context, contract.ENCODER_OUTPUT, output.ptr + start * per_image)
                    produced = _dims(context.get_tensor_shape(contract.ENCODER_OUTPUT))
                    if produced != (len(chunk), *shape[1:]):
                        raise EngineDirError(
                            f"the encoder engine produces {produced}, samrt expects {(len(chunk), *shape[1:])}"
                        )
                    self._execute(lane, "encoder")
                assert lane.stream is not None
                # Complete before returning: the embedding may be decoded on another lane's stream.
                lane.stream.synchronize()
        except BaseException:
            output.close()
            raise
        return DeviceEmbedding(output, 0, shape, self._embedding_dtype)

    def decode(
        self,
        embedding: Embedding,
        point_coords: FloatArray,
        point_labels: FloatArray,
        mask_input: FloatArray,
        has_mask_input: FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        image = self._own_embedding(embedding)
        if len(image) != 1:
            raise ValueError(
                f"decode takes one image's embedding, got a batch of {len(image)} (use select_embedding)"
            )
        names = contract.DECODER_INPUTS
        dtypes = {name: self._io["decoder"][name].dtype for name in names[1:]}
        coords = np.ascontiguousarray(point_coords, dtype=dtypes[names[1]])
        labels = np.ascontiguousarray(point_labels, dtype=dtypes[names[2]])
        masks = np.ascontiguousarray(mask_input, dtype=dtypes[names[3]])
        has_mask = np.ascontiguousarray(has_mask_input, dtype=dtypes[names[4]])
        low = contract.LOW_RES_SIZE
        if coords.ndim != 3 or coords.shape[2] != 2 or coords.shape[0] < 1 or coords.shape[1] < 1:
            raise ValueError(
                f"point_coords must have shape [P,N,2] with P, N >= 1, got {coords.shape}"
            )
        n_prompts, n_points = coords.shape[:2]
        if labels.shape != (n_prompts, n_points):
            raise ValueError(
                f"point_labels must have shape {(n_prompts, n_points)}, got {labels.shape}"
            )
        if masks.shape != (n_prompts, 1, low, low):
            raise ValueError(
                f"mask_input must have shape {(n_prompts, 1, low, low)}, got {masks.shape}"
            )
        if has_mask.shape != (n_prompts,):
            raise ValueError(f"has_mask_input must have shape {(n_prompts,)}, got {has_mask.shape}")
        if n_points > self.max_points:
            raise ValueError(
                f"{n_points} points per prompt: the TensorRT decoder was built for at most {self.max_points}; "
                "rebuild it with a larger `samrt build --max-points`"
            )

        self._activate()
        results: dict[str, npt.NDArray[Any]] = {}
        with self._lane() as lane:
            context = lane.contexts["decoder"]
            for start in range(0, n_prompts, self.max_prompts):
                stop = min(start + self.max_prompts, n_prompts)
                for name, array in zip(names[1:], (coords, labels, masks, has_mask)):
                    part = array[start:stop]
                    self._upload(lane, name, part)
                    self._set_shape(context, name, part.shape)
                    self._bind(context, name, lane.buffers[name].ptr)
                self._set_shape(context, names[0], image.shape)
                self._bind(context, names[0], image.ptr)
                for name in contract.DECODER_OUTPUTS:
                    produced = _dims(context.get_tensor_shape(name))
                    if name not in results:
                        results[name] = np.empty(
                            (n_prompts, *produced[1:]), dtype=self._io["decoder"][name].dtype
                        )
                    if produced != (stop - start, *results[name].shape[1:]):
                        raise EngineDirError(
                            f"the decoder engine's {name} has shape {produced} for {stop - start} prompts"
                        )
                    self._bind(context, name, lane.buffers[name].ptr)
                self._execute(lane, "decoder")
                for name in contract.DECODER_OUTPUTS:
                    # Only scores and low-res logits come back to the host.
                    self._download(lane, lane.buffers[name].ptr, results[name][start:stop])
            assert lane.stream is not None
            lane.stream.synchronize()
        iou = np.asarray(results[contract.DECODER_OUTPUTS[0]], dtype=np.float32)
        low_res = np.asarray(results[contract.DECODER_OUTPUTS[1]], dtype=np.float32)
        return iou, low_res

    def embedding_to_numpy(self, embedding: Embedding) -> FloatArray:
        image = self._own_embedding(embedding)
        host = np.empty(image.shape, dtype=image.dtype)
        self._activate()
        cuda_call(
            self._cudart,
            "cudaMemcpy(embedding, device to host)",
            self._cudart.cudaMemcpy(
                host.ctypes.data,
                image.ptr,
                image.nbytes,
                self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
            ),
        )
        return np.asarray(host, dtype=np.float32)

    def embedding_from_numpy(self, array: FloatArray) -> Embedding:
        expected = (1, contract.EMBEDDING_DIM, contract.EMBEDDING_SIZE, contract.EMBEDDING_SIZE)
        if array.shape != expected:
            raise ValueError(f"embedding must have shape {expected}, got {array.shape}")
        host = np.ascontiguousarray(array, dtype=self._embedding_dtype)
        self._activate()
        buffer = DeviceBuffer(self._cudart, host.nbytes)
        try:
            cuda_call(
                self._cudart,
                "cudaMemcpy(embedding, host to device)",
                self._cudart.cudaMemcpy(
                    buffer.ptr,
                    host.ctypes.data,
                    host.nbytes,
                    self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                ),
            )
        except BaseException:
            buffer.close()
            raise
        return DeviceEmbedding(buffer, 0, expected, self._embedding_dtype)

    def select_embedding(self, embedding: Embedding, index: int) -> Embedding:
        batch = self._own_embedding(embedding)
        if not 0 <= index < len(batch):
            raise IndexError(f"image index {index} out of range for a batch of {len(batch)}")
        per_image = batch.nbytes // len(batch)
        # A view: no copy, and the batch's memory lives as long as this view.
        return DeviceEmbedding(
            batch.buffer, batch.offset + index * per_image, (1, *batch.shape[1:]), batch.dtype
        )

    def _own_embedding(self, embedding: Embedding) -> DeviceEmbedding:
        if not isinstance(embedding, DeviceEmbedding):
            raise TypeError(
                f"the TensorRT backend takes embeddings it made (DeviceEmbedding), got {type(embedding).__name__}; "
                "convert host arrays with embedding_from_numpy"
            )
        if embedding.dtype != self._embedding_dtype:
            raise TypeError(
                f"embedding of dtype {embedding.dtype}, this backend's engines use {self._embedding_dtype}"
            )
        return embedding
