"""Shared by the benchmarks: a cached vit_b engine with seeded random weights, timing, memory."""

from __future__ import annotations

import hashlib
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT.parent / "shared" / "images"
CACHE = Path(os.environ.get("SAMRT_BENCH_CACHE", ROOT / "build" / "bench-models"))


def load_photo(name: str = "truck.jpg") -> np.ndarray:
    from samrt.imageio import load_image

    path = IMAGES / name
    if not path.exists():
        sys.exit(f"benchmark photo {path} is missing (see ../shared/images/README.md)")
    return load_image(path)


def vit_b_engine(seed: int = 0, export: bool = True) -> tuple[Path, Path]:
    return random_weights_engine("vit_b", seed, export)


def random_weights_engine(
    model_type: str = "vit_b", seed: int = 0, export: bool = True
) -> tuple[Path, Path]:
    """(engine_dir, checkpoint) of a SAM with seeded random weights, exported once and cached.

    The engine is cached per version of the exporter's sources (the graphs change with
    them); the checkpoint depends on the seed only. With ``export=False`` only the
    checkpoint is made (for a benchmark given its own engine directory)."""
    base = CACHE / f"{model_type}-seed{seed}"
    checkpoint = base / "checkpoint.pth"
    engine = base / f"engine-{_exporter_digest()}"
    # samrt_export (and so torch) is imported only to make what is missing: a benchmark of
    # samrt's memory must not carry torch in its process.
    if not checkpoint.exists():
        from samrt_export import save_random_checkpoint

        base.mkdir(parents=True, exist_ok=True)
        save_random_checkpoint(model_type, seed, checkpoint)
    if export and not (engine / "manifest.json").exists():
        from samrt_export import export_engine

        export_engine(model_type, checkpoint=checkpoint, out_dir=engine)
    return engine, checkpoint


def _exporter_digest() -> str:
    digest = hashlib.sha256()
    for source in sorted((ROOT / "export" / "samrt_export").glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:12]


def official_sam(checkpoint: Path) -> Any:
    from segment_anything import sam_model_registry

    sam = sam_model_registry["vit_b"](checkpoint=str(checkpoint))
    return sam.eval()


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> tuple[float, Any]:
    """Median seconds over `repeat` runs after `warmup` runs, and the last result."""
    from samrt.bench import measure

    times, result = measure(fn, repeat, warmup)
    return statistics.median(times), result


def cpu_timed(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> tuple[float, float, Any]:
    """Median wall-clock seconds and median process CPU seconds (all threads) over `repeat`
    runs after `warmup` runs, and the last result. On a shared machine the CPU time moves
    less with the load than the wall-clock time."""
    result = None
    for _ in range(warmup):
        result = fn()
    walls, cpus = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return statistics.median(walls), statistics.median(cpus), result


def proc_status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM, ...) in MiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    """Restarts the peak resident size (VmHWM) at the current one (Linux >= 4.0), so that
    the peak read afterwards is that of what follows, not of what came before."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# Idle time before each timed call. Thread pools keep spinning for a while after a call
# returns (torch's OpenMP workers, ONNX Runtime's with its default options, as the plain
# export runs): without a pause, the next contestant shares the two cores with the
# previous one's spinning threads (samrt's predict: 40 ms back to back, 32 ms with this
# rest, on a quiet machine). Clicks come hundreds of milliseconds apart, so each call starts
# on a machine at rest, as a click does.
SETTLE_SECONDS = 0.1


def load_average() -> str:
    """"load average 0.12 0.34 0.56", for every timing a benchmark prints."""
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def verdict(ratio: float, target: float) -> str:
    return f"{ratio:.2f}x (target >= {target}x: {'met' if ratio >= target else 'MISSED'})"
