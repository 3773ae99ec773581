"""The engine directory's manifest: what was exported, from what, and how to check it.

An engine directory holds ``manifest.json`` and the model files it names. The exporter
(``samrt_export``) writes it with :func:`write_manifest`; the runtime reads it with
:func:`load_manifest`, which refuses a directory whose files are missing or whose sha256
does not match, since a model file is loaded into the process and must be the one exported.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import contract
from ._atomic import write_atomic
from .errors import EngineDirError

_HASH_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in chunks (model files can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one graph input or output; str dims are dynamic."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(name=str(data["name"]), dtype=str(data["dtype"]), shape=tuple(data["shape"]))


@dataclass(frozen=True)
class ModelFile:
    """One ONNX graph of an engine directory, with the external-data files it needs."""

    file: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # Extra files (ONNX external data) as {relative path: sha256}.
    external_data: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "external_data": dict(self.external_data),
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelFile:
        return cls(
            file=str(data["file"]),
            sha256=str(data["sha256"]),
            external_data={str(k): str(v) for k, v in data.get("external_data", {}).items()},
            inputs=tuple(TensorSpec.from_json(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_json(t) for t in data["outputs"]),
        )

    def files(self) -> dict[str, str]:
        """Every file this graph needs, as {relative path: sha256}."""
        return {self.file: self.sha256, **self.external_data}


@dataclass(frozen=True)
class Manifest:
    """Parsed ``manifest.json``; see docs in the README's "Engine directory" section."""

    format_version: int
    samrt_version: str
    # The model family (samrt.families): which graphs there are and how they are chained.
    family: str
    model_type: str
    # The official ImageEncoderViT configuration (embed dim, depth, heads, global attention).
    model_config: dict[str, Any]
    image_size: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    mask_threshold: float
    opset: int
    # Where the weights came from: {"checkpoint", "sha256"} of a checkpoint file, or
    # {"random_init_seed"} of a seeded random initialization.
    source: dict[str, Any]
    # Graphs by precision ("fp32", "fp16"), then by role ("encoder", "decoder").
    variants: dict[str, dict[str, ModelFile]]
    # Largest |onnx - torch| differences measured by the exporter's self-check.
    export_check: dict[str, float] = field(default_factory=dict)
    # Free-form records added by later tools (for example TensorRT builds).
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "samrt_version": self.samrt_version,
            "family": self.family,
            "model_type": self.model_type,
            "model_config": self.model_config,
            "image_size": self.image_size,
            "pixel_mean": list(self.pixel_mean),
            "pixel_std": list(self.pixel_std),
            "mask_threshold": self.mask_threshold,
            "opset": self.opset,
            "source": self.source,
            "variants": {
                precision: {role: model.to_json() for role, model in models.items()}
                for precision, models in self.variants.items()
            },
            "export_check": self.export_check,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(
            format_version=int(data["format_version"]),
            samrt_version=str(data["samrt_version"]),
            family=str(data["family"]),
            model_type=str(data["model_type"]),
            model_config=dict(data["model_config"]),
            image_size=int(data["image_size"]),
            pixel_mean=_triple(data["pixel_mean"], "pixel_mean"),
            pixel_std=_triple(data["pixel_std"], "pixel_std"),
            mask_threshold=float(data["mask_threshold"]),
            opset=int(data["opset"]),
            source=dict(data["source"]),
            variants={
                str(precision): {str(role): ModelFile.from_json(m) for role, m in models.items()}
                for precision, models in data["variants"].items()
            },
            export_check={str(k): float(v) for k, v in data.get("export_check", {}).items()},
            extra=dict(data.get("extra", {})),
        )

    def graphs(self, precision: str, roles: tuple[str, ...]) -> dict[str, ModelFile]:
        """The graphs ``roles`` of a precision, by role; EngineDirError if one is missing."""
        return {role: self.model(role, precision) for role in roles}

    def default_precision(self) -> str:
        """fp32 where the directory has it, else its only precision (fp16 alone is what
        `samrt export --precision fp16` writes)."""
        if "fp32" in self.variants or not self.variants:
            return "fp32"
        return sorted(self.variants)[0]

    def model(self, role: str, precision: str = "fp32") -> ModelFile:
        try:
            return self.variants[precision][role]
        except KeyError:
            have = ", ".join(f"{p}/{r}" for p, models in self.variants.items() for r in models)
            raise EngineDirError(
                f"manifest has no {precision} {role} (it has: {have or 'nothing'}); "
                f"export it with `samrt export --precision {precision}`"
            ) from None


