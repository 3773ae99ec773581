"""``samrt segment``'s work, one image at a time: what the command line and the Ray pipeline
(:mod:`samrt.ray`) share.

* :class:`SegmentOptions`: everything ``samrt segment`` takes besides the inputs, the engine
  directory and the output folder (prompts or the generator's parameters, overlay, format).
* :func:`collect_jobs`: the images of the inputs (folders, files, glob patterns, text files
  listing paths, and ``scheme://`` URIs that pyarrow's filesystems open), each with the
  output path it gets under the output folder.
* :func:`needs_work`: whether an image's outputs are missing or older than it (resumable runs).
* :class:`Segmenter`: loads the engine once, then turns one image's bytes into its records and
  writes its outputs atomically (the JSON last: it marks the image done).
* :func:`segment_local`: the single-process run; :func:`write_coco`: the run's COCO file.

Outputs are written to a temporary file in the same folder and renamed into place, so a run
killed at any moment leaves every output whole or absent; :func:`remove_stale_temporaries`
clears what such a run left.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _atomic
from .errors import SamrtError
from .imageio import IMAGE_SUFFIXES, ImageReadError, decode_image

__all__ = [
    "COCO_FILE",
    "LIST_FILE_SUFFIXES",
    "Job",
    "RunSummary",
    "SegmentOptions",
    "Segmenter",
    "collect_jobs",
    "needs_work",
    "read_error_message",
    "read_source",
    "remove_stale_temporaries",
    "segment_local",
    "write_atomic",
    "write_coco",
]

_log = logging.getLogger("samrt")

TMP_MARK = ".samrt-tmp"
COCO_FILE = "coco_annotations.json"
# A named input with one of these suffixes is a text file listing images, one path a line.
LIST_FILE_SUFFIXES = frozenset({".txt", ".lst"})
FORMATS = ("json", "coco")

ModelFactory = Callable[
    [int | None], Any
]  # intra-op threads (None: the backend's default) -> Model


# -- options -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentOptions:
    """What ``samrt segment`` does to each image. With no ``points`` and no ``box`` it runs
    everything mode with the generator's parameters below (the official defaults);
    otherwise it predicts masks for those prompts (``points`` are (x, y) or (x, y, label),
    label 1 foreground, 0 background)."""

    backend: str = "auto"
    points: tuple[tuple[float, ...], ...] = ()
    box: tuple[float, float, float, float] | None = None
    single_mask: bool = False
    overlay: bool = False
    format: str = "json"
    overwrite: bool = False
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float | None = None  # the model family's default (SAM 0.88, SAM 2.1 0.8)
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    use_m2m: bool = False
    mask_threshold: float | None = None  # the engine's (0.0)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        points = tuple(tuple(float(v) for v in p) for p in self.points)
        for point in points:
            if len(point) not in (2, 3):
                raise ValueError(f"a point prompt is (x, y) or (x, y, label), got {point!r}")
        object.__setattr__(self, "points", points)
        if self.box is not None:
            box = tuple(float(v) for v in self.box)
            if len(box) != 4:
                raise ValueError(f"a box prompt is (x0, y0, x1, y1), got {self.box!r}")
            object.__setattr__(self, "box", box)

    def check(self) -> None:
        """Raises ValueError for a backend name or generator parameter that a Segmenter would
        refuse, without loading a model (a Ray driver checks before starting actors)."""
        from .backends import BACKEND_NAMES

        if self.backend != "auto" and self.backend not in BACKEND_NAMES:
            raise ValueError(
                f"backend must be 'auto' or one of {sorted(BACKEND_NAMES)}, got {self.backend!r}"
            )
        if self.everything:
            from .amg import AutomaticMaskGenerator
            from .predictor import Predictor

            # The generator checks its parameters before it looks at its predictor, which
            # it only stores: an empty one stands in for a loaded model.
            probe = Predictor.__new__(Predictor)
            try:
                AutomaticMaskGenerator(probe, **self.generator_params(), output_mode="coco_rle")
            except AttributeError:  # a generator that looks at its predictor: actors check
                pass

    @property
    def everything(self) -> bool:
        """True for everything mode (no prompts)."""
        return not self.points and self.box is None

    def generator_params(self) -> dict[str, Any]:
        """The keyword arguments of :class:`samrt.AutomaticMaskGenerator`."""
        names = (
            "points_per_side",
            "points_per_batch",
            "pred_iou_thresh",
            "stability_score_thresh",
            "stability_score_offset",
            "box_nms_thresh",
            "crop_n_layers",
            "crop_nms_thresh",
            "crop_overlap_ratio",
            "crop_n_points_downscale_factor",
            "min_mask_region_area",
            "use_m2m",
            "mask_threshold",
        )
        params = {name: getattr(self, name) for name in names}
        # --single-mask in everything mode: one mask per point (SAM2AutomaticMaskGenerator's
        # multimask_output=False).
        params["multimask_output"] = not self.single_mask
        return params

    def output_suffixes(self) -> tuple[str, ...]:
        """The files each image gets, the one that marks it done last."""
        return (".png", ".json") if self.overlay else (".json",)


# -- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One image: where it is read from (a path or a URI, as the records' ``file_name``)
    and its outputs' path under the output folder, without suffix (POSIX form)."""

    source: str
    rel: str
    mtime: float | None = None  # known from a listing (URIs); local files are stat'ed

    def output(self, out_dir: str | os.PathLike[str], suffix: str) -> Path:
        rel = PurePosixPath(self.rel)
        return Path(out_dir).joinpath(*rel.parent.parts, rel.name + suffix)


