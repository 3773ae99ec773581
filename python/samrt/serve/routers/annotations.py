"""Annotations: create on an image, list, delete (kept in history), restore."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from ..coco import check_rle
from ..deps import ImageDep, ServiceDep, require_token
from ..errors import ApiError
from ..schemas import (
    AnnotationCreate,
    AnnotationEventOut,
    AnnotationHistory,
    AnnotationList,
    AnnotationOut,
    ErrorOut,
    RleOut,
)
from ..service import Service
from ..storage import AnnotationRow, NewAnnotation, NotFoundError

router = APIRouter(tags=["annotations"], dependencies=[Depends(require_token)])

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 404, 422)}
AnnotationId = Annotated[int, Path(ge=1, le=2**62, description="the annotation's id")]


def annotation_out(row: AnnotationRow) -> AnnotationOut:
    return AnnotationOut(
        id=row.id,
        image_id=row.image_sha256,
        category=row.category,
        rle=RleOut(size=[row.height, row.width], counts=row.counts),
        area=row.area,
        bbox=list(row.bbox),
        source=row.source,
        score=row.score,
        seconds=row.seconds,
        prompts=row.prompts,
        created_at=row.created_at,
        deleted_at=row.deleted_at,
    )


def _get(service: Service, annotation_id: int) -> AnnotationRow:
    try:
        return service.storage.get_annotation(annotation_id)
    except NotFoundError:
        raise ApiError(404, "not_found", f"annotation_id {annotation_id} is not a known annotation",
                       "path.annotation_id") from None


@router.post("/v1/images/{image_id}/annotations", response_model=AnnotationOut, status_code=201, responses=_ERRORS)
def create_annotation(service: ServiceDep, image: ImageDep, body: AnnotationCreate) -> AnnotationOut:
    """Stores a mask; answered only once it is durable (committed and synced)."""
    checked = check_rle(body.rle.model_dump(), (image.height, image.width), "body.rle")
    prompts = None if body.prompts is None else {"clicks": [p.model_dump() for p in body.prompts]}
    (new_id,) = service.storage.add_annotations(
        [
            NewAnnotation(
                image_sha256=image.sha256, category=body.category, height=image.height, width=image.width,
                counts=checked.counts, area=checked.area, bbox=checked.bbox, source=body.source,
                score=body.score, seconds=body.seconds, prompts=prompts,
            )
        ]
    )
    return annotation_out(service.storage.get_annotation(new_id))


@router.get("/v1/images/{image_id}/annotations", response_model=AnnotationList, responses=_ERRORS)
def list_annotations(service: ServiceDep, image: ImageDep, include_deleted: bool = False) -> AnnotationList:
    rows = service.storage.list_annotations(image.sha256, include_deleted=include_deleted)
    return AnnotationList(annotations=[annotation_out(r) for r in rows])


@router.get("/v1/annotations/{annotation_id}", response_model=AnnotationOut, responses=_ERRORS)
def get_annotation(service: ServiceDep, annotation_id: AnnotationId) -> AnnotationOut:
    return annotation_out(_get(service, annotation_id))


@router.delete("/v1/annotations/{annotation_id}", response_model=AnnotationOut, responses=_ERRORS)
def delete_annotation(service: ServiceDep, annotation_id: AnnotationId) -> AnnotationOut:
    """Marks it deleted: it leaves the lists and the export, stays in the history, and
    ``POST /v1/annotations/{id}/restore`` brings it back."""
    _get(service, annotation_id)
    return annotation_out(service.storage.delete_annotation(annotation_id))


@router.post("/v1/annotations/{annotation_id}/restore", response_model=AnnotationOut, responses=_ERRORS)
def restore_annotation(service: ServiceDep, annotation_id: AnnotationId) -> AnnotationOut:
    _get(service, annotation_id)
    return annotation_out(service.storage.restore_annotation(annotation_id))


@router.get("/v1/annotations/{annotation_id}/history", response_model=AnnotationHistory, responses=_ERRORS)
def annotation_history(service: ServiceDep, annotation_id: AnnotationId) -> AnnotationHistory:
    _get(service, annotation_id)
    events = service.storage.annotation_history(annotation_id)
    return AnnotationHistory(
        id=annotation_id,
        events=[AnnotationEventOut(action=e.action, at=e.at) for e in events],  # type: ignore[arg-type]
    )
