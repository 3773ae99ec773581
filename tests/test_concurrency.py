"""One shared Model, many threads: every result equals the same call run alone, no deadlock.

The documented model: a Model is shared; each thread has its own Predictor (and
generator) over it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

import samrt

N_THREADS = 8
# The soak size is 100 calls per thread; CI runs fewer to stay in its time budget
# (SAMRT_STRESS_CALLS=100 runs the full size).
CALLS_PER_THREAD = int(os.environ.get("SAMRT_STRESS_CALLS", "24"))
DEADLINE_S = 900


def _image(sample_image: Callable[[str], np.ndarray], index: int) -> np.ndarray:
    names = ["truck.jpg", "dog.jpg", "dogs.jpg", "groceries.jpg"]
    photo = sample_image(names[index % len(names)])
    size = (160 + 8 * index, 120 + 4 * index)  # distinct sizes: a mixed-up image shows
    return np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.BILINEAR))


def _calls(seed: int, shape: tuple[int, ...]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    calls: list[dict[str, Any]] = []
    for i in range(CALLS_PER_THREAD):
        kind = i % 4
        if kind == 0:
            calls.append(dict(point_coords=rng.uniform(0, [w, h], (1, 2)), point_labels=np.array([1])))
        elif kind == 1:
            calls.append(dict(point_coords=rng.uniform(0, [w, h], (2, 2)), point_labels=np.array([1, 0]),
                              multimask_output=False))
        elif kind == 2:
            x0, y0 = rng.uniform(0, [w / 2, h / 2])
            calls.append(dict(box=np.array([x0, y0, x0 + w / 3, y0 + h / 3])))
        else:
            calls.append(dict(point_coords=rng.uniform(0, [w, h], (1, 2)), point_labels=np.array([1]),
                              return_logits=True))
    return calls


def _run(predictor: samrt.Predictor, generator: Any, image: np.ndarray, calls: list[dict[str, Any]]) -> list[Any]:
    predictor.set_image(image)
    results = [predictor.predict(**call) for call in calls]
    results.append(generator.generate(image))
    return results


def _assert_same(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a[:-1], b[:-1]):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    records_a, records_b = a[-1], b[-1]
    assert len(records_a) == len(records_b)
    for ra, rb in zip(records_a, records_b):
        assert ra["bbox"] == rb["bbox"] and ra["area"] == rb["area"]
        assert ra["segmentation"] == rb["segmentation"]
        assert ra["predicted_iou"] == rb["predicted_iou"]


def test_threads_share_one_model(tiny_model: Any, sample_image: Callable[[str], np.ndarray]) -> None:
    model = samrt.Model(tiny_model.engine_dir, backend="onnxruntime-cpu")

    def generator(p: samrt.Predictor) -> Any:
        return samrt.AutomaticMaskGenerator(
            p, points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, output_mode="coco_rle"
        )

    images = [_image(sample_image, i) for i in range(N_THREADS)]
    calls = [_calls(i, images[i].shape) for i in range(N_THREADS)]

    alone = []
    for i in range(N_THREADS):
        p = samrt.Predictor(model)
        alone.append(_run(p, generator(p), images[i], calls[i]))

    together: list[Any] = [None] * N_THREADS
    errors: list[BaseException] = []
    start = threading.Barrier(N_THREADS)

    def worker(i: int) -> None:
        try:
            p = samrt.Predictor(model)
            start.wait()
            together[i] = _run(p, generator(p), images[i], calls[i])
        except BaseException as e:  # reported below, with the thread's index
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=DEADLINE_S)
    if any(t.is_alive() for t in threads):
        pytest.fail(f"threads still running after {DEADLINE_S} s: deadlock?")
    assert not errors, errors
    for i in range(N_THREADS):
        _assert_same(together[i], alone[i])


def test_kernels_run_concurrently_with_the_gil_released() -> None:
    """Post-processing from many threads gives the single-threaded answer."""
    from samrt.postprocess import masks_from_logits

    rng = np.random.default_rng(0)
    low_res = (rng.standard_normal((12, 256, 256)) * 4).astype(np.float32)
    expected = masks_from_logits(low_res, (683, 1024), (1200, 1800))
    out: list[Any] = [None] * 6

    def work(i: int) -> None:
        out[i] = masks_from_logits(low_res, (683, 1024), (1200, 1800))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for got in out:
        np.testing.assert_array_equal(got.areas, expected.areas)
        np.testing.assert_array_equal(got.boxes, expected.boxes)
        for a, b in zip(got.rle_counts, expected.rle_counts):
            np.testing.assert_array_equal(a, b)