def is_uri(path: str) -> bool:
    """``scheme://...`` with a scheme of two or more letters (so ``C:\\`` is a path)."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").isalnum()


def collect_jobs(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str] | Job],
) -> list[Job]:
    """The images named by ``inputs``, in order:

    * a folder: its image files (by suffix: :data:`samrt.imageio.IMAGE_SUFFIXES`), recursively,
      sorted, outputs mirroring the folder's tree;
    * a glob pattern (``photos/*.jpg``, ``data/**/*.png``): the matching image files, outputs
      mirroring the tree below the pattern's first wildcard;
    * a ``.txt`` or ``.lst`` file: one image path (or URI) a line (blank lines and lines
      starting with ``#`` skipped); relative paths are relative to the list file's folder
      and keep that relative path in the output folder;
    * any other file: that file, whatever its suffix (one that is unreadable, or listed in
      a list file but missing, is a failure of the run, reported at the end);
    * ``scheme://...``: a file or folder on a filesystem pyarrow opens (``s3://``,
      ``gs://``, ``hdfs://``, ``file://``), listed like a local one.

    A :class:`Job` in ``inputs`` is taken as it is. Raises FileNotFoundError, naming it,
    for an input path that does not exist (before any work: a mistyped path should not
    wait for the end of a long run), and ValueError when two different images would write
    the same output file; the same image named twice is kept once.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    jobs: list[Job] = []
    for item in inputs:
        if isinstance(item, Job):
            jobs.append(item)
            continue
        text = os.fspath(item)
        if is_uri(text):
            jobs.extend(_uri_jobs(text))
            continue
        path = Path(text)
        if path.is_dir():
            jobs.extend(_folder_jobs(path))
        elif path.is_file() and path.suffix.lower() in LIST_FILE_SUFFIXES:
            jobs.extend(_list_file_jobs(path))
        elif not path.exists() and glob.has_magic(text):
            jobs.extend(_glob_jobs(text))
        elif not path.exists():
            raise FileNotFoundError(
                f"input {text!r} does not exist (an image file, a folder, a glob pattern, "
                "a .txt list or a URI was expected)"
            )
        else:
            jobs.append(Job(str(path), path.name))
    return _unique(jobs)


def _folder_jobs(folder: Path) -> list[Job]:
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    return [Job(str(f), f.relative_to(folder).as_posix()) for f in files]


def _glob_jobs(pattern: str) -> list[Job]:
    parts = Path(pattern).parts
    fixed = 0
    while fixed < len(parts) - 1 and not glob.has_magic(parts[fixed]):
        fixed += 1
    base = Path(*parts[:fixed]) if fixed else Path()
    matches = sorted(Path(m) for m in glob.glob(pattern, recursive=True))
    files = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_SUFFIXES]
    return [Job(str(f), f.relative_to(base).as_posix()) for f in files]


