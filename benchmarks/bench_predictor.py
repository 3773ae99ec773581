"""set_image and single-point predict: samrt vs the official SamPredictor, vit_b, one photo.

    python benchmarks/bench_predictor.py [--image truck.jpg] [--repeat 3]

Both run on this machine's CPU in one process, on the same seeded random vit_b weights;
the results are checked to agree before the times are reported.
Targets (issue 2): set_image >= 1.3x faster, single-point predict (full-resolution masks) >= 3x.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import cpu_timed, load_photo, official_sam, verdict, vit_b_engine

import samrt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="truck.jpg")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engine", type=Path, help="engine directory (default: the cached vit_b export)")
    args = parser.parse_args()

    engine, checkpoint = vit_b_engine(export=args.engine is None)
    engine = args.engine or engine
    image = load_photo(args.image)
    point = dict(point_coords=np.array([[image.shape[1] * 0.4, image.shape[0] * 0.45]]), point_labels=np.array([1]))

    from segment_anything import SamPredictor

    official = SamPredictor(official_sam(checkpoint))
    ours = samrt.Predictor(engine)

    # Alternated run by run, so that a change in the machine's load hits both sides alike.
    with torch.inference_mode():
        (t_official_set, c_official_set, _), (t_ours_set, c_ours_set, _) = alternated(
            lambda: official.set_image(image), lambda: ours.set_image(image), args.repeat
        )
        (t_official_predict, c_official_predict, theirs), (t_ours_predict, c_ours_predict, mine) = alternated(
            lambda: official.predict(**point), lambda: ours.predict(**point), args.repeat * 5
        )

    embedding_err = float(
        np.abs(ours.get_image_embedding() - official.get_image_embedding().numpy()).max()
    )
    ious = [
        float((a & b).sum() / max(1, (a | b).sum())) for a, b in zip(mine[0], np.asarray(theirs[0]))
    ]
    print(f"samrt {samrt.__version__}, backend {ours.backend_name}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), image {args.image} {image.shape[1]}x{image.shape[0]}")
    print(f"agreement: embedding max abs diff {embedding_err:.2e}; mask IoUs {', '.join(f'{i:.4f}' for i in ious)}")
    print(f"{'':22}{'official':>12}{'samrt':>12}  wall ratio{'':27}CPU s official / samrt")
    print(f"{'set_image':22}{t_official_set:>11.3f}s{t_ours_set:>11.3f}s  {verdict(t_official_set / t_ours_set, 1.3)}"
          f"  {c_official_set:.2f} / {c_ours_set:.2f}")
    print(f"{'predict (1 point)':22}{t_official_predict * 1e3:>10.1f}ms{t_ours_predict * 1e3:>10.1f}ms  "
          f"{verdict(t_official_predict / t_ours_predict, 3.0)}  {c_official_predict:.3f} / {c_ours_predict:.3f}")


def alternated(
    first: Callable[[], Any], second: Callable[[], Any], repeat: int
) -> tuple[tuple[float, float, Any], tuple[float, float, Any]]:
    """cpu_timed for two functions, one run of each in turn (after one warm-up run each)."""
    runs: list[list[tuple[float, float, Any]]] = [[], []]
    for _ in range(repeat):
        for i, fn in enumerate((first, second)):
            runs[i].append(cpu_timed(fn, 1, warmup=0 if runs[i] else 1))
    return tuple(  # type: ignore[return-value]
        (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs), rs[-1][2]) for rs in runs
    )


if __name__ == "__main__":
    main()
