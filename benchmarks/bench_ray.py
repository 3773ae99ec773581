"""`samrt segment` in one process vs `samrt segment --ray` on this machine, in one run.

The same folder (the photos of ../shared/images and their mirror images: 8 for the 4 there)
goes through everything mode with the default grid (32x32 points, default thresholds), first
through the single-process command line (ONNX Runtime on every core), then through
`--ray` with 2 actors of 1 thread each, on a local Ray cluster this benchmark starts first
(so cluster start-up, which a real cluster pays once, is not counted; the driver's own
start, the actors' start and their engine loads are). Both are run as the commands a user
runs; each is timed end to end.

    python benchmarks/bench_ray.py                                  # vit_b, 2 actors x 1 thread
    python benchmarks/bench_ray.py --model-type tiny --points-per-side 4 --images 4   # smoke run

Reports images per minute of each and their ratio (target: the Ray path at least 0.9x the
single process: on one machine Ray can only show its overhead, not a speed-up), the peak
resident memory of the single process and of each actor, and checks that the two produced
the same masks (same count per image, mask IoU >= 0.999).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import IMAGES, verdict

TARGET_RATIO = 0.9


def _engine(model_type: str, seed: int) -> Path:
    """The benchmarks' cached engine (common.py), exported in a child process the first
    time so that no process measured here has imported torch."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "from common import random_weights_engine as engine; "
        "print(json.dumps(str(engine(sys.argv[2], int(sys.argv[3]))[0])))"
    )
    here = str(Path(__file__).resolve().parent)
    found = subprocess.run(
        [sys.executable, "-c", code, here, model_type, str(seed)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return Path(json.loads(found.splitlines()[-1]))


def _folder(folder: Path, n: int) -> list[str]:
    """``n`` images: the sample photos, then their mirror images, then copies of those."""
    from PIL import Image, ImageOps

    photos = sorted(p for p in IMAGES.glob("*.jpg"))
    if not photos:
        sys.exit(f"no photos in {IMAGES} (see ../shared/images/README.md)")
    folder.mkdir(parents=True)
    names = []
    for i in range(n):
        source = photos[i % len(photos)]
        variant = (i // len(photos)) % 2
        name = f"{i:02d}-{source.stem}{'-mirror' if variant else ''}.jpg"
        if variant:
            with Image.open(source) as image:
                ImageOps.mirror(ImageOps.exif_transpose(image)).save(folder / name, quality=95)
        else:
            shutil.copyfile(source, folder / name)
        names.append(name)
    return names


def _run(command: list[str]) -> tuple[float, float]:
    """Runs a command; its wall-clock seconds and its peak resident memory in MiB (that of
    the command's own process: Ray's actors are other processes, reported by the run)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{stdout}\n{stderr}")
    print("   ", stdout.strip().splitlines()[-1])
    return seconds, usage.ru_maxrss / 1024


def _agreement(a: Path, b: Path, names: list[str]) -> dict[str, Any]:
    from samrt.masks import decode_rle

    same_count, worst_iou, masks = 0, 1.0, 0
    for name in names:
        ra = json.loads((a / f"{name}.json").read_text())["annotations"]
        rb = json.loads((b / f"{name}.json").read_text())["annotations"]
        same_count += len(ra) == len(rb)
        for x, y in zip(ra, rb, strict=False):
            mx, my = decode_rle(x["segmentation"]), decode_rle(y["segmentation"])
            union = np.logical_or(mx, my).sum()
            iou = 1.0 if union == 0 else float(np.logical_and(mx, my).sum() / union)
            worst_iou = min(worst_iou, iou)
            masks += 1
    return {
        "images_with_same_mask_count": f"{same_count}/{len(names)}",
        "masks_compared": masks,
        "min_mask_iou": round(worst_iou, 6),
        "equal": same_count == len(names) and worst_iou >= 0.999,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-type", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "tiny"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--threads-per-actor", type=int, default=1)
    args = parser.parse_args(argv)

    engine = _engine(args.model_type, args.seed)
    samrt = [sys.executable, "-m", "samrt.cli", "segment"]
    grid = ["--points-per-side", str(args.points_per_side)]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        names = _folder(tmp / "images", args.images)
        common_args = [str(tmp / "images"), "--engine", str(engine), *grid]
        print(
            f"{args.images} images, {args.model_type} random weights seed {args.seed}, "
            f"points_per_side={args.points_per_side}, {os.cpu_count()} CPUs"
        )

        print("single process (samrt segment) ...", flush=True)
        single_s, single_peak = _run([*samrt, *common_args, "--out", str(tmp / "single")])

        import ray

        cpus = args.actors * args.threads_per_actor
        started = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False)
        cluster_s = time.perf_counter() - started
        address = ray.get_runtime_context().gcs_address
        try:
            print(
                f"Ray (samrt segment --ray, {args.actors} actors x {args.threads_per_actor} "
                f"thread(s); cluster of {cpus} CPUs started in {cluster_s:.1f} s) ...",
                flush=True,
            )
            ray_s, driver_peak = _run(
                [*samrt, *common_args, "--out", str(tmp / "ray"), "--ray", address]
                + ["--actors", str(args.actors), "--threads-per-actor", str(args.threads_per_actor)]
            )
        finally:
            ray.shutdown()
        report = json.loads((tmp / "ray" / "samrt-run-report.json").read_text())
        agreement = _agreement(tmp / "single", tmp / "ray", names)

    single_ipm, ray_ipm = 60 * args.images / single_s, 60 * args.images / ray_s
    print()
    print(f"{'':34}{'single':>10}{'ray':>10}")
    print(f"{'wall clock, end to end (s)':34}{single_s:10.1f}{ray_s:10.1f}")
    print(f"{'images per minute':34}{single_ipm:10.2f}{ray_ipm:10.2f}")
    print(f"ray / single images per minute: {verdict(ray_ipm / single_ipm, TARGET_RATIO)}")
    print(f"peak resident memory, single process: {single_peak:.0f} MiB")
    print(f"peak resident memory, Ray driver: {driver_peak:.0f} MiB")
    for actor, mib in sorted(report["actor_peak_rss_mib"].items()):
        print(f"peak resident memory, actor {actor}: {mib:.0f} MiB")
    print(
        f"1-min load average at the end: {os.getloadavg()[0]:.1f} "
        "(wall times stretch on a busy machine)"
    )
    print("agreement:", json.dumps(agreement))
    return 0 if agreement["equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