def _list_file_jobs(list_file: Path) -> list[Job]:
    jobs = []
    for line in list_file.read_text().splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if is_uri(entry):
            jobs.append(Job(entry, PurePosixPath(entry.partition("://")[2]).name))
            continue
        listed = Path(entry)
        if listed.is_absolute() or ".." in listed.parts:
            jobs.append(Job(str(listed), listed.name))
        else:
            jobs.append(Job(str(list_file.parent / listed), listed.as_posix()))
    return jobs


@functools.lru_cache(maxsize=16)
def _filesystem(root: str) -> Any:
    """A pyarrow filesystem for ``scheme://netloc`` (cached: opening one can be slow)."""
    try:
        from pyarrow import fs
    except ImportError:
        raise ImportError(
            f"reading {root} URIs needs pyarrow (`pip install 'samrt[ray]'` installs it)"
        ) from None
    filesystem, _ = fs.FileSystem.from_uri(root + "/")
    return filesystem


def _split_uri(uri: str) -> tuple[Any, str]:
    """(filesystem, path within it) for a URI."""
    from pyarrow import fs

    scheme, _, rest = uri.partition("://")
    if scheme == "file":
        return _filesystem("file://"), fs.FileSystem.from_uri(uri)[1]
    netloc = rest.split("/", 1)[0]
    filesystem = _filesystem(f"{scheme}://{netloc}")
    return filesystem, fs.FileSystem.from_uri(uri)[1]


def _uri_jobs(uri: str) -> list[Job]:
    from pyarrow import fs

    filesystem, path = _split_uri(uri)
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.Directory:
        prefix = uri.rstrip("/")
        base = path.rstrip("/")
        listing = filesystem.get_file_info(fs.FileSelector(base, recursive=True))
        jobs = []
        for entry in sorted(listing, key=lambda e: e.path):
            if (
                entry.type != fs.FileType.File
                or PurePosixPath(entry.path).suffix.lower() not in IMAGE_SUFFIXES
            ):
                continue
            rel = PurePosixPath(entry.path).relative_to(base).as_posix()
            jobs.append(Job(f"{prefix}/{rel}", rel, _timestamp(entry.mtime)))
        return jobs
    mtime = _timestamp(info.mtime) if info.type == fs.FileType.File else None
    return [Job(uri, PurePosixPath(path).name, mtime)]


def _timestamp(value: Any) -> float | None:
    return None if value is None else float(value.timestamp())


def _unique(jobs: Sequence[Job]) -> list[Job]:
    by_rel: dict[str, Job] = {}
    unique = []
    for job in jobs:
        seen = by_rel.get(job.rel)
        if seen is None:
            by_rel[job.rel] = job
            unique.append(job)
        elif seen.source != job.source:
            raise ValueError(
                f"{seen.source!r} and {job.source!r} would both write {job.rel}.json: "
                "segment them in separate runs or give them different names"
            )
    return unique


def read_source(source: str) -> bytes:
    """An image file's bytes, from a local path or a URI (raises OSError)."""
    if is_uri(source):
        filesystem, path = _split_uri(source)
        with filesystem.open_input_stream(path) as stream:
            data: bytes = stream.read()
            return data
    with open(source, "rb") as f:
        return f.read()


def read_error_message(source: str, error: OSError) -> str:
    """Why ``source`` could not be read, in one line naming it."""
    if isinstance(error, FileNotFoundError):
        return f"{source!r} does not exist"
    if isinstance(error, IsADirectoryError):
        return f"{source!r} is a folder, not an image file"
    return f"cannot read {source!r}: {error.strerror or error}"


def _source_mtime(job: Job) -> float | None:
    if job.mtime is not None:
        return job.mtime
    if is_uri(job.source):
        return None  # unknown: never up to date
    try:
        return os.stat(job.source).st_mtime
    except OSError:
        return None