def _triple(value: Any, name: str) -> tuple[float, float, float]:
    if not isinstance(value, list) or len(value) != 3:
        raise EngineDirError(f"manifest field {name} must be a list of 3 numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def write_manifest(engine_dir: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Writes manifest.json atomically and durably (see :mod:`samrt._atomic`)."""
    path = Path(engine_dir) / contract.MANIFEST_FILE
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n"
    write_atomic(path, text.encode("utf-8"))
    return path


def load_manifest(
    engine_dir: str | os.PathLike[str],
    *,
    verify: bool = True,
    precisions: tuple[str, ...] | None = None,
) -> Manifest:
    """Reads and checks an engine directory's manifest.

    Raises EngineDirError (one line, naming the file and the fix) when the directory or a
    file it names is missing or unreadable, the manifest is malformed or of another
    format version, or (with ``verify``) a file's sha256 differs from the manifest's.
    ``precisions`` limits the hash check to those variants (default: all).
    """
    root = Path(engine_dir)
    expected = (
        f"an engine directory (the folder `samrt export --out DIR` writes: "
        f"{contract.MANIFEST_FILE} and the ONNX graphs)"
    )
    if not root.is_dir():
        if root.exists():
            hint = f"; did you mean {str(root.parent)!r}?" if root.name == contract.MANIFEST_FILE else ""
            raise EngineDirError(f"{str(root)!r} is a file, not {expected}{hint}")
        raise EngineDirError(
            f"engine directory {str(root)!r} does not exist; create one with `samrt export`"
        )
    path = root / contract.MANIFEST_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not any(root.glob("*.onnx")):
            raise EngineDirError(
                f"{str(root)!r} is not {expected}: it has no {contract.MANIFEST_FILE} and no graphs"
            ) from None
        raise EngineDirError(
            f"{path} is missing: {root} is not a complete engine directory; re-run `samrt export`"
        ) from None
    except PermissionError:
        raise EngineDirError(f"{path} is not readable: check its permissions") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineDirError(f"{path} is not valid JSON ({e}); re-run `samrt export`") from None
    if not isinstance(raw, dict):
        raise EngineDirError(f"{path} must hold a JSON object; re-run `samrt export`")
    version = raw.get("format_version")
    if version != contract.MANIFEST_FORMAT_VERSION:
        raise EngineDirError(
            f"{path} has format version {version!r}, this samrt reads version "
            f"{contract.MANIFEST_FORMAT_VERSION}; re-export the model with this samrt's `samrt export`"
        )
    try:
        manifest = Manifest.from_json(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise EngineDirError(f"{path} is malformed ({type(e).__name__}: {e}); re-run `samrt export`") from None
    if manifest.image_size != contract.IMAGE_SIZE:
        raise EngineDirError(
            f"{path}: image_size {manifest.image_size} is not SAM's {contract.IMAGE_SIZE}"
        )

    for precision, models in manifest.variants.items():
        if precisions is not None and precision not in precisions:
            continue
        for model in models.values():
            for rel, expected in model.files().items():
                _check_file(root, rel, expected, verify)
    return manifest


def _check_file(root: Path, rel: str, expected_sha256: str, verify: bool) -> None:
    path = root / rel
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise EngineDirError(f"manifest names {rel!r}, which is outside the engine directory")
    if not path.is_file():
        raise EngineDirError(f"{path} is missing from the engine directory; re-run `samrt export`")
    if not os.access(path, os.R_OK):
        raise EngineDirError(f"{path} is not readable: check its permissions")
    if verify:
        actual = sha256_file(path)
        if actual != expected_sha256:
            raise EngineDirError(
                f"{path} has sha256 {actual[:16]}…, the manifest expects {expected_sha256[:16]}…: "
                "the file was modified or truncated; re-run `samrt export`"
            )
