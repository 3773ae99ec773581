"""``samrt build ENGINE_DIR``: compiles an engine directory's ONNX graphs to TensorRT engines.

One engine per graph (role) of the manifest's precision variant, built for the GPU this
runs on (named by GPU model, compute capability and TensorRT version, so one directory
serves several machines) from strongly typed networks: the precision is the ONNX graph's
own (the manifest's fp32 or fp16 variant), never a builder flag, as TensorRT 11 requires
and TensorRT 10 supports. Each engine's optimization profile comes from its graph's input
TensorSpecs in the manifest: the symbolic dims get their ranges from ProfileLimits (B
images: --max-batch; P prompts: --max-prompts; N points per prompt, from 0 since a prompt
may have none: --max-points; M masks: 1 to contract.NUM_MASK_OUTPUTS). The builder's
timing cache is kept next to the engines and reused by later builds on the same kind of
machine. Each engine's record (source sha256, engine sha256, GPU, TensorRT version,
profiles, build time) goes into the manifest's ``extra["tensorrt"]``, which is rewritten
atomically.

Needs TensorRT and cuda-python, never torch.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import contract
from ._atomic import write_atomic
from .backends.tensorrt import (
    DEFAULT_LIMITS,
    EngineRecord,
    GpuInfo,
    ProfileLimits,
    ShapeRange,
    TrtMessages,
    cuda_call,
    current_gpu,
    engine_file_name,
    engine_records,
    make_logger,
    profiles_for,
    read_verified_engine,
    require_cuda,
    require_tensorrt,
    timing_cache_file_name,
    with_engine_records,
)
from .errors import EngineDirError, SamrtError
from .manifest import load_manifest, write_manifest

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = ["EngineBuildError", "build_engines", "main"]

DEFAULT_WORKSPACE_GIB = 4.0


class EngineBuildError(SamrtError):
    """TensorRT could not parse a graph or build an engine from it."""


@dataclass
class _BuildSession:
    """The objects shared by the builds of one run: logger, builder and timing cache."""

    messages: TrtMessages
    logger: trt.ILogger
    builder: trt.Builder
    cache_path: Path
    cache: trt.ITimingCache | None = None


def build_engines(
    engine_dir: str | os.PathLike[str],
    *,
    precision: str = "fp32",
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    limits: ProfileLimits = DEFAULT_LIMITS,
    roles: Sequence[str] | None = None,
    device: int = 0,
    force: bool = False,
    optimization_level: int | None = None,
    tf32: bool = False,
) -> list[Path]:
    """Builds (or keeps, when already built from the same ONNX for this GPU and TensorRT)
    the TensorRT engines of ``roles`` (default: every graph of the manifest's ``precision``
    variant, whatever the model family) from that variant; returns their paths. ``force``
    rebuilds up-to-date engines too. ``tf32`` lets fp32 layers use TF32 tensor cores
    (faster; off by default so that an fp32 engine computes in fp32).

    Raises EngineDirError for a bad engine directory, BackendUnavailableError when
    TensorRT, cuda-python or a GPU is missing, EngineBuildError when TensorRT fails.
    """
    root = Path(engine_dir)
    if workspace_gib <= 0:
        raise ValueError(f"workspace_gib must be positive, got {workspace_gib}")
    if roles is not None:
        unknown = [r for r in roles if r not in contract.ALL_ROLES]
        if unknown or not roles:
            raise ValueError(f"roles must be some of {contract.ALL_ROLES}, got {list(roles)}")
    manifest = load_manifest(root, verify=True, precisions=(precision,))
    if roles is None:
        manifest.model(contract.ENCODER, precision)  # every family has one: names a missing variant
        roles = tuple(manifest.variants[precision])
    # EngineDirError naming the fix when a graph is absent; ValueError for a dimension
    # without a range, before TensorRT is even imported.
    profiles = {
        role: profiles_for(model, limits)
        for role, model in manifest.graphs(precision, tuple(roles)).items()
    }
    version = require_tensorrt()
    gpu = current_gpu(device)

    import tensorrt as trt

    cudart = require_cuda()
    cuda_call(cudart, "cudaSetDevice", cudart.cudaSetDevice(device))

    messages = TrtMessages()
    logger = make_logger(messages)
    session = _BuildSession(
        messages=messages,
        logger=logger,
        builder=trt.Builder(logger),
        cache_path=root / timing_cache_file_name(gpu, version),
    )
    records = dict(engine_records(manifest))
    # What decides an engine's content besides its source graph; a change means a rebuild.
    options = {
        "limits": asdict(limits),
        "builder_optimization_level": optimization_level,
        "tf32": tf32,
    }
    built: dict[str, EngineRecord] = {}
    paths: list[Path] = []
    for role in roles:
        source = manifest.model(role, precision)
        name = engine_file_name(role, precision, gpu, version)
        path = root / name
        if not force and _up_to_date(path, records.get(name), source.sha256, options):
            paths.append(path)
            continue
        record = _build_one(
            session,
            onnx_path=root / source.file,
            source_file=source.file,
            source_sha256=source.sha256,
            engine_path=path,
            role=role,
            precision=precision,
            gpu=gpu,
            version=version,
            profiles=profiles[role],
            workspace_bytes=int(workspace_gib * (1 << 30)),
            optimization_level=optimization_level,
            tf32=tf32,
            options=options,
        )
        built[name] = record
        paths.append(path)

    if session.cache is not None:
        write_atomic(session.cache_path, memoryview(session.cache.serialize()))
    if built:
        # Re-read just before writing: a build on another machine may have added its
        # engines to this directory's manifest meanwhile.
        latest = load_manifest(root, verify=False)
        merged = {**engine_records(latest), **built}
        write_manifest(root, with_engine_records(latest, merged))
    return paths


def _up_to_date(
    path: Path, record: EngineRecord | None, source_sha256: str, options: dict[str, Any]
) -> bool:
    if record is None or record.source_sha256 != source_sha256:
        return False
    if record.extra.get("build_options") != options:
        return False
    try:
        read_verified_engine(path, record)
    except EngineDirError:
        return False
    return True


def _build_one(
    session: _BuildSession,
    *,
    onnx_path: Path,
    source_file: str,
    source_sha256: str,
    engine_path: Path,
    role: str,
    precision: str,
    gpu: GpuInfo,
    version: str,
    profiles: dict[str, ShapeRange],
    workspace_bytes: int,
    optimization_level: int | None,
    tf32: bool,
    options: dict[str, Any],
) -> EngineRecord:
    import tensorrt as trt

    started = time.perf_counter()
    session.messages.clear()
    builder = session.builder
    # Precision comes from the graph: strongly typed on TensorRT 10, the only mode on 11
    # (where the flag is accepted and ignored).
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, session.logger)
    # From the file, so that ONNX external data next to it is found.
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(
            f"TensorRT cannot parse {onnx_path}: {errors or session.messages.summary()}"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if optimization_level is not None:
        config.builder_optimization_level = optimization_level
    if not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    dynamic = False
    built_profiles: dict[str, ShapeRange] = {}
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        declared = tuple(int(tensor.shape[i]) for i in range(len(tensor.shape)))
        wanted = profiles.get(tensor.name)
        if wanted is None:
            raise EngineBuildError(
                f"{onnx_path} has an input {tensor.name!r} that samrt has no profile for (expected {sorted(profiles)})"
            )
        shape = _fit_profile(wanted, declared)
        if shape is None:
            raise EngineBuildError(
                f"{onnx_path}: input {tensor.name!r} is declared {declared}, which does not fit samrt's "
                f"profile {wanted.min}..{wanted.max}; re-export the model with `samrt export`"
            )
        if -1 in declared:
            dynamic = True
            profile.set_shape(
                tensor.name,
                trt.Dims(list(shape.min)),
                trt.Dims(list(shape.opt)),
                trt.Dims(list(shape.max)),
            )
        built_profiles[tensor.name] = shape
    missing = sorted(set(profiles) - set(built_profiles))
    if missing:
        raise EngineBuildError(
            f"{onnx_path} lacks the input(s) {missing} that samrt feeds it; re-export the model"
        )
    # A graph of fixed shapes only (decoder_image) needs no profile: TensorRT makes one.
    if dynamic and config.add_optimization_profile(profile) < 0:
        raise EngineBuildError(
            f"TensorRT rejected the optimization profile {built_profiles} for {onnx_path}: "
            f"{session.messages.summary()}"
        )
    _attach_timing_cache(session, config)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT could not build {engine_path.name} from {onnx_path}: {session.messages.summary()}"
        )
    # A view, not a copy: a ViT-H engine is gigabytes.
    data = memoryview(serialized)
    write_atomic(engine_path, data)
    return EngineRecord(
        file=engine_path.name,
        role=role,
        precision=precision,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=data.nbytes,
        source_file=source_file,
        source_sha256=source_sha256,
        gpu=gpu.name,
        compute_capability=gpu.compute_capability,
        tensorrt_version=version,
        profiles=built_profiles,
        workspace_bytes=workspace_bytes,
        build_seconds=round(time.perf_counter() - started, 3),
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        strongly_typed=True,
        tf32=tf32,
        extra={"build_options": options},
    )


def _fit_profile(wanted: ShapeRange, declared: tuple[int, ...]) -> ShapeRange | None:
    """The profile actually buildable for an input declared ``declared`` (-1 = dynamic):
    a dimension the graph fixes is fixed in the profile too, if the wanted range allows it."""
    if len(declared) != len(wanted.max):
        return None
    lo: list[int] = []
    mid: list[int] = []
    hi: list[int] = []
    for dim, a, b, c in zip(declared, wanted.min, wanted.opt, wanted.max):
        if dim == -1:
            lo.append(a)
            mid.append(b)
            hi.append(c)
        elif a <= dim <= c:
            lo.append(dim)
            mid.append(dim)
            hi.append(dim)
        else:
            return None
    return ShapeRange(tuple(lo), tuple(mid), tuple(hi))


def _attach_timing_cache(session: _BuildSession, config: trt.IBuilderConfig) -> None:
    """One timing cache for all builds of a run, started from the saved one if any."""
    if session.cache is None:
        try:
            saved = session.cache_path.read_bytes()
        except FileNotFoundError:
            saved = b""
        cache = config.create_timing_cache(saved)
        if cache is None and saved:
            # An unreadable cache only costs build time: start afresh.
            cache = config.create_timing_cache(b"")
        if cache is None:
            raise EngineBuildError(
                f"TensorRT could not create a timing cache: {session.messages.summary()}"
            )
        session.cache = cache
    if not config.set_timing_cache(session.cache, False):
        raise EngineBuildError(
            f"TensorRT rejected the timing cache {session.cache_path} (from another GPU or TensorRT?); delete it and rebuild"
        )


def _parser() -> argparse.ArgumentParser:
    from ._help import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="samrt build",
        description="Compile an engine directory's ONNX graphs to TensorRT engines for this GPU.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("engine_dir", type=Path, help="engine directory (from `samrt export`)")
    parser.add_argument(
        "--precision", default="fp32", choices=("fp32", "fp16"), help="which exported variant to build"
    )
    parser.add_argument(
        "--workspace-gib", type=float, default=DEFAULT_WORKSPACE_GIB, help="builder workspace limit"
    )
    parser.add_argument(
        "--role",
        choices=contract.ALL_ROLES,
        action="append",
        help="build only this graph (repeatable; default: every graph of the engine directory)",
    )
    parser.add_argument(
        "--max-batch", type=int, default=ProfileLimits.max_batch, help="images per encoder call"
    )
    parser.add_argument(
        "--max-prompts",
        type=int,
        default=ProfileLimits.max_prompts,
        help="prompts per decoder call",
    )
    parser.add_argument(
        "--opt-prompts", type=int, default=ProfileLimits.opt_prompts, help="prompt count tuned for"
    )
    parser.add_argument(
        "--max-points",
        type=int,
        default=ProfileLimits.max_points,
        help="points per prompt (clicked points, box corners, padding point)",
    )
    parser.add_argument("--device", type=int, default=0, help="CUDA device index")
    parser.add_argument(
        "--optimization-level",
        type=int,
        choices=range(6),
        help="TensorRT builder optimization level (default: TensorRT's, 3)",
    )
    parser.add_argument("--tf32", action="store_true", help="let fp32 layers use TF32 tensor cores")
    parser.add_argument("--force", action="store_true", help="rebuild engines that are up to date")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``samrt build ENGINE_DIR [options]``; returns the exit status."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        limits = ProfileLimits(
            max_batch=args.max_batch,
            max_prompts=args.max_prompts,
            opt_prompts=min(args.opt_prompts, args.max_prompts),
            max_points=args.max_points,
            opt_points=min(ProfileLimits.opt_points, args.max_points),
        )
        paths = build_engines(
            args.engine_dir,
            precision=args.precision,
            workspace_gib=args.workspace_gib,
            limits=limits,
            roles=tuple(args.role) if args.role else None,
            device=args.device,
            force=args.force,
            optimization_level=args.optimization_level,
            tf32=args.tf32,
        )
    except (SamrtError, ValueError, OSError) as e:
        print(f"samrt build: error: {e}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