def needs_work(job: Job, out_dir: str | os.PathLike[str], options: SegmentOptions) -> bool:
    """False when every output of ``job`` exists and is at least as new as the image
    (and ``options.overwrite`` is off)."""
    if options.overwrite:
        return True
    source_mtime = _source_mtime(job)
    if source_mtime is None:
        return True
    for suffix in options.output_suffixes():
        try:
            if job.output(out_dir, suffix).stat().st_mtime < source_mtime:
                return True
        except OSError:
            return True
    return False


# -- outputs -----------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` whole or not at all (temporary file, fsync, rename, with
    the permissions the umask gives), making its folder first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic.write_atomic(path, data, tmp_suffix=TMP_MARK)


def remove_stale_temporaries(out_dir: Path) -> None:
    """A run killed mid-write leaves its temporary file behind; nothing else ever does.
    Call it only when no run is writing to ``out_dir``."""
    for tmp in out_dir.rglob(f"*{TMP_MARK}"):
        tmp.unlink(missing_ok=True)


def write_coco(out_dir: Path, jobs: Sequence[Job]) -> Path:
    """Merges the per-image JSON files of ``jobs`` into one COCO annotations file (image ids
    in the order of ``jobs``; images with no output have no entry).

    Each annotation's ``bbox`` is COCO's, ``pycocotools.mask.toBbox`` of its segmentation
    (the width and height count the pixels: [0, 0, 800, 534] for a full 800x534 mask). The
    per-image files keep the official generator's records, whose box is SAM's (the last
    pixel's coordinate minus the first: one pixel short, [0, 0, 799, 533])."""
    from .masks import rle_to_bbox

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, job in enumerate(jobs, start=1):
        try:
            result = json.loads(job.output(out_dir, ".json").read_text())
        except (OSError, json.JSONDecodeError):
            continue  # failed images have no output and no entry
        images.append({"id": image_id, **result["image"]})
        records = result["annotations"]
        boxes: list[list[int]] = (
            rle_to_bbox([r["segmentation"] for r in records]).astype(np.int64).tolist() if records else []
        )
        for record, box in zip(records, boxes, strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "score": record["predicted_iou"],
                    **record,
                    "bbox": box,
                }
            )
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object"}],
    }
    path = out_dir / COCO_FILE
    write_atomic(path, (json.dumps(coco) + "\n").encode())
    return path


def overlay_png(image: npt.NDArray[np.uint8], records: Sequence[dict[str, Any]]) -> bytes:
    """A PNG of ``image`` with the records' masks drawn, largest first, in fixed colours."""
    import io

    from PIL import Image

    from .masks import decode_rle

    canvas = image.astype(np.float32)
    rng = np.random.default_rng(0)  # fixed colours: reruns give identical files
    # Largest first, so small masks stay visible on top.
    for record in sorted(records, key=lambda r: -int(r["area"])):
        seg = record["segmentation"]
        mask = decode_rle({"size": seg["size"], "counts": seg["counts"]})
        colour = rng.integers(40, 256, size=3).astype(np.float32)
        canvas[mask] = 0.45 * canvas[mask] + 0.55 * colour
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        canvas[mask & ~inner] = colour
    buffer = io.BytesIO()
    Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# -- the work ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageOutcome:
    """What became of one image: ``status`` is "done" or "failed" (then ``error`` says why)."""

    source: str
    rel: str
    status: str
    masks: int = 0
    error: str | None = None
    seconds: float = 0.0
    # Everything mode, 0 masks: what the generator's filters dropped (GenerateStats.describe).
    why_no_masks: str | None = None


