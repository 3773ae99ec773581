"""The Ray Data pipeline behind ``samrt segment --ray`` and :func:`segment_dataset`."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    import ray
    import ray.data
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"samrt.ray needs Ray Data ({e}); install it with `pip install 'samrt[ray]'`"
    ) from None

from ..errors import BackendUnavailableError, EngineDirError, SamrtError
from ..segment import (
    ImageOutcome,
    Job,
    ModelFactory,
    RunSummary,
    SegmentOptions,
    Segmenter,
    collect_jobs,
    is_uri,
    needs_work,
    read_error_message,
    read_source,
    remove_stale_temporaries,
    write_coco,
)

__all__ = [
    "REPORT_FILE",
    "TEST_EXIT_ONCE_ENV",
    "ActorStartError",
    "SegmentActor",
    "connect",
    "segment_dataset",
]

_log = logging.getLogger("samrt")

REPORT_FILE = "samrt-run-report.json"
# Test-only: the path of a marker file. The first actor to reach an image's JSON write
# creates it and exits abruptly (os._exit), as a crashed process would; later ones go on.
TEST_EXIT_ONCE_ENV = "SAMRT_TEST_ACTOR_EXIT_ONCE"
# from_items blocks: one image each for small runs (so images spread over the actors),
# at most this many for large ones.
_MAX_INPUT_BLOCKS = 20_000
_GPU_BACKENDS = ("tensorrt", "onnxruntime-cuda")

Batch = dict[str, npt.NDArray[Any]]


class ActorStartError(SamrtError):
    """An engine actor could not start (its engine, backend or options were refused)."""


# -- the cluster -------------------------------------------------------------------------


def connect(address: str | None = "auto") -> tuple[str, bool]:
    """Connects this process to a Ray cluster: ``"local"`` starts one for this process,
    ``"auto"`` (or None) joins the running one (``RAY_ADDRESS``, or the one started on this
    machine with ``ray start``) and starts a local one when there is none, any other value
    is a cluster address to join. A process already connected stays on its cluster.
    Returns a sentence saying which it did, and whether this call connected (the caller
    then disconnects with ``ray.shutdown()``)."""
    if ray.is_initialized():
        return f"using the Ray cluster this process is connected to ({_gcs_address()})", False
    if address == "local":
        ray.init(address="local")
        return f"started a local Ray cluster for this run ({_gcs_address()})", True
    if address is None or address == "auto":
        try:
            ray.init(address="auto")
        except ConnectionError:
            ray.init(address="local")
            started = f"started a local one for this run ({_gcs_address()})"
            return f"no running Ray cluster found: {started}", True
        return f"joined the running Ray cluster at {_gcs_address()}", True
    ray.init(address=address)
    return f"joined the Ray cluster at {address}", True


def _gcs_address() -> str:
    address: str = ray.get_runtime_context().gcs_address
    return address


# -- the pipeline's stages ---------------------------------------------------------------


def read_images(batch: Batch) -> Batch:
    """Reader stage: each image's bytes (``data``), or why they could not be read
    (``read_error``; empty when they were). Runs as tasks with no CPU reserved."""
    data: list[bytes] = []
    errors: list[str] = []
    for source, path in zip(batch["source"].tolist(), batch["path"].tolist(), strict=True):
        try:
            data.append(read_source(str(path)))
            errors.append("")
        except OSError as e:
            data.append(b"")
            errors.append(read_error_message(str(source), e))
    out = dict(batch)
    out["data"] = _object_array(data)
    out["read_error"] = _object_array(errors)
    return out


def _object_array(values: Sequence[Any]) -> npt.NDArray[Any]:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


class SegmentActor:
    """Engine stage: a callable class for ``map_batches``. Each actor loads the engine once,
    with ONNX Runtime's intra-op threads (and samrt's kernel threads) set to the CPUs Ray
    assigned to it; then, per batch, segments each image's bytes and writes its outputs
    atomically. Returns one small row per image: source, rel, status, masks, error,
    seconds, node, actor (node/pid) and the actor's peak resident memory so far."""

    def __init__(
        self,
        engine_dir: str,
        options: SegmentOptions,
        out_dir: str,
        gpus: float = 0.0,
        model_factory: ModelFactory | None = None,
    ) -> None:
        from .. import set_num_threads

        context = ray.get_runtime_context()
        assigned: dict[str, float] = context.get_assigned_resources()  # type: ignore[no-untyped-call]
        cpus = float(assigned.get("CPU", 1.0))
        self.threads = max(1, int(cpus))
        set_num_threads(self.threads)
        self.node = context.get_node_id()
        self.segmenter = _start_segmenter(
            engine_dir, options, out_dir, gpus, self.threads, model_factory
        )
        _log.info(
            "samrt actor on node %s: %s, %d intra-op threads",
            self.node,
            self.segmenter.backend_name,
            self.threads,
        )
        marker = os.environ.get(TEST_EXIT_ONCE_ENV)
        if marker:
            self.segmenter.before_json = lambda job: _exit_once(marker)

    def __call__(self, batch: Batch) -> Batch:
        outcomes: list[ImageOutcome] = []
        for source, rel, data, read_error in zip(
            batch["source"].tolist(),
            batch["rel"].tolist(),
            batch["data"].tolist(),
            batch["read_error"].tolist(),
            strict=True,
        ):
            job = Job(str(source), str(rel))
            outcomes.append(self.segmenter.process(job, bytes(data), str(read_error) or None))
        return {
            "source": _object_array([o.source for o in outcomes]),
            "rel": _object_array([o.rel for o in outcomes]),
            "status": _object_array([o.status for o in outcomes]),
            "masks": np.array([o.masks for o in outcomes], dtype=np.int64),
            "error": _object_array([o.error or "" for o in outcomes]),
            "why_no_masks": _object_array([o.why_no_masks or "" for o in outcomes]),
            "seconds": np.array([o.seconds for o in outcomes], dtype=np.float64),
            "node": _object_array([self.node] * len(outcomes)),
            "actor": _object_array([f"{self.node[:8]}/{os.getpid()}"] * len(outcomes)),
            "peak_rss_mib": np.full(len(outcomes), _peak_rss_mib(), dtype=np.float64),
        }


