"""Session fixtures that build, export and cache small SAM models for the test suite.

An exported model is cached across pytest runs under .pytest_cache/d/samrt-models, keyed
by a hash of its architecture, seed, the exporter's source files, the contract and the
versions of torch, onnx and segment_anything, so a stale export is never reused.

Fixtures:
  tiny_model    a real-architecture SAM with a 2-block, 32-dim encoder (seed 0), exported.
  vit_b_model   the vit_b architecture with random weights (seed 0); for @pytest.mark.slow.
  tiny_fp16_model, vit_b_fp16_model
                the same engine directories with the fp16 variant added next to fp32.
  sample_image  a loader: sample_image("truck.jpg") -> HxWx3 uint8 RGB from ../shared/images.
  tiny_mobile_sam_model, mobile_sam_model
                MobileSAM: the TinyViT encoder (a 4-block test configuration, and the
                official one for @pytest.mark.slow) with SAM's decoder (seed 0), exported.
  tiny_sam2_model
                a real-architecture SAM 2.1 (sam2.1_hiera_tiny's configuration with an
                8-channel, 5-block Hiera; seed 0), exported; skipped when Meta's sam2
                package is not installed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_IMAGES = REPO_ROOT.parent / "shared" / "images"


@dataclass(frozen=True)
class ExportedModel:
    """An engine directory together with the checkpoint it was exported from."""

    name: str  # "tiny" or an official model type
    seed: int
    engine_dir: Path
    checkpoint: Path
    config: Any  # samrt_export.SamConfig

    def official_sam(self) -> Any:
        """A fresh official torch Sam (eval, CPU) loaded from the checkpoint by segment_anything."""
        import importlib

        from segment_anything import sam_model_registry

        if self.name in sam_model_registry:
            sam = sam_model_registry[self.name](checkpoint=str(self.checkpoint))
        else:
            builder = importlib.import_module("segment_anything.build_sam")
            sam = builder._build_sam(
                encoder_embed_dim=self.config.encoder_embed_dim,
                encoder_depth=self.config.encoder_depth,
                encoder_num_heads=self.config.encoder_num_heads,
                encoder_global_attn_indexes=list(self.config.encoder_global_attn_indexes),
                checkpoint=str(self.checkpoint),
            )
        return sam.eval()


@dataclass(frozen=True)
class ExportedMobileSamModel(ExportedModel):
    """A MobileSAM engine directory; its official model is MobileSAM's TinyViT (the copy
    of the official mobile_sam module that samexporter packages) with segment_anything's
    prompt encoder and mask decoder, wired as MobileSAM's build_sam_vit_t wires them."""

    def official_sam(self) -> Any:
        import torch
        from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

        tiny_vit = official_tiny_vit_class()
        c = self.config
        encoder = tiny_vit(
            img_size=1024, in_chans=3, num_classes=1000, embed_dims=list(c.embed_dims),
            depths=list(c.depths), num_heads=list(c.num_heads), window_sizes=list(c.window_sizes),
            mlp_ratio=c.mlp_ratio, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False,
            mbconv_expand_ratio=c.mbconv_expand_ratio, local_conv_size=c.local_conv_size,
            layer_lr_decay=0.8,
        )
        sam = Sam(
            image_encoder=encoder,
            prompt_encoder=PromptEncoder(
                embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                mask_in_chans=16,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
        sam.load_state_dict(torch.load(self.checkpoint, map_location="cpu", weights_only=True))
        # eval() after loading, as MobileSAM's README does: the official attention caches
        # its window biases (Attention.ab) when switched to eval mode.
        return sam.eval()


def official_tiny_vit_class() -> Any:
    """MobileSAM's official TinyViT class; skips the test, saying why, when it is missing."""
    try:
        with warnings.catch_warnings():
            # timm's deprecated import path and the registry names it re-registers; the
            # oracle's constructor also prints its learning-rate scales (harmless).
            warnings.simplefilter("ignore")
            from samexporter.mobile_encoder.tiny_vit_sam import TinyViT
    except ImportError as e:
        pytest.skip(
            f"MobileSAM's official TinyViT is not installed ({e}); the oracle is the copy "
            "samexporter packages: `.venv/bin/pip install --no-deps samexporter==0.5.0 "
            "timm==1.0.31` (samexporter's own pins would replace torch)"
        )
    return TinyViT


def _cache_key(name: str, config: Any, seed: int) -> str:
    import samrt_export
    from samrt import contract, manifest

    digest = hashlib.sha256()
    digest.update(json.dumps({"name": name, "config": config.to_json(), "seed": seed}).encode())
    for package in ("torch", "onnx", "onnxruntime", "segment-anything"):
        digest.update(f"{package}={version(package)}".encode())
    sources = sorted(Path(samrt_export.__file__).parent.glob("*.py"))
    sources += [Path(contract.__file__), Path(manifest.__file__)]
    for source in sources:
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _cached_entry_is_valid(
    entry: Path, checkpoint: Path, precisions: tuple[str, ...] = ("fp32",)
) -> bool:
    from samrt.errors import EngineDirError
    from samrt.manifest import load_manifest, sha256_file

    if not checkpoint.is_file():
        return False
    try:
        manifest = load_manifest(entry / "engine")
    except EngineDirError:
        return False
    if any(p not in manifest.variants for p in precisions):
        return False
    return manifest.source.get("sha256") == sha256_file(checkpoint)


def _exported_model(
    request: pytest.FixtureRequest, name: str, seed: int, kind: type[ExportedModel] = ExportedModel
) -> ExportedModel:
    from samrt_export import export_engine, save_random_checkpoint
    from samrt_export.config import resolve_config

    _, config = resolve_config(name, None)
    cache = getattr(request.config, "cache", None)
    if cache is None:  # -p no:cacheprovider
        root = request.getfixturevalue("tmp_path_factory").mktemp("samrt-models")
    else:
        root = Path(cache.mkdir("samrt-models"))
    prefix = f"{name}-seed{seed}-"
    entry = root / (prefix + _cache_key(name, config, seed)[:20])
    checkpoint = entry / f"{name}-seed{seed}.pth"
    model = kind(name, seed, entry / "engine", checkpoint, config)
    if _cached_entry_is_valid(entry, checkpoint):
        return model

    shutil.rmtree(entry, ignore_errors=True)
    entry.mkdir(parents=True)
    save_random_checkpoint(config, seed, checkpoint)
    export_engine(name, checkpoint=checkpoint, out_dir=model.engine_dir)
    for stale in root.glob(prefix + "*"):
        if stale != entry:
            shutil.rmtree(stale, ignore_errors=True)
    return model


def _with_fp16(base: ExportedModel) -> ExportedModel:
    """A copy of ``base``'s engine directory with the fp16 variant added (cached likewise:
    its entry is named after the base entry, whose key covers the exporter's sources)."""
    from samrt_export import export_engine

    base_entry = base.engine_dir.parent
    prefix = f"{base.name}-fp16-seed{base.seed}-"
    entry = base_entry.parent / (prefix + base_entry.name.rsplit("-", 1)[-1])
    model = ExportedModel(base.name, base.seed, entry / "engine", base.checkpoint, base.config)
    if _cached_entry_is_valid(entry, base.checkpoint, ("fp32", "fp16")):
        return model

    shutil.rmtree(entry, ignore_errors=True)
    entry.mkdir(parents=True)
    shutil.copytree(base.engine_dir, model.engine_dir)
    # Adds fp16 to the copy: converts its fp32 graphs, no second trace.
    export_engine(base.name, checkpoint=base.checkpoint, out_dir=model.engine_dir, precision="fp16")
    for stale in base_entry.parent.glob(prefix + "*"):
        if stale != entry:
            shutil.rmtree(stale, ignore_errors=True)
    return model


@pytest.fixture(scope="session")
def tiny_model(request: pytest.FixtureRequest) -> ExportedModel:
    return _exported_model(request, "tiny", seed=0)


@pytest.fixture(scope="session")
def vit_b_model(request: pytest.FixtureRequest) -> ExportedModel:
    return _exported_model(request, "vit_b", seed=0)


@pytest.fixture(scope="session")
def tiny_mobile_sam_model(request: pytest.FixtureRequest) -> ExportedModel:
    return _exported_model(request, "mobile_sam_tiny_test", seed=0, kind=ExportedMobileSamModel)


@pytest.fixture(scope="session")
def mobile_sam_model(request: pytest.FixtureRequest) -> ExportedModel:
    return _exported_model(request, "mobile_sam", seed=0, kind=ExportedMobileSamModel)


@pytest.fixture(scope="session")
def tiny_fp16_model(tiny_model: ExportedModel) -> ExportedModel:
    return _with_fp16(tiny_model)


@pytest.fixture(scope="session")
def vit_b_fp16_model(vit_b_model: ExportedModel) -> ExportedModel:
    return _with_fp16(vit_b_model)


@dataclass(frozen=True)
class ExportedSam2Model:
    """A SAM 2.1 engine directory with the official-format checkpoint it was exported from."""

    model_type: str
    seed: int
    engine_dir: Path
    checkpoint: Path

    def official_model(self) -> Any:
        """A fresh official SAM2Base (eval, CPU), built by sam2.build_sam.build_sam2 as the
        image predictor's users build it."""
        from sam2.build_sam import build_sam2
        from samrt_export.config import sam2_config

        config = sam2_config(self.model_type)
        return build_sam2(
            config["config_file"], str(self.checkpoint), device="cpu",
            hydra_overrides_extra=list(config["overrides"]),
        ).eval()

    def official_predictor(self, **kwargs: Any) -> Any:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        return SAM2ImagePredictor(self.official_model(), **kwargs)


def require_sam2() -> None:
    """Skips the test, saying why, when Meta's sam2 package (the SAM 2.1 oracle and the
    exporter's source of the architecture) is not installed."""
    try:
        import sam2  # noqa: F401
    except ImportError as e:
        pytest.skip(
            f"Meta's sam2 package is not installed ({e}); install it with "
            "`SAM2_BUILD_CUDA=0 .venv/bin/pip install --no-build-isolation -c ci/constraints.txt sam2==1.1.0`"
        )


def _exported_sam2_model(request: pytest.FixtureRequest, model_type: str, seed: int) -> ExportedSam2Model:
    require_sam2()
    import samrt_export
    from samrt import contract, manifest
    from samrt_export.sam2 import save_random_sam2_checkpoint

    digest = hashlib.sha256(json.dumps({"model_type": model_type, "seed": seed}).encode())
    for package in ("torch", "onnx", "onnxruntime", "sam2"):
        digest.update(f"{package}={version(package)}".encode())
    sources = sorted(Path(samrt_export.__file__).parent.glob("*.py"))
    for source in [*sources, Path(contract.__file__), Path(manifest.__file__)]:
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    cache = getattr(request.config, "cache", None)
    if cache is None:
        root = request.getfixturevalue("tmp_path_factory").mktemp("samrt-models")
    else:
        root = Path(cache.mkdir("samrt-models"))
    prefix = f"{model_type}-seed{seed}-"
    entry = root / (prefix + digest.hexdigest()[:20])
    checkpoint = entry / f"{model_type}-seed{seed}.pt"
    model = ExportedSam2Model(model_type, seed, entry / "engine", checkpoint)
    if _cached_entry_is_valid(entry, checkpoint):
        return model
    shutil.rmtree(entry, ignore_errors=True)
    entry.mkdir(parents=True)
    save_random_sam2_checkpoint(model_type, seed, checkpoint)
    samrt_export.export_engine(model_type, checkpoint=checkpoint, out_dir=model.engine_dir)
    for stale in root.glob(prefix + "*"):
        if stale != entry:
            shutil.rmtree(stale, ignore_errors=True)
    return model


@pytest.fixture(scope="session")
def tiny_sam2_model(request: pytest.FixtureRequest) -> ExportedSam2Model:
    return _exported_sam2_model(request, "sam2.1_tiny_test", seed=0)


def shared_image(name: str) -> Path:
    """The path of ../shared/images/NAME; skips the test, saying why, if it is missing."""
    path = SHARED_IMAGES / name
    if not path.is_file():
        pytest.skip(
            f"sample photo {name} is missing: this test reads {SHARED_IMAGES}, the sample photos "
            "folder beside the clone (see its README.md), which this checkout does not have"
        )
    return path


def load_sample_image(name: str) -> np.ndarray:
    """../shared/images/NAME as an HxWx3 uint8 RGB array; skips the test if it is missing."""
    from PIL import Image

    path = shared_image(name)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


@pytest.fixture(scope="session")
def sample_image() -> Callable[[str], np.ndarray]:
    return load_sample_image
