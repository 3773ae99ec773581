"""Latency as the annotator's page sees it, measured in the browser, against the service's
own numbers in the same run.

    python benchmarks/bench_annotator.py                       # vit_b, ../shared/images/truck.jpg
    python benchmarks/bench_annotator.py --model-type tiny --clicks 5   # smoke run

``samrt serve`` runs in its own process on 127.0.0.1 (seeded random weights, this CPU); the
system's chromium (headless, driven by Playwright) opens the page on the photo and waits for
its embedding. Then, alternating so a change of load hits both alike:

* page: a click on the canvas, to the mask drawn (``performance.measure`` from the click's
  mark to the frame that shows the mask: request, RLE decode, overlay, draw), and the same
  click's request alone as the page's fetch saw it;
* service: the same predict request from this process (httpx), the HTTP round trip alone.

Then hover: the mouse moves over the photo for a few seconds and the page counts the
preview frames it drew (one request in flight at a time), against preview requests per
second from this process. Each click is dropped with Esc so the next starts a new object.
The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import IMAGES, random_weights_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from browser import AnnotatorPage, find_chromium  # noqa: E402
from serve_server import ServeProcess  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-type", default="vit_b", help="model type of the seeded random engine (default: %(default)s)")
    parser.add_argument("--image", default="truck.jpg", help="photo in ../shared/images (default: %(default)s)")
    parser.add_argument("--clicks", type=int, default=20, help="timed clicks of each kind (default: %(default)s)")
    parser.add_argument("--hover-seconds", type=float, default=5.0, help="how long the mouse hovers (default: %(default)s)")
    args = parser.parse_args()

    chromium = find_chromium()
    if chromium is None:
        sys.exit("no chromium found: apt-get install chromium, or set SAMRT_CHROMIUM")
    from playwright.sync_api import sync_playwright

    engine, _ = random_weights_engine(args.model_type)
    work = Path(tempfile.mkdtemp(prefix="samrt-bench-annotator-"))
    images = work / "images"
    images.mkdir()
    shutil.copy(IMAGES / args.image, images / args.image)
    image_id = hashlib.sha256((images / args.image).read_bytes()).hexdigest()
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} (before)")
    try:
        with ServeProcess("--engine", str(engine), "--images", str(images), "--db", str(work / "db.sqlite3"),
                          "--prefetch", "0", log=work / "serve.log") as server, \
                httpx.Client(base_url=server.url, timeout=120) as client, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium)
            page = AnnotatorPage(browser.new_page(viewport={"width": 1400, "height": 900}), server.url)
            started = time.perf_counter()
            page.open()  # waits for the embedding too
            print(f"page open with the embedding: {time.perf_counter() - started:.2f} s")
            w, h = page.evaluate("() => [annotator.image.width, annotator.image.height]")
            points = [(w * (0.2 + 0.6 * ((i * 7) % 10) / 9), h * (0.2 + 0.6 * ((i * 3) % 10) / 9))
                      for i in range(args.clicks + 1)]
            service_ms: list[float] = []
            for i, (x, y) in enumerate(points):
                page.click_image(x, y)
                page.press("Escape")
                t0 = time.perf_counter()
                r = client.post(f"/v1/images/{image_id}/predict", json={"points": [[x, y]], "labels": [1]})
                r.raise_for_status()
                if i:  # the first of each is the warm-up
                    service_ms.append((time.perf_counter() - t0) * 1000)
            latency = page.evaluate("() => annotator.latency")
            click_ms = latency["clicks"][1:]
            fetch_ms = latency["requests"][1:]

            # hover: the page draws what the service answers, one request in flight
            box = page.page.locator('[data-testid="image-canvas"]').bounding_box()
            frames_before = page.evaluate("() => annotator.latency.hoverFrames")
            t0 = time.perf_counter()
            i = 0
            while time.perf_counter() - t0 < args.hover_seconds:
                i += 1
                page.page.mouse.move(box["x"] + box["width"] * (0.3 + 0.4 * ((i * 37) % 100) / 100),
                                     box["y"] + box["height"] * (0.3 + 0.4 * ((i * 61) % 100) / 100))
                page.page.wait_for_timeout(16)
            hover_s = time.perf_counter() - t0
            hover_fps = (page.evaluate("() => annotator.latency.hoverFrames") - frames_before) / hover_s
            preview_ms = []
            for x, y in points[: min(10, len(points))]:
                t1 = time.perf_counter()
                client.post(f"/v1/images/{image_id}/preview", json={"points": [[x, y]], "labels": [1]}).raise_for_status()
                preview_ms.append((time.perf_counter() - t1) * 1000)
            browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} (after)")
    print(f"samrt serve, {args.model_type} (seeded random weights), {args.image} {w}x{h}, {args.clicks} clicks, "
          f"chromium {subprocess.run([chromium, '--version'], capture_output=True, text=True).stdout.strip()}")
    print(f"{'':42}{'p50':>10}{'p95':>10}")
    for name, values in (("page: click to mask drawn", click_ms), ("page: its predict request (fetch)", fetch_ms),
                         ("service: predict request (httpx)", service_ms), ("service: preview request (httpx)", preview_ms)):
        print(f"{name:42}{statistics.median(values):8.1f}ms{percentile(values, 0.95):8.1f}ms")
    print(f"page overhead over the service (click p50 - service p50): "
          f"{statistics.median(click_ms) - statistics.median(service_ms):.1f} ms")
    print(f"hover preview: {hover_fps:.1f} frames/s drawn by the page; the service answers "
          f"{1000 / statistics.median(preview_ms):.1f} previews/s one at a time")


if __name__ == "__main__":
    main()
