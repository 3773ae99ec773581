"""``samrt-bench``: what users ask about, measured on this machine in one run.

    samrt-bench ENGINE_DIR [--image PHOTO] [--json FILE]
    samrt-bench --random-weights [--model-type vit_b]     # no checkpoint needed (needs samrt[export])

Model load, set_image, single-prompt predict, batched predict (64 and 256 prompts) and
automatic mask generation, for each backend that can start here; with torch and
segment_anything installed (and the engine's source checkpoint, or --random-weights), the
same on the official implementation with the same weights, as ratios. Each case: warm-up
runs, then repeats; median and p90. The JSON report follows ``BENCH_SCHEMA`` (below).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._atomic import write_atomic

SCHEMA_VERSION = 1

# JSON Schema (draft 2020-12) of the --json report.
BENCH_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "samrt-bench report",
    "type": "object",
    "required": ["schema_version", "samrt_version", "machine", "engine", "image", "results"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "samrt_version": {"type": "string"},
        "machine": {
            "type": "object",
            "required": ["platform", "python", "cpu_count", "libraries"],
            "properties": {
                "platform": {"type": "string"},
                "processor": {"type": "string"},
                "python": {"type": "string"},
                "cpu_count": {"type": "integer"},
                "libraries": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "engine": {
            "type": "object",
            "required": ["dir", "model_type"],
            "properties": {"dir": {"type": "string"}, "model_type": {"type": "string"}},
        },
        "image": {
            "type": "object",
            "required": ["name", "height", "width"],
            "properties": {
                "name": {"type": "string"},
                "height": {"type": "integer"},
                "width": {"type": "integer"},
            },
        },
        "official_skipped": {
            "type": ["string", "null"],
            "description": "why there is no comparison with the official implementation",
        },
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["implementation", "precision", "case", "runs", "median_s", "p90_s", "peak_rss_mb"],
                "properties": {
                    "implementation": {"type": "string", "description": "samrt backend name, or 'official'"},
                    "precision": {"type": "string"},
                    "case": {
                        "enum": ["load", "set_image", "predict_1", "predict_batch_64", "predict_batch_256", "generate"]
                    },
                    "runs": {"type": "integer", "minimum": 1},
                    "median_s": {"type": "number", "minimum": 0},
                    "p90_s": {"type": "number", "minimum": 0},
                    "peak_rss_mb": {"type": "number", "minimum": 0},
                    "peak_rss_scope": {
                        "enum": ["case", "process"],
                        "description": "case: the highest resident size while this case ran (Linux "
                        "resets the peak before each); process: the process's peak so far",
                    },
                    "speedup_vs_official": {"type": ["number", "null"]},
                },
            },
        },
    },
}

CASES = ("load", "set_image", "predict_1", "predict_batch_64", "predict_batch_256", "generate")


def _parser() -> argparse.ArgumentParser:
    from ._help import HelpFormatter
    from .backends import BACKENDS

    parser = argparse.ArgumentParser(prog="samrt-bench", description="Benchmark samrt on this machine",
                                     formatter_class=HelpFormatter)
    parser.add_argument("engine", nargs="?", type=Path, help="engine directory (or use --random-weights)")
    parser.add_argument("--random-weights", action="store_true",
                        help="export a model with seeded random weights first (needs samrt[export])")
    parser.add_argument("--model-type", default="vit_b", help="with --random-weights: the model to export")
    parser.add_argument("--checkpoint", type=Path,
                        help="the engine's source checkpoint, for the official comparison (default: none, "
                             "so no 'vs official' column)")
    parser.add_argument("--image", type=Path, help="photo to use (default: a synthetic 1800x1200 image)")
    parser.add_argument("--backends", default="all",
                        help=f"comma-separated backend names ({', '.join(BACKENDS)}), or 'all' "
                             "(those whose ONNX Runtime provider is available here)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed runs of each case (predict_1: 5x as many), after the warm-up")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed runs of each case first (none for load and generate)")
    parser.add_argument("--quick", action="store_true",
                        help="a first look in about a minute: --repeat 1 --warmup 0, no generate, "
                             "no official comparison")
    parser.add_argument("--skip", default="", help=f"comma-separated cases to skip, of: {', '.join(CASES)}")
    parser.add_argument("--no-official", action="store_true", help="do not run the official implementation")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress on stderr (there is none either when stderr is not a terminal)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.engine is None) == (not args.random_weights):
        parser.error("give an engine directory or --random-weights (not both)")
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be >= 1 and --warmup >= 0")
    skip = {c for c in args.skip.split(",") if c}
    if unknown := skip - set(CASES):
        parser.error(f"unknown case(s) in --skip: {sorted(unknown)}; cases: {', '.join(CASES)}")
    official: bool | str = not args.no_official or "--no-official"
    if args.quick:
        args.repeat, args.warmup = 1, 0
        skip.add("generate")
        official = "--quick"

    from ._progress import StatusLine

    status = StatusLine("samrt-bench: ", quiet=args.quiet)
    try:
        with tempfile.TemporaryDirectory(prefix="samrt-bench-") as scratch:
            engine, checkpoint = args.engine, args.checkpoint
            if args.random_weights:
                engine, checkpoint = _random_engine(args.model_type, Path(scratch), status.show)
            report = run(
                engine, checkpoint=checkpoint, image_path=args.image, backends=args.backends,
                repeat=args.repeat, warmup=args.warmup, skip=skip, official=official,
                on_case=status.show,
            )
    finally:
        status.close()
    _print_table(report)
    if args.json:
        write_atomic(args.json, (json.dumps(report, indent=2) + "\n").encode())
    return 0


def _random_engine(
    model_type: str, scratch: Path, on_stage: Callable[[str], None] | None = None
) -> tuple[Path, Path]:
    try:
        from samrt_export import export_engine, save_random_checkpoint
    except ImportError as e:
        raise SystemExit(f"samrt-bench --random-weights needs samrt[export] ({e})") from None
    checkpoint = scratch / f"{model_type}-random.pth"
    save_random_checkpoint(model_type, 0, checkpoint)
    engine = export_engine(
        model_type, checkpoint=checkpoint, out_dir=scratch / "engine", on_stage=on_stage
    )
    return Path(engine), checkpoint


def run(
    engine: Path,
    *,
    checkpoint: Path | None,
    image_path: Path | None,
    backends: str,
    repeat: int,
    warmup: int,
    skip: set[str],
    official: bool | str,
    on_case: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The report. ``official``: True to compare with the official implementation, or why
    not (a string, e.g. "--no-official"). ``on_case(text)`` is called as each case starts."""
    from .imageio import load_image
    from .manifest import load_manifest

    manifest = load_manifest(engine)
    image = load_image(image_path) if image_path else _synthetic_image()
    note = on_case if on_case is not None else (lambda text: None)
    results: list[dict[str, Any]] = []
    for name, precision in _backend_choices(manifest, backends):
        results += _bench_samrt(engine, name, precision, image, repeat, warmup, skip, note)
    official_skipped: str | None = f"not asked for ({official})" if isinstance(official, str) else None
    if official is True:
        official_skipped = _official_unavailable(manifest, checkpoint)
        if official_skipped is None:
            results += _bench_official(manifest, checkpoint, image, repeat, warmup, skip, note)
    _add_speedups(results)
    return {
        "schema_version": SCHEMA_VERSION,
        "samrt_version": __version__,
        "machine": _machine(),
        "engine": {"dir": str(engine), "model_type": manifest.model_type},
        "image": {"name": image_path.name if image_path else "synthetic", "height": int(image.shape[0]),
                  "width": int(image.shape[1])},
        "official_skipped": official_skipped,
        "results": results,
    }


