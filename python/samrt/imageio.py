"""Reading images from files into SAM's input form: HxWx3 uint8 RGB, EXIF orientation applied."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import IO

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"})


class ImageReadError(ValueError):
    """A file could not be read as an image."""


def load_image(
    path: str | os.PathLike[str] | IO[bytes], *, formats: Sequence[str] | None = None
) -> npt.NDArray[np.uint8]:
    """Decodes JPEG/PNG/WebP/TIFF/BMP (8- or 16-bit, gray, RGB, RGBA, palette) to HxWx3 uint8
    RGB with the EXIF orientation applied. Alpha is dropped (not composited).

    ``path`` is a file name or a binary file object; ``formats`` (Pillow format names such
    as ``"JPEG"``) restricts the decoders tried, as ``PIL.Image.open`` does."""
    name = repr(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else "the data"
    return _decode(path, name, formats)


def decode_image(data: bytes, name: str = "<bytes>") -> npt.NDArray[np.uint8]:
    """:func:`load_image` for a file's bytes, read elsewhere (an object store, a Ray
    reader); ``name`` is the file they came from, for the error message."""
    return _decode(io.BytesIO(data), repr(name), None)


def _decode(
    source: str | os.PathLike[str] | IO[bytes], name: str, formats: Sequence[str] | None
) -> npt.NDArray[np.uint8]:
    try:
        with Image.open(source, formats=None if formats is None else list(formats)) as img:
            img.load()
            return _to_rgb8(ImageOps.exif_transpose(img))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot read {name} as an image: {e}") from None


def _to_rgb8(img: Image.Image) -> npt.NDArray[np.uint8]:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float images: scale the full range of the type down to 8 bits rather than
        # letting Pillow clip everything above 255.
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if img.mode == "F":
            top = max(float(values.max(initial=1.0)), 1e-12)
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