class Segmenter:
    """Loads an engine once; then :meth:`process` segments one image's bytes and writes its
    outputs under ``out_dir``. Failures of the image itself (unreadable, undecodable, refused
    by the model) come back as a failed :class:`ImageOutcome`; failures to write raise.

    ``intra_op_num_threads`` goes to ONNX Runtime (None: its default, every core);
    ``model_factory(intra_op_num_threads)``, when given, makes the :class:`samrt.Model`
    instead of loading ``engine_dir`` (a custom model; the tests' deterministic one).
    """

    def __init__(
        self,
        engine_dir: str | os.PathLike[str],
        options: SegmentOptions,
        out_dir: str | os.PathLike[str],
        *,
        backend: str | None = None,
        intra_op_num_threads: int | None = None,
        model_factory: ModelFactory | None = None,
    ) -> None:
        from .predictor import Model, Predictor

        self.options = options
        self.out_dir = Path(out_dir)
        if model_factory is not None:
            model = model_factory(intra_op_num_threads)
        else:
            model = Model(
                engine_dir,
                options.backend if backend is None else backend,
                intra_op_num_threads=intra_op_num_threads,
            )
        self.model = model
        self.predictor = Predictor(model)
        # Called with the job just before its JSON (the file that marks it done) is written.
        self.before_json: Callable[[Job], None] | None = None
        # Everything mode: called with (done, total) decoder batches of the current image.
        self.on_batch: Callable[[int, int], None] | None = None
        self.generator: Any = None
        if options.everything:
            from .amg import AutomaticMaskGenerator

            self.generator = AutomaticMaskGenerator(
                self.predictor,
                **options.generator_params(),
                output_mode="coco_rle",
                progress=self._batch_done,
            )

    def _batch_done(self, done: int, total: int) -> None:
        if self.on_batch is not None:
            self.on_batch(done, total)

    @property
    def backend_name(self) -> str:
        name: str = self.model.backend.name
        return name

    def records(self, image: npt.NDArray[np.uint8]) -> list[dict[str, Any]]:
        """The records (COCO RLE) of one HxWx3 uint8 RGB image."""
        if self.generator is not None:
            records: list[dict[str, Any]] = self.generator.generate(image)
            return records
        return _predict_records(self.predictor, image, self.options)

    def process(
        self, job: Job, data: bytes | None = None, read_error: str | None = None
    ) -> ImageOutcome:
        """Segments ``job``'s image (its bytes ``data``, or read here when None) and writes
        its outputs. ``read_error``: the image could not be read elsewhere; it fails."""
        started = time.perf_counter()

        def failed(message: str) -> ImageOutcome:
            return ImageOutcome(
                job.source, job.rel, "failed", error=message, seconds=time.perf_counter() - started
            )

        if read_error is not None:
            return failed(read_error)
        if data is None:
            try:
                data = read_source(job.source)
            except OSError as e:
                return failed(read_error_message(job.source, e))
        try:
            image = decode_image(data, job.source)
        except ImageReadError as e:
            return failed(str(e))
        del data
        try:
            records = self.records(image)
        except (SamrtError, ValueError) as e:
            return failed(f"{job.source}: {e}")
        result = {
            "image": {
                "file_name": job.source,
                "height": int(image.shape[0]),
                "width": int(image.shape[1]),
            },
            "annotations": records,
        }
        if self.options.overlay:
            write_atomic(job.output(self.out_dir, ".png"), overlay_png(image, records))
        if self.before_json is not None:
            self.before_json(job)
        write_atomic(job.output(self.out_dir, ".json"), (json.dumps(result) + "\n").encode())
        why = None
        if not records and self.generator is not None and self.generator.last_stats is not None:
            why = self.generator.last_stats.describe(lambda param: "--" + param.replace("_", "-"))
        return ImageOutcome(
            job.source,
            job.rel,
            "done",
            masks=len(records),
            seconds=time.perf_counter() - started,
            why_no_masks=why,
        )


