"""The Dataset tab in a real headless Chromium against `python launch.py` on 127.0.0.1: upload a zip of
images, see it checked, select a flagged file in the table, create the missing caption, see the report
change, and pick the dataset for training. Saves test-artifacts/dataset.png."""

from __future__ import annotations

import re

import pytest

from tests._dataset_fixtures import png_bytes, write_zip
from tests._webui_fixtures import ARTIFACTS, running_app
from webui.context import SharedUI

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    ws = tmp_path_factory.mktemp("browser-dataset") / "ws"
    with running_app(ws, "--no-auth") as a:
        yield a


@pytest.fixture
def page(app, browser):
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    pg.goto(app.url)
    pg.locator("#ds-check").wait_for(timeout=60_000)
    yield pg
    pg.close()


def _field(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def _text(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def test_upload_check_fix_and_use_for_training(page, app, tmp_path):
    expect = sync_api.expect
    zip_path = write_zip(tmp_path / "pets.zip", [("pets/p0.png", png_bytes(1, (320, 320))), ("pets/p0.txt", b"pet, a"),
                                                 ("pets/p1.png", png_bytes(2, (320, 320))), ("pets/p1.txt", b"pet, b"),
                                                 ("pets/nocap.png", png_bytes(3, (320, 320)))])
    page.get_by_role("tab", name="Dataset").click()
    page.locator("#ds-zip input[type=file]").set_input_files(str(zip_path))
    expect(page.locator("#ds-zip a[href$='pets.zip']")).to_have_count(1, timeout=20_000)  # uploaded
    _field(page, "ds-import-name").fill("browser pets")
    page.locator("#ds-import-zip").click()

    # the import checks the new dataset at once: counts, the problem, the gallery
    expect(page.locator("#ds-counts")).to_contain_text("3 images", timeout=60_000)
    expect(page.locator("#ds-import-status")).to_contain_text("browser pets")
    expect(page.locator("#ds-problems")).to_contain_text("missing_caption")
    expect(page.locator("#ds-gallery img")).to_have_count(3, timeout=20_000)
    assert "no caption file: 1" in _text(page, "ds-counts")

    # a click on a row of the problems table selects its file for the quarantine
    page.locator("#ds-problems [role=gridcell]").filter(has_text="nocap.png").first.click()
    expect(page.locator("#ds-q-files")).to_contain_text("nocap.png", timeout=20_000)

    _field(page, "ds-trigger").fill("zqx")
    page.locator("#ds-fix-captions").click()
    expect(page.locator("#ds-fix-log")).to_contain_text("Captions created: 1 change", timeout=30_000)
    expect(page.locator("#ds-problems")).not_to_contain_text("missing_caption", timeout=30_000)
    assert "no caption file" not in _text(page, "ds-counts")
    assert (app.workspace / "datasets" / "browser pets" / "nocap.txt").read_text().strip() == "zqx"
    page.get_by_role("button", name="Buckets").click()  # the accordion: histogram and steps per epoch
    expect(page.locator("#ds-bucket-summary")).to_contain_text("3 steps per epoch")
    expect(page.locator("#ds-bucket-plot .js-plotly-plot")).to_be_visible(timeout=20_000)
    page.locator("#ds-gallery").scroll_into_view_if_needed()  # thumbnails load lazily, when in view
    page.wait_for_function("[...document.querySelectorAll('#ds-gallery img')].every(i => i.naturalWidth > 0)",
                           timeout=20_000)
    page.evaluate("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dataset.png"), full_page=True)

    page.locator("#ds-use").click()
    if "dataset_pick" in SharedUI.__dataclass_fields__:  # the Training tab's hook: it fills its Dataset field
        # The path, or its label once the Training tab lists the new dataset (it relists after an import)
        picked = re.compile(r"^(datasets/browser pets|browser pets \(3 images\))$")
        expect(page.locator("#opt-dataset-path input")).to_have_value(picked, timeout=20_000)
        expect(page.locator("#opt-dataset-path input")).to_be_visible()
    else:  # until then: the path to copy, shown under the button
        expect(_field(page, "ds-use-path")).to_have_value("datasets/browser pets", timeout=20_000)
