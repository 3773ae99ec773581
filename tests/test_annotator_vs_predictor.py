"""The browser annotator in a real headless chromium against a live ``samrt serve`` on
127.0.0.1: what a user does with mouse and keys, and what reaches the server, compared
with ``samrt.Predictor`` on the same image and clicks (and pycocotools for the export).

Most scenarios run the tiny exported engine on the sample photos. Pre-fill runs on the
deterministic test decoder's painted scene, whose proposals have real shapes and overlaps
(a random SAM's confident-mask thresholds keep nothing). Each test writes a screenshot of
its end state to its output folder (pytest's tmp_path).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from browser import AnnotatorPage, by_testid, find_chromium
from models import shared_image
from pycocotools import mask as mask_utils
from serve_server import LiveServer

import samrt
from samrt.imageio import load_image

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium found: apt-get install chromium, or set SAMRT_CHROMIUM to a chromium binary"
)

from samrt.serve import create_app  # noqa: E402

VIEWPORT = {"width": 1400, "height": 900}


def _decode(rle: dict[str, Any]) -> npt.NDArray[np.bool_]:
    counts = rle["counts"]
    return mask_utils.decode({"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts}).astype(bool)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model(tiny_model: Any) -> samrt.Model:
    return samrt.Model(tiny_model.engine_dir)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("queue")
    for name in ("dog.jpg", "truck.jpg"):
        shutil.copy(shared_image(name), path / name)
    return path


@pytest.fixture(scope="module")
def predictors(model: samrt.Model, folder: Path) -> dict[str, samrt.Predictor]:
    out = {}
    for name in ("dog.jpg", "truck.jpg"):
        predictor = samrt.Predictor(model)
        predictor.set_image(load_image(folder / name))
        out[_sha(folder / name)] = predictor
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture
def server(model: samrt.Model, folder: Path, tmp_path: Path) -> Iterator[LiveServer]:
    app = create_app(engine=model.engine_dir, images=folder, db=tmp_path / "annotations.sqlite3", prefetch=0,
                     model=model)
    with LiveServer(app) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture
def annotator(browser: Any, server: LiveServer) -> Iterator[AnnotatorPage]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    try:
        yield AnnotatorPage(context.new_page(), server.url)
    finally:
        context.close()


def _stored(client: httpx.Client, image_id: str, **params: Any) -> list[dict[str, Any]]:
    r = client.get(f"/v1/images/{image_id}/annotations", params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["annotations"])


def _replay(predictor: samrt.Predictor, clicks: list[dict[str, Any]], selected: list[int]) -> npt.NDArray[np.bool_]:
    """The page's object, replayed on the Predictor: each click adds its point (or sets the
    box) and refines the previous result's chosen mask; one point alone asks for three."""
    points: list[list[float]] = []
    labels: list[int] = []
    box = None
    mask_input = None
    masks: Any = None
    for click, chosen in zip(clicks, selected, strict=True):
        if click["box"] is not None:
            box = click["box"]
        else:
            points += click["points"]
            labels += click["labels"]
        masks, _, low_res = predictor.predict(
            point_coords=np.array(points) if points else None,
            point_labels=np.array(labels) if points else None,
            box=None if box is None else np.array(box),
            mask_input=mask_input,
            multimask_output=len(points) == 1 and box is None,
        )
        mask_input = low_res[chosen][None]
    return np.asarray(masks[selected[-1]], dtype=bool)


