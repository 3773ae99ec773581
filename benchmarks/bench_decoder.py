"""The decoder on a batch of single-point prompts: samrt vs the official SAM, vit_b, one photo.

    python benchmarks/bench_decoder.py [--prompts 64] [--repeat 3] [--engine DIR ...]

This is the automatic mask generator's inner loop (a grid of points, 64 per batch by
default): ours is ``Predictor.predict_low_res``; the official side is
``SamPredictor.predict_torch`` (prompt encoder, mask decoder, and the upsampling of the
low-res logits to the image that the official generator runs on every batch) and, on its
own line, the prompt encoder + mask decoder alone. Both run on the same image embedding
(the official one, given to ours with set_image_embedding) and are checked to agree.
Times are medians of wall-clock seconds, with the process's CPU seconds beside them (the
machine may be shared: CPU time is the steadier measure). With several --engine
directories each is timed in the same run (e.g. an older export against a newer one).
Target (issue 2): the automatic mask generator end-to-end >= 2.5x faster than the
official one; its decoder batches are most of that time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import samrt
import torch
from common import cpu_timed, load_photo, official_sam, vit_b_engine


def grid_points(width: int, height: int, count: int) -> np.ndarray:
    """``count`` points spread over the image as the generator's grid spreads them."""
    side = int(np.ceil(np.sqrt(count)))
    cells = (np.arange(side) + 0.5) / side
    xy = np.stack(np.meshgrid(cells * width, cells * height), axis=-1).reshape(-1, 2)
    return xy[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="truck.jpg")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--engine",
        type=Path,
        action="append",
        help="engine directories to time (default: the cached vit_b)",
    )
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()

    engine, checkpoint = vit_b_engine(export=not args.engine)
    engines = args.engine or [engine]
    image = load_photo(args.image)
    height, width = image.shape[:2]
    points = grid_points(width, height, args.prompts)
    prompts, labels = points[:, None, :], np.ones((len(points), 1))

    from segment_anything import SamPredictor

    official = SamPredictor(official_sam(checkpoint))
    with torch.inference_mode():
        official.set_image(image)
    embedding = official.get_image_embedding().numpy()

    coords = official.transform.apply_coords(points, official.original_size)
    in_points = torch.as_tensor(coords, dtype=torch.float32)[:, None, :]
    in_labels = torch.ones(len(points), 1, dtype=torch.int64)

    def official_predict_torch() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            _, iou, low_res = official.predict_torch(
                in_points, in_labels, multimask_output=True, return_logits=True
            )
        return iou, low_res

    def official_decoder_only() -> tuple[torch.Tensor, torch.Tensor]:
        sam = official.model
        with torch.inference_mode():
            sparse, dense = sam.prompt_encoder(
                points=(in_points, in_labels), boxes=None, masks=None
            )
            low_res, iou = sam.mask_decoder(
                image_embeddings=official.features,
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
        return iou, low_res

    results = {
        "official predict_torch": cpu_timed(official_predict_torch, args.repeat),
        "official decoder only": cpu_timed(official_decoder_only, args.repeat),
    }
    reference_iou, reference_low_res = (t.numpy() for t in results["official decoder only"][2])
    agreement = []
    for path in engines:
        ours = samrt.Predictor(
            samrt.Model(path, "onnxruntime-cpu", intra_op_num_threads=args.threads)
        )
        ours.set_image_embedding(embedding, (height, width))
        label = f"samrt {path.parent.name}/{path.name}"
        results[label] = cpu_timed(lambda p=ours: p.predict_low_res(prompts, labels), args.repeat)
        iou, low_res = results[label][2]
        scale = float(np.abs(reference_low_res).max())
        agreement.append(
            f"{label}: low-res max abs diff {np.abs(low_res - reference_low_res).max() / scale:.1e} "
            f"(relative to max |logit|), IoU max abs diff {np.abs(iou - reference_iou).max():.1e}"
        )

    print(
        f"samrt {samrt.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{args.prompts} single-point prompts on {args.image} {width}x{height}"
    )
    print("agreement with the official decoder:\n  " + "\n  ".join(agreement))
    official_wall = results["official predict_torch"][0]
    print(f"{'':34}{'wall':>9}{'cpu':>9}  wall ratio vs official predict_torch")
    for label, (wall, cpu, _) in results.items():
        ratio = "" if label.startswith("official") else f"  {official_wall / wall:.2f}x"
        print(f"{label:34}{wall:>8.3f}s{cpu:>8.3f}s{ratio}")


if __name__ == "__main__":
    main()