def _predict_records(
    predictor: Any, image: npt.NDArray[np.uint8], options: SegmentOptions
) -> list[dict[str, Any]]:
    from .masks import compress_rle
    from .postprocess import masks_from_logits

    coords = labels = box = None
    if options.points:
        coords = np.array([p[:2] for p in options.points])
        labels = np.array([p[2] if len(p) == 3 else 1.0 for p in options.points])
    if options.box is not None:
        box = np.array(options.box)
    predictor.set_image(image)
    scores, low_res = predictor.predict_low_res(
        point_coords=None if coords is None else coords[None],
        point_labels=None if labels is None else labels[None],
        boxes=None if box is None else box[None],
        multimask_output=not options.single_mask,
    )
    stats = masks_from_logits(low_res[0], predictor.input_size, predictor.original_size)
    h, w = predictor.original_size
    records = []
    for i in range(scores.shape[1]):
        x0, y0, x1, y1 = (int(v) for v in stats.boxes[i])
        counts = stats.rle_counts[i]
        assert counts is not None  # no rle_min_stability was given, so every mask is encoded
        rle = compress_rle({"size": [h, w], "counts": counts.tolist()})
        records.append(
            {
                "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                "area": int(stats.areas[i]),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "predicted_iou": float(scores[0, i]),
                "point_coords": [] if coords is None else coords.tolist(),
                "stability_score": float(stats.stability[i]),
                "crop_box": [0, 0, w, h],
            }
        )
    return records


# -- a run -------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """The tally of a run: images segmented (``done``), skipped as up to date, failed (with
    why), masks written, and the wall time."""

    images: int
    done: int = 0
    skipped: int = 0
    masks: int = 0
    elapsed_s: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)  # {"image": ..., "error": ...}
    # Everything mode: images that got 0 masks, and which filters dropped their candidates.
    no_masks: list[dict[str, str]] = field(default_factory=list)  # {"image": ..., "why": ...}
    cluster: str | None = None  # Ray runs: which cluster ran it,
    actors: int | None = None  # with how many actors
    threads_per_actor: int | None = None
    images_by_node: dict[str, int] = field(default_factory=dict)  # Ray node id -> images done
    # Ray actor (node/pid) -> its peak resident memory in MiB (Linux): what memory_per_actor
    # should reserve.
    actor_peak_rss_mib: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def images_per_minute(self) -> float:
        return 60.0 * self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add(self, outcome: ImageOutcome) -> None:
        if outcome.status == "done":
            self.done += 1
            self.masks += outcome.masks
            if outcome.why_no_masks is not None:
                self.no_masks.append({"image": outcome.source, "why": outcome.why_no_masks})
        else:
            self.failures.append({"image": outcome.source, "error": outcome.error or "failed"})

    def line(self) -> str:
        per_image = f", {self.elapsed_s / self.done:.2f} s per image" if self.done else ""
        return (
            f"samrt segment: {self.done} segmented, {self.skipped} up to date, "
            f"{self.failed} failed; {self.masks} masks in {self.elapsed_s:.1f} s{per_image} "
            f"({self.images_per_minute:.1f} images per minute)"
        )

    def to_json(self) -> dict[str, Any]:
        report = asdict(self)
        report["failed"] = self.failed
        report["images_per_minute"] = self.images_per_minute
        return report

    def write(self, path: Path) -> None:
        """The run report: this summary as JSON, written atomically."""
        write_atomic(path, (json.dumps(self.to_json(), indent=1) + "\n").encode())


def segment_local(
    jobs: Sequence[Job],
    engine_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: SegmentOptions,
    *,
    on_image: Callable[[Job], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    model_factory: ModelFactory | None = None,
) -> RunSummary:
    """Segments ``jobs`` one after another in this process (what ``samrt segment`` does
    without ``--ray``); ``on_image(job)`` is called before each one and, in everything mode,
    ``on_batch(done, total)`` after each decoder batch of it (a progress display)."""
    out = Path(out_dir)
    summary = RunSummary(images=len(jobs))
    started = time.perf_counter()
    # The engine first: a run that cannot start leaves no empty output folder behind.
    segmenter = Segmenter(engine_dir, options, out, model_factory=model_factory)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    segmenter.on_batch = on_batch
    _log.info("samrt segment: %d images on %s", len(jobs), segmenter.backend_name)
    for job in jobs:
        if on_image is not None:
            on_image(job)
        if not needs_work(job, out, options):
            summary.skipped += 1
            continue
        summary.add(segmenter.process(job))
    if options.format == "coco":
        write_coco(out, jobs)
    summary.elapsed_s = time.perf_counter() - started
    return summary
