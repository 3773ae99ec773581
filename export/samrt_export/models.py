"""Building SAM through the official segment_anything classes, from a checkpoint or a seed.

MobileSAM is the official Sam with samrt_export.tinyvit's TinyViT as its image encoder.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from samrt import contract
from samrt._atomic import atomic_writer

from . import tinyvit
from ._deps import segment_anything, torch
from .config import (
    OFFICIAL_CONFIGS,
    SAM2_MODEL_TYPES,
    EncoderConfig,
    TinyViTConfig,
    resolve_config,
)
from .errors import ExportError

# The official init leaves the encoder's absolute and relative position tables at zero,
# which would make a random model blind to the position code paths; a seeded random model
# fills them with small noise so that parity tests exercise them.
_ZERO_INIT_NOISE_STD = 0.02
_ZERO_INIT_SUFFIXES = ("pos_embed", "rel_pos_h", "rel_pos_w")


def build_sam(
    model: str | EncoderConfig | Mapping[str, Any],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    seed: int | None = None,
) -> Any:
    """The official ``segment_anything.modeling.Sam`` (eval mode, CPU) for an architecture.

    ``model`` is "vit_b", "vit_l", "vit_h", "tiny", "mobile_sam", "mobile_sam_tiny_test", a
    :class:`SamConfig` or a :class:`TinyViTConfig` (MobileSAM). Exactly one of
    ``checkpoint`` (a state dict saved with torch.save, as the official .pth files are) or
    ``seed`` (a deterministic random init) gives the weights.
    """
    if (checkpoint is None) == (seed is None):
        raise ExportError("build_sam needs exactly one of checkpoint= or seed=")
    try:
        if isinstance(model, str):
            model_type, config = resolve_config(model, None)
        else:
            model_type, config = resolve_config(None, model)
    except ValueError as e:
        raise ExportError(str(e)) from None
    if checkpoint is not None:
        sam = _build_official(config)
        state = _load_state_dict(Path(checkpoint))
        if isinstance(sam.image_encoder, tinyvit.TinyViT):
            # The unused classifier head may have been stripped from a MobileSAM checkpoint.
            state = {**tinyvit.head_state_defaults(sam.image_encoder, "image_encoder."), **state}
        try:
            sam.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise ExportError(
                f"checkpoint {str(checkpoint)!r} does not fit the {model_type} architecture "
                f"{config.to_json()}: {first}"
            ) from None
        return sam
    assert seed is not None
    return _random_sam(config, seed)


def save_random_checkpoint(
    config: str | EncoderConfig | Mapping[str, Any], seed: int, path: str | os.PathLike[str]
) -> Path:
    """Saves the seeded random SAM's state dict where the official build path can load it.

    A SAM 2.1 model type (config.SAM2_MODEL_TYPES) is saved in sam2's checkpoint format by
    :func:`samrt_export.sam2.save_random_sam2_checkpoint`, as export_engine dispatches it."""
    if isinstance(config, str) and config in SAM2_MODEL_TYPES:
        from .sam2 import save_random_sam2_checkpoint

        return save_random_sam2_checkpoint(config, seed, path)
    sam = build_sam(config, seed=seed)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(target) as f:
        torch.save(sam.state_dict(), f)
    return target


def _build_official(config: EncoderConfig) -> Any:
    if isinstance(config, TinyViTConfig):
        return _build_mobile_sam(config)
    # _build_sam is where segment_anything wires encoder, prompt encoder, decoder and
    # transformer; going through it keeps our models the official architecture exactly.
    for name, official in OFFICIAL_CONFIGS.items():
        if config == official:
            sam = segment_anything.sam_model_registry[name]()
            break
    else:
        # The package re-exports a function named build_sam over the module's name.
        builder = importlib.import_module("segment_anything.build_sam")
        sam = builder._build_sam(
            encoder_embed_dim=config.encoder_embed_dim,
            encoder_depth=config.encoder_depth,
            encoder_num_heads=config.encoder_num_heads,
            encoder_global_attn_indexes=list(config.encoder_global_attn_indexes),
        )
    return sam.eval()


def _build_mobile_sam(config: TinyViTConfig) -> Any:
    """MobileSAM as its build_sam_vit_t wires it: the official Sam, prompt encoder and mask
    decoder of segment_anything (vit_b's sizes) around the TinyViT encoder."""
    modeling = segment_anything.modeling
    image_size, embedding = contract.IMAGE_SIZE, contract.EMBEDDING_SIZE
    dim = contract.EMBEDDING_DIM
    sam = modeling.Sam(
        image_encoder=tinyvit.TinyViT(config, image_size, dim, embedding),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(embedding, embedding),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=contract.NUM_MASK_OUTPUTS - 1,
            transformer=modeling.TwoWayTransformer(
                depth=2, embedding_dim=dim, mlp_dim=2048, num_heads=contract.DECODER_HEADS
            ),
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        # pixel_mean and pixel_std: Sam's defaults, the values MobileSAM passes.
    )
    return sam.eval()


def _random_sam(config: EncoderConfig, seed: int) -> Any:
    # fork_rng: a seeded build must not disturb the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = _build_official(config)
        with torch.no_grad():
            for name, param in sam.named_parameters():
                if name.endswith(_ZERO_INIT_SUFFIXES) and not param.any():
                    param.normal_(0.0, _ZERO_INIT_NOISE_STD)
        if isinstance(sam.image_encoder, tinyvit.TinyViT):
            generator = torch.Generator().manual_seed(seed)
            tinyvit.randomize_for_tests(sam.image_encoder, generator)
    return sam


def _load_state_dict(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ExportError(f"checkpoint {str(path)!r} does not exist")
    try:
        # map_location: checkpoints saved from a GPU still load on a CPU-only machine;
        # weights_only: a checkpoint is data and must not run code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for unreadable files
        raise ExportError(
            f"checkpoint {str(path)!r} is not a loadable PyTorch state dict "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    if not isinstance(state, dict):
        raise ExportError(
            f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a state dict"
        )
    return state
