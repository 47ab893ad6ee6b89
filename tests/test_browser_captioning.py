"""The Captioning tab in a real headless Chromium against `python launch.py` on 127.0.0.1: tag a dataset
with the tiny WD14 model (a real caption job), edit one caption in the editor with Ctrl+Enter, run a bulk
edit with its preview, and undo it. The screenshot goes to test-artifacts/captioning.png."""

from __future__ import annotations

import re

import pytest

from backend.paths import WorkspacePaths
from tests._caption_fixtures import make_tagger, solid
from tests._webui_fixtures import ARTIFACTS, running_app
from tests.conftest import wait_for

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    paths = WorkspacePaths(tmp_path_factory.mktemp("captioning") / "ws").ensure()
    make_tagger(paths.models / "tiny-wd14")
    ds = paths.datasets / "chars"
    solid(ds / "10_red" / "a.png", (255, 0, 0))
    solid(ds / "10_red" / "b.png", (0, 255, 0))
    solid(ds / "5_blue" / "d.png", (0, 0, 255))
    return paths, ds


@pytest.fixture(scope="module")
def page(workspace, browser):
    paths, _ = workspace
    with running_app(paths.root, "--no-auth") as app:
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        pg.goto(app.url)
        pg.get_by_role("tab", name="Captioning").click()
        pg.locator("#cap-run").wait_for(timeout=60_000)
        yield pg
        pg.close()


def _pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=re.compile(re.escape(option))).first.click()


def _text(path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def test_tag_edit_bulk_edit_and_undo(page, workspace):
    _, ds = workspace
    a, b, d = ds / "10_red" / "a.txt", ds / "10_red" / "b.txt", ds / "5_blue" / "d.txt"

    # Tag the dataset with the local tiny WD14 model: a caption job in the worker.
    _pick(page, "cap-dataset-path", "chars")
    page.locator("#cap-ds-info").get_by_text("3 without a caption").wait_for(timeout=20_000)
    _pick(page, "cap-model-path", "tiny-wd14")
    page.locator("#cap-tagger-trigger_words input, #cap-tagger-trigger_words textarea").first.fill("sks")
    page.locator("#cap-run").click()
    page.locator("#cap-summary").get_by_text("wrote").wait_for(timeout=120_000)
    assert "wrote 3 of 3" in page.locator("#cap-summary").inner_text()
    assert _text(a).startswith("sks, red theme") and _text(d).startswith("sks, blue theme")
    page.locator("#cap-ds-info").get_by_text("all captioned").wait_for(timeout=20_000)

    # Edit one caption: click its thumbnail, type, Ctrl+Enter saves.
    page.locator("#cap-gallery img").first.click()
    box = page.locator("#cap-caption textarea")
    wait_for(lambda: box.input_value().startswith("sks, red theme"), 20, "the caption in the editor")
    box.fill("sks, edited by hand, long hair")
    box.press("Control+Enter")
    wait_for(lambda: _text(a) == "sks, edited by hand, long hair\n", 20, "the edited caption on disk")
    page.locator("#cap-gallery").get_by_text("edited by hand").wait_for(timeout=20_000)
    edited = {p: _text(p) for p in (a, b, d)}

    # A bulk edit: preview first (nothing written), then apply.
    page.get_by_role("button", name=re.compile(r"^Bulk edit")).click()
    _pick(page, "cap-op", "Remove tags")
    page.locator("#cap-op-tags textarea, #cap-op-tags input").first.fill("long hair")
    page.locator("#cap-preview").click()
    page.locator("#cap-bulk-info").get_by_text("3 of 3 caption files change").wait_for(timeout=20_000)
    assert page.locator("#cap-bulk-table").get_by_text("sks, edited by hand").count() >= 1
    assert {p: _text(p) for p in (a, b, d)} == edited
    page.locator("#cap-apply").click()
    page.locator("#cap-bulk-info").get_by_text("Wrote 3 caption file(s)").wait_for(timeout=20_000)
    assert _text(a) == "sks, edited by hand\n" and "long hair" not in _text(b) + _text(d)

    # Undo the bulk edit.
    page.get_by_role("button", name=re.compile(r"^Undo")).click()
    _pick(page, "cap-undo", "remove tags")
    page.locator("#cap-restore").click()
    wait_for(lambda: {p: _text(p) for p in (a, b, d)} == edited, 20, "the captions restored")
    page.locator("#cap-gallery").get_by_text("long hair").first.wait_for(timeout=20_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "captioning.png"), full_page=True)
