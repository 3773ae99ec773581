"""Every model family on this CPU: samrt against each model's official package.

    python benchmarks/bench_models.py [--models vit_b,sam2.1_hiera_tiny,...] [--image truck.jpg]
                                      [--repeat 2] [--predicts 12] [--points-per-side 16]

For each model (seeded random weights, the real architecture), two contestants:

* official: the model's own package on torch. vit_b: segment_anything's SamPredictor and
  SamAutomaticMaskGenerator; sam2.1_hiera_*: sam2's build_sam2, SAM2ImagePredictor and
  SAM2AutomaticMaskGenerator; mobile_sam: MobileSAM's official TinyViT (the copy that
  samexporter packages) wired with segment_anything's prompt encoder and mask decoder, as
  MobileSAM's build_sam_vit_t does, under SamPredictor and SamAutomaticMaskGenerator.
* samrt: samrt.Predictor and samrt.AutomaticMaskGenerator on samrt's export.

Each contestant runs in a child process of its own, so that its peak resident size
(VmHWM, reported) is its own, torch included where it uses torch; the two of a model run
one after the other, and the load average is printed around each. Measured in each:

* set_image on the photo: median of --repeat calls after one warm-up call;
* one-point predict (the photo's centre, multimask, full-resolution masks): median of
  --predicts calls after two warm-up calls, each after a 0.1 s rest (see bench_predictor);
* everything mode at points_per_side --points-per-side (16 by default, so that the run
  fits in minutes; the official default is 32), the family's default thresholds, once,
  end to end (the encoder included). With random weights few masks survive the
  thresholds; the record counts are printed. The predict's mask shapes and scores and
  the record counts must agree, or the benchmark fails after printing.

Targets (issue 15): every samrt model >= 1.5x its official package's set_image and >= 3x
its predict; samrt's mobile_sam set_image >= 8x faster than samrt's vit_b.
Run it on a quiet machine: nothing else on the two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    ROOT,
    SETTLE_SECONDS,
    load_average,
    load_photo,
    proc_status_mib,
    random_weights_engine,
    verdict,
)

MODELS = ("vit_b", "sam2.1_hiera_tiny", "sam2.1_hiera_small", "mobile_sam")
IMPLEMENTATIONS = ("official", "samrt")
# The predict scores of the two must agree this well (the parity tests' tolerance) for
# the times to compare like with like.
SCORE_TOLERANCE = 1e-3


def _median_seconds(fn: Callable[[], Any], repeat: int, warmup: int, settle: float = 0.0) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        time.sleep(settle)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- the contestants, each in its own process ---------------------------------------------


def _official(model_type: str, checkpoint: Path, points_per_side: int) -> tuple[Any, Any]:
    """(predictor, mask generator) of the model's official package."""
    from samrt_export.config import SAM2_MODEL_TYPES, sam2_config

    if model_type in SAM2_MODEL_TYPES:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        config = sam2_config(model_type)
        model = build_sam2(
            config["config_file"],
            str(checkpoint),
            device="cpu",
            hydra_overrides_extra=list(config["overrides"]),
        ).eval()
        return SAM2ImagePredictor(model), SAM2AutomaticMaskGenerator(
            model, points_per_side=points_per_side
        )

    from segment_anything import SamAutomaticMaskGenerator, SamPredictor

    if model_type == "mobile_sam":
        sys.path.insert(0, str(ROOT / "tests"))
        from models import ExportedMobileSamModel
        from samrt_export.config import resolve_config

        _, config = resolve_config(model_type, None)
        sam = ExportedMobileSamModel(model_type, 0, Path(), checkpoint, config).official_sam()
    else:
        from segment_anything import sam_model_registry

        sam = sam_model_registry[model_type](checkpoint=str(checkpoint)).eval()
    return SamPredictor(sam), SamAutomaticMaskGenerator(sam, points_per_side=points_per_side)


def _samrt(engine: Path, points_per_side: int) -> tuple[Any, Any]:
    import samrt

    predictor = samrt.Predictor(engine)
    return predictor, samrt.AutomaticMaskGenerator(predictor, points_per_side=points_per_side)


def run_contestant(args: argparse.Namespace) -> dict[str, Any]:
    model_type, implementation = args.child
    engine, checkpoint = Path(args.engine), Path(args.checkpoint)
    if implementation == "official":
        import torch

        with torch.inference_mode():
            return _measure(*_official(model_type, checkpoint, args.points_per_side), args)
    return _measure(*_samrt(engine, args.points_per_side), args)


