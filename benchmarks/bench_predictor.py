"""set_image and single-point predict: samrt vs the official SamPredictor, vit_b, one photo.

    python benchmarks/bench_predictor.py [--image truck.jpg] [--repeat 3]

Both run on this machine's CPU in one process, on the same seeded random vit_b weights;
the results are checked to agree before the times are reported.
Targets (issue 2): set_image >= 1.3x faster, single-point predict (full-resolution masks) >= 3x.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from common import load_photo, official_sam, timed, verdict, vit_b_engine

import samrt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="truck.jpg")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    engine, checkpoint = vit_b_engine()
    image = load_photo(args.image)
    point = dict(point_coords=np.array([[image.shape[1] * 0.4, image.shape[0] * 0.45]]), point_labels=np.array([1]))

    from segment_anything import SamPredictor

    official = SamPredictor(official_sam(checkpoint))
    ours = samrt.Predictor(engine)

    with torch.inference_mode():
        t_official_set, _ = timed(lambda: official.set_image(image), args.repeat)
        t_official_predict, theirs = timed(lambda: official.predict(**point), args.repeat * 5)
    t_ours_set, _ = timed(lambda: ours.set_image(image), args.repeat)
    t_ours_predict, mine = timed(lambda: ours.predict(**point), args.repeat * 5)

    embedding_err = float(
        np.abs(ours.get_image_embedding() - official.get_image_embedding().numpy()).max()
    )
    ious = [
        float((a & b).sum() / max(1, (a | b).sum())) for a, b in zip(mine[0], np.asarray(theirs[0]))
    ]
    print(f"samrt {samrt.__version__}, backend {ours.backend_name}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), image {args.image} {image.shape[1]}x{image.shape[0]}")
    print(f"agreement: embedding max abs diff {embedding_err:.2e}; mask IoUs {', '.join(f'{i:.4f}' for i in ious)}")
    print(f"{'':22}{'official':>12}{'samrt':>12}  ratio")
    print(f"{'set_image':22}{t_official_set:>11.3f}s{t_ours_set:>11.3f}s  {verdict(t_official_set / t_ours_set, 1.3)}")
    print(f"{'predict (1 point)':22}{t_official_predict * 1e3:>10.1f}ms{t_ours_predict * 1e3:>10.1f}ms  "
          f"{verdict(t_official_predict / t_ours_predict, 3.0)}")


if __name__ == "__main__":
    main()
