"""A real headless browser for the annotator tests: the system's chromium driven by
Playwright (which cannot download its own browsers here), and a small page object for the
annotator with the moves a user makes.

``find_chromium()`` looks at ``$SAMRT_CHROMIUM``, then ``chromium``, ``chromium-browser``
and ``google-chrome`` on the PATH; the tests skip, saying so, only when none is found.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

READY = '[data-testid="image-canvas"][data-ready="true"]'
TIMEOUT_MS = 60_000


def find_chromium() -> str | None:
    explicit = os.environ.get("SAMRT_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def by_testid(name: str) -> str:
    return f'[data-testid="{name}"]'


class AnnotatorPage:
    """One browser page on the annotator; records console errors and page errors."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        page.on("requestfailed", self._request_failed)
        page.set_default_timeout(TIMEOUT_MS)

    def _request_failed(self, request: Any) -> None:
        # A reload aborts the requests in flight: the browser's doing, not the page's.
        if "ERR_ABORTED" not in str(request.failure):
            self.problems.append(f"request failed: {request.url} {request.failure}")

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")

    # -- navigation ------------------------------------------------------------------

    def open(self, fragment: str = "") -> AnnotatorPage:
        self.page.goto(self.base_url + "/" + fragment)
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        self.page.wait_for_selector(READY)
        self.idle()

    def idle(self) -> None:
        """Waits until the page's queued actions (clicks, accepts, undos) have finished."""
        self.page.evaluate("() => annotator.work")

    def evaluate(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def image_id(self) -> str:
        return str(self.evaluate("() => annotator.image.image_id"))

    def image_name(self) -> str:
        return str(self.page.locator(by_testid("image-name")).inner_text())

    # -- the canvas ------------------------------------------------------------------

    def page_point(self, x: float, y: float) -> tuple[float, float]:
        """Where the image pixel (x, y) is on the page (CSS pixels)."""
        cx, cy = self.evaluate("([x, y]) => annotator.view.imageToCanvas(x, y)", [x, y])
        box = self.page.locator(by_testid("image-canvas")).bounding_box()
        ratio = float(self.evaluate("() => window.devicePixelRatio || 1"))
        return box["x"] + cx / ratio, box["y"] + cy / ratio

    def click_image(self, x: float, y: float, *, background: bool = False, steps: int | None = None) -> None:
        """A click on image pixel (x, y) (Shift+click for background), then waits for its mask."""
        before = self.steps()
        px, py = self.page_point(x, y)
        if background:
            self.page.keyboard.down("Shift")
        try:
            self.page.mouse.click(px, py)
        finally:
            if background:
                self.page.keyboard.up("Shift")
        self.wait_steps(before + 1 if steps is None else steps)

    def drag_box(self, x0: float, y0: float, x1: float, y1: float) -> None:
        before = self.steps()
        a, b = self.page_point(x0, y0), self.page_point(x1, y1)
        self.page.mouse.move(*a)
        self.page.mouse.down()
        self.page.mouse.move((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, steps=4)
        self.page.mouse.move(*b, steps=4)
        self.page.mouse.up()
        self.wait_steps(before + 1)

    def steps(self) -> int:
        return int(self.evaluate("() => annotator.current ? annotator.current.steps.length : 0"))

    def wait_steps(self, n: int) -> None:
        self.page.wait_for_function("n => (annotator.current ? annotator.current.steps.length : 0) === n", arg=n)
        self.idle()

    def current_step(self) -> dict[str, Any]:
        return dict(self.evaluate(
            "() => { const s = annotator.current.steps.at(-1);"
            " return {prompt: s.prompt, selected: s.selected, masks: s.result.masks}; }"
        ))

    def canvas_pixels(self) -> npt.NDArray[np.uint8]:
        from PIL import Image

        self.evaluate("() => new Promise((done) => annotator.view.render(done))")  # the latest state drawn
        png = self.page.locator(by_testid("image-canvas")).screenshot()
        with Image.open(io.BytesIO(png)) as image:
            return np.asarray(image.convert("RGB")).copy()

    def canvas_box(self, bbox_xywh: list[float]) -> tuple[int, int, int, int]:
        """An image box [x, y, w, h] as canvas screenshot pixels (x0, y0, x1, y1)."""
        x, y, w, h = bbox_xywh
        box = self.page.locator(by_testid("image-canvas")).bounding_box()
        (ax, ay), (bx, by) = self.page_point(x, y), self.page_point(x + w, y + h)
        return (int(ax - box["x"]), int(ay - box["y"]), int(bx - box["x"]) + 1, int(by - box["y"]) + 1)

    # -- keys and lists ----------------------------------------------------------------

    def press(self, key: str) -> None:
        self.page.keyboard.press(key)
        self.idle()

    def count(self, testid: str) -> int:
        return int(self.page.locator(by_testid(testid) + " > li").count())

    def wait_count(self, testid: str, n: int) -> None:
        self.page.wait_for_function(
            "([sel, n]) => document.querySelectorAll(sel).length === n", arg=[by_testid(testid) + " > li", n]
        )

    def finish(self, out_dir: Path, name: str) -> Path:
        """The end state's screenshot in the test's output folder; no console error allowed."""
        self.idle()
        shot = out_dir / f"{name}.png"
        self.page.screenshot(path=str(shot))
        assert not self.problems, "\n".join(self.problems)
        return shot
