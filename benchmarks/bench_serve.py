"""samrt serve over HTTP vs the server a user would otherwise write, in one run.

The baseline (below, in this file) is a minimal FastAPI server around the official
SamPredictor: one predictor behind a lock, an upload that runs set_image, a predict that
returns the masks as COCO RLE (pycocotools). Each server runs alone in its own process on
127.0.0.1 (random port), on the same seeded random weights; the client is this process.

    python benchmarks/bench_serve.py                     # vit_b, ../shared/images/truck.jpg
    python benchmarks/bench_serve.py --model-type tiny --clicks 10 --first 1   # smoke run

Reports, for the image already encoded: click-to-mask latency p50/p95 for full masks (RLE)
on both servers and for samrt's preview (256x256) form; the first mask on a new image
(upload + predict) against set_image + one predict in process; throughput with 4
concurrent clients. Targets (issue 12): full-mask click p50 >= 3x faster than the
baseline; preview p50 <= 40 ms; first mask within 10% of set_image + one predict.
"""

# No `from __future__ import annotations`: FastAPI reads the baseline handlers' annotations,
# which name classes local to baseline_app.
import argparse
import hashlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from common import IMAGES, random_weights_engine

TARGET_CLICK_SPEEDUP = 3.0
TARGET_PREVIEW_P50_MS = 40.0
TARGET_FIRST_MASK_OVERHEAD = 0.10


# -- the baseline a user would write --------------------------------------------------------


