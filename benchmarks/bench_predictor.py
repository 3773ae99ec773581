"""Interactive latency: samrt against the official SamPredictor and a plain ONNX export.

    python benchmarks/bench_predictor.py [--image truck.jpg] [--repeat 3] [--predicts 15]

Three contestants, one process, the same seeded random vit_b weights, on this machine's CPU:

* official: segment_anything.SamPredictor (torch).
* plain export: the official modules exported to ONNX the way Meta's export script and
  samexporter do (the image encoder alone; SamOnnxModel, which includes the upsampling
  to the original size) and run by ONNX Runtime with its default session options; the
  preprocessing (resize, normalize, pad) in numpy, as samexporter does. Exported here.
* samrt: samrt.Predictor on its own export.

They run alternately, one call each in turn, after a warm-up call, so that a change of the
machine's load hits all three alike, each call after a short rest (SETTLE_SECONDS); medians
are reported, with the load average before and after. Every pair's masks are checked to
agree before any time is printed.

Targets (issue 11): one-point multimask predict with full-resolution masks >= 4x the
official and >= 2.5x the plain export; predict_low_res >= 6x the official predict;
set_image >= 2x the official and >= 1.3x the plain export.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import (
    CACHE,
    SETTLE_SECONDS,
    load_average,
    load_photo,
    official_sam,
    verdict,
    vit_b_engine,
)

import samrt
from samrt import transforms


def plain_export(checkpoint: Path) -> Path:
    """The official image encoder and SamOnnxModel (multimask, upsampled to the original
    size), exported once with torch.onnx's TorchScript exporter, opset 17."""
    import segment_anything
    from segment_anything.utils.onnx import SamOnnxModel

    out = CACHE / "vit_b-seed0" / f"plain-{segment_anything.__name__}-torch{torch.__version__}"
    encoder, decoder = out / "encoder.onnx", out / "decoder.onnx"
    if encoder.exists() and decoder.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    sam = official_sam(checkpoint)
    size = sam.image_encoder.img_size
    with torch.no_grad():
        torch.onnx.export(
            sam.image_encoder,
            (torch.zeros(1, 3, size, size),),
            str(encoder) + ".tmp",
            input_names=["image"],
            output_names=["image_embeddings"],
            opset_version=17,
            dynamo=False,
        )
        onnx_model = SamOnnxModel(sam, return_single_mask=False)
        embed_dim = sam.prompt_encoder.embed_dim
        embed_size = sam.prompt_encoder.image_embedding_size
        mask_size = [4 * x for x in embed_size]
        inputs = {
            "image_embeddings": torch.randn(1, embed_dim, *embed_size),
            "point_coords": torch.randint(0, 1024, (1, 5, 2), dtype=torch.float),
            "point_labels": torch.randint(0, 4, (1, 5), dtype=torch.float),
            "mask_input": torch.randn(1, 1, *mask_size),
            "has_mask_input": torch.tensor([1], dtype=torch.float),
            "orig_im_size": torch.tensor([1500, 2250], dtype=torch.float),
        }
        torch.onnx.export(
            onnx_model,
            tuple(inputs.values()),
            str(decoder) + ".tmp",
            input_names=list(inputs),
            output_names=["masks", "iou_predictions", "low_res_masks"],
            dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
            opset_version=17,
            dynamo=False,
        )
    for path in (encoder, decoder):
        os.replace(str(path) + ".tmp", path)
    return out


class PlainExport:
    """What a samexporter user runs: two ONNX Runtime sessions and numpy glue."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.encoder = ort.InferenceSession(str(folder / "encoder.onnx"), options, providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(str(folder / "decoder.onnx"), options, providers=["CPUExecutionProvider"])
        self.embedding: np.ndarray | None = None
        self.original_size = (0, 0)

    def set_image(self, image: np.ndarray) -> None:
        size = samrt.contract.IMAGE_SIZE
        resized = transforms.resize_longest_side(image, size)
        batch = transforms.normalize_and_pad(resized, samrt.contract.PIXEL_MEAN, samrt.contract.PIXEL_STD, size)
        (self.embedding,) = self.encoder.run(None, {"image": batch})
        self.original_size = image.shape[:2]

    def predict(self, point_coords: np.ndarray, point_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Multimask, full-resolution boolean masks and scores for clicked points."""
        size = samrt.contract.IMAGE_SIZE
        coords = transforms.apply_coords(point_coords[None].astype(np.float64), self.original_size, size)
        # The official ONNX example's padding point (label -1) after the clicks.
        coords = np.concatenate([coords, np.zeros((1, 1, 2))], axis=1).astype(np.float32)
        labels = np.concatenate([point_labels[None], [[-1]]], axis=1).astype(np.float32)
        masks, scores, _ = self.decoder.run(
            None,
            {
                "image_embeddings": self.embedding,
                "point_coords": coords,
                "point_labels": labels,
                "mask_input": np.zeros((1, 1, 256, 256), np.float32),
                "has_mask_input": np.zeros(1, np.float32),
                "orig_im_size": np.array(self.original_size, np.float32),
            },
        )
        # Without return_single_mask the graph gives all four outputs; the official
        # multimask answer is outputs 1..3 (output 0 is the single-mask one).
        return masks[0, 1:] > 0.0, scores[0, 1:]