def _peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM, Linux), NaN where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _start_segmenter(
    engine_dir: str,
    options: SegmentOptions,
    out_dir: str,
    gpus: float,
    threads: int,
    model_factory: ModelFactory | None,
) -> Segmenter:
    """A CPU actor takes the CPU backend for "auto" (a GPU it was not given is not its to
    take); a GPU actor takes the best GPU backend that starts, and fails, naming why,
    when none does."""
    if options.backend != "auto" or model_factory is not None:
        return Segmenter(
            engine_dir, options, out_dir, intra_op_num_threads=threads, model_factory=model_factory
        )
    if gpus <= 0:
        return Segmenter(
            engine_dir, options, out_dir, backend="onnxruntime-cpu", intra_op_num_threads=threads
        )
    reasons = []
    for backend in _GPU_BACKENDS:
        try:
            return Segmenter(
                engine_dir, options, out_dir, backend=backend, intra_op_num_threads=threads
            )
        except (BackendUnavailableError, EngineDirError) as e:
            reasons.append(f"{backend}: {e}")
    raise BackendUnavailableError(
        f"an actor with {gpus} GPU(s) could start no GPU backend ({'; '.join(reasons)})"
    )


def _exit_once(marker: str) -> None:
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    os._exit(1)


# -- the run -----------------------------------------------------------------------------


def segment_dataset(
    inputs: Iterable[str | os.PathLike[str] | Job],
    engine_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: SegmentOptions | None = None,
    *,
    address: str | None = "auto",
    actors: int | None = None,
    threads_per_actor: int = 1,
    gpus_per_actor: float = 0.0,
    memory_per_actor: int | None = None,
    report: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    runtime_env: dict[str, Any] | None = None,
    model_factory: ModelFactory | None = None,
    on_cluster: Callable[[str], None] | None = None,
) -> RunSummary:
    """Segments the images of ``inputs`` (what :func:`samrt.segment.collect_jobs` takes, or
    its jobs) on a Ray cluster, writing what ``samrt segment`` writes to ``out_dir``.

    ``address``: see :func:`connect`. ``actors``: engine actors (default: as many as the
    cluster's CPUs, or GPUs, hold), each with ``threads_per_actor`` CPUs (its ONNX Runtime
    threads), ``gpus_per_actor`` GPUs (then it takes a GPU backend) and, when given,
    ``memory_per_actor`` bytes of Ray's memory resource (so no machine gets more actors
    than it can hold). ``engine_dir`` must be at the same path on every machine; so must
    ``out_dir`` (a shared filesystem) on a multi-machine cluster.

    The run report (this function's :class:`~samrt.segment.RunSummary`, with every
    failure) is written to ``report`` (default ``out_dir/samrt-run-report.json``).
    ``progress``: Ray Data's progress bars (default: when stderr is a terminal).
    ``runtime_env``: Ray's runtime environment for the actors. ``on_cluster(sentence)``
    hears which cluster the run uses (it is also logged).
    """
    options = SegmentOptions() if options is None else options
    options.check()
    if threads_per_actor < 1:
        raise ValueError(f"threads_per_actor must be >= 1, got {threads_per_actor}")
    if gpus_per_actor < 0:
        raise ValueError(f"gpus_per_actor must be >= 0, got {gpus_per_actor}")
    if actors is not None and actors < 1:
        raise ValueError(f"actors must be >= 1, got {actors}")
    if memory_per_actor is not None and memory_per_actor <= 0:
        raise ValueError(f"memory_per_actor must be > 0 bytes, got {memory_per_actor}")
    jobs = collect_jobs(inputs)
    if not jobs:
        raise ValueError("no images found in the inputs")
    # Workers do not run in this process's working directory: they get absolute paths.
    engine = Path(engine_dir).absolute()
    if model_factory is None:
        # Fail here, not in every actor: the engine must be at this path on every machine.
        from ..manifest import load_manifest

        load_manifest(engine, verify=False)
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)

    started = time.perf_counter()
    summary = RunSummary(images=len(jobs), threads_per_actor=threads_per_actor)
    # Done work is skipped before anything is scheduled.
    pending = [job for job in jobs if needs_work(job, out, options)]
    summary.skipped = len(jobs) - len(pending)

    sentence, connected_here = connect(address)
    summary.cluster = sentence
    _log.info("samrt segment: %s", sentence)
    if on_cluster is not None:
        on_cluster(sentence)
    try:
        if pending:
            n_actors = _actor_count(actors, threads_per_actor, gpus_per_actor, len(pending))
            summary.actors = n_actors
            for row in _run(
                pending,
                engine,
                out,
                options,
                n_actors,
                threads_per_actor,
                gpus_per_actor,
                memory_per_actor,
                progress,
                runtime_env,
                model_factory,
            ):
                summary.add(
                    ImageOutcome(
                        source=str(row["source"]),
                        rel=str(row["rel"]),
                        status=str(row["status"]),
                        masks=int(row["masks"]),
                        error=str(row["error"]) or None,
                        seconds=float(row["seconds"]),
                        why_no_masks=str(row["why_no_masks"]) or None,
                    )
                )
                if row["status"] == "done":
                    node = str(row["node"])
                    summary.images_by_node[node] = summary.images_by_node.get(node, 0) + 1
                peak = float(row["peak_rss_mib"])
                actor = str(row["actor"])
                if peak == peak and peak > summary.actor_peak_rss_mib.get(actor, 0.0):
                    summary.actor_peak_rss_mib[actor] = peak
        # Every actor is done: what a crashed one left half-written can go.
        remove_stale_temporaries(out)
        if options.format == "coco":
            write_coco(out, jobs)
    finally:
        if connected_here:
            ray.shutdown()
    summary.elapsed_s = time.perf_counter() - started
    summary.write(Path(report) if report is not None else out / REPORT_FILE)
    return summary


