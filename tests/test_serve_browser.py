"""End to end in headless Chromium: open the page (of a server that needs a token), upload a
real slice and a text file, read the prediction, the bar chart, the overlay and the rejection
off the page; keep a screenshot in test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, real_images

from brainmri.serve.app import create_app, running

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (setup.sh installs it)")
def test_upload_in_a_real_browser(tiny_checkpoint, sartaj, tmp_path):
    from playwright.sync_api import sync_playwright

    image = real_images(sartaj, "meningioma_tumor", 1, "Testing")[0]
    notes = tmp_path / "notes.png"  # named like an image, but text
    notes.write_text("not an image\n")
    app = create_app(tiny_checkpoint, token="browser-token")  # the page takes it from the URL fragment
    classes = app.state.predictor.classes
    with running(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
            page.goto(url + "/#token=browser-token")
            page.wait_for_selector("#model-card dd")
            assert "token" not in page.url  # dropped from the address bar once stored
            assert "Not a medical device" in page.inner_text("#notice")

            page.set_input_files("#file-input", [str(image)])
            page.wait_for_selector(".result.ok .label", timeout=60_000)
            assert page.inner_text(".result.ok .label") in classes
            assert page.inner_text(".result.ok h3") == image.name
            page.wait_for_function("document.querySelector('.result.ok img.overlay').naturalWidth > 0")
            assert page.eval_on_selector(".result.ok img.overlay", "img => img.naturalWidth") == 64
            assert page.locator(".result.ok .bar-row").count() == len(classes)
            # The bar chart is drawn: each bar's length is its probability's share of the track.
            shares = page.eval_on_selector_all(
                ".result.ok .bar-row",
                "rows => rows.map(r => r.querySelector('.bar-fill').getBoundingClientRect().width"
                " / r.querySelector('.bar-track').getBoundingClientRect().width)",
            )
            shown = [float(t.rstrip(" %")) / 100 for t in page.locator(".result.ok .bar-value").all_inner_texts()]
            assert shares == pytest.approx(shown, abs=0.01) and sum(shown) == pytest.approx(1, abs=0.01)
            assert page.locator("#token-form").is_hidden()

            # A multi-frame file says which frame was classified.
            from test_serve import multi_frame_gif

            cine = tmp_path / "cine.gif"
            cine.write_bytes(multi_frame_gif(real_images(sartaj, "glioma_tumor", 3, "Testing")))
            page.set_input_files("#file-input", [str(cine)])
            page.wait_for_selector(".result.ok .frame-note", timeout=60_000)
            assert "Frame 1 of 3 frames" in page.inner_text(".result.ok .frame-note")

            page.set_input_files("#file-input", [str(notes)])
            page.wait_for_selector(".result.rejected .error")
            assert "not an image file" in page.inner_text(".result.rejected .error")

            out = ROOT / "test-artifacts"
            out.mkdir(exist_ok=True)
            page.screenshot(path=str(out / "serve_page.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
