"""The ``samrt`` command line: export, segment, build, serve, info.

Only ``samrt export`` needs torch; it is imported lazily, so the rest runs on the runtime
dependencies alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import __version__
from .errors import SamrtError
from .imageio import IMAGE_SUFFIXES, ImageReadError, load_image

_TMP_MARK = ".samrt-tmp"


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
    except (SamrtError, ValueError, TypeError, OSError) as e:
        print(f"samrt: error: {e}", file=sys.stderr)
        return 1
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samrt", description="Segment Anything inference engine")
    parser.add_argument("--version", action="version", version=f"samrt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("export", help="export a SAM checkpoint to an engine directory (needs samrt[export])")
    sub.add_parser("build", help="compile an engine directory's ONNX graphs to TensorRT engines (needs tensorrt)")
    sub.add_parser("serve", help="HTTP service for interactive segmentation and annotation (needs samrt[serve])")

    seg = sub.add_parser("segment", help="segment images or folders of images")
    seg.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    seg.add_argument("--engine", required=True, type=Path, help="engine directory (from `samrt export`)")
    seg.add_argument("--out", required=True, type=Path, help="output folder")
    seg.add_argument("--backend", default="auto")
    seg.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]",
                     help="a point prompt (label 1 = foreground, default; 0 = background); repeatable")
    seg.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box prompt")
    seg.add_argument("--single-mask", action="store_true",
                     help="with --point/--box: return the single best mask instead of three")
    seg.add_argument("--overlay", action="store_true", help="also write a PNG with the masks drawn")
    seg.add_argument("--format", choices=("json", "coco"), default="json",
                     help="json: one file per image; coco: also one COCO annotations file for the run")
    seg.add_argument("--overwrite", action="store_true", help="redo images whose output is up to date")
    gen = seg.add_argument_group("automatic mask generation (default mode)")
    gen.add_argument("--points-per-side", type=int, default=32)
    gen.add_argument("--points-per-batch", type=int, default=64)
    gen.add_argument("--pred-iou-thresh", type=float, default=0.88)
    gen.add_argument("--stability-score-thresh", type=float, default=0.95)
    gen.add_argument("--stability-score-offset", type=float, default=1.0)
    gen.add_argument("--box-nms-thresh", type=float, default=0.7)
    gen.add_argument("--crop-n-layers", type=int, default=0)
    gen.add_argument("--crop-nms-thresh", type=float, default=0.7)
    gen.add_argument("--crop-overlap-ratio", type=float, default=512 / 1500)
    gen.add_argument("--crop-n-points-downscale-factor", type=int, default=1)
    gen.add_argument("--min-mask-region-area", type=int, default=0)
    seg.set_defaults(run=_segment)

    info = sub.add_parser("info", help="describe an engine directory and the backends available")
    info.add_argument("engine", type=Path)
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


@dataclass(frozen=True)
class _Job:
    image: Path
    rel: Path  # output path stem, relative to --out

    def output(self, out_dir: Path, suffix: str) -> Path:
        return out_dir / self.rel.with_name(self.rel.name + suffix)


def _segment(args: argparse.Namespace) -> int:
    from .predictor import Model, Predictor

    prompts = _parse_prompts(args)
    jobs = list(_collect_jobs(args.inputs))
    if not jobs:
        print("samrt: error: no images found in the inputs", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(args.out)

    model = Model(args.engine, args.backend)
    predictor = Predictor(model)
    generator = None
    if prompts is None:
        from .amg import AutomaticMaskGenerator

        generator = AutomaticMaskGenerator(
            predictor,
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
            output_mode="coco_rle",
        )

    progress = _Progress(len(jobs))
    failures: list[str] = []
    done = skipped = n_masks = 0
    started = time.perf_counter()
    for job in jobs:
        progress.update(job.image.name)
        json_path = job.output(args.out, ".json")
        if not args.overwrite and _up_to_date(json_path, job.image) and (
            not args.overlay or _up_to_date(job.output(args.out, ".png"), job.image)
        ):
            skipped += 1
            continue
        try:
            image = load_image(job.image)
        except ImageReadError as e:
            failures.append(str(e))
            continue
        try:
            if generator is not None:
                records = generator.generate(image)
            else:
                assert prompts is not None  # no generator means prompts were given
                records = _predict_records(predictor, image, prompts, multimask=not args.single_mask)
        except (SamrtError, ValueError) as e:
            failures.append(f"{job.image}: {e}")
            continue
        result = {
            "image": {"file_name": str(job.image), "height": int(image.shape[0]), "width": int(image.shape[1])},
            "annotations": records,
        }
        if args.overlay:
            _write_atomic(job.output(args.out, ".png"), _overlay_png(image, records))
        _write_atomic(json_path, (json.dumps(result) + "\n").encode())
        done += 1
        n_masks += len(records)
    progress.close()

    if args.format == "coco":
        _write_coco(args.out, jobs)
    elapsed = time.perf_counter() - started
    per_image = f", {elapsed / done:.2f} s per image" if done else ""
    print(
        f"samrt segment: {done} segmented, {skipped} up to date, {len(failures)} failed; "
        f"{n_masks} masks in {elapsed:.1f} s{per_image}"
    )
    for failure in failures:
        print(f"samrt: failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _parse_prompts(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.point and args.box is None:
        return None
    prompts: dict[str, Any] = {}
    if args.point:
        coords, labels = [], []
        for text in args.point:
            values = _floats(text, "--point")
            if len(values) not in (2, 3):
                raise ValueError(f"--point takes X,Y or X,Y,LABEL, got {text!r}")
            coords.append(values[:2])
            labels.append(values[2] if len(values) == 3 else 1.0)
        prompts["point_coords"] = np.array(coords)
        prompts["point_labels"] = np.array(labels)
    if args.box is not None:
        values = _floats(args.box, "--box")
        if len(values) != 4:
            raise ValueError(f"--box takes X0,Y0,X1,Y1, got {args.box!r}")
        prompts["box"] = np.array(values)
    return prompts


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{option} takes comma-separated numbers, got {text!r}") from None


def _predict_records(
    predictor: Any, image: npt.NDArray[np.uint8], prompts: dict[str, Any], *, multimask: bool
) -> list[dict[str, Any]]:
    from .masks import compress_rle
    from .postprocess import masks_from_logits

    predictor.set_image(image)
    box = prompts.get("box")
    scores, low_res = predictor.predict_low_res(
        point_coords=None if "point_coords" not in prompts else prompts["point_coords"][None],
        point_labels=None if "point_labels" not in prompts else prompts["point_labels"][None],
        boxes=None if box is None else box[None],
        multimask_output=multimask,
    )
    stats = masks_from_logits(low_res[0], predictor.input_size, predictor.original_size)
    h, w = predictor.original_size
    records = []
    for i in range(scores.shape[1]):
        x0, y0, x1, y1 = (int(v) for v in stats.boxes[i])
        counts = stats.rle_counts[i]
        assert counts is not None  # no rle_min_stability was given, so every mask is encoded
        rle = compress_rle({"size": [h, w], "counts": counts.tolist()})
        records.append(
            {
                "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                "area": int(stats.areas[i]),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "predicted_iou": float(scores[0, i]),
                "point_coords": prompts["point_coords"].tolist() if "point_coords" in prompts else [],
                "stability_score": float(stats.stability[i]),
                "crop_box": [0, 0, w, h],
            }
        )
    return records


def _collect_jobs(inputs: Sequence[Path]) -> Iterator[_Job]:
    for path in inputs:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if file.suffix.lower() in IMAGE_SUFFIXES:
                    yield _Job(file, file.relative_to(path))
        else:
            # Named files are attempted whatever their suffix; a missing one is a failure
            # reported at the end, like an unreadable one.
            yield _Job(path, Path(path.name))


def _up_to_date(output: Path, source: Path) -> bool:
    try:
        return output.stat().st_mtime >= source.stat().st_mtime
    except OSError:
        return False


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_MARK)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_stale_temporaries(out_dir: Path) -> None:
    """A run killed mid-write leaves its temporary file behind; nothing else ever does."""
    for tmp in out_dir.rglob(f"*{_TMP_MARK}"):
        tmp.unlink(missing_ok=True)


def _write_coco(out_dir: Path, jobs: Sequence[_Job]) -> None:
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, job in enumerate(jobs, start=1):
        try:
            result = json.loads(job.output(out_dir, ".json").read_text())
        except (OSError, json.JSONDecodeError):
            continue  # failed images have no output and no entry
        images.append({"id": image_id, **result["image"]})
        for record in result["annotations"]:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "score": record["predicted_iou"],
                    **record,
                }
            )
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
    _write_atomic(out_dir / "coco_annotations.json", (json.dumps(coco) + "\n").encode())


def _overlay_png(image: npt.NDArray[np.uint8], records: Sequence[dict[str, Any]]) -> bytes:
    import io

    from PIL import Image

    from .masks import decode_rle

    canvas = image.astype(np.float32)
    rng = np.random.default_rng(0)  # fixed colours: reruns give identical files
    # Largest first, so small masks stay visible on top.
    for record in sorted(records, key=lambda r: -int(r["area"])):
        seg = record["segmentation"]
        mask = decode_rle({"size": seg["size"], "counts": seg["counts"]})
        colour = rng.integers(40, 256, size=3).astype(np.float32)
        canvas[mask] = 0.45 * canvas[mask] + 0.55 * colour
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        canvas[mask & ~inner] = colour
    buffer = io.BytesIO()
    Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class _Progress:
    """A one-line progress display on a terminal; silent when stderr is not one."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.enabled = sys.stderr.isatty()

    def update(self, name: str) -> None:
        self.count += 1
        if self.enabled:
            sys.stderr.write(f"\r\033[K[{self.count}/{self.total}] {name}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


if __name__ == "__main__":
    raise SystemExit(main())