def test_page_loads_without_console_errors_and_opens_the_first_unfinished_image(
    annotator: AnnotatorPage, client: httpx.Client, folder: Path, tmp_path: Path
) -> None:
    # the queue is in file-name order: dog.jpg, truck.jpg; marking dog done opens truck
    r = client.patch(f"/v1/images/{_sha(folder / 'dog.jpg')}", json={"done": True})
    assert r.status_code == 200, r.text
    annotator.open()
    assert annotator.image_id() == _sha(folder / "truck.jpg")
    assert "truck.jpg (1800x1200)" in annotator.image_name()
    assert annotator.count("queue-list") == 2
    page = annotator.page
    for testid in ("image-canvas", "category-select", "accept-button", "undo-button", "prefill-button",
                   "export-button", "annotation-list", "next-image", "prev-image", "seconds-per-mask"):
        assert page.locator(by_testid(testid)).count() == 1, testid
    # served from the package with a policy that allows nothing from another host
    index = client.get("/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in index.headers["content-security-policy"]
    assert client.get("/static/js/main.js").headers["content-type"].startswith("text/javascript")
    annotator.finish(tmp_path, "loaded")


def test_click_draws_a_mask_and_enter_stores_the_predictors_mask(
    annotator: AnnotatorPage, client: httpx.Client, predictors: dict[str, samrt.Predictor], tmp_path: Path
) -> None:
    annotator.open()
    image_id = annotator.image_id()
    before = annotator.canvas_pixels()
    annotator.click_image(400, 260)
    step = annotator.current_step()
    assert len(step["masks"]) == 3  # one point: three candidates
    scores = [m["score"] for m in step["masks"]]
    assert step["selected"] == int(np.argmax(scores))
    after = annotator.canvas_pixels()
    x0, y0, x1, y1 = annotator.canvas_box(step["masks"][step["selected"]]["bbox"])
    inside = np.abs(after[y0:y1, x0:x1].astype(int) - before[y0:y1, x0:x1].astype(int))
    assert inside.mean() > 2.0, "the canvas did not change inside the mask's box"

    annotator.press("Enter")
    annotator.wait_count("annotation-list", 1)
    (stored,) = _stored(client, image_id)
    clicks = stored["prompts"]["clicks"]
    assert len(clicks) == 1 and clicks[0]["labels"] == [1]
    assert clicks[0]["points"][0] == pytest.approx([400, 260], abs=1.0)
    expected = _replay(predictors[image_id], clicks, [step["selected"]])
    np.testing.assert_array_equal(_decode(stored["rle"]), expected)
    assert stored["source"] == "manual" and stored["category"] == "object"
    assert stored["score"] == pytest.approx(scores[step["selected"]])
    # the time per mask is stored with it, and the page shows the running mean
    assert stored["seconds"] is not None and stored["seconds"] >= 0
    stats = client.get("/v1/stats").json()
    assert stats["timed"] == 1 and stats["seconds_per_mask"] == pytest.approx(stored["seconds"])
    pace = annotator.page.locator(by_testid("seconds-per-mask"))
    assert float(pace.get_attribute("data-seconds-per-mask")) == pytest.approx(stored["seconds"])
    assert "s/mask" in pace.inner_text()
    assert annotator.steps() == 0  # ready for the next object
    annotator.finish(tmp_path, "click_accept")


def test_background_click_and_box_drag_refine_one_object(
    annotator: AnnotatorPage, client: httpx.Client, predictors: dict[str, samrt.Predictor], tmp_path: Path
) -> None:
    annotator.open()
    image_id = annotator.image_id()
    annotator.click_image(400, 260)
    annotator.click_image(600, 120, background=True)
    step = annotator.current_step()
    assert step["prompt"]["labels"] == [1, 0]
    assert len(step["masks"]) == 1  # refined: one mask
    annotator.drag_box(250, 150, 650, 450)
    step = annotator.current_step()
    assert step["prompt"]["box"] == pytest.approx([250, 150, 650, 450], abs=2.0)
    selected = annotator.evaluate("() => annotator.current.steps.map((s) => s.selected)")
    annotator.press("Enter")
    annotator.wait_count("annotation-list", 1)
    (stored,) = _stored(client, image_id)
    clicks = stored["prompts"]["clicks"]
    assert [c["labels"] for c in clicks] == [[1], [0], []]
    assert clicks[2]["box"] == pytest.approx(step["prompt"]["box"])
    expected = _replay(predictors[image_id], clicks, selected)
    np.testing.assert_array_equal(_decode(stored["rle"]), expected)
    annotator.finish(tmp_path, "refine")


def test_tab_changes_the_candidate_that_enter_stores(
    annotator: AnnotatorPage, client: httpx.Client, predictors: dict[str, samrt.Predictor], tmp_path: Path
) -> None:
    annotator.open()
    image_id = annotator.image_id()
    annotator.click_image(300, 300)
    first = annotator.current_step()["selected"]
    shown = annotator.canvas_pixels()
    annotator.press("Tab")
    second = annotator.current_step()["selected"]
    assert second == (first + 1) % 3
    selected_item = annotator.page.locator(by_testid("candidate-list") + " > li.selected")
    assert selected_item.count() == 1 and f"{second + 1}." in selected_item.inner_text()
    masks = annotator.current_step()["masks"]
    if masks[first]["rle"]["counts"] != masks[second]["rle"]["counts"]:
        assert not np.array_equal(shown, annotator.canvas_pixels())
    annotator.press("Enter")
    annotator.wait_count("annotation-list", 1)
    (stored,) = _stored(client, image_id)
    expected = _replay(predictors[image_id], stored["prompts"]["clicks"], [second])
    np.testing.assert_array_equal(_decode(stored["rle"]), expected)
    annotator.finish(tmp_path, "tab")


def test_ctrl_z_undoes_a_click_then_an_accepted_object(
    annotator: AnnotatorPage, client: httpx.Client, tmp_path: Path
) -> None:
    annotator.open()
    image_id = annotator.image_id()
    annotator.click_image(400, 260)
    annotator.click_image(200, 400)
    assert annotator.steps() == 2
    annotator.press("Control+z")
    assert annotator.steps() == 1
    assert annotator.current_step()["prompt"]["points"] == [pytest.approx([400, 260], abs=1.0)]
    annotator.press("Enter")
    annotator.wait_count("annotation-list", 1)
    (stored,) = _stored(client, image_id)
    assert len(stored["prompts"]["clicks"]) == 1  # the undone click is not part of it
    annotator.press("Control+z")  # nothing in progress: the accepted object goes
    annotator.wait_count("annotation-list", 0)
    assert _stored(client, image_id) == []
    (deleted,) = _stored(client, image_id, include_deleted=True)
    assert deleted["id"] == stored["id"] and deleted["deleted_at"] is not None  # restorable
    # the undo button does the same as the keys
    annotator.click_image(400, 260)
    annotator.page.locator(by_testid("undo-button")).click()
    annotator.idle()
    assert annotator.steps() == 0
    annotator.finish(tmp_path, "undo")


def test_delete_removes_the_selected_annotation(annotator: AnnotatorPage, client: httpx.Client, tmp_path: Path) -> None:
    annotator.open()
    image_id = annotator.image_id()
    for x in (300, 500):
        annotator.click_image(x, 260)
        annotator.press("Enter")
    annotator.wait_count("annotation-list", 2)
    first, second = _stored(client, image_id)
    annotator.page.locator(f'{by_testid("annotation-list")} > li[data-annotation-id="{first["id"]}"]').click()
    annotator.press("Delete")
    annotator.wait_count("annotation-list", 1)
    assert [a["id"] for a in _stored(client, image_id)] == [second["id"]]
    annotator.finish(tmp_path, "delete")


def test_reload_keeps_the_accepted_annotations(annotator: AnnotatorPage, client: httpx.Client, tmp_path: Path) -> None:
    annotator.open()
    annotator.press("n")  # the second image, so the reload must come back to it
    image_id = annotator.image_id()
    annotator.click_image(900, 600)
    annotator.page.locator(by_testid("accept-button")).click()
    annotator.wait_count("annotation-list", 1)
    annotator.page.reload()
    annotator.wait_ready()
    assert annotator.image_id() == image_id
    annotator.wait_count("annotation-list", 1)
    (stored,) = _stored(client, image_id)
    item = annotator.page.locator(by_testid("annotation-list") + " > li")
    assert item.get_attribute("data-annotation-id") == str(stored["id"])
    assert f"{stored['area']} px" in item.inner_text()
    annotator.finish(tmp_path, "reload")


def test_next_and_previous_image(annotator: AnnotatorPage, folder: Path, tmp_path: Path) -> None:
    annotator.open()
    dog, truck = _sha(folder / "dog.jpg"), _sha(folder / "truck.jpg")
    assert annotator.image_id() == dog
    annotator.press("n")
    annotator.wait_ready()
    assert annotator.image_id() == truck and "truck.jpg" in annotator.image_name()
    annotator.press("n")  # the last image: stays
    assert annotator.image_id() == truck
    annotator.press("p")
    assert annotator.image_id() == dog
    annotator.page.locator(by_testid("next-image")).click()
    annotator.idle()
    assert annotator.image_id() == truck
    annotator.page.locator(by_testid("prev-image")).click()
    annotator.idle()
    assert annotator.image_id() == dog
    annotator.finish(tmp_path, "next_previous")


def test_export_downloads_a_coco_file_that_pycocotools_loads(
    annotator: AnnotatorPage, client: httpx.Client, tmp_path: Path
) -> None:
    from pycocotools.coco import COCO

    annotator.open()
    image_id = annotator.image_id()
    annotator.click_image(400, 260)
    annotator.press("Enter")
    annotator.wait_count("annotation-list", 1)
    with annotator.page.expect_download() as download:
        annotator.page.locator(by_testid("export-button")).click()
    path = tmp_path / "export.json"
    download.value.save_as(path)
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == 2
    (ann,) = coco.loadAnns(coco.getAnnIds())
    (stored,) = _stored(client, image_id)
    np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), _decode(stored["rle"]))
    annotator.finish(tmp_path, "export")


