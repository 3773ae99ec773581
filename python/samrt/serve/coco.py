"""COCO RLE checks and the COCO instances file (export and import).

A stored mask is always canonical COCO compressed RLE of the image's size, with its area
and its bbox ([x, y, w, h], as ``pycocotools.mask.toBbox``) computed here, never taken
from the client.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import __version__
from ..masks import compress_rle, decompress_rle, rle_area, rle_to_bbox
from .errors import ApiError
from .storage import AnnotationRow, CategoryRow, ImageRow, NewAnnotation

__all__ = ["CheckedRle", "check_rle", "export_coco", "parse_coco"]


@dataclass(frozen=True)
class CheckedRle:
    counts: str
    area: int
    bbox: tuple[int, int, int, int]


def check_rle(rle: Mapping[str, Any], image_size: tuple[int, int], field: str) -> CheckedRle:
    """``rle`` ({"size": [H, W], "counts": str or list of ints}) as canonical compressed
    RLE; ApiError 422 naming ``field`` unless its size is the image's and its counts
    decode to exactly H*W pixels."""
    size = rle.get("size")
    counts = rle.get("counts")
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        raise ApiError(422, "invalid_rle", f"{field}.size must be [height, width] integers, got {size!r}", f"{field}.size")
    if (int(size[0]), int(size[1])) != image_size:
        raise ApiError(
            422, "invalid_rle",
            f"{field}.size is {list(size)}, but the image is {list(image_size)} (height, width)", f"{field}.size",
        )
    try:
        if isinstance(counts, str):
            runs = decompress_rle({"size": list(size), "counts": counts})
        elif isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            if any(v < 0 for v in counts) or sum(counts) != size[0] * size[1]:
                raise ValueError(
                    f"uncompressed counts must be non-negative and sum to H*W = {size[0] * size[1]}, "
                    f"got a sum of {sum(counts)}"
                )
            runs = {"size": list(size), "counts": list(counts)}
        else:
            raise ValueError("counts must be a COCO compressed RLE string (or a list of run lengths)")
        canonical = compress_rle(runs)
    except (TypeError, ValueError) as e:
        message = str(e).removeprefix("rles: ")
        raise ApiError(422, "invalid_rle", f"{field}.counts do not match {field}.size {list(size)}: {message}",
                       f"{field}.counts") from None
    x, y, w, h = (int(v) for v in rle_to_bbox(canonical))
    return CheckedRle(canonical["counts"].decode("ascii"), int(rle_area(canonical)), (x, y, w, h))


def export_coco(
    images: Sequence[ImageRow], categories: Sequence[CategoryRow], annotations: Sequence[AnnotationRow]
) -> dict[str, Any]:
    """A COCO instances file; ``pycocotools.coco.COCO`` loads it. Images carry their
    samrt id as ``samrt_image_id``, so an import finds them again."""
    return {
        "info": {
            "description": "annotations from samrt serve",
            "version": __version__,
            "date_created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "licenses": [],
        "images": [
            {
                "id": image.id,
                "file_name": image.file_name,
                "width": image.width,
                "height": image.height,
                "samrt_image_id": image.sha256,
            }
            for image in images
        ],
        "categories": [{"id": c.id, "name": c.name, "supercategory": ""} for c in categories],
        "annotations": [
            {
                "id": a.id,
                "image_id": a.image_row_id,
                "category_id": a.category_id,
                "segmentation": {"size": [a.height, a.width], "counts": a.counts},
                "area": a.area,
                "bbox": list(a.bbox),
                "iscrowd": 0,
                **({} if a.score is None else {"score": a.score}),
                **({} if a.seconds is None else {"samrt_seconds": a.seconds}),
            }
            for a in annotations
        ],
    }


def parse_coco(data: Any, known: Sequence[ImageRow]) -> list[NewAnnotation]:
    """The annotations of a COCO instances file (RLE segmentations), matched to known
    images by ``samrt_image_id`` or else by ``file_name``; ApiError 422 naming the entry
    that does not fit."""
    if not isinstance(data, Mapping):
        raise ApiError(422, "invalid_coco", "the body must be a COCO instances object", "body")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ApiError(422, "invalid_coco", f"body.{key} must be a list", f"body.{key}")
    by_sha = {image.sha256: image for image in known}
    by_name = {image.file_name: image for image in known}

    images: dict[Any, ImageRow] = {}
    for i, entry in enumerate(data["images"]):
        field = f"body.images.{i}"
        if not isinstance(entry, Mapping) or "id" not in entry:
            raise ApiError(422, "invalid_coco", f"{field} must be an object with an id", field)
        image = by_sha.get(str(entry.get("samrt_image_id", ""))) or by_name.get(str(entry.get("file_name", "")))
        if image is None:
            raise ApiError(
                404, "unknown_image",
                f"{field} (file_name {entry.get('file_name')!r}) is none of the served images", field,
            )
        if (entry.get("height"), entry.get("width")) not in ((None, None), (image.height, image.width)):
            raise ApiError(
                422, "invalid_coco",
                f"{field} is {entry.get('width')}x{entry.get('height')}, but {image.file_name} is "
                f"{image.width}x{image.height}", field,
            )
        images[entry["id"]] = image

    categories: dict[Any, str] = {}
    for i, entry in enumerate(data["categories"]):
        field = f"body.categories.{i}"
        if not isinstance(entry, Mapping) or "id" not in entry or not isinstance(entry.get("name"), str):
            raise ApiError(422, "invalid_coco", f"{field} must be an object with an id and a name", field)
        categories[entry["id"]] = entry["name"]

    out: list[NewAnnotation] = []
    for i, entry in enumerate(data["annotations"]):
        field = f"body.annotations.{i}"
        if not isinstance(entry, Mapping):
            raise ApiError(422, "invalid_coco", f"{field} must be an object", field)
        image = images.get(entry.get("image_id"))
        if image is None:
            raise ApiError(422, "invalid_coco", f"{field}.image_id {entry.get('image_id')!r} is not in body.images",
                           f"{field}.image_id")
        category = categories.get(entry.get("category_id"))
        if category is None:
            raise ApiError(422, "invalid_coco",
                           f"{field}.category_id {entry.get('category_id')!r} is not in body.categories",
                           f"{field}.category_id")
        segmentation = entry.get("segmentation")
        if not isinstance(segmentation, Mapping):
            raise ApiError(422, "invalid_coco",
                           f"{field}.segmentation must be RLE ({{size, counts}}); polygons are not imported",
                           f"{field}.segmentation")
        checked = check_rle(segmentation, (image.height, image.width), f"{field}.segmentation")
        score = entry.get("score")
        out.append(
            NewAnnotation(
                image_sha256=image.sha256,
                category=category,
                height=image.height,
                width=image.width,
                counts=checked.counts,
                area=checked.area,
                bbox=checked.bbox,
                source="import",
                score=float(score)
                if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)
                else None,
            )
        )
    return out
