"""``samrt serve``: an HTTP service for interactive segmentation and annotation.

Needs the ``serve`` extra (``pip install 'samrt[serve]'``: FastAPI and uvicorn).
``create_app(engine=..., images=...)`` is the ASGI application, to run with any ASGI server
or mount inside another app; ``samrt serve`` runs it with uvicorn.
"""

from __future__ import annotations

from .app import create_app
from .config import ServeConfig

__all__ = ["ServeConfig", "create_app"]