def _measure(predictor: Any, generator: Any, args: argparse.Namespace) -> dict[str, Any]:
    image = load_photo(args.image)
    h, w = image.shape[:2]
    point, label = np.array([[w / 2, h / 2]]), np.array([1])
    set_image = _median_seconds(lambda: predictor.set_image(image), args.repeat, warmup=1)
    masks, scores, _ = predictor.predict(
        point_coords=point, point_labels=label, multimask_output=True
    )
    predict = _median_seconds(
        lambda: predictor.predict(point_coords=point, point_labels=label, multimask_output=True),
        args.predicts,
        warmup=2,
        settle=SETTLE_SECONDS,
    )
    start = time.perf_counter()
    records = generator.generate(image)
    everything = time.perf_counter() - start
    return {
        "set_image_s": set_image,
        "predict_s": predict,
        "everything_s": everything,
        "records": len(records),
        "mask_shape": list(np.asarray(masks).shape),
        "scores": [float(s) for s in np.asarray(scores).ravel()],
        "peak_rss_mib": proc_status_mib("VmHWM"),
    }


# -- the parent: prepare, run the children, report ----------------------------------------


def _run_child(
    model_type: str, implementation: str, engine: Path, checkpoint: Path, args: argparse.Namespace
) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        model_type,
        implementation,
        "--engine",
        str(engine),
        "--checkpoint",
        str(checkpoint),
        "--image",
        args.image,
        "--repeat",
        str(args.repeat),
        "--predicts",
        str(args.predicts),
        "--points-per-side",
        str(args.points_per_side),
    ]
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, cwd=Path(__file__).parent
    )
    if done.returncode != 0:
        sys.exit(f"{model_type} {implementation} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated model types")
    parser.add_argument("--image", default="truck.jpg", help="a photo of ../shared/images")
    parser.add_argument(
        "--repeat", type=int, default=2, help="timed set_image calls (after 1 warm-up)"
    )
    parser.add_argument(
        "--predicts", type=int, default=12, help="timed predicts (after 2 warm-ups)"
    )
    parser.add_argument("--points-per-side", type=int, default=16, help="everything mode's grid")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_contestant(args)))
        return

    models = [m for m in args.models.split(",") if m]
    print(
        f"bench_models: {', '.join(models)} on {args.image}; set_image median of {args.repeat}, "
        f"predict median of {args.predicts}, everything mode at {args.points_per_side}x"
        f"{args.points_per_side} points, once; {os.cpu_count()} CPUs"
    )
    # (engine, checkpoint) of each: seeded random weights, exported by samrt, cached.
    prepared = {m: random_weights_engine(m, seed=0) for m in models}
    results: dict[str, dict[str, dict[str, Any]]] = {}
    disagreements: list[str] = []
    for model_type in models:
        engine, checkpoint = prepared[model_type]
        for implementation in IMPLEMENTATIONS:
            before = load_average()
            result = _run_child(model_type, implementation, engine, checkpoint, args)
            results.setdefault(model_type, {})[implementation] = result
            print(
                f"  {model_type:20s} {implementation:8s} set_image {result['set_image_s']:7.3f} s  "
                f"predict {1000 * result['predict_s']:7.1f} ms  everything {result['everything_s']:7.2f} s "
                f"({result['records']} records)  peak RSS {result['peak_rss_mib']:6.0f} MiB  "
                f"[{before}; after: {load_average()}]",
                flush=True,
            )

    print(
        f"\n{'model':20s} {'set_image':>32s} {'predict':>32s} {'everything':>10s} {'peak RSS':>18s}"
    )
    for model_type, pair in results.items():
        official, ours = pair["official"], pair["samrt"]
        score_diff = max(
            abs(a - b) for a, b in zip(official["scores"], ours["scores"], strict=True)
        )
        if (
            official["records"] != ours["records"]
            or official["mask_shape"] != ours["mask_shape"]
            or score_diff > SCORE_TOLERANCE
        ):
            disagreements.append(
                f"{model_type}: records {official['records']} vs {ours['records']}, masks "
                f"{official['mask_shape']} vs {ours['mask_shape']}, scores differ by {score_diff:.2g}"
            )
        print(
            f"{model_type:20s} "
            f"{verdict(official['set_image_s'] / ours['set_image_s'], 1.5):>32s} "
            f"{verdict(official['predict_s'] / ours['predict_s'], 3.0):>32s} "
            f"{official['everything_s'] / ours['everything_s']:9.2f}x "
            f"{ours['peak_rss_mib']:6.0f}/{official['peak_rss_mib']:6.0f} MiB"
        )
    if "mobile_sam" in results and "vit_b" in results:
        speedup = (
            results["vit_b"]["samrt"]["set_image_s"] / results["mobile_sam"]["samrt"]["set_image_s"]
        )
        print(f"\nsamrt mobile_sam set_image vs samrt vit_b: {verdict(speedup, 8.0)}")
    print(load_average())
    if disagreements:
        sys.exit(
            "the answers differ, so the times above do not compare like with like:\n  "
            + "\n  ".join(disagreements)
        )


if __name__ == "__main__":
    main()
