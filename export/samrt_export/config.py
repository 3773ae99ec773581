"""SAM architectures the exporter builds: the official ViT three, MobileSAM, and test configs.

Torch-free so that the CLI can parse its arguments (and fail politely) without PyTorch.
Only the image encoder varies (a ViT, or MobileSAM's TinyViT): the prompt encoder and mask
decoder keep their official sizes, since the engine contract fixes their 256-channel,
64x64 interface. SAM 2.1's configs are the official package's yaml files, named below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SamConfig:
    """The official ImageEncoderViT hyper-parameters (as segment_anything's _build_sam takes them)."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.encoder_embed_dim <= 0 or self.encoder_depth <= 0 or self.encoder_num_heads <= 0:
            raise ValueError(f"encoder sizes must be positive, got {self}")
        if self.encoder_embed_dim % self.encoder_num_heads:
            raise ValueError(
                f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                f"encoder_num_heads {self.encoder_num_heads}"
            )
        bad = [i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad:
            raise ValueError(
                f"encoder_global_attn_indexes {bad} are outside 0..{self.encoder_depth - 1}"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "encoder_embed_dim": self.encoder_embed_dim,
            "encoder_depth": self.encoder_depth,
            "encoder_num_heads": self.encoder_num_heads,
            "encoder_global_attn_indexes": list(self.encoder_global_attn_indexes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SamConfig:
        return cls(
            encoder_embed_dim=int(data["encoder_embed_dim"]),
            encoder_depth=int(data["encoder_depth"]),
            encoder_num_heads=int(data["encoder_num_heads"]),
            encoder_global_attn_indexes=tuple(int(i) for i in data["encoder_global_attn_indexes"]),
        )


# The values of segment_anything/build_sam.py's build_sam_vit_{b,l,h}.
OFFICIAL_CONFIGS: dict[str, SamConfig] = {
    "vit_b": SamConfig(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamConfig(1280, 32, 16, (7, 15, 23, 31)),
}

# A real-architecture SAM small enough to export and run in seconds: windowed and global
# attention blocks, relative positions, padded windows (64 tokens in windows of 14).
TINY_CONFIG = SamConfig(
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
)

# What the manifest calls an architecture that is not one of the official ones.
CUSTOM_MODEL_TYPE = "custom"


# -- MobileSAM -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TinyViTConfig:
    """The hyper-parameters of MobileSAM's TinyViT image encoder (as the official TinyViT
    class takes them); SAM's prompt encoder and mask decoder, unchanged, go with it."""

    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_sizes: tuple[int, ...]
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3

    # Recorded in the manifest's model_config, so that a config reads back as the right class.
    ENCODER = "tiny_vit"

    def __post_init__(self) -> None:
        lengths = {len(self.embed_dims), len(self.depths), len(self.num_heads), len(self.window_sizes)}
        if len(lengths) != 1 or len(self.embed_dims) < 2:
            raise ValueError(f"a TinyViT config needs one entry per stage (two or more), got {self}")
        if min(*self.embed_dims, *self.depths, *self.num_heads, *self.window_sizes) <= 0:
            raise ValueError(f"TinyViT sizes must be positive, got {self}")
        odd = [(d, h) for d, h in zip(self.embed_dims[1:], self.num_heads[1:]) if d % h]
        if odd:
            raise ValueError(f"TinyViT stage widths must be divisible by their heads, got {odd}")

    def to_json(self) -> dict[str, Any]:
        return {
            "encoder": self.ENCODER,
            "embed_dims": list(self.embed_dims),
            "depths": list(self.depths),
            "num_heads": list(self.num_heads),
            "window_sizes": list(self.window_sizes),
            "mlp_ratio": self.mlp_ratio,
            "mbconv_expand_ratio": self.mbconv_expand_ratio,
            "local_conv_size": self.local_conv_size,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TinyViTConfig:
        return cls(
            embed_dims=tuple(int(v) for v in data["embed_dims"]),
            depths=tuple(int(v) for v in data["depths"]),
            num_heads=tuple(int(v) for v in data["num_heads"]),
            window_sizes=tuple(int(v) for v in data["window_sizes"]),
            mlp_ratio=float(data.get("mlp_ratio", 4.0)),
            mbconv_expand_ratio=float(data.get("mbconv_expand_ratio", 4.0)),
            local_conv_size=int(data.get("local_conv_size", 3)),
        )


# The values of MobileSAM's build_sam_vit_t (the name of its checkpoint file: mobile_sam.pt).
MOBILE_SAM_MODEL_TYPE = "mobile_sam"
MOBILE_SAM_CONFIG = TinyViTConfig(
    embed_dims=(64, 128, 160, 320),
    depths=(2, 2, 6, 2),
    num_heads=(2, 4, 5, 10),
    window_sizes=(7, 7, 14, 7),
)
# A real-architecture MobileSAM small enough for tests: one block per stage, narrow early
# stages, windows that pad the 128x128 and 64x64 grids. The last stage keeps the official
# width 320: the official patch merging keeps the resolution only into stages of width 320,
# 448 or 576, and the decoder needs 64x64 tokens.
MOBILE_SAM_TINY_MODEL_TYPE = "mobile_sam_tiny_test"
MOBILE_SAM_TINY_CONFIG = TinyViTConfig(
    embed_dims=(16, 24, 32, 320),
    depths=(1, 1, 1, 1),
    num_heads=(1, 2, 2, 10),
    window_sizes=(7, 7, 14, 7),
)
MOBILE_SAM_CONFIGS: dict[str, TinyViTConfig] = {
    MOBILE_SAM_MODEL_TYPE: MOBILE_SAM_CONFIG,
    MOBILE_SAM_TINY_MODEL_TYPE: MOBILE_SAM_TINY_CONFIG,
}

# The image encoder's configuration: SAM's ViT or MobileSAM's TinyViT.
EncoderConfig = SamConfig | TinyViTConfig


def config_from_json(data: Mapping[str, Any]) -> EncoderConfig:
    """A manifest's model_config (or a caller's mapping) as the config class it describes."""
    if data.get("encoder") == TinyViTConfig.ENCODER:
        return TinyViTConfig.from_json(data)
    return SamConfig.from_json(data)


CLI_MODEL_TYPES: tuple[str, ...] = (*OFFICIAL_CONFIGS, "tiny", *MOBILE_SAM_CONFIGS)


def resolve_config(
    model_type: str | None, config: EncoderConfig | Mapping[str, Any] | None
) -> tuple[str, EncoderConfig]:
    """(manifest model type, config) for an export request; raises ValueError if inconsistent."""
    if config is not None and not isinstance(config, (SamConfig, TinyViTConfig)):
        config = config_from_json(config)
    if model_type in MOBILE_SAM_CONFIGS:
        fixed = MOBILE_SAM_CONFIGS[model_type]
        if config is not None and config != fixed:
            raise ValueError(
                f"config {config.to_json()} is not the {model_type} architecture; pass "
                f"model_type={CUSTOM_MODEL_TYPE!r} for a custom one"
            )
        return model_type, fixed
    if model_type in OFFICIAL_CONFIGS:
        official = OFFICIAL_CONFIGS[model_type]
        if config is not None and config != official:
            raise ValueError(
                f"config {config.to_json()} is not the official {model_type} architecture; "
                f"pass model_type={CUSTOM_MODEL_TYPE!r} for a custom one"
            )
        return model_type, official
    if model_type == "tiny":
        if config is not None and config != TINY_CONFIG:
            raise ValueError(
                f"model_type 'tiny' has a fixed config; pass model_type={CUSTOM_MODEL_TYPE!r}"
            )
        return CUSTOM_MODEL_TYPE, TINY_CONFIG
    if model_type in (None, CUSTOM_MODEL_TYPE):
        if config is None:
            raise ValueError(f"model_type {CUSTOM_MODEL_TYPE!r} needs a config")
        return CUSTOM_MODEL_TYPE, config
    raise ValueError(
        f"unknown model_type {model_type!r}; expected one of "
        f"{', '.join((*CLI_MODEL_TYPES, CUSTOM_MODEL_TYPE))}"
    )


# -- SAM 2.1 -----------------------------------------------------------------------------
# The official image models, by the names of their checkpoint files, with the sam2
# package's Hydra configuration of each. Their configuration is the package's (model_config
# in the manifest records the config file and any overrides).
SAM2_CONFIG_FILES: dict[str, str] = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
# A real-architecture SAM 2.1 small enough to export and run in seconds (tests): the
# sam2.1_hiera_tiny configuration with an 8-channel, 5-block Hiera (four stages, query
# pooling, windowed blocks and one global block; windows of 14 pad the 64x64 stage).
SAM2_TINY_MODEL_TYPE = "sam2.1_tiny_test"
SAM2_TINY_OVERRIDES: tuple[str, ...] = (
    "++model.image_encoder.trunk.embed_dim=8",
    "++model.image_encoder.trunk.num_heads=1",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]",
)
SAM2_MODEL_TYPES: tuple[str, ...] = (*SAM2_CONFIG_FILES, SAM2_TINY_MODEL_TYPE)
# The overrides the official build_sam2 adds for image prediction (apply_postprocessing):
# single-mask requests fall back to the best multimask output when unstable.
SAM2_POSTPROCESSING_OVERRIDES: tuple[str, ...] = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
)


def sam2_config(model_type: str) -> dict[str, Any]:
    """The manifest's model_config of a SAM 2.1 model type: its sam2 config file and the
    Hydra overrides on top of it (ValueError for an unknown type)."""
    if model_type == SAM2_TINY_MODEL_TYPE:
        return {
            "config_file": SAM2_CONFIG_FILES["sam2.1_hiera_tiny"],
            "overrides": list(SAM2_TINY_OVERRIDES),
        }
    if model_type in SAM2_CONFIG_FILES:
        return {"config_file": SAM2_CONFIG_FILES[model_type], "overrides": []}
    raise ValueError(f"unknown SAM 2.1 model type {model_type!r}; expected one of {', '.join(SAM2_MODEL_TYPES)}")


# Every --model-type `samrt export` takes: SAM's and SAM 2.1's.
ALL_CLI_MODEL_TYPES: tuple[str, ...] = (*CLI_MODEL_TYPES, *SAM2_MODEL_TYPES)
