"""The images a service annotates: a folder's files and uploads, named by the sha256 of
their bytes (never by a client-given path).

Every image is checked before it is accepted: only formats Pillow decodes and samrt
reads (JPEG, PNG, WebP, TIFF, BMP), its pixel count read from the header and refused
over the Predictor's ``max_image_pixels`` before anything is decoded (decompression
bombs), then decoded once in full so that a truncated file is refused at upload rather
than at the first click. Uploads are stored as ``<sha256>.<ext>`` in the uploads folder,
written atomically and synced before the upload is acknowledged.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from .._atomic import write_atomic
from ..imageio import IMAGE_SUFFIXES, ImageReadError, load_image
from .storage import ImageRow, NewImage

__all__ = [
    "ALLOWED_FORMATS",
    "ImageChangedError",
    "ImageFileMissingError",
    "ImageLibrary",
    "ImageRejectedError",
    "ProbedImage",
    "probe_image",
]

log = logging.getLogger("samrt.serve")

# Pillow format name -> the suffix an upload is stored under.
ALLOWED_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tiff", "BMP": ".bmp"}
_ORIENTATION = 0x0112  # EXIF orientation; 5..8 swap width and height


class ImageRejectedError(ValueError):
    """The bytes are not an acceptable image; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class ImageFileMissingError(FileNotFoundError):
    """A known image's file is no longer where it was."""


class ImageChangedError(ValueError):
    """A folder file's bytes changed since it was scanned: its id no longer names it."""


@dataclass(frozen=True)
class ProbedImage:
    sha256: str
    width: int  # after the EXIF orientation, as samrt.imageio.load_image returns it
    height: int
    format: str


def probe_image(data: bytes, max_pixels: int | None, *, decode: bool) -> ProbedImage:
    """Checks ``data`` as an image (see the module docstring); ``decode`` also decodes it
    in full (truncated files fail there)."""
    if not data:
        raise ImageRejectedError("the image is empty (0 bytes)")
    try:
        # Opening reads the header only; the pixel cap is checked before anything is decoded.
        with Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS)) as img:
            fmt = str(img.format)
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageRejectedError(
                    f"the image has {width}x{height} pixels, over the limit of {max_pixels} "
                    "(the Predictor's max_image_pixels)",
                    status=413,
                )
            orientation = img.getexif().get(_ORIENTATION, 1)
    except Image.DecompressionBombError as e:
        raise ImageRejectedError(f"the image is too large to decode safely: {e}", status=413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageRejectedError):
            raise
        raise ImageRejectedError(
            f"the data is not an image in an accepted format ({', '.join(ALLOWED_FORMATS)}): {e}"
        ) from None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if decode:
        decode_image(data, max_pixels)
    return ProbedImage(hashlib.sha256(data).hexdigest(), int(width), int(height), fmt)


def decode_image(data: bytes, max_pixels: int | None) -> npt.NDArray[np.uint8]:
    """HxWx3 uint8 RGB, as :func:`samrt.imageio.load_image` reads a file of these bytes."""
    try:
        image = load_image(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    except Image.DecompressionBombError as e:
        raise ImageRejectedError(f"the image is too large to decode safely: {e}", status=413) from None
    except ImageReadError as e:
        raise ImageRejectedError(f"the image cannot be decoded: {e}") from None
    if max_pixels is not None and image.shape[0] * image.shape[1] > max_pixels:
        raise ImageRejectedError(f"the image has {image.shape[1]}x{image.shape[0]} pixels, over {max_pixels}", 413)
    return image


class ImageLibrary:
    """Finds image files by id, scans the images folder and stores uploads."""

    def __init__(self, images_dir: Path | None, uploads_dir: Path, max_pixels: int | None) -> None:
        self.images_dir = None if images_dir is None else images_dir.resolve()
        self.uploads_dir = uploads_dir.resolve()
        self.max_pixels = max_pixels

    # -- the folder ----------------------------------------------------------------------

    def _folder_files(self) -> Iterator[Path]:
        assert self.images_dir is not None
        for root, dirs, files in os.walk(self.images_dir, followlinks=False):
            # Hidden folders (ours: .samrt holds the database and uploads) are not images.
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                path = Path(root) / name
                if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if not self._inside(path, self.images_dir):
                    log.warning("skipping %s: it links outside the images folder", path)
                    continue
                yield path

    def scan(self, known: dict[str, ImageRow]) -> list[NewImage]:
        """The folder's images now. ``known`` (by file name) lets an unchanged file (same
        size and mtime) keep its recorded id without being read again."""
        if self.images_dir is None:
            return []
        found: list[NewImage] = []
        for path in self._folder_files():
            rel = path.relative_to(self.images_dir).as_posix()
            try:
                st = path.stat()
                row = known.get(rel)
                if row is not None and row.file_size == st.st_size and row.file_mtime_ns == st.st_mtime_ns:
                    found.append(NewImage(row.sha256, row.width, row.height, "folder", rel, row.format,
                                          row.file_size, row.file_mtime_ns))
                    continue
                data = path.read_bytes()
                probed = probe_image(data, self.max_pixels, decode=False)
            except (OSError, ImageRejectedError) as e:
                log.warning("skipping %s: %s", path, e)
                continue
            found.append(NewImage(probed.sha256, probed.width, probed.height, "folder", rel, probed.format,
                                  len(data), st.st_mtime_ns))
        log.info("images folder %s: %d images", self.images_dir, len(found))
        return found

    # -- uploads -------------------------------------------------------------------------

    def store_upload(self, data: bytes, probed: ProbedImage) -> NewImage:
        """Writes the upload durably (atomic rename after fsync) and describes it."""
        name = probed.sha256 + ALLOWED_FORMATS[probed.format]
        path = self.uploads_dir / name
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        if not (path.is_file() and path.stat().st_size == len(data)):
            write_atomic(path, data)  # fsynced, the folder too; readable as the umask says
        return NewImage(probed.sha256, probed.width, probed.height, "upload", name, probed.format, len(data))

    # -- reading -------------------------------------------------------------------------

    def path_of(self, image: ImageRow) -> Path:
        """The file of a known image; never outside its folder."""
        root = self.uploads_dir if image.source == "upload" else self.images_dir
        if root is None:
            raise ImageFileMissingError(f"image {image.sha256} is in the images folder, but none is served")
        path = (root / image.file_name).resolve()
        if not self._inside(path, root):
            raise ImageFileMissingError(f"image {image.sha256}'s file is outside its folder")
        return path

    def read_bytes(self, image: ImageRow) -> bytes:
        """The image's bytes, checked against its id."""
        try:
            data = self.path_of(image).read_bytes()
        except FileNotFoundError:
            raise ImageFileMissingError(f"the file of image {image.sha256} ({image.file_name}) is gone") from None
        if hashlib.sha256(data).hexdigest() != image.sha256:
            raise ImageChangedError(
                f"{image.file_name} changed on disk since it was scanned; restart the service to rescan the folder"
            )
        return data

    def read_pixels(self, image: ImageRow) -> npt.NDArray[np.uint8]:
        return decode_image(self.read_bytes(image), self.max_pixels)

    @staticmethod
    def _inside(path: Path, root: Path) -> bool:
        try:
            return path.resolve().is_relative_to(root)
        except OSError:
            return False

