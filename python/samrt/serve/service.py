"""The service behind the routes: one shared Model, the worker pool, the caches, the jobs.

Embeddings (:class:`samrt.ImageState`) are cached in memory in a :class:`ByteLRU`
bounded by ``cache_mb`` and keyed by (engine key, image sha256), where the engine key is
a digest of the encoder graph's sha256, the precision and the backend; optionally also on
disk. A state is computed once per image however many requests for it arrive together
(single flight: the later ones wait for the first one's encode).

Predictions keep their low-resolution logits in a second ByteLRU under a ``result_id``
that a refining click passes back as ``mask_input``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from starlette.requests import Request

from .. import AutomaticMaskGenerator, ImageState, Model, Predictor, contract
from ..masks import compress_rle, encode_rle, rle_to_bbox
from ..postprocess import masks_from_logits
from .cache import ByteLRU, EmbeddingDiskCache
from .config import ServeConfig
from .images import ImageLibrary
from .metrics import Registry
from .scheduler import Priority, QueueFullError, Scheduler, Task, Worker
from .storage import ImageRow, Storage

__all__ = ["ClientDisconnected", "JobCancelled", "Prompt", "Service"]

log = logging.getLogger("samrt.serve")

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client went away while its work waited; the work was cancelled if not started."""


class JobCancelled(Exception):
    pass


@dataclass(frozen=True)
class Prompt:
    """A checked prompt in the original image's pixels."""

    points: npt.NDArray[np.float64] | None  # [N, 2]
    labels: npt.NDArray[np.float64] | None  # [N]
    box: npt.NDArray[np.float64] | None  # [4]
    multimask: bool
    mask_input: npt.NDArray[np.float32] | None  # [1, 256, 256]


@dataclass(frozen=True)
class StoredResult:
    image_sha256: str
    low_res: npt.NDArray[np.float32]  # [C, 256, 256]
    scores: npt.NDArray[np.float32]  # [C]

    @property
    def nbytes(self) -> int:
        return int(self.low_res.nbytes + self.scores.nbytes)


@dataclass(frozen=True)
class MaskOut:
    counts: str
    size: tuple[int, int]
    score: float
    area: int
    bbox: tuple[int, int, int, int]
    stability: float


@dataclass(frozen=True)
class PredictOut:
    result_id: str
    masks: list[MaskOut]


@dataclass(frozen=True)
class PreviewOut:
    score: float
    counts: str
    size: tuple[int, int]  # of the low-res mask's part that covers the image
    low_res_size: int


@dataclass
class Job:
    id: str
    image_sha256: str
    image_size: tuple[int, int]
    params: dict[str, Any]
    state: str = "queued"  # queued, running, done, failed, cancelled
    done_batches: int = 0
    total_batches: int = 0
    proposals: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel_requested: bool = False
    task: Task[None] | None = None


@dataclass(eq=False)
class _Flight:
    task: Task[ImageState]
    waiters: int = 0
    pinned: bool = False  # a prefetch: not cancelled when its waiters leave


class _CachedImagePredictor(Predictor):
    """The generator's Predictor: when it is given the whole image (its first crop), it
    takes the cached state instead of encoding again, and hands a new state to the cache."""

    def __init__(
        self,
        model: Model,
        max_image_pixels: int | None,
        image: npt.NDArray[np.uint8],
        state: ImageState | None,
        on_state: Callable[[ImageState], None],
    ) -> None:
        super().__init__(model, max_image_pixels=max_image_pixels)
        self._image = image
        self._cached = state
        self._on_state = on_state

    def _is_whole_image(self, image: npt.NDArray[np.uint8]) -> bool:
        return (
            image.shape == self._image.shape
            and image.strides == self._image.strides
            and image.__array_interface__["data"][0] == self._image.__array_interface__["data"][0]
        )

    def set_image(self, image: npt.NDArray[np.uint8], image_format: str = "RGB") -> None:
        if image_format == "RGB" and self._is_whole_image(image):
            if self._cached is not None:
                self.set_image_state(self._cached)
                return
            super().set_image(image, image_format)
            self._cached = self.image_state
            self._on_state(self._cached)
            return
        super().set_image(image, image_format)


