"""Dependencies shared by the routers: the service, the token check, image lookup."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from .errors import ApiError
from .service import Service
from .storage import ImageRow, NotFoundError

__all__ = ["ImageDep", "ServiceDep", "get_service", "image_row", "require_token"]

IMAGE_ID_PATTERN = r"^[0-9a-f]{64}$"


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def require_token(request: Request, service: ServiceDep) -> None:
    """With a token configured: ``Authorization: Bearer <token>``, compared in constant time."""
    token = service.config.token
    if token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    ok = hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8"))
    if scheme.lower() != "bearer" or not ok:
        raise ApiError(
            401, "unauthorized",
            "this server needs a token: send the header 'Authorization: Bearer <token>'",
            "header.authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def image_row(
    service: ServiceDep,
    image_id: Annotated[str, Path(pattern=IMAGE_ID_PATTERN, description="sha256 of the image's bytes, hex")],
) -> ImageRow:
    try:
        return await run_in_threadpool(service.storage.get_image, image_id)
    except NotFoundError:
        raise ApiError(404, "not_found", f"image_id {image_id} is not a known image; upload it first",
                       "path.image_id") from None


ImageDep = Annotated[ImageRow, Depends(image_row)]