def baseline_app(model_type: str, checkpoint: str) -> Any:
    """A minimal FastAPI server around the official SamPredictor."""
    import io

    import torch
    from fastapi import FastAPI, HTTPException, Request
    from PIL import Image
    from pycocotools import mask as mask_utils
    from pydantic import BaseModel
    from samrt_export import build_sam
    from segment_anything import SamPredictor

    predictor = SamPredictor(build_sam(model_type, checkpoint=checkpoint))
    lock = threading.Lock()
    current: dict[str, str] = {}
    app = FastAPI()

    class Prompt(BaseModel):
        points: list[list[float]]
        labels: list[int]
        multimask: bool = True

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/images")
    async def upload(request: Request) -> dict[str, Any]:
        data = await request.body()
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        image_id = hashlib.sha256(data).hexdigest()

        def encode() -> None:
            with lock, torch.inference_mode():
                predictor.set_image(image)
                current["id"] = image_id

        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(encode)
        return {"image_id": image_id, "width": image.shape[1], "height": image.shape[0]}

    @app.post("/images/{image_id}/predict")
    def predict(image_id: str, prompt: Prompt) -> dict[str, Any]:
        with lock, torch.inference_mode():
            if current.get("id") != image_id:
                raise HTTPException(404, "image not set")
            masks, scores, _ = predictor.predict(
                point_coords=np.array(prompt.points), point_labels=np.array(prompt.labels),
                multimask_output=prompt.multimask,
            )
        out = []
        for mask, score in zip(masks, scores, strict=True):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            out.append({"rle": {"size": rle["size"], "counts": rle["counts"].decode()}, "score": float(score),
                        "area": int(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist()})
        return {"masks": out}

    return app


def _run_baseline_server(model_type: str, checkpoint: str) -> None:
    import socket

    import uvicorn

    app = baseline_app(model_type, checkpoint)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY, as uvicorn's own
    sock.bind(("127.0.0.1", 0))
    print(f"baseline listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="none")).run(sockets=[sock])


# -- servers as processes ---------------------------------------------------------------------


class Server:
    def __init__(self, args: list[str]) -> None:
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        deadline = time.monotonic() + 600
        self.url = ""
        while time.monotonic() < deadline and not self.url:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                raise RuntimeError(f"{args} exited with {self.process.returncode}")
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                self.url = match.group(1)
        threading.Thread(target=lambda: [None for _ in self.process.stdout or []], daemon=True).start()
        import httpx

        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError(f"{args} not healthy")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


# -- measurements -------------------------------------------------------------------------------


def _percentiles(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), float(np.percentile(values, 95))


def _clicks(n: int, width: int, height: int, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return [[float(rng.uniform(0.1, 0.9) * width), float(rng.uniform(0.1, 0.9) * height)] for _ in range(n)]


def _timed_posts(client: Any, path: str, bodies: list[dict[str, Any]]) -> list[float]:
    times = []
    for body in bodies:
        started = time.perf_counter()
        r = client.post(path, json=body)
        r.raise_for_status()
        r.content  # noqa: B018 - the body is part of the latency
        times.append(time.perf_counter() - started)
    return times


def _with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG (same pixels) with a COM segment: other bytes, so a new image id."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def measure(url: str, predict_path: Callable[[str], str], upload_path: str, data: bytes, width: int, height: int,
            args: argparse.Namespace, preview: bool) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=600) as client:
        image_id = client.post(upload_path, content=data).json()["image_id"]
        warm = [{"points": [p], "labels": [1]} for p in _clicks(3, width, height, seed=99)]
        _timed_posts(client, predict_path(image_id), warm)
        bodies = [{"points": [p], "labels": [1]} for p in _clicks(args.clicks, width, height)]
        out["click"] = _percentiles(_timed_posts(client, predict_path(image_id), bodies))
        if preview:
            _timed_posts(client, predict_path(image_id).replace("/predict", "/preview"), warm)
            out["preview"] = _percentiles(
                _timed_posts(client, predict_path(image_id).replace("/predict", "/preview"), bodies))

        firsts = []
        for i in range(args.first):
            fresh = _with_comment(data, f"bench run {i} {time.time()}")
            started = time.perf_counter()
            new_id = client.post(upload_path, content=fresh).json()["image_id"]
            r = client.post(predict_path(new_id), json=bodies[0])
            r.raise_for_status()
            firsts.append(time.perf_counter() - started)
        out["first"] = statistics.median(firsts)

        # Throughput: 4 clients clicking on the encoded image (the baseline's current one
        # is the last uploaded, so it is encoded again first).
        image_id = client.post(upload_path, content=data).json()["image_id"]

    def run_client(seed: int) -> int:
        with httpx.Client(base_url=url, timeout=600) as c:
            for body in [{"points": [p], "labels": [1]} for p in _clicks(args.clicks, width, height, seed=seed)]:
                c.post(predict_path(image_id), json=body).raise_for_status()
        return args.clicks

    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        total = sum(pool.map(run_client, range(1, 5)))
    out["throughput"] = total / (time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="truck.jpg")
    parser.add_argument("--model-type", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "tiny"])
    parser.add_argument("--clicks", type=int, default=40, help="clicks per latency series and per client")
    parser.add_argument("--first", type=int, default=3, help="new images for the first-mask time")
    parser.add_argument("--baseline-server", nargs=2, metavar=("MODEL_TYPE", "CHECKPOINT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        _run_baseline_server(*args.baseline_server)
        return

    import samrt
    from samrt.imageio import load_image

    engine, checkpoint = random_weights_engine(args.model_type)
    path = IMAGES / args.image
    data = path.read_bytes()
    image = load_image(path)
    height, width = image.shape[:2]

    # In process, for the first-mask target: set_image + one predict.
    predictor = samrt.Predictor(engine)
    point = _clicks(1, width, height)[0]
    direct = []
    for _ in range(args.first + 1):
        started = time.perf_counter()
        predictor.set_image(load_image(path))
        predictor.predict(point_coords=np.array([point]), point_labels=np.array([1]))
        direct.append(time.perf_counter() - started)
    direct_s = statistics.median(direct[1:])
    del predictor

    with tempfile.TemporaryDirectory() as tmp:
        ours = Server([sys.executable, "-m", "samrt.cli", "serve", "--engine", str(engine), "--db",
                       os.path.join(tmp, "bench.sqlite3"), "--port", "0", "--prefetch", "0", "--log-level", "warning"])
        try:
            samrt_numbers = measure(ours.url, lambda i: f"/v1/images/{i}/predict", "/v1/images", data, width, height,
                                    args, preview=True)
        finally:
            ours.stop()
    theirs = Server([sys.executable, __file__, "--baseline-server", args.model_type, str(checkpoint)])
    try:
        base_numbers = measure(theirs.url, lambda i: f"/images/{i}/predict", "/images", data, width, height, args,
                               preview=False)
    finally:
        theirs.stop()

    def ms(pair: tuple[float, float]) -> str:
        return f"p50 {pair[0] * 1e3:7.1f} ms  p95 {pair[1] * 1e3:7.1f} ms"

    speedup = base_numbers["click"][0] / samrt_numbers["click"][0]
    preview_p50 = samrt_numbers["preview"][0] * 1e3
    overhead = samrt_numbers["first"] / direct_s - 1
    print(f"samrt {samrt.__version__} serve vs a FastAPI SamPredictor server; {args.model_type}, "
          f"{args.image} {width}x{height}, {args.clicks} clicks, {os.cpu_count()} CPUs")
    print(f"click, full masks (RLE)   samrt    {ms(samrt_numbers['click'])}")
    print(f"                          baseline {ms(base_numbers['click'])}")
    print(f"  p50 speedup {speedup:.2f}x (target >= {TARGET_CLICK_SPEEDUP}x: "
          f"{'met' if speedup >= TARGET_CLICK_SPEEDUP else 'MISSED'})")
    print(f"click, preview (256x256)  samrt    {ms(samrt_numbers['preview'])}  (target p50 <= "
          f"{TARGET_PREVIEW_P50_MS:.0f} ms: {'met' if preview_p50 <= TARGET_PREVIEW_P50_MS else 'MISSED'})")
    print(f"first mask on a new image samrt {samrt_numbers['first']:.3f} s, baseline {base_numbers['first']:.3f} s; "
          f"set_image + predict in process {direct_s:.3f} s: overhead {overhead * 100:+.1f}% (target <= "
          f"{TARGET_FIRST_MASK_OVERHEAD * 100:.0f}%: {'met' if overhead <= TARGET_FIRST_MASK_OVERHEAD else 'MISSED'})")
    print(f"throughput, 4 clients     samrt {samrt_numbers['throughput']:.1f} masks/s, baseline "
          f"{base_numbers['throughput']:.1f} masks/s ({samrt_numbers['throughput'] / base_numbers['throughput']:.2f}x)")


if __name__ == "__main__":
    main()