def alternated(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, tuple[float, float, Any]]:
    """Median wall and process-CPU seconds of each function, and its last result; one call
    of each in turn, after one warm-up call of each, each after SETTLE_SECONDS at rest."""
    results = {name: fn() for name, fn in fns.items()}
    walls: dict[str, list[float]] = {name: [] for name in fns}
    cpus: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            time.sleep(SETTLE_SECONDS)
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = fn()
            walls[name].append(time.perf_counter() - start)
            cpus[name].append(time.process_time() - start_cpu)
    return {name: (statistics.median(walls[name]), statistics.median(cpus[name]), results[name]) for name in fns}


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="truck.jpg")
    parser.add_argument("--repeat", type=int, default=3, help="set_image calls of each contestant")
    parser.add_argument("--predicts", type=int, default=15, help="predict calls of each contestant (>= 15)")
    parser.add_argument("--engine", type=Path, help="samrt engine directory (default: the cached vit_b export)")
    args = parser.parse_args()

    engine, checkpoint = vit_b_engine(export=args.engine is None)
    engine = args.engine or engine
    plain_dir = plain_export(checkpoint)
    image = load_photo(args.image)
    clicks = np.array([[image.shape[1] * 0.4, image.shape[0] * 0.45]])
    labels = np.array([1])

    from segment_anything import SamPredictor

    official = SamPredictor(official_sam(checkpoint))
    plain = PlainExport(plain_dir)
    ours = samrt.Predictor(engine, "onnxruntime-cpu")
    print(load_average(), "(before)")

    with torch.inference_mode():
        set_times = alternated(
            {
                "official": lambda: official.set_image(image),
                "plain": lambda: plain.set_image(image),
                "samrt": lambda: ours.set_image(image),
            },
            args.repeat,
        )
        predict_times = alternated(
            {
                "official": lambda: official.predict(point_coords=clicks, point_labels=labels),
                "plain": lambda: plain.predict(clicks, labels),
                "samrt": lambda: ours.predict(point_coords=clicks, point_labels=labels),
                "samrt_low_res": lambda: ours.predict_low_res(clicks[None], labels[None]),
            },
            args.predicts,
        )
    print(load_average(), "(after)")

    # Agreement first: a fast wrong answer is no result.
    theirs, mine, plains = (predict_times[k][2] for k in ("official", "samrt", "plain"))
    embedding_err = float(np.abs(ours.get_image_embedding() - official.get_image_embedding().numpy()).max())
    ours_vs_official = [mask_iou(a, b) for a, b in zip(mine[0], np.asarray(theirs[0]))]
    plain_vs_official = [mask_iou(a, b) for a, b in zip(plains[0], np.asarray(theirs[0]))]
    low_res_err = float(np.abs(predict_times["samrt_low_res"][2][1][0] - theirs[2]).max())
    print(
        f"samrt {samrt.__version__} ({ours.backend_name}), torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{os.cpu_count()} CPUs, image {args.image} {image.shape[1]}x{image.shape[0]}"
    )
    print(
        f"agreement: embedding max abs diff {embedding_err:.2e}; low-res logits max abs diff {low_res_err:.2e}; "
        f"mask IoU vs official: samrt {min(ours_vs_official):.4f}, plain export {min(plain_vs_official):.4f}"
    )
    if min(ours_vs_official) < 0.99 or min(plain_vs_official) < 0.99:
        raise SystemExit("the masks disagree: no timing is reported")

    def row(label: str, times: dict[str, tuple[float, float, Any]], ours_key: str, unit: float, suffix: str) -> None:
        cells = "".join(f"{times[k][0] * unit:>11.1f}{suffix}" for k in ("official", "plain")) + f"{times[ours_key][0] * unit:>11.1f}{suffix}"
        cpu = " / ".join(f"{times[k][1]:.3f}" for k in ("official", "plain", ours_key))
        print(f"{label:34}{cells}   CPU s {cpu}")

    print(f"{'median wall time':34}{'official':>13}{'plain':>13}{'samrt':>13}")
    row("set_image", set_times, "samrt", 1, "s ")
    row("predict, 1 point, 3 full-res masks", predict_times, "samrt", 1e3, "ms")
    print(f"{'predict_low_res, 1 point':34}{'':26}{predict_times['samrt_low_res'][0] * 1e3:>11.1f}ms")
    o, p, s = (set_times[k][0] for k in ("official", "plain", "samrt"))
    print(f"set_image vs official:        {verdict(o / s, 2.0)}")
    print(f"set_image vs plain export:    {verdict(p / s, 1.3)}")
    o, p, s = (predict_times[k][0] for k in ("official", "plain", "samrt"))
    print(f"predict vs official:          {verdict(o / s, 4.0)}")
    print(f"predict vs plain export:      {verdict(p / s, 2.5)}")
    print(f"predict_low_res vs official:  {verdict(o / predict_times['samrt_low_res'][0], 6.0)}")


if __name__ == "__main__":
    main()
