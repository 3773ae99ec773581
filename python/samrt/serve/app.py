"""``create_app``: the ASGI application of ``samrt serve``, importable to mount elsewhere."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import Model, __version__
from .config import ServeConfig
from .errors import error_body, install_error_handlers
from .images import ImageLibrary
from .routers import annotations as annotation_routes
from .routers import categories, coco, health, images, jobs, metrics, page, prompts, schema, stats
from .scheduler import QueueFullError
from .service import ClientDisconnected, Service
from .storage import open_storage

__all__ = ["create_app"]

log = logging.getLogger("samrt.serve")
access_log = logging.getLogger("samrt.serve.access")


def create_app(config: ServeConfig | None = None, /, *, model: Model | None = None, **fields: Any) -> FastAPI:
    """The application: ``create_app(ServeConfig(engine=...))`` or ``create_app(engine=...,
    images=...)``. The model loads, the database opens (migrating it) and the images folder
    is scanned here, before the app is returned, so it serves from its first request, also
    when mounted in another app (whose lifespan does not run ours). ``model`` shares an
    already loaded :class:`samrt.Model` of the same engine.

    ``app.state.service.close()`` stops the workers; the app's lifespan does it on shutdown.
    """
    if config is None:
        for key in ("engine", "images", "db", "uploads", "cache_dir"):
            if fields.get(key) is not None:
                fields[key] = Path(fields[key])
        config = ServeConfig(**fields)
    elif fields:
        raise TypeError("give either a ServeConfig or its fields, not both")

    if model is None:
        model = Model(config.engine, config.backend, precision=config.precision,
                      intra_op_num_threads=config.intra_op_num_threads)
    storage = open_storage(config.db_path)
    library = ImageLibrary(config.images, config.uploads_path, config.max_image_pixels)
    if config.images is not None:
        if not config.images.is_dir():
            storage.close()
            raise NotADirectoryError(f"the images folder {config.images} is not a folder")
        known = {row.file_name: row for row in storage.list_images() if row.source == "folder"}
        storage.sync_folder(library.scan(known))
    service = Service(config, model, storage, library)
    log.info("samrt serve: %s on %s, database %s (schema v%d), %d workers", model.manifest.model_type,
             model.backend_name, config.db_path, storage.schema_version, config.workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(
        title="samrt serve",
        version=__version__,
        description="Interactive segmentation and annotation with Segment Anything. Errors are 4xx "
        "with a JSON body {error, detail, field}. With a token configured, every request but "
        "/healthz needs 'Authorization: Bearer <token>'.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served by the schema router, behind the token
    )
    app.state.service = service
    install_error_handlers(app)

    @app.exception_handler(QueueFullError)
    async def _queue_full(request: Request, exc: QueueFullError) -> JSONResponse:
        return JSONResponse(error_body("overloaded", str(exc)), status_code=503,
                            headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(ClientDisconnected)
    async def _gone(request: Request, exc: ClientDisconnected) -> Response:
        return Response(status_code=499)  # nobody reads it; the access log records it

    for module in (health, images, prompts, jobs, annotation_routes, categories, coco, stats, metrics, schema, page):
        app.include_router(module.router)
    app.mount("/static", page.static_files(), name="static")

    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimitMiddleware, limit=config.max_upload_bytes + images.MULTIPART_SLACK)
    app.add_middleware(ObservabilityMiddleware, service=service)
    _add_security_scheme(app, config)
    return app


def _add_security_scheme(app: FastAPI, config: ServeConfig) -> None:
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = base()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http", "scheme": "bearer",
                "description": "required on every route but /healthz when the server has a token",
            }
            if config.token is not None:
                schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class BodyLimitMiddleware:
    """Refuses a request body over ``limit`` bytes with 413 while it is read (a declared
    Content-Length over it before reading anything), whatever the route."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _send_json(send, 413, error_body(
                    "payload_too_large", f"the body is {int(value)} bytes, over the limit of {self.limit}", "body"))
                return
        seen = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit and not refused:
                    refused = True
                    if not started:
                        await _send_json(send, 413, error_body(
                            "payload_too_large", f"the body is over the limit of {self.limit} bytes", "body"))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 was the answer
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    import json

    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})


class ObservabilityMiddleware:
    """Request ids, the structured access log (logger ``samrt.serve.access``, fields in
    ``extra``) and the request metrics by route template."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = secrets.token_hex(8)
        status = 500
        sent = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = dict(message)
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            self.service.m_requests.inc(labels={"route": template, "method": method, "status": str(status)})
            self.service.m_latency.observe(elapsed, labels={"route": template, "method": method})
            client = scope.get("client")
            access_log.info(
                "%s %s %d %.1fms %dB",
                method, scope.get("path", ""), status, elapsed * 1000, sent,
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": template,
                    "path": scope.get("path", ""),
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "response_bytes": sent,
                    "client": f"{client[0]}:{client[1]}" if client else None,
                    "pid": os.getpid(),
                },
            )
