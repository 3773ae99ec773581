"""samrt.AutomaticMaskGenerator vs the official SamAutomaticMaskGenerator, in one run.

Both run vit_b with the same seeded random weights (exported with samrt_export,
random_seed=0; the official model loads the checkpoint the export was made from) on the
same photo with default settings except pred_iou_thresh=0 and stability_score_thresh=0
(random weights give low scores, and every mask should go through post-processing). Each
generator runs in its own subprocess, so peak resident memory (VmHWM) is its own:

    python benchmarks/bench_amg.py                      # vit_b, ../shared/images/truck.jpg
    python benchmarks/bench_amg.py --model-type tiny --points-per-side 8   # smoke run

Reports end-to-end generate() time, peak memory, and the time split into encoder,
decoder and everything else ("outside the model"), with ratios against the targets, and
checks that the two produced the same masks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import random_weights_engine

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO_ROOT.parent / "shared" / "images" / "truck.jpg"

TARGET_SPEEDUP = 2.5
TARGET_MEMORY_FRACTION = 0.25
TARGET_OUTSIDE_MODEL_SPEEDUP = 10.0


def _generator_params(points_per_side: int) -> dict[str, Any]:
    return {
        "points_per_side": points_per_side,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
    }


def _peak_rss_mib() -> float:
    """Peak resident set of this process: VmHWM, else ru_maxrss (KiB on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


class _Stopwatch:
    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0  # process CPU time, all threads: steadier on a shared machine
        self.calls = 0

    def wrap(self, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start, start_cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.cpu_seconds += time.process_time() - start_cpu
                self.calls += 1

        return timed


# -- children ------------------------------------------------------------------------------


def _summaries(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from samrt.masks import encode_rle

    out = []
    for record in records:
        rle = encode_rle(np.asarray(record["segmentation"]))
        out.append(
            {
                "rle": {"size": rle["size"], "counts": rle["counts"].decode()},
                **{
                    k: record[k]
                    for k in ("area", "bbox", "predicted_iou", "stability_score", "crop_box")
                },
                "point_coords": record["point_coords"],
            }
        )
    return out


def _run_samrt(args: argparse.Namespace) -> dict[str, Any]:
    import samrt

    model = samrt.Model(args.engine)
    encoder, decoder = _Stopwatch(), _Stopwatch()
    backend = model.backend
    backend.encode = encoder.wrap(backend.encode)  # type: ignore[method-assign]
    backend.decode = decoder.wrap(backend.decode)  # type: ignore[method-assign]
    generator = samrt.AutomaticMaskGenerator(model, **_generator_params(args.points_per_side))
    image = _load_image(Path(args.image))
    loaded_mib = _peak_rss_mib()
    whole = _Stopwatch()
    records = whole.wrap(generator.generate)(image)
    peak = _peak_rss_mib()
    return _result("samrt", whole, encoder, decoder, loaded_mib, peak, records)


def _run_official(args: argparse.Namespace) -> dict[str, Any]:
    from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

    if args.model_type == "tiny":
        import samrt_export
        from segment_anything.build_sam import _build_sam

        config = samrt_export.TINY_CONFIG
        sam = _build_sam(
            encoder_embed_dim=config.encoder_embed_dim,
            encoder_depth=config.encoder_depth,
            encoder_num_heads=config.encoder_num_heads,
            encoder_global_attn_indexes=list(config.encoder_global_attn_indexes),
            checkpoint=args.checkpoint,
        )
    else:
        sam = sam_model_registry[args.model_type](checkpoint=args.checkpoint)
    sam.eval()
    encoder, decoder = _Stopwatch(), _Stopwatch()
    sam.image_encoder.forward = encoder.wrap(sam.image_encoder.forward)  # type: ignore[method-assign]
    # The exported decoder graph holds both the prompt encoder and the mask decoder.
    sam.prompt_encoder.forward = decoder.wrap(sam.prompt_encoder.forward)  # type: ignore[method-assign]
    sam.mask_decoder.forward = decoder.wrap(sam.mask_decoder.forward)  # type: ignore[method-assign]
    generator = SamAutomaticMaskGenerator(sam, **_generator_params(args.points_per_side))
    image = _load_image(Path(args.image))
    loaded_mib = _peak_rss_mib()
    whole = _Stopwatch()
    records = whole.wrap(generator.generate)(image)  # runs under torch.no_grad() itself
    peak = _peak_rss_mib()
    return _result("official", whole, encoder, decoder, loaded_mib, peak, records)


def _result(
    name: str,
    whole: _Stopwatch,
    encoder: _Stopwatch,
    decoder: _Stopwatch,
    loaded_mib: float,
    peak_mib: float,
    records: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "name": name,
        "total_s": whole.seconds,
        "encoder_s": encoder.seconds,
        "encoder_calls": encoder.calls,
        "decoder_s": decoder.seconds,
        "decoder_calls": decoder.calls,
        "outside_model_s": whole.seconds - encoder.seconds - decoder.seconds,
        "total_cpu_s": whole.cpu_seconds,
        "encoder_cpu_s": encoder.cpu_seconds,
        "decoder_cpu_s": decoder.cpu_seconds,
        "outside_model_cpu_s": whole.cpu_seconds - encoder.cpu_seconds - decoder.cpu_seconds,
        "rss_after_load_mib": loaded_mib,
        "load_average_1min": os.getloadavg()[0],
        "peak_rss_mib": peak_mib,
        "records": _summaries(records),
    }


# -- parent --------------------------------------------------------------------------------


def _prepare(args: argparse.Namespace) -> tuple[Path, Path]:
    """The engine and its checkpoint from the benchmarks' cache (common.py), exported in a
    child process the first time, so that this one stays small."""
    command = [sys.executable, __file__, "--child", "export", "--model-type", args.model_type]
    command += ["--seed", str(args.seed), "--out", "-"]
    found = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    engine, checkpoint = json.loads(found.splitlines()[-1])
    return Path(engine), Path(checkpoint)


def _export(args: argparse.Namespace) -> None:
    engine, checkpoint = random_weights_engine(args.model_type, args.seed)
    print(json.dumps([str(engine), str(checkpoint)]))


def _child(which: str, engine: Path, checkpoint: Path, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable,
            __file__,
            "--child",
            which,
            "--engine",
            str(engine),
            "--checkpoint",
            str(checkpoint),
            "--image",
            str(args.image),
            "--model-type",
            args.model_type,
            "--points-per-side",
            str(args.points_per_side),
            "--out",
            str(out),
        ]
        print(f"running {which} ...", flush=True)
        subprocess.run(command, check=True)
        return json.loads(out.read_text())  # type: ignore[no-any-return]


def _agreement(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> dict[str, Any]:
    from samrt.masks import rle_iou

    if not ours or not theirs:
        return {"matched_0.99": 0, "ours": len(ours), "official": len(theirs)}
    to_bytes = lambda r: {"size": r["rle"]["size"], "counts": r["rle"]["counts"].encode()}
    iou = rle_iou([to_bytes(r) for r in ours], [to_bytes(r) for r in theirs])
    matched: dict[int, int] = {}
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < 0.5:
            break
        if i not in matched and j not in matched.values():
            matched[i] = j
    good = [(i, j) for i, j in matched.items() if iou[i, j] >= 0.99]
    d_iou = max(
        (abs(ours[i]["predicted_iou"] - theirs[j]["predicted_iou"]) for i, j in good), default=0.0
    )
    d_stab = max(
        (
            abs(ours[i]["stability_score"] - theirs[j]["stability_score"])
            for i, j in good
            if not (np.isnan(ours[i]["stability_score"]) and np.isnan(theirs[j]["stability_score"]))
        ),
        default=0.0,
    )
    d_box = max(
        (int(np.abs(np.subtract(ours[i]["bbox"], theirs[j]["bbox"])).max()) for i, j in good),
        default=0,
    )
    return {
        "ours": len(ours),
        "official": len(theirs),
        "matched_0.99": len(good),
        "max_d_predicted_iou": d_iou,
        "max_d_stability": d_stab,
        "max_d_bbox_px": d_box,
    }


def _report(official: dict[str, Any], ours: dict[str, Any], args: argparse.Namespace) -> None:
    image = _load_image(Path(args.image))
    print()
    print(
        f"image {args.image} ({image.shape[1]}x{image.shape[0]}), {args.model_type} random weights seed {args.seed}, "
        f"points_per_side={args.points_per_side}, pred_iou_thresh=0, stability_score_thresh=0, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'':24}{'official':>12}{'samrt':>12}{'ratio':>10}   target")
    rows = [
        ("end-to-end (s)", "total_s", TARGET_SPEEDUP, "speedup"),
        ("  encoder (s)", "encoder_s", None, "speedup"),
        ("  decoder (s)", "decoder_s", None, "speedup"),
        ("  outside model (s)", "outside_model_s", TARGET_OUTSIDE_MODEL_SPEEDUP, "speedup"),
        ("end-to-end (CPU s)", "total_cpu_s", TARGET_SPEEDUP, "speedup"),
        ("  encoder (CPU s)", "encoder_cpu_s", None, "speedup"),
        ("  decoder (CPU s)", "decoder_cpu_s", None, "speedup"),
        ("  outside model (CPU s)", "outside_model_cpu_s", TARGET_OUTSIDE_MODEL_SPEEDUP, "speedup"),
        ("peak RSS (MiB)", "peak_rss_mib", TARGET_MEMORY_FRACTION, "fraction"),
        ("RSS after load (MiB)", "rss_after_load_mib", None, "fraction"),
    ]
    for label, key, target, kind in rows:
        a, b = official[key], ours[key]
        if kind == "speedup":
            ratio = a / b if b > 0 else float("inf")
            verdict = (
                ""
                if target is None
                else (f">= {target}x  " + ("met" if ratio >= target else "MISSED"))
            )
            print(f"{label:24}{a:12.2f}{b:12.2f}{ratio:9.2f}x   {verdict}")
        else:
            ratio = b / a if a > 0 else float("inf")
            verdict = (
                ""
                if target is None
                else (f"<= {target}  " + ("met" if ratio <= target else "MISSED"))
            )
            print(f"{label:24}{a:12.0f}{b:12.0f}{ratio:10.3f}   {verdict}")
    print(
        f"decoder calls: official {official['decoder_calls'] // 2} batches, samrt {ours['decoder_calls']}"
    )
    print(
        f"1-min load average at the end: official run {official['load_average_1min']:.1f}, "
        f"samrt run {ours['load_average_1min']:.1f} (wall times stretch on a busy machine)"
    )
    agreement = _agreement(ours["records"], official["records"])
    print("agreement:", json.dumps(agreement))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", default=str(DEFAULT_IMAGE))
    parser.add_argument(
        "--model-type", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "tiny"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument(
        "--only", choices=["samrt", "official"], help="run one side (no comparison)"
    )
    parser.add_argument("--child", choices=["samrt", "official", "export"], help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child == "export":
        _export(args)
        return 0
    if args.child:
        result = _run_samrt(args) if args.child == "samrt" else _run_official(args)
        Path(args.out).write_text(json.dumps(result))
        return 0

    engine, checkpoint = _prepare(args)
    results = {}
    for which in ("official", "samrt"):
        if args.only in (None, which):
            results[which] = _child(which, engine, checkpoint, args)
            r = results[which]
            print(
                f"  {which}: {r['total_s']:.1f} s, peak {r['peak_rss_mib']:.0f} MiB, {len(r['records'])} masks"
            )
    if len(results) == 2:
        _report(results["official"], results["samrt"], args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
