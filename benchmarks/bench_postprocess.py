"""samrt.postprocess vs the official torch post-processing, timed in the same run.

Automatic-mask-generator path: one batch of 192 masks (64 points x 3 outputs) of realistic
low-res logits (smooth blobs of varied sizes, sharp and soft edges, low-frequency noise),
original size 1200x1800 (input 683x1024): samrt's masks_from_logits (areas, boxes,
stability, RLE) vs postprocess_masks + calculate_stability_score + threshold +
batched_mask_to_box + mask_to_rle_pytorch. Predictor path: 3 masks, upsample_masks vs
postprocess_masks + threshold.

Prints timings, speed-up ratios against the targets (10x, peak extra memory < 100 MB) and
checks that the results agree. Memory: peak RSS growth during the call (VmHWM after
resetting it through /proc/self/clear_refs, Linux only) and the tracemalloc peak (numpy and
Python objects), each measured in a fresh subprocess.

    python benchmarks/bench_postprocess.py [--repeat N] [--skip-reference-amg]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
import tracemalloc
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from common import proc_status_mib, reset_peak_rss

LOW_RES = 256
INPUT_SIZE = (683, 1024)
ORIGINAL_SIZE = (1200, 1800)
AMG_MASKS = 192
PREDICTOR_MASKS = 3
SPEEDUP_TARGET = 10.0
MEMORY_TARGET_MB = 100.0


def realistic_logits(n_masks: int, seed: int) -> np.ndarray:
    """n_masks x 256 x 256 float32 logits that look like SAM's: a few elliptic blobs
    (radius 3..60 low-res pixels, inside the un-padded area) whose signed distance is
    scaled by an edge steepness of 0.7..5 logits per pixel, plus low-frequency noise,
    clipped to [-25, 20]."""
    rng = np.random.default_rng(seed)
    rows = math.ceil(INPUT_SIZE[0] * LOW_RES / 1024)
    cols = math.ceil(INPUT_SIZE[1] * LOW_RES / 1024)
    yy, xx = np.mgrid[0:LOW_RES, 0:LOW_RES].astype(np.float32)
    out = np.empty((n_masks, LOW_RES, LOW_RES), np.float32)
    for m in range(n_masks):
        field = np.full((LOW_RES, LOW_RES), -np.inf, np.float32)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0, rows), rng.uniform(0, cols)
            ry, rx = np.exp(rng.uniform(np.log(3), np.log(60), size=2))
            angle = rng.uniform(0, np.pi)
            dy, dx = yy - cy, xx - cx
            u = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
            v = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
            field = np.maximum(field, (1 - np.sqrt(u * u + v * v)) * min(rx, ry))
        noise = np.zeros((LOW_RES, LOW_RES), np.float32)
        for _ in range(4):
            fy, fx = rng.uniform(-0.08, 0.08, size=2)
            noise += np.sin(fy * yy + fx * xx + rng.uniform(0, 2 * np.pi)).astype(np.float32)
        steepness = np.exp(rng.uniform(np.log(0.7), np.log(5)))
        out[m] = np.clip(steepness * field + 0.6 * noise, -25, 20)
    return out


def official_postprocess(low_res: Any) -> Any:
    """The official Sam.postprocess_masks on torch [M, 1, 256, 256] logits -> [M, H, W]."""
    from segment_anything.modeling.sam import Sam

    sam: Any = types.SimpleNamespace(image_encoder=types.SimpleNamespace(img_size=1024))
    return Sam.postprocess_masks(sam, low_res, INPUT_SIZE, ORIGINAL_SIZE)[:, 0]


def official_amg(low_res_np: np.ndarray) -> dict[str, Any]:
    """What SamAutomaticMaskGenerator._process_batch does with the logits (no filtering)."""
    import torch
    from segment_anything.utils.amg import (
        batched_mask_to_box,
        calculate_stability_score,
        mask_to_rle_pytorch,
    )

    masks = official_postprocess(torch.from_numpy(low_res_np)[:, None])
    stability = calculate_stability_score(masks, 0.0, 1.0)
    binary = masks > 0.0
    del masks
    boxes = batched_mask_to_box(binary)
    rles = mask_to_rle_pytorch(binary)
    return {
        "areas": binary.sum((1, 2)).numpy(),
        "boxes": boxes.numpy(),
        "stability": stability.numpy(),
        "rles": [r["counts"] for r in rles],
    }


def ours_amg(low_res_np: np.ndarray) -> Any:
    from samrt.postprocess import masks_from_logits

    return masks_from_logits(low_res_np, INPUT_SIZE, ORIGINAL_SIZE)


def ours_predictor(low_res_np: np.ndarray) -> np.ndarray:
    from samrt.postprocess import upsample_masks

    return upsample_masks(low_res_np, INPUT_SIZE, ORIGINAL_SIZE)


def official_predictor(low_res_np: np.ndarray) -> np.ndarray:
    import torch

    return np.asarray((official_postprocess(torch.from_numpy(low_res_np)[:, None]) > 0.0).numpy())


class Timing:
    """Median wall-clock and CPU seconds (all threads of this process) of some calls. The
    CPU time is the steadier measure on a machine shared with other work."""

    def __init__(self, wall: list[float], cpu: list[float]) -> None:
        self.wall = statistics.median(wall)
        self.cpu = statistics.median(cpu)

    def __str__(self) -> str:
        return f"{self.wall * 1e3:9.2f} ms wall ({self.cpu * 1e3:9.2f} ms CPU)"


def timed(fn: Callable[[], Any], repeat: int) -> tuple[Timing, Any]:
    """Timing over `repeat` calls, and the last result."""
    wall, cpu = [], []
    result = None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return Timing(wall, cpu), result


def ratios(ours: Timing, ref: Timing) -> str:
    return f"speed-up {ref.wall / ours.wall:.1f}x wall, {ref.cpu / ours.cpu:.1f}x CPU"


def measure_memory(which: str) -> dict[str, float]:
    """Peak extra memory of one call, in this (fresh) process: RSS high-water mark growth
    and the tracemalloc peak."""
    n = AMG_MASKS if which == "amg" else PREDICTOR_MASKS
    fn = ours_amg if which == "amg" else ours_predictor
    low_res = realistic_logits(n, seed=0)
    fn(low_res[:1])  # import, thread pool and first-touch costs out of the measurement
    rss_before = proc_status_mib("VmRSS")
    reset_peak_rss()
    tracemalloc.start()
    result = fn(low_res)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = proc_status_mib("VmHWM") - rss_before
    del result
    return {"rss_peak_growth_mb": rss_growth, "tracemalloc_peak_mb": traced_peak / 2**20}


def memory_in_subprocess(which: str) -> dict[str, float] | None:
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--measure-memory", which],
            capture_output=True,
            text=True,
            check=True,
        )
    except subprocess.CalledProcessError as e:
        print(f"memory measurement failed: {e.stderr.strip()}")
        return None
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def reference_peak_mb(fn: Callable[[], Any]) -> tuple[Timing, Any, float]:
    """One timed call of fn, its result and its peak RSS growth in MB."""
    rss_before = proc_status_mib("VmRSS")
    reset_peak_rss()
    timing, result = timed(fn, 1)
    return timing, result, proc_status_mib("VmHWM") - rss_before


def rle_iou(a: np.ndarray, b: list[int], h: int, w: int) -> float:
    from pycocotools import mask as mask_utils

    ra = mask_utils.frPyObjects({"size": [h, w], "counts": [int(v) for v in a]}, h, w)
    rb = mask_utils.frPyObjects({"size": [h, w], "counts": list(b)}, h, w)
    iou = mask_utils.iou([ra], [rb], [0])
    return float(np.asarray(iou)[0, 0])


def check_amg(ours: Any, ref: dict[str, Any]) -> bool:
    h, w = ORIGINAL_SIZE
    exact = sum(
        1
        for a, b in zip(ours.rle_counts, ref["rles"], strict=True)
        if a is not None and a.tolist() == b
    )
    ious = [
        1.0 if a.tolist() == b else rle_iou(a, b, h, w)
        for a, b in zip(ours.rle_counts, ref["rles"], strict=True)
    ]
    stab = np.abs(ours.stability - ref["stability"])
    stab = stab[~(np.isnan(ours.stability) & np.isnan(ref["stability"]))]
    box_diff = int(np.abs(ours.boxes - ref["boxes"]).max()) if len(ours) else 0
    area_diff = int(np.abs(ours.areas - ref["areas"]).max()) if len(ours) else 0
    print(
        f"  agreement: RLE identical for {exact}/{len(ours)} masks, min IoU {min(ious):.6f}, "
        f"max |area diff| {area_diff} px, max |box diff| {box_diff} px, "
        f"max |stability diff| {float(stab.max()) if stab.size else 0.0:.2e}"
    )
    ok = min(ious) >= 0.999 and box_diff <= 1 and (stab.size == 0 or float(stab.max()) <= 1e-3)
    print(
        f"  agreement {'OK' if ok else 'FAILED'} (IoU >= 0.999, boxes within 1 px, stability within 1e-3)"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed calls of samrt per path (median)"
    )
    parser.add_argument(
        "--skip-reference-amg", action="store_true", help="skip the slow official AMG path"
    )
    parser.add_argument("--measure-memory", choices=("amg", "predictor"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_memory:
        print(json.dumps(measure_memory(args.measure_memory)))
        return 0

    import torch
    from samrt import _core

    print(
        f"threads: samrt {_core.get_num_threads()}, torch {torch.get_num_threads()}; "
        f"input {INPUT_SIZE}, original {ORIGINAL_SIZE}"
    )
    ok = True

    # -- Predictor path ------------------------------------------------------------------
    low_res = realistic_logits(PREDICTOR_MASKS, seed=1)
    ours_predictor(low_res)  # warm-up
    ours_t, ours_masks = timed(lambda: ours_predictor(low_res), max(args.repeat, 10))
    ref_t, ref_masks = timed(lambda: official_predictor(low_res), 3)
    mismatched = int((ours_masks != ref_masks).sum())
    print(f"\nPredictor: {PREDICTOR_MASKS} masks, upsample_masks vs postprocess_masks + threshold")
    print(f"  samrt    {ours_t}")
    print(f"  official {ref_t}")
    print(f"  {ratios(ours_t, ref_t)}")
    print(f"  agreement: {mismatched} of {ours_masks.size} pixels differ")
    mem = memory_in_subprocess("predictor")
    if mem:
        print(
            f"  samrt peak extra memory: RSS +{mem['rss_peak_growth_mb']:.1f} MB, "
            f"tracemalloc {mem['tracemalloc_peak_mb']:.1f} MB (output itself: "
            f"{ours_masks.nbytes / 2**20:.1f} MB)"
        )

    # -- Automatic mask generator path -----------------------------------------------------
    low_res = realistic_logits(AMG_MASKS, seed=0)
    ours_amg(low_res)  # warm-up
    ours_t, ours = timed(lambda: ours_amg(low_res), args.repeat)
    print(f"\nAMG batch: {AMG_MASKS} masks, masks_from_logits vs the official torch path")
    print(f"  samrt    {ours_t}  ({ours_t.wall / AMG_MASKS * 1e3:.2f} ms/mask wall)")
    mem = memory_in_subprocess("amg")
    if mem:
        mem_ok = (
            mem["rss_peak_growth_mb"] < MEMORY_TARGET_MB
            and mem["tracemalloc_peak_mb"] < MEMORY_TARGET_MB
        )
        print(
            f"  samrt peak extra memory: RSS +{mem['rss_peak_growth_mb']:.1f} MB, "
            f"tracemalloc {mem['tracemalloc_peak_mb']:.1f} MB "
            f"(target < {MEMORY_TARGET_MB:.0f} MB: {'met' if mem_ok else 'MISSED'})"
        )
    if not args.skip_reference_amg:
        ref_t, ref, ref_mb = reference_peak_mb(lambda: official_amg(low_res))
        print(f"  official {ref_t}, peak extra memory +{ref_mb:.0f} MB")
        met = min(ref_t.wall / ours_t.wall, ref_t.cpu / ours_t.cpu) >= SPEEDUP_TARGET
        print(
            f"  {ratios(ours_t, ref_t)} (target {SPEEDUP_TARGET:.0f}x: {'met' if met else 'MISSED'})"
        )
        ok &= check_amg(ours, ref)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
