"""TensorRT backend: an engine directory's graphs as TensorRT engines built by ``samrt build``.

Engines are compiled for one GPU model and one TensorRT version, so an engine directory
holds one engine per (role, precision, GPU, compute capability, TensorRT version), named
by :func:`engine_file_name`, and the manifest's ``extra["tensorrt"]`` records what each
was built from (:class:`EngineRecord`). An engine file is executable code: this backend
deserializes only bytes whose sha256 equals the manifest's record, and checks that before
TensorRT sees them.

Nothing here imports ``tensorrt`` or ``cuda`` at module import time; they are imported
when a backend starts (or a build runs), and their absence is a BackendUnavailableError
saying what to install.

Optimization profiles come from the manifest: each symbolic dimension of a graph's input
TensorSpecs (B images, P prompts, N points per prompt, M masks) gets the range
:class:`ProfileLimits` gives it, fixed dimensions stay fixed. N may be 0 (a mask input
alone, or no prompt at all): TensorRT runs empty tensors, given an address for them.

Concurrency: an ICudaEngine is shared, but an execution context may run one inference at
a time. The backend therefore keeps a pool of *lanes*: each lane owns one CUDA stream, one
execution context per engine, and device buffers at the profile's maximum size for the
tensors that cross to or from the host (allocated on first use). A call borrows a lane for
its whole duration, so calls from several threads run concurrently on separate streams, up
to ``max_contexts`` at once (further callers wait). Lanes are created on first demand.

Data movement: a tensor a graph leaves on the device (:class:`DeviceTensor`: an image's
embedding, the decoder's per-image and per-prompt tokens) gets its own device memory, and
the next graph reads it in place. Host arrays go up through lane buffers, and only what a
caller asks for on the host (IoU scores, mask weights, low-res logits) comes back, into
fresh numpy arrays that the caller owns. Pinned staging buffers would add a host-to-host
copy of the same size to the device copy they speed up, so they are not used. Every call
synchronizes its stream before it returns, so what it made is complete for any other lane.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import threading
from collections import deque
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self

import numpy as np
import numpy.typing as npt

from .. import contract
from ..errors import BackendUnavailableError, EngineDirError, SamrtError
from ..manifest import Manifest, ModelFile, TensorSpec
from .base import Backend, Tensor

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = [
    "DEFAULT_LIMITS",
    "DIMENSIONS",
    "BackendClosedError",
    "CudaError",
    "DeviceBuffer",
    "DeviceTensor",
    "EngineRecord",
    "GpuInfo",
    "ProfileLimits",
    "ShapeRange",
    "TensorRTBackend",
    "TrtMessages",
    "cuda_call",
    "current_gpu",
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

# TensorRT's I/O addresses must be aligned like cudaMalloc's.
_ALIGNMENT: Final = 256
_D2D: Final = "cudaMemcpyDeviceToDevice"

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
    """One input's optimization-profile shapes. A dimension may be 0 (an empty tensor, such
    as the points of a prompt that has none: TensorRT runs those)."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError(
                f"profile shapes must have one rank, got {self.min}, {self.opt}, {self.max}"
            )
        for lo, mid, hi in zip(self.min, self.opt, self.max, strict=True):
            if not 0 <= lo <= mid <= hi:
                raise ValueError(
                    f"profile needs 0 <= min <= opt <= max per dimension, got {self.min}, {self.opt}, {self.max}"
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
class _Dimension:
    """A symbolic dimension of the manifest's TensorSpecs, as engines are built for it."""

    what: str
    # The `samrt build` option that sets its maximum; None where the contract fixes it.
    option: str | None


# The symbolic dimension names of the exported graphs' TensorSpecs (see the manifest).
DIMENSIONS: Final[Mapping[str, _Dimension]] = {
    contract.DIM_IMAGES: _Dimension("images per call", "--max-batch"),
    contract.DIM_PROMPTS: _Dimension("prompts per call", "--max-prompts"),
    contract.DIM_POINTS: _Dimension("points per prompt", "--max-points"),
    contract.DIM_MASKS: _Dimension("masks per prompt", None),
}


@dataclass(frozen=True)
class ProfileLimits:
    """The ranges engines are built for, by symbolic dimension: images per encoder call (B),
    prompts per decoder call (P), points per prompt (N, from 0: a prompt may have none) and
    masks per prompt (M: the single mask or the three multimask outputs, at most
    contract.NUM_MASK_OUTPUTS). Callers split larger batches of prompts (prompts_per_run);
    larger inputs are refused with the `samrt build` option to raise."""

    max_batch: int = 8
    opt_batch: int = 1
    max_prompts: int = 256
    # The automatic mask generator's default points_per_batch.
    opt_prompts: int = 64
    max_points: int = 16
    # One clicked point plus the padding point.
    opt_points: int = 2
    # The three multimask outputs, what the generator and an interactive click ask for.
    opt_masks: int = 3

    def __post_init__(self) -> None:
        for name, lo, opt, hi in (
            ("batch", 1, self.opt_batch, self.max_batch),
            ("prompts", 1, self.opt_prompts, self.max_prompts),
            ("points", 0, self.opt_points, self.max_points),
            ("masks", 1, self.opt_masks, contract.NUM_MASK_OUTPUTS),
        ):
            if not lo <= opt <= hi:
                raise ValueError(f"need {lo} <= opt_{name} <= max_{name}, got opt {opt}, max {hi}")

    def ranges(self) -> dict[str, tuple[int, int, int]]:
        """(min, opt, max) by symbolic dimension name (see DIMENSIONS)."""
        return {
            contract.DIM_IMAGES: (1, self.opt_batch, self.max_batch),
            contract.DIM_PROMPTS: (1, self.opt_prompts, self.max_prompts),
            contract.DIM_POINTS: (0, self.opt_points, self.max_points),
            contract.DIM_MASKS: (1, self.opt_masks, contract.NUM_MASK_OUTPUTS),
        }


DEFAULT_LIMITS: Final = ProfileLimits()


def profiles_for(model: ModelFile, limits: ProfileLimits = DEFAULT_LIMITS) -> dict[str, ShapeRange]:
    """The optimization profile of one graph, from its inputs' TensorSpecs in the manifest:
    a symbolic dimension gets its range from ``limits``, a fixed one stays fixed."""
    ranges = limits.ranges()
    profile: dict[str, ShapeRange] = {}
    for spec in model.inputs:
        lo: list[int] = []
        mid: list[int] = []
        hi: list[int] = []
        for dim in spec.shape:
            if isinstance(dim, int):
                lo.append(dim)
                mid.append(dim)
                hi.append(dim)
                continue
            if dim not in ranges:
                raise ValueError(
                    f"{model.file} input {spec.name} has a dimension {dim!r} that samrt build has no "
                    f"range for (it knows {', '.join(ranges)}); re-export the model with `samrt export`"
                )
            a, b, c = ranges[dim]
            lo.append(a)
            mid.append(b)
            hi.append(c)
        profile[spec.name] = ShapeRange(tuple(lo), tuple(mid), tuple(hi))
    return profile


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
    if role not in contract.ALL_ROLES:
        raise ValueError(f"role must be one of {contract.ALL_ROLES}, got {role!r}")
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
    engine_dir: str | Path,
    manifest: Manifest,
    precision: str = "fp32",
    roles: Sequence[str] = contract.ROLES,
    device: int = 0,
) -> str | None:
    """Why ``backend="auto"`` cannot use TensorRT here for the graphs ``roles``, or None
    when it can try.

    Cheapest checks first: an engine directory without TensorRT records never imports
    TensorRT. The engines' hashes are checked when the backend starts, not here.
    """
    try:
        records = engine_records(manifest)
        if not any(r.precision == precision for r in records.values()):
            return f"no {precision} TensorRT engines in the engine directory (build them with `samrt build`)"
        version = require_tensorrt()
        gpu = current_gpu(device)
        for role in roles:
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
class DeviceTensor:
    """A tensor on the GPU: ``shape`` elements of ``dtype``, C order, at ``buffer`` +
    ``offset``. Views (:meth:`rows`) share their buffer, which lives as long as any of
    them; nothing writes into a tensor once it is made."""

    buffer: DeviceBuffer
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def ptr(self) -> int:
        return self.buffer.ptr + self.offset

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def row_bytes(self) -> int:
        """Bytes of one index along the first axis."""
        return math.prod(self.shape[1:]) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, start: int, stop: int) -> DeviceTensor:
        """Rows ``start:stop`` along the first axis as a view: no copy."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"rows {start}:{stop} out of range for a tensor of {len(self)}")
        return DeviceTensor(
            self.buffer,
            self.offset + start * self.row_bytes,
            (stop - start, *self.shape[1:]),
            self.dtype,
        )


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


def _runs(index: npt.NDArray[np.intp]) -> Iterator[tuple[int, int, int]]:
    """(position, first row, count) of each run of consecutive rows in ``index``."""
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [len(index)]))
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        yield start, int(index[start]), stop - start


class _Lane:
    """One stream, one execution context per engine, and device buffers at the profile's
    maximum size for the tensors that cross to or from the host, each allocated when a call
    first needs it. Used by one call at a time."""

    def __init__(self, backend: TensorRTBackend) -> None:
        self._cudart = backend._cudart
        self.stream: _Stream | None = None
        self.contexts: dict[str, trt.IExecutionContext] = {}
        self.buffers: dict[tuple[str, str], DeviceBuffer] = {}
        # Bytes of every I/O tensor at its profile's maximum, by (role, name).
        self.max_bytes: dict[tuple[str, str], int] = {}
        try:
            self.stream = _Stream(self._cudart)
            for role, engine in backend._engines.items():
                context = engine.create_execution_context()
                if context is None:
                    raise CudaError(
                        f"TensorRT could not create a {role} execution context (out of GPU memory?): "
                        f"{backend._messages.summary()}"
                    )
                self.contexts[role] = context
            for role, context in self.contexts.items():
                # Output sizes at the profile's maximum, as the engine computes them.
                for name, shape in backend._profiles[role].items():
                    if not shape.fixed and not context.set_input_shape(name, shape.max):
                        raise EngineDirError(
                            f"the {role} engine rejects its own profile's maximum {name} shape {shape.max}"
                        )
                for name, io in backend._io[role].items():
                    dims = _dims(context.get_tensor_shape(name))
                    if min(dims, default=0) < 0:
                        raise EngineDirError(
                            f"the {role} engine's {name} has no definite maximum shape ({dims})"
                        )
                    # TensorRT needs an address even for an empty tensor: at least one byte.
                    self.max_bytes[(role, name)] = max(1, math.prod(dims) * io.dtype.itemsize)
        except BaseException:
            self.close()
            raise

    def buffer(self, role: str, name: str) -> DeviceBuffer:
        key = (role, name)
        buffer = self.buffers.get(key)
        if buffer is None:
            buffer = self.buffers[key] = DeviceBuffer(self._cudart, self.max_bytes[key])
        return buffer

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
    """Runs the engines of an engine directory built for this GPU by ``samrt build``, one
    per graph of ``roles``.

    ``max_contexts`` bounds how many calls run at once (each holds one lane: a stream, one
    execution context per engine and its transfer buffers). Thread-safe. close() (or
    ``with``) releases the GPU resources; tensors already returned keep their own memory.
    """

    on_device = True

    def __init__(
        self,
        engine_dir: str | Path,
        manifest: Manifest,
        *,
        roles: Sequence[str] = contract.ROLES,
        precision: str = "fp32",
        device: int = 0,
        max_contexts: int = 2,
    ) -> None:
        if max_contexts < 1:
            raise ValueError(f"max_contexts must be at least 1, got {max_contexts}")
        roles = tuple(roles)
        if not roles or any(role not in contract.ALL_ROLES for role in roles):
            raise ValueError(f"roles must be some of {contract.ALL_ROLES}, got {list(roles)}")
        self._closed = True  # until fully started: close()/__del__ then have nothing to undo
        self._lanes_idle: list[_Lane] = []
        self._lanes_total = 0
        self._cond = threading.Condition()

        version = require_tensorrt()
        self._cudart: Any = require_cuda()
        gpu = current_gpu(device)
        root = Path(engine_dir)
        models = manifest.graphs(precision, roles)
        found = {role: find_engine(root, manifest, role, precision, gpu, version) for role in roles}
        # Every hash is checked before TensorRT sees any engine bytes.
        blobs = {role: read_verified_engine(path, record) for role, (path, record) in found.items()}

        import tensorrt as trt

        self._device = device
        self._set_device()
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

        # The engine must have exactly its source graph's tensors, as the manifest (whose
        # family decides them) lists them.
        self._io = {
            role: _engine_io(
                self._engines[role],
                found[role][0],
                tuple(t.name for t in models[role].inputs),
                tuple(t.name for t in models[role].outputs),
            )
            for role in roles
        }
        self._inputs = {role: {t.name: t for t in models[role].inputs} for role in roles}
        self._outputs = {role: {t.name: t for t in models[role].outputs} for role in roles}
        self._profiles = {role: found[role][1].profiles for role in roles}
        self._check_profiles(found)
        #: The largest size of each symbolic dimension (B, P, N, M) all engines that have it take.
        self.max_dims: dict[str, int] = {}
        for role in roles:
            for name, spec in self._inputs[role].items():
                for axis, dim in enumerate(spec.shape):
                    if isinstance(dim, str):
                        hi = self._profiles[role][name].max[axis]
                        self.max_dims[dim] = min(hi, self.max_dims.get(dim, hi))
        self.prompts_per_run = self.max_dims.get(contract.DIM_PROMPTS, DEFAULT_LIMITS.max_prompts)
        self.max_contexts = max_contexts
        self.roles = roles
        self.precision = precision
        self.gpu = gpu
        self.tensorrt_version = version
        self.name = f"tensorrt {version} ({gpu.name}, {gpu.sm}, {precision})"
        self._closed = False

    def _check_profiles(self, found: Mapping[str, tuple[Path, EngineRecord]]) -> None:
        for role, (path, record) in found.items():
            names = {n for n, io in self._io[role].items() if io.is_input}
            fix = f"rebuild it with `samrt build {path.parent} --precision {record.precision}`"
            if set(record.profiles) != names or set(self._inputs[role]) != names:
                raise EngineDirError(
                    f"{path}: its record has profiles for {sorted(record.profiles)}, the engine's inputs are "
                    f"{sorted(names)} and the manifest's {sorted(self._inputs[role])}; {fix}"
                )
            for name, spec in self._inputs[role].items():
                shape = record.profiles[name]
                fits = len(shape.max) == len(spec.shape) and all(
                    isinstance(dim, str) or shape.min[axis] == dim == shape.max[axis]
                    for axis, dim in enumerate(spec.shape)
                )
                if not fits:
                    raise EngineDirError(
                        f"{path}: its profile for {name} ({shape.min}..{shape.max}) does not fit the "
                        f"manifest's {list(spec.shape)}; {fix}"
                    )

    # -- lanes -----------------------------------------------------------------------------

    def _set_device(self) -> None:
        # The CUDA device is per thread; every entry point may be a new thread.
        cuda_call(self._cudart, "cudaSetDevice", self._cudart.cudaSetDevice(self._device))

    def _activate(self) -> None:
        # Nothing is allocated for a closed backend (a lane would refuse it later anyway).
        if self._closed:
            raise BackendClosedError(f"{self.name} was closed")
        self._set_device()

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
        self._set_device()
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

    def _copy(self, lane: _Lane, dst: int, src: int, nbytes: int, kind: str, what: str) -> None:
        if nbytes == 0:
            return
        assert lane.stream is not None
        cuda_call(
            self._cudart,
            f"cudaMemcpyAsync({what}, {kind})",
            self._cudart.cudaMemcpyAsync(
                dst, src, nbytes, getattr(self._cudart.cudaMemcpyKind, kind), lane.stream.handle
            ),
        )

    def _upload(
        self, lane: _Lane, buffer: DeviceBuffer, name: str, array: npt.NDArray[Any]
    ) -> None:
        if array.nbytes > buffer.nbytes:
            raise ValueError(f"{name} of shape {array.shape} exceeds the engine profile's maximum")
        self._copy(
            lane, buffer.ptr, array.ctypes.data, array.nbytes, "cudaMemcpyHostToDevice", name
        )

    def _download(self, lane: _Lane, device_ptr: int, out: npt.NDArray[Any], name: str) -> None:
        self._copy(lane, out.ctypes.data, device_ptr, out.nbytes, "cudaMemcpyDeviceToHost", name)

    def _bind(self, context: trt.IExecutionContext, name: str, ptr: int) -> None:
        if not context.set_tensor_address(name, ptr):
            raise CudaError(f"TensorRT refused the address of {name}: {self._messages.summary()}")

    def _set_shape(
        self, context: trt.IExecutionContext, role: str, name: str, shape: tuple[int, ...]
    ) -> None:
        # An input of one shape only (checked against it already) is static in the engine.
        if self._profiles[role][name].fixed:
            return
        if not context.set_input_shape(name, shape):
            raise ValueError(
                f"{role} input {name} of shape {list(shape)} is outside the TensorRT engine's "
                f"optimization profile ({self._messages.summary()}); rebuild it with `samrt build`"
            )

    def _execute(self, lane: _Lane, role: str) -> None:
        assert lane.stream is not None
        if not lane.contexts[role].execute_async_v3(lane.stream.handle):
            raise CudaError(f"TensorRT {role} execution failed: {self._messages.summary()}")

    # -- shapes ----------------------------------------------------------------------------

    def _check_input(
        self, role: str, spec: TensorSpec, shape: tuple[int, ...], dims: dict[str, int]
    ) -> None:
        """An input's shape against the manifest's spec (recording the sizes of symbolic
        dims) and the engine's profile; ValueError naming the `samrt build` option to raise."""
        if len(shape) != len(spec.shape):
            raise ValueError(
                f"{role} input {spec.name} must have {len(spec.shape)} dimensions {list(spec.shape)}, "
                f"got shape {list(shape)}"
            )
        profile = self._profiles[role][spec.name]
        for axis, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
            if (want if isinstance(want, int) else dims.setdefault(want, got)) != got:
                raise ValueError(
                    f"{role} input {spec.name} has shape {list(shape)}, which does not fit "
                    f"{list(spec.shape)} (with {dims})"
                )
            lo, hi = profile.min[axis], profile.max[axis]
            if lo <= got <= hi:
                continue
            dim = DIMENSIONS.get(want) if isinstance(want, str) else None
            what = f"{got} {dim.what} ({want})" if dim is not None else f"{got} at axis {axis}"
            if got > hi and dim is not None and dim.option is not None:
                fix = f"rebuild the engines with a larger `samrt build {dim.option}`"
            elif dim is not None and dim.option is None:
                fix = "samrt's graphs take no other size"
            else:
                fix = "rebuild the engines with this samrt's `samrt build`"
            raise ValueError(
                f"{role} input {spec.name} of shape {list(shape)} has {what}: the TensorRT {role} "
                f"engine was built for {lo} to {hi}; {fix}"
            )

    def _check_output(
        self, role: str, spec: TensorSpec, shape: tuple[int, ...], dims: Mapping[str, int]
    ) -> None:
        fits = len(shape) == len(spec.shape) and all(
            got == (want if isinstance(want, int) else dims.get(want, got))
            for want, got in zip(spec.shape, shape, strict=False)
        )
        if not fits:
            raise EngineDirError(
                f"the {role} engine's {spec.name} has shape {list(shape)}, the manifest declares "
                f"{list(spec.shape)} (with {dims}); rebuild it with `samrt build`"
            )

    # -- Backend ---------------------------------------------------------------------------

    def run(
        self,
        role: str,
        inputs: Mapping[str, Tensor],
        outputs: Sequence[str],
        *,
        to_host: Collection[str] = (),
    ) -> dict[str, Tensor]:
        if role not in self._engines:
            if self._closed and role in self.roles:
                raise BackendClosedError(f"{self.name} was closed")
            raise ValueError(f"this backend has no {role} engine (it has {', '.join(self.roles)})")
        io = self._io[role]
        specs_in, specs_out = self._inputs[role], self._outputs[role]
        unknown = sorted(set(inputs) - set(specs_in))
        missing = [name for name in specs_in if name not in inputs]
        if unknown or missing:
            raise ValueError(
                f"the {role} graph takes the inputs {list(specs_in)}, got {sorted(inputs)}"
            )
        wrong = [name for name in outputs if name not in specs_out]
        if wrong or len(set(outputs)) != len(outputs):
            raise ValueError(
                f"the {role} graph's outputs are {list(specs_out)}, asked for {list(outputs)}"
            )
        stray = sorted(set(to_host) - set(outputs))
        if stray:
            raise ValueError(f"to_host names {stray}, which are not among the outputs asked for")

        # Everything is checked before any device work.
        dims: dict[str, int] = {}
        host: dict[str, npt.NDArray[Any]] = {}
        device: dict[str, DeviceTensor] = {}
        for name, value in inputs.items():
            dtype = io[name].dtype
            if isinstance(value, DeviceTensor):
                if value.dtype != dtype:
                    raise TypeError(
                        f"{role} input {name} is a {value.dtype} device tensor, the engine takes {dtype}"
                    )
                device[name] = value
                shape = value.shape
            elif isinstance(value, np.ndarray):
                # To the engine's I/O dtype (float16 where a graph was built to take it).
                host[name] = np.ascontiguousarray(value, dtype=dtype)
                shape = host[name].shape
            else:
                raise TypeError(
                    f"{role} input {name}: the TensorRT backend takes numpy arrays and its own "
                    f"DeviceTensors, got {type(value).__name__}"
                )
            self._check_input(role, specs_in[name], shape, dims)

        self._activate()
        made: list[DeviceBuffer] = []
        results: dict[str, Tensor] = {}
        try:
            with self._lane() as lane:
                context = lane.contexts[role]
                for name, array in host.items():
                    buffer = lane.buffer(role, name)
                    self._upload(lane, buffer, name, array)
                    self._set_shape(context, role, name, array.shape)
                    self._bind(context, name, buffer.ptr)
                for name, tensor in device.items():
                    # Read in place: no copy, unless a view starts where TensorRT cannot
                    # read (its I/O addresses are 256-byte aligned, as cudaMalloc's are).
                    ptr = tensor.ptr
                    if ptr % _ALIGNMENT:
                        buffer = lane.buffer(role, name)
                        self._copy(lane, buffer.ptr, ptr, tensor.nbytes, _D2D, name)
                        ptr = buffer.ptr
                    self._set_shape(context, role, name, tensor.shape)
                    self._bind(context, name, ptr)
                downloads: list[tuple[str, DeviceBuffer, npt.NDArray[Any]]] = []
                for name, tensor_io in io.items():
                    if tensor_io.is_input:
                        continue
                    shape = _dims(context.get_tensor_shape(name))
                    self._check_output(role, specs_out[name], shape, dims)
                    if name in outputs and name not in to_host:
                        # Its own memory, owned by the tensor returned.
                        nbytes = math.prod(shape) * tensor_io.dtype.itemsize
                        buffer = DeviceBuffer(self._cudart, max(1, nbytes))
                        made.append(buffer)
                        results[name] = DeviceTensor(buffer, 0, shape, tensor_io.dtype)
                    else:
                        # For the host, or not asked for (TensorRT writes every output).
                        buffer = lane.buffer(role, name)
                        if name in to_host:
                            array = np.empty(shape, dtype=tensor_io.dtype)
                            downloads.append((name, buffer, array))
                            results[name] = array
                    self._bind(context, name, buffer.ptr)
                self._execute(lane, role)
                for name, buffer, array in downloads:
                    self._download(lane, buffer.ptr, array, name)
                assert lane.stream is not None
                # Complete before returning: what it made may be read on another lane's stream.
                lane.stream.synchronize()
        except BaseException:
            for buffer in made:
                buffer.close()
            raise
        for name in to_host:
            # In the manifest's dtypes, whatever the engine's I/O types.
            want = np.dtype(specs_out[name].dtype)
            if results[name].dtype != want:
                results[name] = results[name].astype(want)
        return {name: results[name] for name in outputs}

    def to_numpy(self, tensor: Tensor) -> npt.NDArray[Any]:
        if isinstance(tensor, np.ndarray):
            return tensor
        source = self._own(tensor)
        host = np.empty(source.shape, dtype=source.dtype)
        if host.nbytes:
            self._activate()
            with self._lane() as lane:
                self._download(lane, source.ptr, host, "to_numpy")
                assert lane.stream is not None
                lane.stream.synchronize()
        return host

    def from_numpy(self, array: npt.NDArray[Any]) -> Tensor:
        host = np.ascontiguousarray(array)
        self._activate()
        buffer = DeviceBuffer(self._cudart, max(1, host.nbytes))
        try:
            if host.nbytes:
                with self._lane() as lane:
                    self._upload(lane, buffer, "from_numpy", host)
                    assert lane.stream is not None
                    lane.stream.synchronize()
        except BaseException:
            buffer.close()
            raise
        return DeviceTensor(buffer, 0, tuple(host.shape), host.dtype)

    def nbytes(self, tensor: Tensor) -> int:
        if isinstance(tensor, DeviceTensor):
            return tensor.nbytes
        return int(tensor.nbytes)

    def take(self, tensor: Tensor, rows: npt.NDArray[np.intp]) -> Tensor:
        if isinstance(tensor, np.ndarray):
            return tensor[rows]
        source = self._own(tensor)
        index = np.asarray(rows)
        if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
            raise TypeError(
                f"rows must be a 1-D integer array, got {index.dtype} of shape {index.shape}"
            )
        index = index.astype(np.intp, copy=False)
        count = len(source)
        if index.size and (index.min() < -count or index.max() >= count):
            raise IndexError(f"rows out of range for a tensor of {count}")
        index = np.where(index < 0, index + count, index)
        row = source.row_bytes
        self._activate()
        buffer = DeviceBuffer(self._cudart, max(1, len(index) * row))
        try:
            if len(index) and row:
                with self._lane() as lane:
                    # Device to device, one copy per run of consecutive rows.
                    for position, first, length in _runs(index):
                        self._copy(
                            lane,
                            buffer.ptr + position * row,
                            source.ptr + first * row,
                            length * row,
                            _D2D,
                            "take",
                        )
                    assert lane.stream is not None
                    lane.stream.synchronize()
        except BaseException:
            buffer.close()
            raise
        return DeviceTensor(buffer, 0, (len(index), *source.shape[1:]), source.dtype)

    def _own(self, tensor: Tensor) -> DeviceTensor:
        if not isinstance(tensor, DeviceTensor):
            raise TypeError(
                f"the TensorRT backend's tensors are the DeviceTensors it made, got {type(tensor).__name__}; "
                "convert host arrays with from_numpy"
            )
        return tensor
