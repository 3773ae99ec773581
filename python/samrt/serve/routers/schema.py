"""``/openapi.json``: the schema of this API (behind the token like everything else)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from ..deps import require_token

router = APIRouter(tags=["schema"], dependencies=[Depends(require_token)])


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request) -> dict[str, Any]:
    schema: dict[str, Any] = request.app.openapi()
    return schema