def test_categories_from_the_list_and_number_keys(annotator: AnnotatorPage, client: httpx.Client, tmp_path: Path) -> None:
    annotator.open()
    image_id = annotator.image_id()
    page = annotator.page
    page.locator(by_testid("category-new")).fill("dog")
    page.locator(by_testid("category-add")).click()
    annotator.idle()
    assert page.locator(by_testid("category-select")).input_value() == "dog"
    annotator.click_image(400, 260)
    annotator.press("Enter")
    page.locator(by_testid("image-canvas")).focus()
    annotator.press("1")  # the first category: the default "object"
    annotator.click_image(600, 300)
    annotator.press("Enter")
    annotator.wait_count("annotation-list", 2)
    assert [a["category"] for a in _stored(client, image_id)] == ["dog", "object"]
    annotator.finish(tmp_path, "categories")


def test_page_works_mounted_under_a_prefix(browser: Any, model: samrt.Model, folder: Path, tmp_path: Path) -> None:
    from fastapi import FastAPI

    inner = create_app(engine=model.engine_dir, images=folder, db=tmp_path / "db.sqlite3", prefetch=0, model=model)
    outer = FastAPI()
    outer.mount("/sam", inner)
    with LiveServer(outer, prefix="/sam") as live, httpx.Client(base_url=live.url + "/sam", timeout=60) as client:
        context = browser.new_context(viewport=VIEWPORT)
        try:
            annotator = AnnotatorPage(context.new_page(), live.url + "/sam")
            annotator.open()
            annotator.click_image(400, 260)
            annotator.press("Enter")
            annotator.wait_count("annotation-list", 1)
            assert len(_stored(client, annotator.image_id())) == 1
            annotator.finish(tmp_path, "mounted")
        finally:
            context.close()
            inner.state.service.close()  # a mounted app's lifespan does not run


