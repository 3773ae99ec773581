"""samrt's NMS and small-region cleanup against the official implementations, same run.

    python benchmarks/bench_nms_regions.py [--masks 100] [--repeats 3]

1. batched NMS of 3000 boxes vs torchvision.ops.batched_nms on CPU (target >= 3x);
2. small-region cleanup of realistic 1200x1800 masks, holes then islands as the SAM
   generator's postprocess_small_regions does, vs segment_anything.utils.amg's
   OpenCV-based remove_small_regions (target >= 3x), per-mask calls and the batch form.

Results are checked equal before anything is timed. Times are the best of --repeats runs.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
import torchvision
from samrt import _core
from samrt.masks import batched_nms, remove_small_regions, remove_small_regions_batch
from segment_anything.utils.amg import remove_small_regions as official_remove_small_regions

TARGET = 3.0
MIN_REGION_AREA = 100  # the value SAM's examples use for min_mask_region_area
HEIGHT, WIDTH = 1200, 1800


def best_of(fn: Callable[[], object], repeats: int, warm_up: bool = True) -> float:
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def report(name: str, official_s: float, ours_s: float) -> None:
    ratio = official_s / ours_s
    verdict = "meets" if ratio >= TARGET else "MISSES"
    print(
        f"  {name:<44} official {official_s * 1e3:9.2f} ms   samrt {ours_s * 1e3:8.2f} ms"
        f"   x{ratio:6.1f}  ({verdict} the {TARGET:.0f}x target)"
    )


# --- NMS ---


def generator_like_boxes(
    rng: np.random.Generator, n: int, ties: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes as the generator sees them: many masks of the same ~150 objects, a few px apart."""
    h, w = 1500, 2250
    size = np.stack([rng.integers(20, w // 2, 150), rng.integers(20, h // 2, 150)], axis=1)
    corner = np.stack([rng.integers(0, w - size[:, 0]), rng.integers(0, h - size[:, 1])], axis=1)
    objects = np.concatenate([corner, corner + size], axis=1)
    boxes = objects[rng.integers(0, len(objects), n)] + rng.integers(-3, 4, (n, 4))
    if ties:  # postprocess_small_regions ranks by "unchanged": 0/1 scores
        scores = rng.integers(0, 2, n).astype(np.float32)
    else:  # predicted IoUs that passed pred_iou_thresh
        scores = rng.uniform(0.88, 1.0, n).astype(np.float32)
    return boxes.astype(np.float32), scores


def scattered_boxes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mostly disjoint boxes: nearly all kept, the worst case for greedy NMS."""
    corner = rng.random((n, 2)).astype(np.float32) * 2000
    boxes = np.concatenate([corner, corner + rng.random((n, 2)).astype(np.float32) * 100], axis=1)
    return boxes, rng.random(n).astype(np.float32)


def bench_nms(repeats: int) -> None:
    torch.set_num_threads(1)  # torchvision's NMS is single-threaded; keep torch's setup out
    rng = np.random.default_rng(0)
    n = 3000
    print(f"batched NMS, {n} boxes, IoU threshold 0.7, float32 (torch threads: 1)")
    cases = [
        ("generator-like, 1 category", *generator_like_boxes(rng, n, ties=False), 1),
        ("generator-like, 0/1 tied scores", *generator_like_boxes(rng, n, ties=True), 1),
        ("generator-like, 4 categories", *generator_like_boxes(rng, n, ties=True), 4),
        ("scattered (nearly all kept), 1 category", *scattered_boxes(rng, n), 1),
    ]
    for name, boxes, scores, n_categories in cases:
        idxs = rng.integers(0, n_categories, n)
        boxes_t, scores_t, idxs_t = map(torch.from_numpy, (boxes, scores, idxs))

        official = functools.partial(torchvision.ops.batched_nms, boxes_t, scores_t, idxs_t, 0.7)
        ours = functools.partial(batched_nms, boxes, scores, idxs, 0.7)
        expected = official().numpy()
        got = ours()
        if not np.array_equal(got, expected):
            raise SystemExit(f"NMS results differ on {name!r}")
        report(f"{name} (kept {len(got)})", best_of(official, repeats), best_of(ours, repeats))


# --- Small regions ---


def realistic_masks(rng: np.random.Generator, count: int) -> np.ndarray:
    """Masks made as SAM makes them: low-resolution logits (256 px on the long side, a
    smooth field plus fine noise) upsampled bilinearly to the image and thresholded, which
    leaves from none to a few dozen specks and pinholes per mask."""
    low_h, low_w = 256 * HEIGHT // WIDTH, 256
    masks = np.empty((count, HEIGHT, WIDTH), bool)
    for k in range(count):
        cells = int(rng.integers(3, 12))
        field = rng.standard_normal((cells, cells * 3 // 2)).astype(np.float32)
        logits = cv2.resize(field, (low_w, low_h), interpolation=cv2.INTER_CUBIC)
        noise = rng.choice([0.0, 0.01, 0.02, 0.03])  # from clean masks to ragged ones
        logits += noise * rng.standard_normal((low_h, low_w)).astype(np.float32)
        level = np.quantile(logits, rng.uniform(0.4, 0.95))
        logits = cv2.resize(logits - level, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
        masks[k] = logits > 0
    return masks


def official_cleanup(mask: np.ndarray) -> np.ndarray:
    mask, _ = official_remove_small_regions(mask, MIN_REGION_AREA, mode="holes")
    mask, _ = official_remove_small_regions(mask, MIN_REGION_AREA, mode="islands")
    return mask


def samrt_cleanup(mask: np.ndarray) -> np.ndarray:
    mask, _ = remove_small_regions(mask, MIN_REGION_AREA, "holes")
    mask, _ = remove_small_regions(mask, MIN_REGION_AREA, "islands")
    return mask


def samrt_cleanup_batch(masks: np.ndarray) -> np.ndarray:
    holes_filled, _ = remove_small_regions_batch(masks, MIN_REGION_AREA, "holes")
    cleaned, _ = remove_small_regions_batch(holes_filled, MIN_REGION_AREA, "islands")
    return cleaned


def bench_regions(count: int, repeats: int) -> None:
    rng = np.random.default_rng(1)
    masks = realistic_masks(rng, count)
    print(
        f"\nsmall-region cleanup, holes then islands, area {MIN_REGION_AREA}, {count} masks "
        f"{HEIGHT}x{WIDTH} (samrt threads: {_core.get_num_threads()}, "
        f"OpenCV threads: {cv2.getNumThreads()})"
    )
    expected = [official_cleanup(m) for m in masks]
    for m, e in zip(masks, expected, strict=True):
        if not np.array_equal(samrt_cleanup(m), e):
            raise SystemExit("small-region results differ (per-mask calls)")
    batch = samrt_cleanup_batch(masks)
    if not all(np.array_equal(b, e) for b, e in zip(batch, expected, strict=True)):
        raise SystemExit("small-region results differ (batch)")
    changed = sum(not np.array_equal(m, e) for m, e in zip(masks, expected, strict=True))
    print(f"  ({changed} of {count} masks changed by the cleanup)")
    del expected, batch

    # The equality check above already warmed the official function up (and it is slow).
    official_s = best_of(lambda: [official_cleanup(m) for m in masks], repeats, warm_up=False)
    report(
        "per-mask calls", official_s, best_of(lambda: [samrt_cleanup(m) for m in masks], repeats)
    )
    report("batch form", official_s, best_of(lambda: samrt_cleanup_batch(masks), repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=100, help="masks for the cleanup benchmark")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs, best kept")
    args = parser.parse_args()
    bench_nms(args.repeats)
    bench_regions(args.masks, args.repeats)


if __name__ == "__main__":
    main()
