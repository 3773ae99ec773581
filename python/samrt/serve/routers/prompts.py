"""``/v1/images/{image_id}/predict`` and ``/preview``: masks for clicks and boxes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from ..deps import ImageDep, ServiceDep, require_token
from ..errors import ApiError
from ..schemas import ErrorOut, MaskOut, PredictOut, PredictRequest, PreviewOut, RleOut
from ..service import Prompt, Service
from ..storage import ImageRow
from .images import image_state_or_error

router = APIRouter(prefix="/v1/images", tags=["prompts"], dependencies=[Depends(require_token)])

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 404, 409, 410, 422, 503)}


def check_prompt(service: Service, image: ImageRow, body: PredictRequest) -> Prompt:
    """The prompt in the Predictor's form; ApiError 422 naming the field that is wrong."""
    w, h = image.width, image.height
    n = len(body.points)
    if n > service.config.max_points:
        raise ApiError(422, "invalid_request", f"body.points has {n} points, over the limit of "
                       f"{service.config.max_points}", "body.points")
    if len(body.labels) != n:
        raise ApiError(422, "invalid_request", f"body.labels has {len(body.labels)} labels for {n} points: "
                       "give one label (1 foreground, 0 background) per point", "body.labels")
    if n == 0 and body.box is None:
        raise ApiError(422, "invalid_request", "no prompt: give body.points (with body.labels) or body.box",
                       "body.points")
    for i, (x, y) in enumerate(body.points):
        if not (0 <= x <= w and 0 <= y <= h):
            raise ApiError(422, "invalid_request", f"body.points.{i} = [{x}, {y}] is outside the image "
                           f"(x in 0..{w}, y in 0..{h})", f"body.points.{i}")
    box = None
    if body.box is not None:
        x0, y0, x1, y1 = body.box
        if x1 < x0 or y1 < y0:
            raise ApiError(422, "invalid_request", f"body.box = {body.box} is inverted: it must be [x0, y0, x1, y1] "
                           "with x0 <= x1 and y0 <= y1", "body.box")
        if not (0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h):
            raise ApiError(422, "invalid_request", f"body.box = {body.box} is outside the image "
                           f"(x in 0..{w}, y in 0..{h})", "body.box")
        box = np.array(body.box, dtype=np.float64)
    mask_input = None
    if body.mask_input is not None:
        stored = service.stored_result(body.mask_input)
        if stored is None:
            raise ApiError(422, "invalid_request", f"body.mask_input {body.mask_input!r} names no result "
                           "(unknown, or evicted from the result cache): predict again without it",
                           "body.mask_input")
        if stored.image_sha256 != image.sha256:
            raise ApiError(422, "invalid_request", f"body.mask_input {body.mask_input!r} is a result on another "
                           "image", "body.mask_input")
        index = int(np.argmax(stored.scores)) if body.mask_input_index is None else body.mask_input_index
        if index >= len(stored.scores):
            raise ApiError(422, "invalid_request", f"body.mask_input_index {index} is out of range: that result "
                           f"has {len(stored.scores)} masks", "body.mask_input_index")
        mask_input = stored.low_res[index][None]
    elif body.mask_input_index is not None:
        raise ApiError(422, "invalid_request", "body.mask_input_index needs body.mask_input", "body.mask_input_index")
    return Prompt(
        points=np.array(body.points, dtype=np.float64) if n else None,
        labels=np.array(body.labels, dtype=np.float64) if n else None,
        box=box,
        multimask=body.multimask,
        mask_input=mask_input,
    )


@router.post("/{image_id}/predict", response_model=PredictOut, responses=_ERRORS)
async def predict(request: Request, service: ServiceDep, image: ImageDep, body: PredictRequest) -> PredictOut:
    """The masks of ``samrt.Predictor.predict`` for this prompt, as COCO RLE, with a
    ``result_id`` naming their low-res logits for a refining ``mask_input``."""
    prompt = check_prompt(service, image, body)
    state = await image_state_or_error(service, image, request)
    out = await service.predict(image, state, prompt, request)
    service.prefetch_after(image)
    return PredictOut(
        result_id=out.result_id,
        image_id=image.sha256,
        masks=[
            MaskOut(
                rle=RleOut(size=list(m.size), counts=m.counts),
                score=m.score,
                area=m.area,
                bbox=list(m.bbox),
                stability_score=m.stability,
            )
            for m in out.masks
        ],
    )


@router.post(
    "/{image_id}/preview",
    response_model=PreviewOut,
    responses={**_ERRORS, 200: {"content": {"application/json": {}, "image/png": {}},
                                "description": "the low-res mask as JSON RLE, or a PNG with format=png"}},
)
async def preview(
    request: Request,
    service: ServiceDep,
    image: ImageDep,
    body: PredictRequest,
    format: str = Query("json", pattern="^(json|png)$", description="json (RLE) or png (a 0/255 grey image)"),
) -> Any:
    """The best mask for the prompt at the decoder's 256x256 resolution only, for hover
    previews that the browser scales to the image (no upsampling, nothing kept)."""
    prompt = check_prompt(service, image, body)
    state = await image_state_or_error(service, image, request)
    out = await service.preview(state, prompt, request)
    if format == "png":
        from PIL import Image

        from ...masks import decode_rle

        mask = decode_rle({"size": list(out.size), "counts": out.counts})
        buffer = io.BytesIO()
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG", compress_level=1)
        return Response(buffer.getvalue(), media_type="image/png", headers={"X-Samrt-Score": f"{out.score:.6f}"})
    return PreviewOut(
        image_id=image.sha256,
        score=out.score,
        rle=RleOut(size=list(out.size), counts=out.counts),
        low_res_size=out.low_res_size,
        image_size=[image.height, image.width],
    )
