"""Errors as HTTP answers: every failure the client can cause is a 4xx with a JSON body

    {"error": "<code>", "detail": "<what was wrong, naming the field>", "field": "<where>"}

(``field`` a dotted path such as ``body.points.0``, or null). A 500 is a bug: it is logged
with its traceback and answered with the same body, and the server keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "error_body", "install_error_handlers"]

log = logging.getLogger("samrt.serve")


class ApiError(Exception):
    """An answer other than success, raised from a handler or a dependency."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.field = field
        self.headers = dict(headers or {})


def error_body(error: str, detail: str, field: str | None = None) -> dict[str, Any]:
    return {"error": error, "detail": detail, "field": field}


def _loc(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "overloaded",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.error, exc.detail, exc.field), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
        field = _loc(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            return JSONResponse(
                error_body("invalid_json", f"the body is not valid JSON: {first.get('msg', '')} "
                           f"(at {field or 'body'})", "body"),
                status_code=400,
            )
        detail = f"{field}: {first.get('msg', 'invalid value')}"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more: " + "; ".join(
                f"{_loc(e.get('loc', ()))}: {e.get('msg', '')}" for e in errors[1:4]
            ) + ")"
        return JSONResponse(error_body("invalid_request", detail, field or None), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        return JSONResponse(error_body(code, detail), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            error_body("internal", f"internal error ({type(exc).__name__}); this is a bug in samrt serve"),
            status_code=500,
        )