def test_token_from_the_address_or_the_dialog(
    browser: Any, model: samrt.Model, folder: Path, tmp_path: Path
) -> None:
    app = create_app(engine=model.engine_dir, images=folder, db=tmp_path / "db.sqlite3", prefetch=0, model=model,
                     token="s3cret-token")
    with LiveServer(app) as live:
        context = browser.new_context(viewport=VIEWPORT)
        try:
            page = AnnotatorPage(context.new_page(), live.url)
            page.open("#token=s3cret-token")
            assert "token" not in page.evaluate("() => location.href")  # not left in the address or history
            assert page.count("queue-list") == 2
            page.finish(tmp_path, "token_address")
        finally:
            context.close()
        context = browser.new_context(viewport=VIEWPORT)
        try:
            page = AnnotatorPage(context.new_page(), live.url)
            page.page.goto(live.url + "/")
            page.page.locator(by_testid("token-input")).fill("s3cret-token")
            page.page.locator(by_testid("token-input")).press("Enter")
            page.wait_ready()
            # the refused first call is the one expected problem
            page.problems = [p for p in page.problems if "401" not in p]
            page.finish(tmp_path, "token_dialog")
        finally:
            context.close()


def test_prefill_shows_the_proposals_not_yet_annotated_and_accept_all_stores_them(
    browser: Any, tmp_path: Path
) -> None:
    from fake_decoder import fake_model, make_scene
    from PIL import Image

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    Image.fromarray(make_scene(240, 320, seed=3)).save(scenes / "scene.png")
    fake = fake_model()
    app = create_app(engine=tmp_path, images=scenes, db=tmp_path / "db.sqlite3", prefetch=0, model=fake)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=60) as client:
        context = browser.new_context(viewport=VIEWPORT)
        try:
            annotator = AnnotatorPage(context.new_page(), live.url)
            annotator.open()
            image_id = annotator.image_id()
            # one object by hand first; its proposal must then not be offered again
            records = samrt.AutomaticMaskGenerator(samrt.Predictor(fake), points_per_side=8,
                                                   output_mode="coco_rle").generate(load_image(scenes / "scene.png"))
            assert len(records) >= 3
            x, y = records[0]["point_coords"][0]
            annotator.click_image(x, y)
            annotator.press("Enter")
            annotator.wait_count("annotation-list", 1)
            (manual,) = _stored(client, image_id)
            manual_mask = _decode(manual["rle"])

            annotator.page.locator(by_testid("prefill-points")).fill("8")
            annotator.page.locator(by_testid("prefill-button")).click()
            annotator.page.wait_for_function("() => annotator.proposals !== null")
            annotator.idle()
            job_id, shown = annotator.evaluate(
                "() => [annotator.proposals.jobId, annotator.proposals.items.map((i) => i.proposal.index)]"
            )
            job = client.get(f"/v1/jobs/{job_id}").json()
            # the page's job ran the paper's confident-mask thresholds: the generator's records
            assert [p["rle"]["counts"] for p in job["proposals"]] == [r["segmentation"]["counts"] for r in records]
            hidden = [p for p in job["proposals"] if p["index"] not in shown]
            assert shown and hidden
            for p in job["proposals"]:
                mask = _decode(p["rle"])
                covered = (mask & manual_mask).sum() / max(1, mask.sum())
                assert (p["index"] in shown) == (covered <= 0.25), (p["index"], covered)
            assert annotator.count("proposal-list") == len(shown)

            annotator.page.locator(by_testid("accept-all-button")).click()
            annotator.wait_count("annotation-list", 1 + len(shown))
            stored = _stored(client, image_id)
            from_prefill = [a for a in stored if a["source"] == "everything"]
            assert sorted(a["prompts"]["everything"]["proposal"] for a in from_prefill) == sorted(shown)
            assert annotator.count("proposal-list") == 0
            annotator.finish(tmp_path, "prefill")
        finally:
            context.close()
