"""Soak: 2000 predict calls and 20 generations in one process; resident memory must stay flat.

    python benchmarks/bench_soak.py [--engine DIR]

Reports RSS after the first 100 calls and at the end; the target (issue 7) is a
difference under 5%. Without --engine it uses a tiny SAM with random weights (the
decoder, which dominates per-call memory, is full size in every SAM).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from common import load_photo, proc_status_mib, random_weights_engine

import samrt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", type=Path)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--generations", type=int, default=20)
    args = parser.parse_args()

    engine = args.engine if args.engine is not None else random_weights_engine("tiny")[0]
    model = samrt.Model(engine)
    predictor = samrt.Predictor(model)
    # The generator has its own Predictor over the same model (it resets its image).
    generator = samrt.AutomaticMaskGenerator(
        model, points_per_side=16, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    photos = [load_photo(name) for name in ("truck.jpg", "dog.jpg", "groceries.jpg")]
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    samples: list[tuple[int, float]] = []
    baseline = None
    per_generation = max(1, args.calls // max(1, args.generations))
    for call in range(1, args.calls + 1):
        image = photos[((call - 1) // 50) % len(photos)]
        if call % 50 == 1:
            predictor.set_image(image)
        h, w = image.shape[:2]
        predictor.predict(
            point_coords=rng.uniform(0, [w, h], (1, 2)),
            point_labels=np.array([1]),
            return_logits=call % 7 == 0,
        )
        # Generations fall between the RSS readings (a reading right after one would count
        # the records it returned and the caller just dropped, still in the allocator).
        if call % per_generation == per_generation // 2 and call // per_generation < args.generations:
            generator.generate(image)
        if call == 100:
            baseline = proc_status_mib("VmRSS")
        if call % 250 == 0:
            samples.append((call, proc_status_mib("VmRSS")))
    end = proc_status_mib("VmRSS")
    assert baseline is not None
    growth = (end - baseline) / baseline * 100
    print(f"{args.calls} predict calls and {args.generations} generations in {time.perf_counter() - started:.0f} s")
    print("RSS by call: " + ", ".join(f"{c}: {m:.0f} MB" for c, m in samples))
    print(f"RSS after 100 calls {baseline:.0f} MB, at the end {end:.0f} MB: {growth:+.1f}% "
          f"(target |growth| < 5%: {'met' if abs(growth) < 5 else 'MISSED'})")


if __name__ == "__main__":
    main()