def _synthetic_image() -> np.ndarray:
    yy, xx = np.mgrid[0:1200, 0:1800]
    image = np.stack([(xx * 255 // 1800), (yy * 255 // 1200), ((xx + yy) % 256)], axis=-1)
    return image.astype(np.uint8)


def _backend_choices(manifest: Any, backends: str) -> list[tuple[str, str]]:
    from .backends import BACKENDS
    from .backends.onnxruntime import available_providers

    providers = available_providers()
    names = list(BACKENDS) if backends == "all" else backends.split(",")
    chosen = []
    for name in names:
        if name not in BACKENDS:
            raise SystemExit(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
        if backends == "all" and BACKENDS[name][0] not in providers:
            continue
        chosen += [(name, precision) for precision in sorted(manifest.variants)]
    return chosen


def measure(fn: Callable[[], Any], repeat: int, warmup: int) -> tuple[list[float], Any]:
    """Wall-clock seconds of `repeat` calls of fn after `warmup` untimed ones, and the last
    result (also used by the scripts in benchmarks/)."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def _reset_peak_rss() -> bool:
    """Resets the kernel's record of this process's peak resident size (Linux: writing 5 to
    /proc/self/clear_refs); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_rss_mb() -> float:
    """The peak resident size since the last reset (VmHWM), else the process's (ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _measure_case(fn: Callable[[], Any], repeat: int, warmup: int) -> tuple[list[float], float, str]:
    """measure(), with the peak resident size while it ran (or the process's, when the
    peak cannot be reset here: the scope says which)."""
    scope = "case" if _reset_peak_rss() else "process"
    times, _ = measure(fn, repeat, warmup)
    return times, _peak_rss_mb(), scope


def _row(
    implementation: str, precision: str, case: str, times: list[float], peak_mb: float, scope: str
) -> dict[str, Any]:
    ordered = sorted(times)
    return {
        "implementation": implementation,
        "precision": precision,
        "case": case,
        "runs": len(times),
        "median_s": statistics.median(ordered),
        "p90_s": ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))],
        "peak_rss_mb": peak_mb,
        "peak_rss_scope": scope,
    }


def _prompts(image: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    h, w = image.shape[:2]
    coords = rng.uniform([0, 0], [w - 1, h - 1], size=(n, 1, 2))
    return coords, np.ones((n, 1))


def _bench_samrt(engine: Path, backend: str, precision: str, image: np.ndarray, repeat: int, warmup: int,
                 skip: set[str], note: Callable[[str], None]) -> list[dict[str, Any]]:
    from .amg import AutomaticMaskGenerator
    from .predictor import Model, Predictor

    rows = []
    holder: dict[str, Model] = {}

    def load() -> None:
        holder["model"] = Model(engine, backend, precision=precision)

    note(f"{backend} {precision}: load")
    times, peak, scope = _measure_case(load, repeat, 0)
    model = holder["model"]
    label = model.backend_name
    if "load" not in skip:
        rows.append(_row(label, precision, "load", times, peak, scope))
    predictor = Predictor(model)
    predictor.set_image(image)
    cases: dict[str, Callable[[], Any]] = {
        "set_image": lambda: predictor.set_image(image),
        "predict_1": lambda: predictor.predict(*(a[0] for a in _prompts(image, 1))),
        "predict_batch_64": lambda: predictor.predict_batch(*_prompts(image, 64)),
        "predict_batch_256": lambda: predictor.predict_batch(*_prompts(image, 256)),
        "generate": lambda: AutomaticMaskGenerator(predictor).generate(image),
    }
    for case, fn in cases.items():
        if case in skip:
            continue
        runs = repeat * 5 if case == "predict_1" else repeat
        note(f"{backend} {precision}: {case}")
        times, peak, scope = _measure_case(fn, runs, warmup if case != "generate" else 0)
        rows.append(_row(label, precision, case, times, peak, scope))
    return rows


def _official_unavailable(manifest: Any, checkpoint: Path | None) -> str | None:
    """Why the official implementation cannot be compared with here, or None."""
    try:
        from segment_anything import sam_model_registry
    except ImportError:
        return "torch and segment_anything are not installed (pip install 'samrt[export]')"
    if checkpoint is None:
        return "no checkpoint: pass --checkpoint FILE (the engine's weights) to compare"
    if manifest.model_type not in sam_model_registry:
        return f"segment_anything has no {manifest.model_type} model"
    return None


def _bench_official(manifest: Any, checkpoint: Path | None, image: np.ndarray, repeat: int, warmup: int,
                    skip: set[str], note: Callable[[str], None]) -> list[dict[str, Any]]:
    import torch
    from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry

    rows = []
    holder: dict[str, Any] = {}

    def load() -> None:
        holder["sam"] = sam_model_registry[manifest.model_type](checkpoint=str(checkpoint)).eval()

    note("official fp32: load")
    times, peak, scope = _measure_case(load, repeat, 0)
    if "load" not in skip:
        rows.append(_row("official", "fp32", "load", times, peak, scope))
    predictor = SamPredictor(holder["sam"])
    with torch.inference_mode():
        predictor.set_image(image)

        def batch(n: int) -> Any:
            coords, labels = _prompts(image, n)
            coords = predictor.transform.apply_coords(coords, image.shape[:2])
            return predictor.predict_torch(torch.as_tensor(coords, dtype=torch.float),
                                           torch.as_tensor(labels, dtype=torch.int))

        cases: dict[str, Callable[[], Any]] = {
            "set_image": lambda: predictor.set_image(image),
            "predict_1": lambda: predictor.predict(*(a[0] for a in _prompts(image, 1))),
            "predict_batch_64": lambda: batch(64),
            "predict_batch_256": lambda: batch(256),
            "generate": lambda: SamAutomaticMaskGenerator(holder["sam"]).generate(image),
        }
        for case, fn in cases.items():
            if case in skip:
                continue
            runs = repeat * 5 if case == "predict_1" else repeat
            note(f"official fp32: {case}")
            times, peak, scope = _measure_case(fn, runs, warmup if case != "generate" else 0)
            rows.append(_row("official", "fp32", case, times, peak, scope))
    return rows


def _add_speedups(results: list[dict[str, Any]]) -> None:
    official = {r["case"]: r["median_s"] for r in results if r["implementation"] == "official"}
    for r in results:
        base = official.get(r["case"])
        r["speedup_vs_official"] = None if r["implementation"] == "official" or not base else base / r["median_s"]


def _machine() -> dict[str, Any]:
    from importlib import metadata

    libraries = {}
    for dist in ("numpy", "onnxruntime", "onnxruntime-gpu", "torch", "segment-anything", "pillow"):
        try:
            libraries[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count() or 0,
        "libraries": libraries,
    }


def _print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"samrt {report['samrt_version']} on {m['platform']}, {m['cpu_count']} CPUs; "
          f"engine {report['engine']['model_type']}; image {report['image']['name']} "
          f"{report['image']['width']}x{report['image']['height']}")
    results = report["results"]
    width = max([len("implementation"), *(len(r["implementation"]) for r in results)]) + 2
    skipped = report.get("official_skipped")
    print(f"{'implementation':{width}}{'prec':6}{'case':20}{'median':>10}{'p90':>10}{'peak RSS':>11}"
          f"{'vs official':>13}")
    for r in results:
        if r["implementation"] == "official":
            speed = "baseline"
        elif r["speedup_vs_official"] is not None:
            speed = f"{r['speedup_vs_official']:.2f}x"
        else:
            speed = "-"
        print(f"{r['implementation']:{width}}{r['precision']:6}{r['case']:20}{_fmt(r['median_s']):>10}"
              f"{_fmt(r['p90_s']):>10}{r['peak_rss_mb']:>9.0f}MB{speed:>13}")
    scopes = {r.get("peak_rss_scope") for r in results}
    if scopes == {"case"}:
        print("peak RSS: the highest resident size while each case ran (the peak is reset before each)")
    elif results:
        print("peak RSS: the process's highest resident size so far (this OS cannot reset it per case)")
    if skipped:
        print(f"vs official: none, {skipped}")


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}ms" if seconds < 1 else f"{seconds:.2f}s"


if __name__ == "__main__":
    raise SystemExit(main())
