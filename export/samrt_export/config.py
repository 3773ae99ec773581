"""SAM architectures the exporter builds: the official three and arbitrary encoder configs.

Torch-free so that the CLI can parse its arguments (and fail politely) without PyTorch.
Only the image encoder varies: the prompt encoder and mask decoder keep their official
sizes, since the engine contract fixes their 256-channel, 64x64 interface.
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

# What the manifest calls an architecture that is not one of the official three.
CUSTOM_MODEL_TYPE = "custom"

CLI_MODEL_TYPES = (*OFFICIAL_CONFIGS, "tiny")


def resolve_config(
    model_type: str | None, config: SamConfig | Mapping[str, Any] | None
) -> tuple[str, SamConfig]:
    """(manifest model type, config) for an export request; raises ValueError if inconsistent."""
    if config is not None and not isinstance(config, SamConfig):
        config = SamConfig.from_json(config)
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
