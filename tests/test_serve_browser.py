"""The service's web page in a real browser (Debian's Chromium through Playwright): drop an
image, wait for the anonymized one, see it beside the original, download it. The screenshot is
kept as test-artifacts/serve_page.png."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from serve_tools import CONF, Server, make_champion, write_clip, write_photo

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_page_upload_see_after_download(tmp_path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    data = make_champion(tmp_path / "champion")
    photo = write_photo(tmp_path / "street.png", size=(480, 360))
    server = Server(data, tmp_path / "server.log")
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            # the page's own options: these thresholds keep the random test model's boxes (yolo alone:
            # the default auto would add CenterFace, which returns thousands of boxes at such a threshold)
            page.goto(f"{server.url}/")
            page.evaluate(
                """conf => { const f = window.fetch; window.fetch = (u, o) =>
                   f(u.startsWith('/v1/images') ? `${u}&conf_face=${conf}&conf_plate=${conf}&tiles=false&face_detector=yolo` : u, o); }""",
                CONF,
            )
            page.set_input_files("#file", str(photo))
            after = page.wait_for_selector("#after-img", timeout=120_000)
            page.wait_for_function("document.getElementById('after-img').naturalWidth > 0", timeout=30_000)
            assert page.locator("#status").inner_text() == "done"
            assert page.locator("#error").inner_text() == ""
            audit = page.locator("#audit").inner_text()
            assert "boxes hidden" in audit and "passed" in audit
            assert after.is_visible() and page.locator("#before img").is_visible()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "serve_page.png"), full_page=True)
            with page.expect_download() as info:
                page.click("#download")
            saved = tmp_path / info.value.suggested_filename
            info.value.save_as(saved)
            assert saved.name == "street.anonymized.png"
            got = cv2.imread(str(saved), cv2.IMREAD_UNCHANGED)
            original = cv2.imread(str(photo), cv2.IMREAD_UNCHANGED)
            assert got.shape == original.shape and not np.array_equal(got, original)
            # a short video: a job, its progress bar, the anonymized clip beside the original
            clip = write_clip(tmp_path / "clip.mp4", seconds=2)
            page.set_input_files("#file", str(clip))
            page.wait_for_selector("#after-video", timeout=300_000)
            # Chromium decodes the anonymized clip (HAVE_CURRENT_DATA or better)
            page.wait_for_function("document.getElementById('after-video').readyState >= 2", timeout=60_000)
            assert page.locator("#error").inner_text() == ""
            assert page.eval_on_selector("#progress", "p => p.value") == 1
            assert "fps" in page.locator("#audit").inner_text()
            page.screenshot(path=str(ARTIFACTS / "serve_page_video.png"), full_page=True)
            browser.close()
    finally:
        server.stop()