def _last_error_line(error: BaseException) -> str:
    """The innermost "SomeError: message" line of a Ray error's text."""
    lines = [line.strip() for line in str(error).splitlines()]
    found = [line for line in lines if line.partition(":")[0].endswith(("Error", "Exception"))]
    return found[-1] if found else (lines[-1] if lines else type(error).__name__)


def _absolute(source: str) -> str:
    return source if is_uri(source) else str(Path(source).absolute())


def _actor_count(actors: int | None, threads: int, gpus: float, pending: int) -> int:
    if actors is not None:
        return min(actors, pending)
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    if gpus > 0:
        fit = int(resources.get("GPU", 0.0) // gpus)
        what = f"{resources.get('GPU', 0.0):g} GPUs"
    else:
        fit = int(resources.get("CPU", 0.0) // threads)
        what = f"{resources.get('CPU', 0.0):g} CPUs"
    if fit < 1:
        _log.warning(
            "samrt segment: the cluster has %s, too few for one actor; waiting for one", what
        )
    n = max(1, min(fit, pending))
    _log.info("samrt segment: %d actors (the cluster has %s)", n, what)
    return n


def _run(
    pending: Sequence[Job],
    engine: Path,
    out: Path,
    options: SegmentOptions,
    n_actors: int,
    threads: int,
    gpus: float,
    memory: int | None,
    progress: bool | None,
    runtime_env: dict[str, Any] | None,
    model_factory: ModelFactory | None,
) -> Iterable[dict[str, Any]]:
    context = ray.data.DataContext.get_current()
    previous_bars = context.enable_progress_bars
    context.enable_progress_bars = sys.stderr.isatty() if progress is None else progress
    actor_args: dict[str, Any] = {"num_cpus": threads}
    if gpus > 0:
        actor_args["num_gpus"] = gpus
    if memory is not None:
        actor_args["memory"] = memory
    if runtime_env is not None:
        actor_args["runtime_env"] = runtime_env
    try:
        # "source" is the image as named (the records' file_name), "path" where it is read.
        rows = [{"source": j.source, "rel": j.rel, "path": _absolute(j.source)} for j in pending]
        results = (
            ray.data.from_items(rows, override_num_blocks=min(len(rows), _MAX_INPUT_BLOCKS))
            # Reads take no CPU: the actors hold the cluster's CPUs (with readers taking
            # CPUs too, a fully packed cluster waits forever).
            .map_batches(
                read_images,
                batch_size=1,
                num_cpus=0,
                compute=ray.data.TaskPoolStrategy(size=min(len(rows), max(2, n_actors))),
            )
            .map_batches(
                SegmentActor,
                fn_constructor_kwargs={
                    "engine_dir": str(engine),
                    "options": options,
                    "out_dir": str(out),
                    "gpus": gpus,
                    "model_factory": model_factory,
                },
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=n_actors),
                **actor_args,
            )
        )
        try:
            yield from results.iter_rows()
        except ray.exceptions.ActorDiedError as e:
            # Ray restarts actors that die while working; one that dies starting, did not.
            raise ActorStartError(f"an engine actor could not start: {_last_error_line(e)}") from e
    finally:
        context.enable_progress_bars = previous_bars
