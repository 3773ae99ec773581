"""Makes docs/annotator.png, the README's picture of the annotator.

    python docs/annotator_screenshot.py

The page runs on the tests' deterministic stand-in for SAM (tests/fake_decoder.py) on a
painted scene, because a model with random weights (all that can be made without
downloading a checkpoint) answers clicks with noise: the picture shows the page, not a
model. Two objects are clicked and accepted, then pre-fill proposes the rest.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser import AnnotatorPage, by_testid, find_chromium  # noqa: E402
from fake_decoder import fake_model, make_scene  # noqa: E402
from PIL import Image  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from serve_server import LiveServer  # noqa: E402

import samrt  # noqa: E402
from samrt.serve import create_app  # noqa: E402


def main() -> None:
    chromium = find_chromium()
    if chromium is None:
        sys.exit("no chromium found: apt-get install chromium, or set SAMRT_CHROMIUM")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = work / "images"
        images.mkdir()
        Image.fromarray(make_scene(480, 720, seed=11, n_objects=18)).save(images / "scene-0001.png")
        Image.fromarray(make_scene(480, 720, seed=12, n_objects=18)).save(images / "scene-0002.png")
        model = fake_model()
        app = create_app(engine=work, images=images, db=work / "db.sqlite3", prefetch=0, model=model)
        records = samrt.AutomaticMaskGenerator(samrt.Predictor(model), points_per_side=16).generate(
            samrt.imageio.load_image(images / "scene-0001.png"))
        with LiveServer(app) as live, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium)
            page = AnnotatorPage(browser.new_page(viewport={"width": 1400, "height": 760}), live.url)
            page.open()
            for record in records[:2]:
                page.click_image(*record["point_coords"][0])
                page.press("Enter")
            page.page.locator(by_testid("prefill-points")).fill("16")
            page.page.locator(by_testid("prefill-button")).click()
            page.page.wait_for_function("() => annotator.proposals !== null")
            x, y = records[3]["point_coords"][0]
            page.page.mouse.move(*page.page_point(x, y))
            page.page.wait_for_timeout(500)
            page.idle()
            out = ROOT / "docs" / "annotator.png"
            page.page.screenshot(path=str(out))
            browser.close()
    print(out)


if __name__ == "__main__":
    main()
