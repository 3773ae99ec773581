"""RLE kernels vs pycocotools.mask in one run: encode (the target), decode, area, bbox, IoU.

    python benchmarks/bench_rle.py [--n 200] [--height 1200] [--width 1800] [--repeat 3]

Masks are SAM-like blobs (unions of a few ellipses with wobbly borders) in a C-order
[N, H, W] bool stack, the layout samrt produces. pycocotools wants [H, W, N] uint8 in
Fortran order: its encode is timed on masks converted beforehand (its best case) and,
separately, with that conversion included. Results are checked equal before any time
is printed. Target: encode >= 2x pycocotools on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pycocotools.mask as pycoco
from samrt import _core
from samrt.masks import decode_rle, encode_rle, rle_area, rle_iou, rle_to_bbox

ENCODE_TARGET = 2.0


def blob_masks(n: int, h: int, w: int, seed: int = 0) -> npt.NDArray[np.bool_]:
    """Unions of 1-3 ellipses whose radius wobbles with the angle, drawn in their boxes."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), dtype=bool)
    for mask in masks:
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(0.03, 0.3) * h, rng.uniform(0.03, 0.3) * w
            y0, y1 = max(0, int(cy - 1.3 * ry)), min(h, int(cy + 1.3 * ry) + 1)
            x0, x1 = max(0, int(cx - 1.3 * rx)), min(w, int(cx + 1.3 * rx) + 1)
            if y0 >= y1 or x0 >= x1:
                continue
            ys, xs = np.ogrid[y0:y1, x0:x1]
            dy, dx = (ys - cy) / ry, (xs - cx) / rx
            angle = np.arctan2(dy, dx)
            phases = rng.uniform(0, 2 * np.pi, 3)
            wobble = 1 + 0.15 * sum(np.sin(k * angle + p) for k, p in zip((3, 5, 7), phases))
            mask[y0:y1, x0:x1] |= dy**2 + dx**2 <= wobble**2
    return masks


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds over `repeat` runs after one warm-up run, and the last result."""
    result = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def row(label: str, ours: float, theirs: float, n: int, target: float | None = None) -> None:
    ratio = theirs / ours
    verdict = (
        ""
        if target is None
        else f"  (target >= {target}x: {'met' if ratio >= target else 'MISSED'})"
    )
    print(
        f"{label:<34} samrt {ours * 1e3:8.1f} ms ({ours / n * 1e6:7.1f} us/mask)   "
        f"pycocotools {theirs * 1e3:8.1f} ms   speed-up {ratio:5.2f}x{verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--height", type=int, default=1200)
    parser.add_argument("--width", type=int, default=1800)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, h, w, repeat = args.n, args.height, args.width, args.repeat

    masks = blob_masks(n, h, w)
    fortran = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))
    threads = _core.get_num_threads()
    print(f"{n} masks {h}x{w}, mean foreground {masks.mean():.1%}; samrt threads: {threads}")

    # Equality first.
    ours_rles = encode_rle(masks)
    assert isinstance(ours_rles, list)
    coco_rles = pycoco.encode(fortran)
    assert ours_rles == coco_rles, "encode differs from pycocotools"
    assert np.array_equal(decode_rle(coco_rles), pycoco.decode(coco_rles).transpose(2, 0, 1))
    assert np.array_equal(rle_area(coco_rles), pycoco.area(coco_rles))
    assert np.array_equal(rle_to_bbox(coco_rles), pycoco.toBbox(coco_rles))
    iscrowd = [0] * n
    assert np.array_equal(
        rle_iou(coco_rles, coco_rles, iscrowd), pycoco.iou(coco_rles, coco_rles, iscrowd)
    )
    print(
        f"results equal (mean counts string {np.mean([len(r['counts']) for r in ours_rles]):.0f} bytes)\n"
    )

    t_ours, _ = timed(lambda: encode_rle(masks), repeat)
    t_coco, _ = timed(lambda: pycoco.encode(fortran), repeat)
    row("encode", t_ours, t_coco, n, ENCODE_TARGET)
    t_coco_conv, _ = timed(
        lambda: pycoco.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))), repeat
    )
    row("encode (pycocotools + conversion)", t_ours, t_coco_conv, n)
    masks_f = fortran.transpose(2, 0, 1)  # the same memory as pycocotools reads, as [N, H, W]
    t_ours_f, _ = timed(lambda: encode_rle(masks_f), repeat)
    row("encode, Fortran-order input", t_ours_f, t_coco, n)

    t_ours, _ = timed(lambda: decode_rle(coco_rles), repeat)
    t_coco, _ = timed(lambda: pycoco.decode(coco_rles), repeat)
    row("decode", t_ours, t_coco, n)
    t_ours, _ = timed(lambda: rle_area(coco_rles), repeat)
    t_coco, _ = timed(lambda: pycoco.area(coco_rles), repeat)
    row("area", t_ours, t_coco, n)
    t_ours, _ = timed(lambda: rle_to_bbox(coco_rles), repeat)
    t_coco, _ = timed(lambda: pycoco.toBbox(coco_rles), repeat)
    row("bbox", t_ours, t_coco, n)
    t_ours, _ = timed(lambda: rle_iou(coco_rles, coco_rles, iscrowd), repeat)
    t_coco, _ = timed(lambda: pycoco.iou(coco_rles, coco_rles, iscrowd), repeat)
    row(f"iou {n}x{n}", t_ours, t_coco, n)

    if threads > 1:
        _core.set_num_threads(1)
        try:
            t_ours, _ = timed(lambda: encode_rle(masks), repeat)
            t_coco, _ = timed(lambda: pycoco.encode(fortran), repeat)
            row("encode, samrt on 1 thread", t_ours, t_coco, n)
        finally:
            _core.set_num_threads(threads)


if __name__ == "__main__":
    main()