class Service:
    def __init__(self, config: ServeConfig, model: Model, storage: Storage, library: ImageLibrary) -> None:
        self.config = config
        self.model = model
        self.storage = storage
        self.library = library
        self.started = time.time()
        encoder = model.manifest.variants.get(model.precision, {}).get("encoder")
        encoder_id = encoder.sha256 if encoder is not None else f"unhashed:{model.manifest.source}"
        self.engine_key = hashlib.sha256(
            f"{encoder_id}:{model.precision}:{model.backend_name}".encode()
        ).hexdigest()[:24]
        # Keyed by (engine key, image sha256): a state is only ever valid for the engine that made it.
        self.states: ByteLRU[tuple[str, str], ImageState] = ByteLRU(int(config.cache_mb * 2**20))
        self.results: ByteLRU[str, StoredResult] = ByteLRU(int(config.results_mb * 2**20))
        self.disk = (
            None
            if config.cache_dir is None
            else EmbeddingDiskCache(config.cache_dir, self.engine_key, int(config.disk_cache_mb * 2**20))
        )
        self._flights: dict[str, _Flight] = {}
        # Reentrant: a future's done callbacks (_flight_done) can run inside a locked section,
        # when a task is cancelled there or finishes before its callback is added.
        self._flight_lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self._jobs_lock = threading.Lock()

        self.metrics = Registry()
        m = self.metrics
        self.m_requests = m.counter("samrt_http_requests_total", "HTTP requests by route, method and status.")
        self.m_latency = m.histogram("samrt_http_request_duration_seconds", "HTTP request latency by route.")
        m.gauge("samrt_queue_depth", "Inference tasks waiting, by priority.",
                lambda: {(("priority", p.name.lower()),): float(self.scheduler.depth(p)) for p in Priority})
        m.gauge("samrt_tasks_running", "Inference tasks running.", lambda: float(self.scheduler.running))
        self.m_rejected = m.counter("samrt_tasks_rejected_total", "Tasks refused because the queue was full (503).")
        self.m_cancelled = m.counter("samrt_tasks_cancelled_total",
                                     "Queued tasks cancelled before they ran (client gone).")
        self.m_cache_hits = m.counter("samrt_embedding_cache_hits_total", "Image states found in the memory cache.")
        self.m_cache_misses = m.counter("samrt_embedding_cache_misses_total", "Image states not in the memory cache.")
        m.gauge("samrt_embedding_cache_bytes", "Bytes of image states held in memory.", lambda: float(self.states.nbytes))
        m.gauge("samrt_embedding_cache_capacity_bytes", "The memory cache's bound (--cache-mb).",
                lambda: float(self.states.capacity_bytes))
        m.gauge("samrt_embedding_cache_entries", "Image states held in memory.", lambda: float(len(self.states)))
        m.gauge("samrt_embedding_cache_evictions", "Image states evicted from memory so far.",
                lambda: float(self.states.evictions))
        self.m_disk_hits = m.counter("samrt_embedding_disk_hits_total", "Embeddings read back from --cache-dir.")
        self.m_encodes = m.counter("samrt_encodes_total", "Image encoder runs.")
        self.m_encode_seconds = m.histogram("samrt_encode_seconds", "Image encoder run time.")
        self.m_decodes = m.counter("samrt_decodes_total", "Mask decoder runs for clicks and previews.")
        m.gauge("samrt_results_bytes", "Bytes of low-res logits kept for mask_input.", lambda: float(self.results.nbytes))
        m.gauge("samrt_jobs", "Everything-mode jobs by state.", self._job_counts)

        self.scheduler = Scheduler(
            model,
            workers=config.workers,
            max_queue=config.queue_size,
            max_image_pixels=config.max_image_pixels,
            on_cancel=lambda task: self.m_cancelled.inc(),
        )

    def close(self) -> None:
        with self._jobs_lock:
            for job in self.jobs.values():
                job.cancel_requested = True
        self.scheduler.close()
        self.storage.close()

    # -- waiting on workers --------------------------------------------------------------

    def submit(self, fn: Callable[[Worker], T], priority: Priority, name: str) -> Task[T]:
        try:
            return self.scheduler.submit(fn, priority, name)
        except QueueFullError:
            self.m_rejected.inc()
            raise

    async def wait(self, task: Task[T], request: Request | None) -> T:
        """The task's result; when the client disconnects first, the task is cancelled
        (if it has not started) and ClientDisconnected raised."""
        result: T = await self._wait_future(task.future, request, on_disconnect=lambda: self.scheduler.cancel(task))
        return result

    async def _wait_future(
        self, future: Any, request: Request | None, on_disconnect: Callable[[], Any]
    ) -> Any:
        waiting = asyncio.wrap_future(future)
        if request is None:
            return await asyncio.shield(waiting)
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({waiting, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if waiting in done:
            return waiting.result()
        on_disconnect()
        waiting.cancel()
        raise ClientDisconnected()

    # -- image states --------------------------------------------------------------------

    def cached_state(self, sha256: str) -> ImageState | None:
        return self.states.peek((self.engine_key, sha256))

    async def image_state(self, image: ImageRow, priority: Priority, request: Request | None) -> ImageState:
        state = self.states.get((self.engine_key, image.sha256))
        if state is not None:
            self.m_cache_hits.inc()
            return state
        self.m_cache_misses.inc()
        flight = self._join_flight(image, priority, pinned=False)
        if isinstance(flight, ImageState):
            return flight
        left = False

        def leave() -> None:
            nonlocal left
            left = True
            self._leave(flight)

        try:
            state = await self._wait_future(flight.task.future, request, on_disconnect=leave)
        finally:
            if not left:
                with self._flight_lock:
                    flight.waiters -= 1
        assert isinstance(state, ImageState)
        return state

    def _leave(self, flight: _Flight) -> None:
        with self._flight_lock:
            flight.waiters -= 1
            abandoned = flight.waiters <= 0 and not flight.pinned
        if abandoned:
            self.scheduler.cancel(flight.task)

    def _join_flight(self, image: ImageRow, priority: Priority, pinned: bool) -> _Flight | ImageState:
        key = image.sha256
        with self._flight_lock:
            state = self.states.peek((self.engine_key, key))
            if state is not None:
                return state
            flight = self._flights.get(key)
            if flight is None or flight.task.future.cancelled():
                task = self.submit(lambda worker: self._encode(worker, image), priority, "encode")
                flight = _Flight(task, pinned=pinned)
                self._flights[key] = flight
                task.future.add_done_callback(functools.partial(self._flight_done, key, flight))
            else:
                self.scheduler.raise_priority(flight.task, priority)
                flight.pinned = flight.pinned or pinned
            if not pinned:
                flight.waiters += 1
            return flight

    def _flight_done(self, key: str, flight: _Flight, _future: object = None) -> None:
        with self._flight_lock:
            if self._flights.get(key) is flight:
                del self._flights[key]

    def _encode(self, worker: Worker, image: ImageRow) -> ImageState:
        predictor = worker.predictor
        size = (image.height, image.width)
        try:
            embedding = None if self.disk is None else self.disk.load(image.sha256, size)
            if embedding is not None:
                predictor.set_image_embedding(embedding, size)
                self.m_disk_hits.inc()
            else:
                pixels = self.library.read_pixels(image)
                started = time.perf_counter()
                predictor.set_image(pixels)
                del pixels
                self.m_encodes.inc()
                self.m_encode_seconds.observe(time.perf_counter() - started)
                if self.disk is not None:
                    try:
                        self.disk.store(image.sha256, size, predictor.get_image_embedding())
                    except OSError as e:
                        log.warning("cannot write the embedding of %s to %s: %s", image.sha256, self.disk.folder, e)
            state = predictor.image_state
        finally:
            predictor.reset_image()
        if state.original_size != size:
            log.warning("image %s decodes to %s, not the recorded %s", image.sha256, state.original_size, size)
        if not self.states.put((self.engine_key, image.sha256), state, state.nbytes):
            log.warning("an image state (%d bytes) is larger than the whole cache (--cache-mb); not cached",
                        state.nbytes)
        return state

    def prefetch(self, images: list[ImageRow]) -> None:
        """Encodes these images ahead at low priority (skipped when the queue is busy)."""
        for image in images:
            if self.cached_state(image.sha256) is not None:
                continue
            if self.scheduler.depth() >= self.scheduler.max_queue // 2:
                return  # busy: prefetch is dropped, not counted as a refusal
            try:
                self._join_flight(image, Priority.PREFETCH, pinned=True)
            except QueueFullError:
                return

    def prefetch_after(self, image: ImageRow) -> None:
        """Prefetches the ``config.prefetch`` images that follow ``image`` in the queue."""
        if self.config.prefetch <= 0:
            return
        images = [i for i in self.storage.list_images() if i.available]
        ids = [i.sha256 for i in images]
        if image.sha256 not in ids:
            return
        start = ids.index(image.sha256) + 1
        self.prefetch(images[start : start + self.config.prefetch])

    # -- prompts -------------------------------------------------------------------------

    def stored_result(self, result_id: str) -> StoredResult | None:
        return self.results.get(result_id)

    async def predict(
        self, image: ImageRow, state: ImageState, prompt: Prompt, request: Request | None
    ) -> PredictOut:
        task = self.submit(lambda worker: self._predict(worker, state, prompt), Priority.INTERACTIVE, "predict")
        scores, low_res, masks = await self.wait(task, request)
        result_id = secrets.token_urlsafe(12)
        self.results.put(result_id, StoredResult(image.sha256, low_res, scores), int(low_res.nbytes + scores.nbytes))
        return PredictOut(result_id, masks)

    async def preview(self, state: ImageState, prompt: Prompt, request: Request | None) -> PreviewOut:
        task = self.submit(lambda worker: self._preview(worker, state, prompt), Priority.INTERACTIVE, "preview")
        return await self.wait(task, request)

    def _decode(self, worker: Worker, state: ImageState, prompt: Prompt) -> tuple[Any, Any]:
        predictor = worker.predictor
        predictor.set_image_state(state)
        try:
            scores, low_res = predictor.predict_low_res(
                point_coords=None if prompt.points is None else prompt.points[None],
                point_labels=None if prompt.labels is None else prompt.labels[None],
                boxes=None if prompt.box is None else prompt.box[None],
                mask_input=None if prompt.mask_input is None else prompt.mask_input[None],
                multimask_output=prompt.multimask,
            )
        finally:
            predictor.reset_image()
        self.m_decodes.inc()
        return scores[0], low_res[0]

    def _predict(self, worker: Worker, state: ImageState, prompt: Prompt) -> tuple[Any, Any, list[MaskOut]]:
        scores, low_res = self._decode(worker, state, prompt)
        stats = masks_from_logits(
            low_res, state.input_size, state.original_size, threshold=self.model.manifest.mask_threshold
        )
        h, w = state.original_size
        masks = []
        for i in range(len(scores)):
            counts = stats.rle_counts[i]
            assert counts is not None  # no rle_min_stability: every mask is encoded
            rle = compress_rle({"size": [h, w], "counts": counts})
            # pycocotools.mask.toBbox's [x, y, w, h] from the inclusive XYXY box.
            x0, y0, x1, y1 = (int(v) for v in stats.boxes[i])
            x, y, bw, bh = (x0, y0, x1 - x0 + 1, y1 - y0 + 1) if stats.areas[i] > 0 else (0, 0, 0, 0)
            masks.append(
                MaskOut(
                    counts=rle["counts"].decode("ascii"),
                    size=(h, w),
                    score=float(scores[i]),
                    area=int(stats.areas[i]),
                    bbox=(x, y, bw, bh),
                    stability=float(stats.stability[i]),
                )
            )
        return scores, low_res, masks

    def _preview(self, worker: Worker, state: ImageState, prompt: Prompt) -> PreviewOut:
        scores, low_res = self._decode(worker, state, prompt)
        best = int(np.argmax(scores))
        scale = contract.LOW_RES_SIZE / contract.IMAGE_SIZE
        h = max(1, min(contract.LOW_RES_SIZE, int(np.ceil(state.input_size[0] * scale))))
        w = max(1, min(contract.LOW_RES_SIZE, int(np.ceil(state.input_size[1] * scale))))
        mask = low_res[best, :h, :w] > self.model.manifest.mask_threshold
        rle = encode_rle(mask)
        assert isinstance(rle, dict)
        return PreviewOut(float(scores[best]), rle["counts"].decode("ascii"), (h, w), contract.LOW_RES_SIZE)

    # -- everything mode -----------------------------------------------------------------

    def _job_counts(self) -> dict[tuple[tuple[str, str], ...], float]:
        counts = {s: 0.0 for s in ("queued", "running", "done", "failed", "cancelled")}
        with self._jobs_lock:
            for job in self.jobs.values():
                counts[job.state] = counts.get(job.state, 0.0) + 1
        return {(("state", s),): n for s, n in counts.items()}

    def start_job(self, image: ImageRow, params: dict[str, Any]) -> Job:
        # Checked here, in the request: a bad parameter is the client's 422, not a failed job.
        AutomaticMaskGenerator(Predictor(self.model), **params, output_mode="coco_rle")
        job = Job(secrets.token_urlsafe(12), image.sha256, (image.height, image.width), dict(params))
        with self._jobs_lock:
            active = sum(1 for j in self.jobs.values() if j.state in ("queued", "running"))
            if active >= self.config.max_jobs:
                raise QueueFullError(active, retry_after_s=5)
            job.task = self.submit(lambda worker: self._run_job(worker, job, image), Priority.BACKGROUND, "everything")
            self.jobs[job.id] = job
            finished = [j for j in self.jobs.values() if j.state in ("done", "failed", "cancelled")]
            for old in sorted(finished, key=lambda j: j.created)[: max(0, len(finished) - self.config.keep_jobs)]:
                del self.jobs[old.id]
        return job

    def cancel_job(self, job: Job) -> None:
        job.cancel_requested = True
        if job.task is not None and self.scheduler.cancel(job.task):
            job.state = "cancelled"
            job.finished = time.time()

    def _run_job(self, worker: Worker, job: Job, image: ImageRow) -> None:
        job.state = "running"
        job.started = time.time()

        def progress(done: int, total: int) -> None:
            job.done_batches, job.total_batches = done, total
            if job.cancel_requested:
                raise JobCancelled()
            worker.serve_interactive()  # clicks first, between decoder batches

        def keep(state: ImageState) -> None:
            self.states.put((self.engine_key, image.sha256), state, state.nbytes)

        try:
            pixels = self.library.read_pixels(image)
            predictor = _CachedImagePredictor(
                self.model, self.config.max_image_pixels, pixels, self.cached_state(image.sha256), keep
            )
            generator = AutomaticMaskGenerator(predictor, **job.params, output_mode="coco_rle", progress=progress)
            records = generator.generate(pixels)
            job.proposals = [
                {
                    "index": i,
                    "rle": record["segmentation"],
                    "area": int(record["area"]),
                    "bbox": [int(v) for v in rle_to_bbox(record["segmentation"])],
                    "predicted_iou": float(record["predicted_iou"]),
                    "stability_score": float(record["stability_score"]),
                    "point_coords": record["point_coords"],
                    "crop_box": record["crop_box"],
                }
                for i, record in enumerate(records)
            ]
            job.state = "done"
        except JobCancelled:
            job.state = "cancelled"
        except Exception as e:
            log.warning("everything job %s on image %s failed: %s", job.id, image.sha256, e, exc_info=True)
            job.error = f"{type(e).__name__}: {e}"
            job.state = "failed"
        finally:
            job.finished = time.time()


async def _disconnected(request: Request) -> None:
    """Returns when the client has disconnected (the request's body already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return

