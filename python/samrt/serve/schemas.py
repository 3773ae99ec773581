"""Request and response bodies (the OpenAPI schema is generated from these).

Requests are strict: numbers must be JSON numbers (no strings, no booleans), NaN and
infinities are refused, and unknown fields are errors (a misspelt ``multimask_output``
does not go unnoticed).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AcceptProposals",
    "AcceptedIds",
    "AnnotationCreate",
    "AnnotationEventOut",
    "AnnotationList",
    "AnnotationOut",
    "CategoryCreate",
    "CategoryList",
    "CategoryOut",
    "EncodeOut",
    "EverythingRequest",
    "HealthOut",
    "ImageList",
    "ImageOut",
    "ImagePatch",
    "ImportOut",
    "JobOut",
    "MaskOut",
    "PredictOut",
    "PredictRequest",
    "PreviewOut",
    "Proposal",
    "RleIn",
    "RleOut",
    "StatsOut",
]

Point = Annotated[list[float], Field(min_length=2, max_length=2, description="[x, y] in the original image's pixels")]
Box = Annotated[list[float], Field(min_length=4, max_length=4, description="[x0, y0, x1, y1], x0 <= x1, y0 <= y1")]
# 1 foreground, 0 background; a strict int, so true/false are refused.
Label = Annotated[int, Field(strict=True, ge=0, le=1)]
Category = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


# -- errors ------------------------------------------------------------------------------


class ErrorOut(BaseModel):
    error: str = Field(description="a short code, e.g. invalid_request, not_found, overloaded")
    detail: str = Field(description="what was wrong, naming the field")
    field: str | None = Field(None, description="the offending field as a dotted path, e.g. body.points.0")


# -- health ------------------------------------------------------------------------------


class HealthOut(BaseModel):
    status: Literal["ok"]
    model_type: str
    backend: str
    precision: str
    engine_key: str
    samrt_version: str
    workers: int
    uptime_s: float


# -- images ------------------------------------------------------------------------------


class ImageOut(BaseModel):
    image_id: str = Field(description="sha256 of the image file's bytes, hex")
    width: int
    height: int
    annotations: int = Field(description="annotations not deleted")
    file_name: str
    source: Literal["folder", "upload"]
    done: bool
    available: bool = Field(description="false when a folder file has gone (its annotations are kept)")
    encoded: bool = Field(description="whether its embedding is in the memory cache now")


class ImageList(BaseModel):
    images: list[ImageOut]


class ImagePatch(_Strict):
    done: bool = Field(description="the annotator's done/not-done mark")


class EncodeOut(BaseModel):
    image_id: str
    encoded: Literal[True]
    seconds: float


# -- prompts -----------------------------------------------------------------------------


class PredictRequest(_Strict):
    points: list[Point] = Field(default_factory=list, max_length=1024)
    labels: list[Label] = Field(default_factory=list, description="1 foreground, 0 background; one per point")
    box: Box | None = None
    multimask: bool = Field(True, description="three candidate masks (true) or the single best (false)")
    mask_input: str | None = Field(None, description="result_id of an earlier predict on this image: its "
                                   "low-resolution logits refine this one")
    mask_input_index: int | None = Field(None, ge=0, description="which mask of mask_input; default its best-scoring")


class RleOut(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE (column-major)")


class MaskOut(BaseModel):
    rle: RleOut
    score: float = Field(description="the model's predicted IoU")
    area: int
    bbox: list[int] = Field(description="[x, y, width, height], as pycocotools.mask.toBbox")
    stability_score: float


class PredictOut(BaseModel):
    result_id: str = Field(description="names this result's low-res logits, for mask_input")
    image_id: str
    masks: list[MaskOut]


class PreviewOut(BaseModel):
    image_id: str
    score: float
    rle: RleOut = Field(description="the best mask at low resolution: the part of the 256x256 logits that covers "
                        "the image; scale it to the image's size to draw it")
    low_res_size: int = Field(description="side of the decoder's full low-res mask (256)")
    image_size: list[int] = Field(description="[height, width] of the image")


# -- everything mode ---------------------------------------------------------------------


class EverythingRequest(_Strict):
    """The automatic mask generator's parameters. Defaults: the SAM paper's confident-mask
    thresholds for pre-filling (predicted IoU > 0.88, stability >= 0.95 at offset 1.0, box
    NMS 0.7) on a 32x32 grid, without crops."""

    points_per_side: int = Field(32, ge=1, le=128)
    points_per_batch: int = Field(64, ge=1, le=1024)
    pred_iou_thresh: float = Field(0.88, ge=0.0)
    stability_score_thresh: float = Field(0.95, ge=0.0)
    stability_score_offset: float = Field(1.0, ge=0.0)
    box_nms_thresh: float = Field(0.7, ge=0.0, le=1.0)
    crop_n_layers: int = Field(0, ge=0, le=3)
    crop_nms_thresh: float = Field(0.7, ge=0.0, le=1.0)
    crop_overlap_ratio: float = Field(512 / 1500, ge=0.0, lt=1.0)
    crop_n_points_downscale_factor: int = Field(1, ge=1)
    min_mask_region_area: int = Field(0, ge=0)


class Proposal(BaseModel):
    index: int
    rle: RleOut
    area: int
    bbox: list[int]
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]]
    crop_box: list[float]
    max_iou_with_annotations: float = Field(description="largest mask IoU with the image's annotations now")


class JobOut(BaseModel):
    job_id: str
    image_id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    done_batches: int
    total_batches: int
    progress: float = Field(description="0..1")
    params: dict[str, Any]
    error: str | None = None
    created: float
    started: float | None = None
    finished: float | None = None
    proposals: list[Proposal] | None = Field(None, description="when done")


class AcceptProposals(_Strict):
    proposals: list[Annotated[int, Field(ge=0)]] | None = Field(None, description="indices; null accepts all")
    category: Category = "object"


class AcceptedIds(BaseModel):
    ids: list[int]


# -- annotations -------------------------------------------------------------------------


class RleIn(_Strict):
    size: list[int] = Field(min_length=2, max_length=2, description="[height, width] of the image")
    counts: str | list[int] = Field(description="COCO compressed RLE string (or uncompressed run lengths)")


class PromptRecord(_Strict):
    points: list[Point] = Field(default_factory=list, max_length=1024)
    labels: list[Label] = Field(default_factory=list)
    box: Box | None = None


class AnnotationCreate(_Strict):
    rle: RleIn
    category: Category = "object"
    prompts: list[PromptRecord] | None = Field(None, max_length=256, description="the clicks that made it")
    seconds: float | None = Field(None, ge=0.0, description="time spent on it (first click to accept)")
    score: float | None = None
    source: Literal["manual", "everything"] = "manual"


class AnnotationOut(BaseModel):
    id: int
    image_id: str
    category: str
    rle: RleOut
    area: int
    bbox: list[int]
    source: str
    score: float | None
    seconds: float | None
    prompts: Any | None
    created_at: str
    deleted_at: str | None


class AnnotationList(BaseModel):
    annotations: list[AnnotationOut]


class AnnotationEventOut(BaseModel):
    action: Literal["create", "delete", "restore"]
    at: str


class AnnotationHistory(BaseModel):
    id: int
    events: list[AnnotationEventOut]


class CategoryCreate(_Strict):
    name: Category


class CategoryOut(BaseModel):
    id: int
    name: str


class CategoryList(BaseModel):
    categories: list[CategoryOut]


class ImportOut(BaseModel):
    annotations: int
    ids: list[int]


# -- stats -------------------------------------------------------------------------------


class StatsOut(BaseModel):
    images: int
    done_images: int
    annotations: int = Field(description="annotations not deleted")
    manual: int = Field(description="of those, drawn with clicks (not accepted from everything mode)")
    timed: int = Field(description="manual annotations that recorded their time")
    seconds_per_mask: float | None = Field(description="mean time per timed manual mask, first click to accept")
