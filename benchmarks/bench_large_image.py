"""Automatic mask generation on an 8000x6000 photo: time and memory (issue 7).

    python benchmarks/bench_large_image.py                  # tiny SAM, 32x32 points
    python benchmarks/bench_large_image.py --model-type vit_b --crop-n-layers 1

truck.jpg is resized to 8000x6000 and given to samrt.AutomaticMaskGenerator with the
default settings except pred_iou_thresh=0 and stability_score_thresh=0 (random weights
give low scores; with 0 every mask of every batch goes through the full-resolution
post-processing, the worst case) and output_mode="coco_rle" (binary masks would be the
caller asking for full-resolution arrays). The tiny SAM's mask decoder is the official
full-size one, so the per-mask work is that of any SAM.

The official generator upsamples each batch of 64 points x 3 masks to float32 at full
resolution: 36.9 GB at 8000x6000, before its 9.2 GB of boolean masks. The target is that
samrt's resident memory grows by less than one batch's boolean masks while generating.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import IMAGES, proc_status_mib, random_weights_engine, reset_peak_rss

WIDTH, HEIGHT = 8000, 6000
MASKS_PER_BATCH = 64 * 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-type", default="tiny", choices=["tiny", "vit_b", "vit_l", "vit_h"])
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--crop-n-layers", type=int, default=0)
    parser.add_argument("--min-mask-region-area", type=int, default=0)
    args = parser.parse_args()

    engine, _ = random_weights_engine(args.model_type)
    import samrt

    with Image.open(IMAGES / "truck.jpg") as photo:
        image = np.asarray(photo.convert("RGB").resize((WIDTH, HEIGHT), Image.BICUBIC))
    generator = samrt.AutomaticMaskGenerator(
        samrt.Model(engine),
        points_per_side=args.points_per_side,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        crop_n_layers=args.crop_n_layers,
        min_mask_region_area=args.min_mask_region_area,
        output_mode="coco_rle",
    )
    reset_peak_rss()
    before = proc_status_mib("VmRSS")
    start, start_cpu = time.perf_counter(), time.process_time()
    records = generator.generate(image)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    peak = proc_status_mib("VmHWM")

    full_res = WIDTH * HEIGHT
    float_batch_mib = MASKS_PER_BATCH * full_res * 4 / 2**20
    bool_batch_mib = MASKS_PER_BATCH * full_res / 2**20
    growth = peak - before
    sizes = {tuple(r["segmentation"]["size"]) for r in records}
    print(
        f"{args.model_type}, {WIDTH}x{HEIGHT}, points_per_side={args.points_per_side}, "
        f"crop_n_layers={args.crop_n_layers}, min_mask_region_area={args.min_mask_region_area}, "
        f"{os.cpu_count()} CPUs, 1-min load {os.getloadavg()[0]:.1f}"
    )
    print(f"generate: {wall:.1f} s wall, {cpu:.1f} s CPU, {len(records)} masks, RLE sizes {sorted(sizes)}")
    print(
        f"resident before generate {before:.0f} MiB, peak during {peak:.0f} MiB: growth "
        f"{growth:.0f} MiB"
    )
    print(
        f"for scale: one batch of full-resolution masks is {float_batch_mib:.0f} MiB as float32 "
        f"(what the official upsamples), {bool_batch_mib:.0f} MiB as bool"
    )
    met = growth < bool_batch_mib
    print(f"target: growth < one batch of bool masks: {'met' if met else 'MISSED'}")
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "masks": len(records), "rss_before_mib": before,
                      "peak_mib": peak, "growth_mib": growth}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
