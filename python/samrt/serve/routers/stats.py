"""``/v1/stats``: the queue's progress and the annotators' pace (seconds per mask, as the
SAM paper reports its data engine)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from ..deps import ServiceDep, require_token
from ..schemas import StatsOut

router = APIRouter(tags=["stats"], dependencies=[Depends(require_token)])


@router.get("/v1/stats", response_model=StatsOut)
async def stats(service: ServiceDep) -> StatsOut:
    def read() -> StatsOut:
        images = service.storage.list_images()
        counts = service.storage.annotation_stats()
        return StatsOut(
            images=len(images),
            done_images=sum(1 for i in images if i.done),
            annotations=counts.annotations,
            manual=counts.manual,
            timed=counts.timed,
            seconds_per_mask=counts.mean_seconds,
        )

    return await run_in_threadpool(read)
