"""export_engine: SAM (official classes) -> checked ONNX graphs -> engine directory."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import samrt
from samrt import contract
from samrt.manifest import Manifest, ModelFile, sha256_file, write_manifest

from . import check as _check
from . import graphs
from ._deps import onnx, torch
from .config import CUSTOM_MODEL_TYPE, SamConfig, resolve_config
from .encoder import EncoderGraph
from .errors import ExportError
from .models import build_sam

DEFAULT_OPSET = 17
PRECISIONS = ("fp32",)


def export_engine(
    model_type: str | None,
    *,
    out_dir: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    config: SamConfig | Mapping[str, Any] | None = None,
    random_seed: int | None = None,
    opset: int = DEFAULT_OPSET,
    precision: str = "fp32",
    check: bool = True,
    external_data: bool | None = None,
    exporter: graphs.Exporter = "torchscript",
    overwrite: bool = False,
) -> Path:
    """Exports a SAM model to an engine directory and returns its path.

    ``model_type`` is "vit_b", "vit_l", "vit_h", "tiny" (a small test architecture) or
    "custom"/None with ``config``. The weights come from ``checkpoint`` (an official or
    compatible .pth) or from ``random_seed``. With ``check``, ONNX Runtime must reproduce
    the official PyTorch model within :data:`samrt_export.check.ENCODER_TOLERANCE` and
    ``DECODER_TOLERANCE`` or ExportCheckError is raised.

    ``external_data`` forces (True) or forbids (False) writing weights to ``<file>.data``;
    by default only graphs over 1.5 GB use it. ``exporter`` picks torch.onnx's TorchScript
    tracer (default; about 4x faster to export on CPU) or the torch.export-based one
    (opset >= 18), which is there for when torch drops the former.

    Everything is written to a temporary sibling of ``out_dir`` and renamed into place at
    the end, so a failed export leaves no engine directory behind. An existing non-empty
    ``out_dir`` is replaced only with ``overwrite``.
    """
    try:
        manifest_type, sam_config = resolve_config(model_type, config)
    except ValueError as e:
        raise ExportError(str(e)) from None
    if precision not in PRECISIONS:
        raise ExportError(
            f"precision {precision!r} is not supported yet (have: {', '.join(PRECISIONS)})"
        )
    if (checkpoint is None) == (random_seed is None):
        raise ExportError(
            "pass exactly one source of weights: a checkpoint (--checkpoint FILE) or a random "
            "init (--random-weights --seed N); downloading official checkpoints is not supported yet"
        )
    target = Path(out_dir)
    if _is_nonempty_dir(target) and not overwrite:
        raise ExportError(
            f"{target} already exists and is not empty; pass overwrite=True (--overwrite)"
        )
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} exists and is not a directory")

    # By name where there is one, so that errors speak of "vit_h" rather than its numbers.
    architecture = sam_config if manifest_type == CUSTOM_MODEL_TYPE else manifest_type
    if checkpoint is not None:
        sam = build_sam(architecture, checkpoint=checkpoint)
        source: dict[str, Any] = {
            "checkpoint": Path(checkpoint).name,
            "sha256": sha256_file(checkpoint),
        }
    else:
        assert random_seed is not None
        sam = build_sam(architecture, seed=random_seed)
        source = {"random_init_seed": int(random_seed)}
    _check_contract(sam)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        # Graph by graph, each checked before the next is traced, so a bad export fails early.
        export_check: dict[str, float] = {}
        encoder_extra = _export_and_verify(
            EncoderGraph(sam.image_encoder),
            graphs.encoder_example_inputs(exporter),
            graphs.ENCODER_SPEC,
            staging,
            opset=opset,
            exporter=exporter,
            external_data=external_data,
        )
        if check:
            encoder_check, check_embeddings = _check.check_encoder(
                sam, staging / contract.ENCODER_FILE
            )
            export_check |= encoder_check
        decoder_extra = _export_and_verify(
            graphs.DecoderGraph(sam),
            graphs.decoder_example_inputs(),
            graphs.DECODER_SPEC,
            staging,
            opset=opset,
            exporter=exporter,
            external_data=external_data,
        )
        if check:
            export_check |= _check.check_decoder(
                sam, staging / contract.DECODER_FILE, check_embeddings
            )
        written_opset = graphs.opset_of(staging / contract.ENCODER_FILE)
        manifest = Manifest(
            format_version=contract.MANIFEST_FORMAT_VERSION,
            samrt_version=samrt.__version__,
            model_type=manifest_type,
            model_config=sam_config.to_json(),
            image_size=int(sam.image_encoder.img_size),
            pixel_mean=_triple(sam.pixel_mean),
            pixel_std=_triple(sam.pixel_std),
            mask_threshold=float(sam.mask_threshold),
            opset=written_opset,
            source=source,
            variants={
                precision: {
                    "encoder": _model_file(staging, graphs.ENCODER_SPEC, encoder_extra),
                    "decoder": _model_file(staging, graphs.DECODER_SPEC, decoder_extra),
                }
            },
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
        write_manifest(staging, manifest)
        _make_shareable(staging)
        _move_into_place(staging, target, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


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
    found = {
        "image size": (int(sam.image_encoder.img_size), contract.IMAGE_SIZE),
        "embedding dim": (int(prompt.embed_dim), contract.EMBEDDING_DIM),
        "embedding size": (tuple(prompt.image_embedding_size), (contract.EMBEDDING_SIZE,) * 2),
        "mask outputs": (int(sam.mask_decoder.num_mask_tokens), contract.NUM_MASK_OUTPUTS),
        "mask threshold": (float(sam.mask_threshold), contract.MASK_THRESHOLD),
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
    # mkdtemp and mkstemp create owner-only entries; an engine directory should get the
    # permissions any directory made by this user would.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    for path in staging.iterdir():
        path.chmod(0o666 & ~umask)


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
