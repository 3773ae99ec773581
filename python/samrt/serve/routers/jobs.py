"""Everything mode: ``POST /v1/images/{image_id}/everything`` starts a job; ``/v1/jobs/{job_id}``
reports its progress and, when done, its proposals, which can be accepted as annotations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from starlette.concurrency import run_in_threadpool

from ...masks import rle_iou
from ..deps import ImageDep, ServiceDep, require_token
from ..errors import ApiError
from ..schemas import (
    AcceptedIds,
    AcceptProposals,
    ErrorOut,
    EverythingRequest,
    JobOut,
    Proposal,
    RleOut,
)
from ..service import Job, Service
from ..storage import NewAnnotation

router = APIRouter(tags=["everything"], dependencies=[Depends(require_token)])

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 404, 409, 422, 503)}
JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def _job(service: Service, job_id: str) -> Job:
    job = service.jobs.get(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"job_id {job_id} is not a known job (finished jobs are kept for a while)",
                       "path.job_id")
    return job


def _job_out(service: Service, job: Job, with_proposals: bool) -> JobOut:
    proposals = None
    if job.state == "done" and with_proposals:
        existing = [
            {"size": [a.height, a.width], "counts": a.counts}
            for a in service.storage.list_annotations(job.image_sha256)
        ]
        rles = [p["rle"] for p in job.proposals]
        if existing and rles:
            ious = rle_iou(rles, existing, [False] * len(existing))
            best = ious.max(axis=1)
        else:
            best = [0.0] * len(rles)
        proposals = [
            Proposal(
                index=p["index"],
                rle=RleOut(size=list(p["rle"]["size"]), counts=p["rle"]["counts"]),
                area=p["area"],
                bbox=p["bbox"],
                predicted_iou=p["predicted_iou"],
                stability_score=p["stability_score"],
                point_coords=p["point_coords"],
                crop_box=p["crop_box"],
                max_iou_with_annotations=float(best[i]),
            )
            for i, p in enumerate(job.proposals)
        ]
    total = job.total_batches
    progress = 1.0 if job.state == "done" else (job.done_batches / total if total else 0.0)
    return JobOut(
        job_id=job.id,
        image_id=job.image_sha256,
        state=job.state,  # type: ignore[arg-type]
        done_batches=job.done_batches,
        total_batches=total,
        progress=progress,
        params=job.params,
        error=job.error,
        created=job.created,
        started=job.started,
        finished=job.finished,
        proposals=proposals,
    )


@router.post("/v1/images/{image_id}/everything", response_model=JobOut, status_code=202, responses=_ERRORS)
async def start_everything(service: ServiceDep, image: ImageDep, body: EverythingRequest | None = None) -> JobOut:
    """Starts automatic mask generation on the image (in the background, after clicks)."""
    params = (body or EverythingRequest.model_validate({})).model_dump()
    try:
        job = await run_in_threadpool(service.start_job, image, params)
    except ValueError as e:
        raise ApiError(422, "invalid_request", f"body: {e}", "body") from None
    return _job_out(service, job, with_proposals=False)


@router.get("/v1/jobs/{job_id}", response_model=JobOut, responses=_ERRORS)
def get_job(service: ServiceDep, job_id: JobId, proposals: bool = True) -> JobOut:
    """Progress; when done, the proposals with their overlap with the image's annotations."""
    return _job_out(service, _job(service, job_id), with_proposals=proposals)


@router.delete("/v1/jobs/{job_id}", response_model=JobOut, responses=_ERRORS)
def cancel_job(service: ServiceDep, job_id: JobId) -> JobOut:
    """Cancels a queued or running job (a running one stops after its current batch)."""
    job = _job(service, job_id)
    service.cancel_job(job)
    return _job_out(service, job, with_proposals=False)


@router.post("/v1/jobs/{job_id}/accept", response_model=AcceptedIds, responses=_ERRORS)
def accept_proposals(service: ServiceDep, job_id: JobId, body: AcceptProposals) -> AcceptedIds:
    """Stores proposals as annotations (all given, or all when ``proposals`` is null), in
    one durable transaction."""
    job = _job(service, job_id)
    if job.state != "done":
        raise ApiError(409, "conflict", f"job {job_id} is {job.state}, not done: it has no proposals yet",
                       "path.job_id")
    indices = list(range(len(job.proposals))) if body.proposals is None else body.proposals
    for i, index in enumerate(indices):
        if index >= len(job.proposals):
            raise ApiError(422, "invalid_request", f"body.proposals.{i} = {index} is out of range: the job has "
                           f"{len(job.proposals)} proposals", f"body.proposals.{i}")
    h, w = job.image_size
    new = []
    for index in dict.fromkeys(indices):
        p = job.proposals[index]
        x, y, bw, bh = p["bbox"]
        new.append(
            NewAnnotation(
                image_sha256=job.image_sha256, category=body.category, height=h, width=w,
                counts=p["rle"]["counts"], area=p["area"], bbox=(x, y, bw, bh), source="everything",
                score=p["predicted_iou"], prompts={"everything": {"job_id": job.id, "proposal": index,
                                                                  "point_coords": p["point_coords"]}},
            )
        )
    return AcceptedIds(ids=service.storage.add_annotations(new))
