"""The ``samrt`` command line: export, segment, build, serve, info.

Only ``samrt export`` needs torch; it is imported lazily, so the rest runs on the runtime
dependencies alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import SamrtError


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["export"]:
        return _export(args_list[1:])
    if args_list[:1] == ["build"]:
        from .trt_build import main as build_main

        return build_main(args_list[1:])
    if args_list[:1] == ["serve"]:
        try:
            from .serve.cli import main as serve_main
        except ImportError as e:
            print(f"samrt serve needs FastAPI and uvicorn ({e}); install them with "
                  "`pip install 'samrt[serve]'`", file=sys.stderr)
            return 1
        status: int = serve_main(args_list[1:])
        return status
    parser = _parser()
    args = parser.parse_args(args_list)
    try:
        result: int = args.run(args)
    except (SamrtError, ValueError, TypeError, OSError, ImportError) as e:
        print(f"samrt: error: {e}", file=sys.stderr)
        return 1
    return result


def _parser() -> argparse.ArgumentParser:
    from ._help import HelpFormatter
    from .backends import BACKEND_NAMES

    parser = argparse.ArgumentParser(
        prog="samrt", description="Segment Anything inference engine", formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"samrt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="`samrt COMMAND --help` describes each")

    sub.add_parser("export", help="export a SAM checkpoint to an engine directory (needs samrt[export])")
    sub.add_parser("build", help="compile an engine directory's ONNX graphs to TensorRT engines (needs tensorrt)")
    sub.add_parser("serve", help="HTTP service for interactive segmentation and annotation (needs samrt[serve])")

    seg = sub.add_parser(
        "segment", help="segment images or folders of images", formatter_class=HelpFormatter,
        description="Segment images: with --point or --box, the masks of those prompts; without, "
                    "everything mode (the automatic mask generator, with the official defaults). "
                    "Writes OUT/<image>.json per image.",
    )
    seg.add_argument("inputs", nargs="+",
                     help="image files, folders, glob patterns, .txt files listing images, or URIs (s3://...)")
    seg.add_argument("--engine", required=True, type=Path, help="engine directory (from `samrt export`)")
    seg.add_argument("--out", required=True, type=Path, help="output folder")
    seg.add_argument("--backend", default="auto", choices=("auto", *BACKEND_NAMES),
                     help="runtime that executes the graphs; auto picks the fastest that starts here "
                          "(see `samrt info ENGINE`)")
    seg.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]",
                     help="a point prompt (label 1 = foreground, default; 0 = background); repeatable")
    seg.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box prompt")
    seg.add_argument("--single-mask", action="store_true",
                     help="with --point/--box: return the single best mask instead of three; in "
                          "everything mode: one mask per grid point (multimask_output=False)")
    seg.add_argument("--overlay", action="store_true", help="also write a PNG with the masks drawn")
    seg.add_argument("--format", choices=("json", "coco"), default="json",
                     help="json: one file per image; coco: also one COCO annotations file for the run")
    seg.add_argument("--overwrite", action="store_true", help="redo images whose output is up to date")
    seg.add_argument("--report", type=Path, metavar="FILE",
                     help="write the run report (counts, failures) as JSON here; --ray runs write "
                          "OUT/samrt-run-report.json unless told otherwise")
    seg.add_argument("--quiet", action="store_true",
                     help="no progress display (there is none either when stderr is not a terminal)")
    dist = seg.add_argument_group("on a Ray cluster (needs samrt[ray])")
    dist.add_argument("--ray", nargs="?", const="auto", metavar="auto|local|ADDRESS",
                      help="run on Ray: auto (default) joins the running cluster or starts a local "
                           "one, local starts one for this run, an address joins that cluster")
    dist.add_argument("--actors", type=int, metavar="N",
                      help="engine actors (default: as many as the cluster's CPUs, or GPUs, allow)")
    dist.add_argument("--threads-per-actor", type=int, metavar="T",
                      help="CPUs (ONNX Runtime intra-op threads) per actor; default 1")
    dist.add_argument("--gpus-per-actor", type=float, metavar="G",
                      help="GPUs per actor (e.g. 1, or 0.5 to share one); actors use the GPU backend "
                           "(default: none)")
    dist.add_argument("--memory-per-actor", type=float, metavar="GB",
                      help="memory Ray reserves for each actor, limiting actors per machine "
                           "(default: none reserved)")
    gen = seg.add_argument_group(
        "automatic mask generation (everything mode: no --point, no --box)",
        "The official generators' parameters and defaults (SamAutomaticMaskGenerator's, "
        "SAM2AutomaticMaskGenerator's on a SAM 2.1 engine). A mask is kept when its "
        "predicted IoU is above --pred-iou-thresh and its stability score at least "
        "--stability-score-thresh; lower them when an image gets no masks (random-weights "
        "engines need 0).",
    )
    gen.add_argument("--points-per-side", type=int, metavar="N", default=32,
                     help="the prompt grid has N x N points over the image (over each crop too)")
    gen.add_argument("--points-per-batch", type=int, metavar="N", default=64,
                     help="points the decoder runs at once (memory, not results)")
    gen.add_argument("--pred-iou-thresh", type=float, metavar="X", default=None,
                     help="keep masks whose predicted IoU is above this (0: keep all) "
                          "(default: the model family's, 0.88 for SAM, 0.8 for SAM 2.1)")
    gen.add_argument("--stability-score-thresh", type=float, metavar="X", default=0.95,
                     help="keep masks whose stability score is at least this (0: keep all)")
    gen.add_argument("--stability-score-offset", type=float, metavar="X", default=1.0,
                     help="logit offset the stability score thresholds the mask at")
    gen.add_argument("--box-nms-thresh", type=float, metavar="X", default=0.7,
                     help="box IoU above which NMS drops the lower-scored of two masks in a crop")
    gen.add_argument("--crop-n-layers", type=int, metavar="N", default=0,
                     help="layers of overlapping crops to run on as well (layer i: (2**i)**2 crops)")
    gen.add_argument("--crop-nms-thresh", type=float, metavar="X", default=0.7,
                     help="box IoU above which NMS across crops drops a mask")
    gen.add_argument("--crop-overlap-ratio", type=float, metavar="X", default=512 / 1500,
                     help="overlap of neighbouring crops, as a fraction of the short side "
                          "(default: 512/1500)")
    gen.add_argument("--crop-n-points-downscale-factor", type=int, metavar="N", default=1,
                     help="crop layer i has points-per-side / FACTOR**i points per side")
    gen.add_argument("--min-mask-region-area", type=int, metavar="N", default=0,
                     help="remove holes and islands smaller than this many pixels, then NMS again "
                          "(0: off)")
    gen.add_argument("--use-m2m", action="store_true",
                     help="refine each candidate once with its own mask as the mask input, then "
                          "filter (SAM2AutomaticMaskGenerator's use_m2m)")
    gen.add_argument("--mask-threshold", type=float, metavar="X", default=None,
                     help="logit above which a pixel is in the mask (default: the engine's, 0.0)")
    seg.set_defaults(run=_segment)

    info = sub.add_parser("info", help="describe an engine directory and the backends available",
                          formatter_class=HelpFormatter)
    info.add_argument("engine", type=Path, help="engine directory (from `samrt export`)")
    info.set_defaults(run=_info)
    return parser


# -- export ------------------------------------------------------------------------------


def _export(argv: list[str]) -> int:
    try:
        from samrt_export.cli import main as export_main
    except ImportError as e:
        print(
            f"samrt export needs torch and segment-anything ({e}); install them with "
            "`pip install 'samrt[export]'`",
            file=sys.stderr,
        )
        return 1
    status: int = export_main(argv)
    return status


# -- info --------------------------------------------------------------------------------


def _info(args: argparse.Namespace) -> int:
    from .backends.onnxruntime import available_providers
    from .manifest import load_manifest

    manifest = load_manifest(args.engine, verify=True)
    print(f"engine directory: {args.engine}")
    print(f"model: {manifest.model_type}  exported by samrt {manifest.samrt_version}  opset {manifest.opset}")
    for precision, models in sorted(manifest.variants.items()):
        for role, model in sorted(models.items()):
            print(f"  {precision} {role}: {model.file} (sha256 {model.sha256[:12]}…, verified)")
    print(f"onnxruntime providers here: {', '.join(available_providers())}")
    return 0


# -- segment -----------------------------------------------------------------------------


def _segment(args: argparse.Namespace) -> int:
    from .segment import collect_jobs, segment_local

    options = _segment_options(args)
    jobs = collect_jobs(args.inputs)
    if not jobs:
        print("samrt: error: no images found in the inputs", file=sys.stderr)
        return 1
    if args.ray is None:
        for option in ("actors", "threads_per_actor", "gpus_per_actor", "memory_per_actor"):
            if getattr(args, option) is not None:
                flag = "--" + option.replace("_", "-")
                raise ValueError(f"{flag} is an option of --ray runs")
        progress = _Progress(len(jobs), quiet=args.quiet)
        try:
            summary = segment_local(
                jobs, args.engine, args.out, options,
                on_image=lambda job: progress.update(Path(job.source).name), on_batch=progress.batch,
            )
        finally:
            progress.close()
        if args.report is not None:
            summary.write(args.report)
    else:
        # Only here is Ray imported: without --ray samrt never needs it.
        from .ray import segment_dataset

        summary = segment_dataset(
            jobs,
            args.engine,
            args.out,
            options,
            address=args.ray,
            actors=args.actors,
            threads_per_actor=args.threads_per_actor or 1,
            gpus_per_actor=args.gpus_per_actor or 0.0,
            memory_per_actor=None if args.memory_per_actor is None else int(args.memory_per_actor * 2**30),
            report=args.report,
            on_cluster=lambda text: print(f"samrt segment: {text}", file=sys.stderr),
        )
    print(summary.line())
    for empty in summary.no_masks:
        print(f"samrt segment: 0 masks for {empty['image']}: {empty['why']}", file=sys.stderr)
    for failure in summary.failures:
        print(f"samrt: failed: {failure['error']}", file=sys.stderr)
    return 1 if summary.failures else 0


def _segment_options(args: argparse.Namespace) -> Any:
    from .segment import SegmentOptions

    points = []
    for text in args.point:
        values = _floats(text, "--point")
        if len(values) not in (2, 3):
            raise ValueError(f"--point takes X,Y or X,Y,LABEL, got {text!r}")
        points.append(tuple(values))
    box = None
    if args.box is not None:
        values = _floats(args.box, "--box")
        if len(values) != 4:
            raise ValueError(f"--box takes X0,Y0,X1,Y1, got {args.box!r}")
        box = (values[0], values[1], values[2], values[3])
    return SegmentOptions(
        backend=args.backend,
        points=tuple(points),
        box=box,
        single_mask=args.single_mask,
        overlay=args.overlay,
        format=args.format,
        overwrite=args.overwrite,
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        stability_score_offset=args.stability_score_offset,
        box_nms_thresh=args.box_nms_thresh,
        crop_n_layers=args.crop_n_layers,
        crop_nms_thresh=args.crop_nms_thresh,
        crop_overlap_ratio=args.crop_overlap_ratio,
        crop_n_points_downscale_factor=args.crop_n_points_downscale_factor,
        min_mask_region_area=args.min_mask_region_area,
        use_m2m=args.use_m2m,
        mask_threshold=args.mask_threshold,
    )


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{option} takes comma-separated numbers, got {text!r}") from None


class _Progress:
    """``[3/10] photo.jpg: batch 5/16`` on a terminal; silent when stderr is not one."""

    def __init__(self, total: int, quiet: bool = False) -> None:
        from ._progress import StatusLine

        self.total = total
        self.count = 0
        self.name = ""
        self.line = StatusLine("", quiet=quiet)

    def update(self, name: str) -> None:
        self.count += 1
        self.name = name
        self.line.show(f"[{self.count}/{self.total}] {name}")

    def batch(self, done: int, total: int) -> None:
        self.line.show(f"[{self.count}/{self.total}] {self.name}: batch {done}/{total}")

    def close(self) -> None:
        self.line.close()


if __name__ == "__main__":
    raise SystemExit(main())
