"""export_engine: SAM (official classes) -> checked ONNX graphs -> engine directory."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import samrt
from samrt import contract
from samrt._atomic import current_umask
from samrt.errors import EngineDirError
from samrt.families import SamFamily
from samrt.manifest import Manifest, ModelFile, load_manifest, sha256_file, write_manifest

from . import check as _check
from . import fp16, graphs
from ._deps import onnx, torch
from .config import CUSTOM_MODEL_TYPE, SAM2_MODEL_TYPES, EncoderConfig, resolve_config
from .encoder import encoder_graph
from .errors import ExportError
from .models import build_sam

DEFAULT_OPSET = 17
# What `precision` may ask for, and the manifest variants each one writes.
PRECISIONS: dict[str, tuple[str, ...]] = {
    "fp32": ("fp32",),
    "fp16": ("fp16",),
    "both": ("fp32", "fp16"),
}


def export_engine(
    model_type: str | None,
    *,
    out_dir: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    config: EncoderConfig | Mapping[str, Any] | None = None,
    random_seed: int | None = None,
    opset: int | None = None,
    precision: str = "fp32",
    check: bool = True,
    external_data: bool | None = None,
    exporter: graphs.Exporter = "torchscript",
    overwrite: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> Path:
    """Exports a SAM model to an engine directory and returns its path.

    ``model_type`` is "vit_b", "vit_l", "vit_h", "mobile_sam" (MobileSAM: SAM's decoder
    with a TinyViT encoder), "tiny" or "mobile_sam_tiny_test" (small test architectures),
    or "custom"/None with ``config`` (a SamConfig or TinyViTConfig). The weights come from
    ``checkpoint`` (an official or compatible .pth) or from ``random_seed``. With ``check``,
    ONNX Runtime must reproduce the official PyTorch model within
    :data:`samrt_export.check.ENCODER_TOLERANCE` and ``DECODER_TOLERANCE`` or
    ExportCheckError is raised.

    ``precision`` is "fp32" (default), "fp16" or "both": the manifest variants to write.
    The graphs are those of :data:`samrt.contract.ROLES`: the encoder and the decoder's
    three (see samrt_export.decoder). The fp16 variant (``encoder.fp16.onnx`` and so on) is
    the checked fp32
    graph converted to compute in fp16 except for numerically sensitive ops (see
    :mod:`samrt_export.fp16`), with float32 inputs and outputs; it is for GPUs (TensorRT,
    ONNX Runtime CUDA), ONNX Runtime's CPU provider runs it no faster than fp32. Its check
    holds the masks to :data:`samrt_export.check.FP16_MASK_IOU_TOLERANCE`.

    ``opset`` defaults to 17 (DEFAULT_OPSET). ``external_data`` forces (True) or forbids
    (False) writing weights to ``<file>.data``; by default only graphs over 1.5 GB use it.
    ``exporter`` picks torch.onnx's TorchScript tracer (default; about 4x faster to export
    on CPU) or the torch.export-based one (opset >= 18), which is there for when torch drops
    the former.

    Everything is written to a temporary sibling of ``out_dir`` and renamed into place at
    the end, so a failed export leaves no engine directory behind. An existing non-empty
    ``out_dir`` is replaced only with ``overwrite``, with one exception: an engine directory
    exported from the same weights gains the variants it lacks (say fp16 next to its fp32
    graphs) without ``overwrite``; its files stay as they are and its manifest is replaced
    atomically once the new graphs have passed their check.

    ``on_stage(text)``, when given, is called as each stage starts ("exporting encoder",
    "checking decoder against PyTorch", ...): a command line's progress display.

    The SAM 2.1 model types (samrt_export.config.SAM2_MODEL_TYPES) are exported by
    :func:`samrt_export.sam2.export_sam2_engine` (fp32, the official sam2 modules).
    """
    stage = on_stage if on_stage is not None else (lambda text: None)
    if model_type in SAM2_MODEL_TYPES:
        if config is not None or exporter != "torchscript" or external_data is not None:
            raise ExportError(
                f"{model_type} takes no config, exporter or external_data: its architecture is "
                "the sam2 package's configuration"
            )
        from .sam2 import export_sam2_engine

        return export_sam2_engine(
            model_type,
            out_dir=out_dir,
            checkpoint=checkpoint,
            random_seed=random_seed,
            opset=opset,
            precision=precision,
            check=check,
            overwrite=overwrite,
        )
    try:
        manifest_type, sam_config = resolve_config(model_type, config)
    except ValueError as e:
        raise ExportError(str(e)) from None
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    wanted = PRECISIONS[precision]
    if (checkpoint is None) == (random_seed is None):
        raise ExportError(
            "pass exactly one source of weights: a checkpoint (--checkpoint FILE) or a random "
            "init (--random-weights --seed N); downloading official checkpoints is not supported yet"
        )
    target = Path(out_dir)
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} exists and is not a directory")
    extending = _is_nonempty_dir(target) and not overwrite
    if extending and not (target / contract.MANIFEST_FILE).is_file():
        raise ExportError(
            f"{target} already exists and is not empty; pass overwrite=True (--overwrite)"
        )

    source = _weights_source(checkpoint, random_seed)
    if extending and not overwrite and _current_manifest(
        target, manifest_type, sam_config, source, wanted, opset
    ) is not None:
        return target  # up to date: it already holds these graphs of these weights

    # By name where there is one, so that errors speak of "vit_h" rather than its numbers.
    architecture = sam_config if manifest_type == CUSTOM_MODEL_TYPE else manifest_type
    stage("loading the weights")
    if checkpoint is not None:
        sam = build_sam(architecture, checkpoint=checkpoint)
    else:
        assert random_seed is not None
        sam = build_sam(architecture, seed=random_seed)
    _check_contract(sam)
    existing = (
        _extendable_manifest(target, manifest_type, sam_config, source, wanted, opset)
        if extending
        else None
    )
    if opset is None:
        opset = existing.opset if existing is not None else DEFAULT_OPSET

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        if check:
            stage("running PyTorch for the reference outputs")
        reference = _check.Reference(sam) if check else None
        variants: dict[str, dict[str, ModelFile]] = {}
        export_check: dict[str, float] = {}
        if existing is not None and "fp32" in existing.variants:
            # The directory's checked fp32 graphs are the fp16 conversion's source.
            fp32_dir = target
            fp32_opset = existing.opset
        else:
            fp32_dir = staging
            variants["fp32"], export_check = _export_fp32(
                sam, staging, reference, stage, opset=opset, exporter=exporter,
                external_data=external_data,
            )
            fp32_opset = graphs.opset_of(staging / contract.ENCODER_FILE)
        if "fp16" in wanted:
            stage("converting the graphs to fp16")
            variants["fp16"] = {
                role: _convert_and_verify(
                    fp32_dir / graphs.SPECS[role].file, spec, staging, external_data
                )
                for role, spec in fp16.SPECS.items()
            }
            if reference is not None:
                stage("checking the fp16 graphs against PyTorch")
                export_check |= _check.check_fp16(
                    reference, {role: staging / spec.file for role, spec in fp16.SPECS.items()}
                )
        if "fp32" not in wanted and fp32_dir == staging:
            # Traced only as the fp16 variant's source; export_check keeps their measurements.
            for model in variants.pop("fp32").values():
                for name in model.files():
                    (staging / name).unlink()

        if existing is None:
            manifest = _new_manifest(
                sam, manifest_type, sam_config, source, variants, export_check, fp32_opset, exporter
            )
        else:
            manifest = dataclasses.replace(
                existing,
                variants={**existing.variants, **variants},
                export_check={**existing.export_check, **export_check},
            )
        if "fp16" in variants:
            records = dict(manifest.extra.get("export", {}))
            records["fp16"] = {
                "converter": "onnxruntime.transformers.float16",
                "onnxruntime": _package_version("onnxruntime"),
                "fp32_ops": list(fp16.FP32_OP_TYPES),
                "check": "fp16 twin (every fp16 tensor rounded to fp16) and ONNX Runtime CPU",
            }
            manifest = dataclasses.replace(manifest, extra={**manifest.extra, "export": records})
        write_manifest(staging, manifest)
        _make_shareable(staging)
        if existing is None:
            _move_into_place(staging, target, overwrite=overwrite)
        else:
            _add_into_place(staging, target, existing, variants)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _export_fp32(
    sam: Any,
    staging: Path,
    reference: _check.Reference | None,
    stage: Callable[[str], None],
    **options: Any,
) -> tuple[dict[str, ModelFile], dict[str, float]]:
    # Graph by graph, each checked before the next is traced, so a bad export fails early;
    # the decoder's three graphs are checked together, as the runtime chains them.
    export_check: dict[str, float] = {}
    variant: dict[str, ModelFile] = {}
    for role, spec in graphs.SPECS.items():
        if role == contract.ENCODER:
            module: torch.nn.Module = encoder_graph(sam.image_encoder)
            example = graphs.encoder_example_inputs(options["exporter"])
        else:
            module = graphs.MODULES[role](sam)
            example = graphs.decoder_example_inputs(role)
        stage(f"exporting {role}")
        extra = _export_and_verify(module, example, spec, staging, **options)
        variant[role] = _model_file(staging, spec, extra)
        if reference is not None and role == contract.ENCODER:
            stage("checking the encoder against PyTorch")
            export_check |= _check.check_encoder(reference, staging / spec.file)
    if reference is not None:
        stage("checking the decoder against PyTorch")
        export_check |= _check.check_decoder(
            reference, {role: staging / graphs.SPECS[role].file for role in contract.DECODER_ROLES}
        )
    return variant, export_check


def _convert_and_verify(
    source: Path, spec: graphs.GraphSpec, staging: Path, external_data: bool | None
) -> ModelFile:
    extra = fp16.convert_graph(source, spec, staging, external_data=external_data)
    path = staging / spec.file
    # full_check: strict type inference, which catches a float/float16 mismatch that the
    # conversion might have left between two nodes.
    onnx.checker.check_model(str(path), full_check=True)
    graphs.check_graph_interface(path, spec)
    return _model_file(staging, spec, extra)


def _new_manifest(
    sam: Any,
    manifest_type: str,
    sam_config: EncoderConfig,
    source: dict[str, Any],
    variants: dict[str, dict[str, ModelFile]],
    export_check: dict[str, float],
    opset: int,
    exporter: str,
) -> Manifest:
    return Manifest(
        format_version=contract.MANIFEST_FORMAT_VERSION,
        samrt_version=samrt.__version__,
        family=SamFamily.name,
        model_type=manifest_type,
        model_config=sam_config.to_json(),
        image_size=int(sam.image_encoder.img_size),
        pixel_mean=_triple(sam.pixel_mean),
        pixel_std=_triple(sam.pixel_std),
        mask_threshold=float(sam.mask_threshold),
        opset=opset,
        source=source,
        variants=variants,
        export_check=export_check,
        extra={
            "export": {
                "exporter": exporter,
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "segment_anything": _package_version("segment-anything"),
            }
        },
    )


def engine_is_current(
    model_type: str | None,
    *,
    out_dir: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    config: EncoderConfig | Mapping[str, Any] | None = None,
    random_seed: int | None = None,
    opset: int | None = None,
    precision: str = "fp32",
) -> bool:
    """True when ``out_dir`` is a verified engine directory that already holds what
    :func:`export_engine` with these arguments would write: the same model type and
    configuration, the same weights (the checkpoint's sha256, or the random seed), the
    requested precision's variants and (when given) the opset. Then export_engine, without
    ``overwrite``, returns it untouched."""
    if model_type in SAM2_MODEL_TYPES:
        from .sam2 import _source, sam2_engine_is_current

        if precision != "fp32" or (checkpoint is None) == (random_seed is None):
            return False
        return sam2_engine_is_current(model_type, Path(out_dir), _source(checkpoint, random_seed), opset)
    try:
        manifest_type, sam_config = resolve_config(model_type, config)
    except ValueError as e:
        raise ExportError(str(e)) from None
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if (checkpoint is None) == (random_seed is None):
        raise ExportError("pass exactly one source of weights: a checkpoint or a random seed")
    target = Path(out_dir)
    if not (target / contract.MANIFEST_FILE).is_file():
        return False
    source = _weights_source(checkpoint, random_seed)
    return (
        _current_manifest(target, manifest_type, sam_config, source, PRECISIONS[precision], opset)
        is not None
    )


def _weights_source(
    checkpoint: str | os.PathLike[str] | None, random_seed: int | None
) -> dict[str, Any]:
    """The manifest's ``source``: the checkpoint's name and sha256, or the random seed."""
    if checkpoint is not None:
        # Checked here, before hashing: the up-to-date test hashes the checkpoint before
        # anything loads it (the bug of CI run 20: a missing file raised FileNotFoundError).
        if not Path(checkpoint).is_file():
            raise ExportError(f"checkpoint {str(checkpoint)!r} does not exist")
        return {"checkpoint": Path(checkpoint).name, "sha256": sha256_file(checkpoint)}
    assert random_seed is not None
    return {"random_init_seed": int(random_seed)}


def _same_export(
    manifest: Manifest, manifest_type: str, sam_config: EncoderConfig, source: dict[str, Any]
) -> bool:
    same_weights = (
        manifest.source.get("sha256") == source["sha256"]
        if "sha256" in source
        else manifest.source.get("random_init_seed") == source["random_init_seed"]
    )
    same_model = (
        manifest.model_type == manifest_type and manifest.model_config == sam_config.to_json()
    )
    return same_weights and same_model


def _current_manifest(
    target: Path,
    manifest_type: str,
    sam_config: EncoderConfig,
    source: dict[str, Any],
    wanted: tuple[str, ...],
    opset: int | None,
) -> Manifest | None:
    """The manifest of ``target`` if it is verified and already holds ``wanted``."""
    try:
        manifest = load_manifest(target, verify=True)
    except EngineDirError:
        return None
    if not _same_export(manifest, manifest_type, sam_config, source):
        return None
    if any(p not in manifest.variants for p in wanted):
        return None
    if opset is not None and opset != manifest.opset:
        return None
    return manifest


def _extendable_manifest(
    target: Path,
    manifest_type: str,
    sam_config: EncoderConfig,
    source: dict[str, Any],
    wanted: tuple[str, ...],
    opset: int | None,
) -> Manifest:
    """The manifest of ``target`` if the requested variants may be added to it."""
    try:
        manifest = load_manifest(target)
    except EngineDirError as e:
        raise ExportError(
            f"{target} already exists and is not a valid engine directory ({e}); pass "
            "overwrite=True (--overwrite) to replace it"
        ) from None
    if not _same_export(manifest, manifest_type, sam_config, source):
        raise ExportError(
            f"{target} holds an export of other weights or another architecture "
            f"({manifest.model_type}, source {manifest.source}); variants can only be added "
            "from the same weights; pass overwrite=True (--overwrite) to replace it"
        )
    have = [p for p in wanted if p in manifest.variants]
    if have:
        raise ExportError(
            f"{target} already has {' and '.join(have)} graphs; pass overwrite=True "
            "(--overwrite) to export it again"
        )
    if opset is not None and opset != manifest.opset:
        raise ExportError(
            f"{target} was exported with opset {manifest.opset}; add variants with the same "
            "opset (or leave it out)"
        )
    return manifest


def _export_and_verify(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    spec: graphs.GraphSpec,
    staging: Path,
    **options: Any,
) -> tuple[str, ...]:
    extra = graphs.export_graph(module, example_inputs, spec, staging, **options)
    path = staging / spec.file
    # By path, so that the checker follows external data and allows > 2 GB.
    onnx.checker.check_model(str(path))
    graphs.check_graph_interface(path, spec)
    return extra


def _check_contract(sam: Any) -> None:
    """The architecture must have the interface the engine contract fixes."""
    prompt = sam.prompt_encoder
    first_layer = sam.mask_decoder.transformer.layers[0].cross_attn_token_to_image
    found = {
        "image size": (int(sam.image_encoder.img_size), contract.IMAGE_SIZE),
        "embedding dim": (int(prompt.embed_dim), contract.EMBEDDING_DIM),
        "embedding size": (tuple(prompt.image_embedding_size), (contract.EMBEDDING_SIZE,) * 2),
        "mask outputs": (int(sam.mask_decoder.num_mask_tokens), contract.NUM_MASK_OUTPUTS),
        "mask threshold": (float(sam.mask_threshold), contract.MASK_THRESHOLD),
        "decoder heads": (int(first_layer.num_heads), contract.DECODER_HEADS),
        "decoder head dim": (
            int(first_layer.internal_dim // first_layer.num_heads),
            contract.DECODER_HEAD_DIM,
        ),
        "mask weight dim": (
            int(sam.mask_decoder.output_hypernetworks_mlps[0].layers[-1].out_features),
            contract.MASK_WEIGHT_DIM,
        ),
    }
    for what, (have, want) in found.items():
        if have != want:
            raise ExportError(f"the model's {what} is {have}, the engine contract fixes {want}")


def _model_file(staging: Path, spec: graphs.GraphSpec, extra: tuple[str, ...]) -> ModelFile:
    return ModelFile(
        file=spec.file,
        sha256=sha256_file(staging / spec.file),
        inputs=spec.inputs,
        outputs=spec.outputs,
        external_data={name: sha256_file(staging / name) for name in extra},
    )


def _triple(buffer: torch.Tensor) -> tuple[float, float, float]:
    values = [float(v) for v in buffer.flatten().tolist()]
    if len(values) != 3:
        raise ExportError(f"expected 3 channel values, the model has {len(values)}")
    return (values[0], values[1], values[2])


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _make_shareable(staging: Path) -> None:
    # mkdtemp creates an owner-only folder; an engine directory should get the permissions
    # any directory made by this user would (its files were written with plain opens or
    # samrt._atomic, which follow the umask already; this makes sure of it).
    umask = current_umask()
    staging.chmod(0o777 & ~umask)
    for path in staging.iterdir():
        path.chmod(0o666 & ~umask)


def _add_into_place(
    staging: Path, target: Path, existing: Manifest, added: dict[str, dict[str, ModelFile]]
) -> None:
    """Moves the added variants' files, then the staged manifest, into an engine directory.

    Until the manifest is replaced (atomically, last) the directory's manifest names only
    its old files, so a reader never sees a half-added variant; a failure removes the files
    moved so far.
    """
    old_files = {
        n for models in existing.variants.values() for m in models.values() for n in m.files()
    }
    names = [n for models in added.values() for m in models.values() for n in m.files()]
    clash = sorted(old_files.intersection(names))
    if clash:
        raise ExportError(f"{target}: the new variant would replace {', '.join(clash)}")
    moved: list[Path] = []
    try:
        for name in names:
            os.replace(staging / name, target / name)
            moved.append(target / name)
        os.replace(staging / contract.MANIFEST_FILE, target / contract.MANIFEST_FILE)
    except BaseException:
        for path in moved:
            path.unlink(missing_ok=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, target: Path, *, overwrite: bool) -> None:
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise ExportError(f"{target} appeared during the export; not replacing it")
        retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, retired / "engine")
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(retired / "engine", target)
            raise
        finally:
            shutil.rmtree(retired, ignore_errors=True)
    else:
        # rename(2) replaces a missing or empty directory atomically.
        os.replace(staging, target)
