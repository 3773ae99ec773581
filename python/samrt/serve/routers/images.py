"""``/v1/images``: the annotation queue (the images folder and uploads)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ... import ImageState
from ..deps import ImageDep, ServiceDep, require_token
from ..errors import ApiError
from ..images import ImageChangedError, ImageFileMissingError, ImageRejectedError, probe_image
from ..scheduler import Priority
from ..schemas import EncodeOut, ErrorOut, ImageList, ImageOut, ImagePatch
from ..service import Service
from ..storage import ImageRow, NotFoundError

router = APIRouter(prefix="/v1/images", tags=["images"], dependencies=[Depends(require_token)])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 404, 413, 415, 422, 503)
}
_MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff", "BMP": "image/bmp"}
# Room for the multipart framing around a file of the largest accepted size.
MULTIPART_SLACK = 64 * 1024


def image_out(service: Service, row: ImageRow) -> ImageOut:
    return ImageOut(
        image_id=row.sha256,
        width=row.width,
        height=row.height,
        annotations=row.annotations,
        file_name=row.file_name,
        source="upload" if row.source == "upload" else "folder",
        done=row.done,
        available=row.available,
        encoded=service.cached_state(row.sha256) is not None,
    )


@router.get("", response_model=ImageList, responses=_ERRORS)
def list_images(service: ServiceDep) -> ImageList:
    """The queue: the folder's images by file name, then the uploads in upload order,
    each with its number of (not deleted) annotations."""
    return ImageList(images=[image_out(service, row) for row in service.storage.list_images()])


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (not after reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large",
                       f"the upload is {int(declared)} bytes, over the limit of {limit} (--max-upload-mb)", "body")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise ApiError(413, "payload_too_large", f"the upload is over the limit of {limit} bytes (--max-upload-mb)",
                           "body")
    return bytes(data)


async def _multipart_file(request: Request, body: bytes, limit: int) -> bytes:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    form_request = Request(request.scope, receive=replay)
    try:
        form = await form_request.form(max_files=1, max_fields=16, max_part_size=1024 * 1024)
    except Exception as e:  # the parser's own errors: malformed multipart bodies
        raise ApiError(400, "invalid_multipart", f"the multipart body cannot be parsed: {e}", "body") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "invalid_request", "the multipart body needs the image as the file field 'file'",
                           "body.file")
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise ApiError(413, "payload_too_large", f"the file is over the limit of {limit} bytes", "body.file")
        return data
    finally:
        await form.close()


@router.post(
    "",
    response_model=ImageOut,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the image file: the raw body (any image/* or application/octet-stream) or "
            "multipart/form-data with the field 'file'",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "image/*": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
        }
    },
)
async def upload_image(request: Request, service: ServiceDep) -> ImageOut:
    """Adds an image; its id is the sha256 of its bytes, so the same bytes twice give the
    same id (and are encoded once)."""
    limit = service.config.max_upload_bytes
    content_type = request.headers.get("content-type", "").lower()
    multipart = content_type.startswith("multipart/form-data")
    body = await _read_body(request, limit + (MULTIPART_SLACK if multipart else 0))
    field = "body.file" if multipart else "body"
    data = await _multipart_file(request, body, limit) if multipart else body
    del body

    def add() -> ImageRow:
        sha = hashlib.sha256(data).hexdigest()
        try:
            known = service.storage.get_image(sha)
            if known.available:
                return known
        except NotFoundError:
            pass
        try:
            probed = probe_image(data, service.config.max_image_pixels, decode=True)
        except ImageRejectedError as e:
            raise ApiError(e.status, "invalid_image" if e.status == 422 else "payload_too_large", str(e),
                           field) from None
        return service.storage.upsert_image(service.library.store_upload(data, probed))

    row = await run_in_threadpool(add)
    if service.config.prefetch > 0:
        service.prefetch([row])
    return image_out(service, row)


@router.get("/{image_id}", response_model=ImageOut, responses=_ERRORS)
def get_image(service: ServiceDep, image: ImageDep) -> ImageOut:
    return image_out(service, image)


@router.patch("/{image_id}", response_model=ImageOut, responses=_ERRORS)
def patch_image(service: ServiceDep, image: ImageDep, body: ImagePatch) -> ImageOut:
    """Marks the image done (or not) in the queue."""
    return image_out(service, service.storage.set_image_done(image.sha256, body.done))


@router.get(
    "/{image_id}/file",
    responses={**_ERRORS, 200: {"content": {t: {} for t in _MEDIA_TYPES.values()}, "description": "the image file"}},
    response_class=FileResponse,
)
def image_file(service: ServiceDep, image: ImageDep) -> FileResponse:
    """The image file's bytes, as stored (for drawing it)."""
    try:
        path = service.library.path_of(image)
    except ImageFileMissingError as e:
        raise ApiError(404, "not_found", str(e), "path.image_id") from None
    if not path.is_file():
        raise ApiError(404, "not_found", f"the file of image {image.sha256} is gone", "path.image_id")
    return FileResponse(path, media_type=_MEDIA_TYPES.get(image.format, "application/octet-stream"),
                        headers={"Cache-Control": "private, max-age=31536000, immutable"})


@router.post("/{image_id}/encode", response_model=EncodeOut, responses=_ERRORS)
async def encode_image(request: Request, service: ServiceDep, image: ImageDep) -> EncodeOut:
    """Computes the image's embedding now (a page opening an image calls this), so the
    first click does not wait for it. Returns at once when it is cached."""
    started = time.perf_counter()
    await image_state_or_error(service, image, request)
    service.prefetch_after(image)
    return EncodeOut(image_id=image.sha256, encoded=True, seconds=round(time.perf_counter() - started, 4))


async def image_state_or_error(service: Service, image: ImageRow, request: Request) -> ImageState:
    """The image's state, with the image's own failures as 4xx answers."""
    try:
        return await service.image_state(image, Priority.INTERACTIVE, request)
    except ImageFileMissingError as e:
        raise ApiError(410, "gone", str(e), "path.image_id") from None
    except ImageChangedError as e:
        raise ApiError(409, "conflict", str(e), "path.image_id") from None
    except ImageRejectedError as e:
        raise ApiError(e.status, "invalid_image", str(e), "path.image_id") from None
