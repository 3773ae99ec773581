"""``/healthz``: no token needed; 200 once the model is loaded (it loads before serving)."""

from __future__ import annotations

import time

from fastapi import APIRouter

from ... import __version__
from ..deps import ServiceDep
from ..schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz(service: ServiceDep) -> HealthOut:
    model = service.model
    return HealthOut(
        status="ok",
        model_type=model.manifest.model_type,
        backend=model.backend_name,
        precision=model.precision,
        engine_key=service.engine_key,
        samrt_version=__version__,
        workers=service.config.workers,
        uptime_s=round(time.time() - service.started, 3),
    )
