"""The browser annotator: ``/`` serves its page, ``/static/...`` its CSS and ES modules,
all shipped inside the package (no build step, nothing from another host).

The page holds no data, so it needs no token; the API calls it makes carry one when the
server has one (the page asks for it, or takes ``#token=...`` from its address).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["STATIC_DIR", "router", "static_files"]

STATIC_DIR = Path(str(files("samrt.serve") / "static"))

# Everything from this origin, nothing inline: a mask's category name or a file name can
# never run as script. data: and blob: images are the favicon and the decoded photo.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # A new samrt version ships new modules: the browser revalidates instead of guessing.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


class _StaticFiles(StaticFiles):
    """The page's files with the page's headers, and ``.js`` always as JavaScript (a
    system mime.types can map it otherwise, and browsers refuse modules that are not)."""

    def file_response(self, full_path, stat_result, scope: Scope, status_code: int = 200):  # type: ignore[no-untyped-def]
        response = super().file_response(full_path, stat_result, scope, status_code)
        if str(full_path).endswith(".js"):
            response.headers["content-type"] = "text/javascript; charset=utf-8"
        response.headers.update(PAGE_HEADERS)
        return response


def static_files() -> StaticFiles:
    return _StaticFiles(directory=STATIC_DIR)
