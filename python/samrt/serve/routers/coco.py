"""COCO instances files: ``GET /v1/export/coco`` and its inverse ``POST /v1/import/coco``."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..coco import export_coco, parse_coco
from ..deps import ServiceDep, require_token
from ..errors import ApiError
from ..schemas import ErrorOut, ImportOut

router = APIRouter(tags=["coco"], dependencies=[Depends(require_token)])

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 404, 413, 422)}


@router.get("/v1/export/coco", responses={200: {"description": "a COCO instances file"}})
def export(service: ServiceDep) -> JSONResponse:
    """Every listed image, the categories, and the annotations not deleted, with RLE
    segmentations; ``pycocotools.coco.COCO`` loads it."""
    storage = service.storage
    data = export_coco(storage.list_images(), storage.list_categories(), storage.list_annotations())
    return JSONResponse(data, headers={"Content-Disposition": 'attachment; filename="samrt-coco.json"'})


@router.post(
    "/v1/import/coco",
    response_model=ImportOut,
    responses=_ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def import_coco(request: Request, service: ServiceDep) -> ImportOut:
    """Adds a COCO file's annotations (RLE segmentations) to the served images, matched by
    ``samrt_image_id`` or by ``file_name``; all or nothing."""
    from starlette.concurrency import run_in_threadpool

    body = await request.body()
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {e}", "body") from None

    def run() -> list[int]:
        return service.storage.add_annotations(parse_coco(data, service.storage.list_images()))

    ids = await run_in_threadpool(run)
    return ImportOut(annotations=len(ids), ids=ids)
