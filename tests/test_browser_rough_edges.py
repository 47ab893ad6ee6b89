"""What a new user hit in the browser (issue 17, bugs 3, 4, 7, 10, 11 and the kohya items), each checked in a
real headless Chromium against `python launch.py` on a workspace with the demo model and dataset."""

from __future__ import annotations

import re
import shutil

import pytest

from backend.jobs.registry import load_job
from backend.jobs.supervisor import Supervisor
from backend.paths import WorkspacePaths
from tests._compare_fixtures import make_run
from tests._webui_fixtures import running_app
from tests.conftest import wait_for

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def app(demo_workspace, tmp_path_factory):
    paths = WorkspacePaths(tmp_path_factory.mktemp("rough") / "ws").ensure()
    (paths.models / "demo-sd15").symlink_to(demo_workspace / "models" / "demo-sd15")
    shutil.copytree(demo_workspace / "datasets" / "demo", paths.datasets / "demo")
    run = make_run(paths, "run with checkpoints")
    for step in (10, 20):
        (run / "checkpoints" / f"lora-step{step:08d}.safetensors").write_bytes(b"\0" * 64)
    with running_app(paths.root, "--no-auth") as a:
        yield a


@pytest.fixture
def page(app, browser):
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    pg.goto(app.url)
    pg.get_by_role("tab", name="Training").wait_for(timeout=60_000)
    yield pg
    pg.close()


def _tab(page, title: str) -> None:
    page.get_by_role("tab", name=title).click()


def _pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=re.compile("^" + re.escape(option))).first.click()


def _toasts(page) -> str:
    return "\n".join(page.locator("[data-testid=toast-body]").all_inner_texts())


def _file_of(image_info: str) -> str:
    """The image's file in the editor's info line ("3/18 · 5_demo/demo_02.png · …")."""
    return image_info.split("·")[1].strip()


def _error_badges(page, scope: str) -> int:
    """The "Error" badges Gradio puts over every output of an event that raised."""
    return page.locator(f"{scope} [data-testid=status-tracker] .error").count()


def test_an_error_holding_a_tag_is_shown_whole(page):
    """Bug 3: "…/resolve/main/<file>" was cut at <file> (the toast renders HTML)."""
    _tab(page, "Models")
    page.locator("#models-url textarea, #models-url input").first.fill("https://huggingface.co/someone/some-model")
    page.locator("#models-download").click()
    wait_for(lambda: "<file>" in _toasts(page), 20, "the whole message in the toast")
    assert "https://huggingface.co/<owner>/<repo>/resolve/main/<file>; for a whole repository" in _toasts(page)
    assert _error_badges(page, "#tab-models") == 0  # the URL and token boxes keep their values, no badges


def test_a_download_toast_names_the_file_once(page):
    """Bug 11: "Download download x.safetensors …"."""
    _tab(page, "Models")
    page.locator("#models-url textarea, #models-url input").first.fill("http://127.0.0.1:9/tiny-lora.safetensors")
    page.locator("#models-download").click()
    wait_for(lambda: "tiny-lora.safetensors" in _toasts(page), 20, "the download toast")
    assert "Download download" not in _toasts(page)
    assert re.search(r"Download tiny-lora\.safetensors (started|queued)", _toasts(page)), _toasts(page)


def test_a_failed_import_leaves_the_form_without_error_badges(page):
    """Bug 11: a problem in a handler whose outputs are the form covered every field with an Error badge."""
    _tab(page, "Training")
    page.get_by_text("Import config (kohya sd-scripts, LETS, kohya_ss)").click()
    page.locator("#import-config-text textarea").fill("this is not a config = = =")
    page.locator("#import-config-btn").click()
    expect(page.locator("#train-status")).to_contain_text("not TOML, JSON", timeout=20_000)
    assert "not TOML, JSON" in _toasts(page)
    assert _error_badges(page, "#tab-training") == 0


def test_import_config_is_on_the_training_tabs_first_screen(page):
    """Kohya users: import-config is offered where the Training tab opens, not below every option."""
    _tab(page, "Training")
    heading = page.get_by_text("Import config (kohya sd-scripts, LETS, kohya_ss)")
    heading.wait_for(timeout=20_000)
    box = heading.bounding_box()
    assert box is not None and box["y"] < page.viewport_size["height"], box


def test_the_demo_sdxl_description_says_how_to_build_its_model(page):
    """Bug 4: the description stopped mid-sentence ("… stored as a") and never said how to build the model."""
    _tab(page, "Training")
    _pick(page, "preset-picker", "demo-sdxl")
    about = page.locator("#tab-training").get_by_text(re.compile("^The SDXL demo"))
    expect(about).to_contain_text("python launch.py --demo", timeout=20_000)
    expect(about).to_contain_text("python -m backend demo --family sdxl")


def test_the_dataset_tab_checks_at_the_resolution_of_the_preset_that_trains_it(page):
    """Bug 10: at the tab's default 512 px every 128 px demo image was "too small"."""
    _tab(page, "Dataset")
    _pick(page, "ds-path", "demo")
    expect(page.locator("#ds-resolution input")).to_have_value("128", timeout=20_000)  # the demo preset's
    page.locator("#ds-check").click()
    counts = page.locator("#ds-counts")
    expect(counts).to_contain_text("18 images", timeout=60_000)
    assert "smaller than the smallest bucket" not in counts.inner_text(), counts.inner_text()
    assert "128 px" in counts.inner_text() and "preset demo" in counts.inner_text(), counts.inner_text()


def test_the_training_tabs_dataset_label_follows_a_quarantine(page, app):
    """Bug 11: images moved to _quarantine were still counted in the Training tab's dataset label."""
    _tab(page, "Dataset")
    _pick(page, "ds-path", "demo")
    page.locator("#ds-check").click()
    expect(page.locator("#ds-counts")).to_contain_text("images", timeout=60_000)
    before = len(list((app.workspace / "datasets" / "demo" / "5_demo").glob("*.png")))
    files = page.locator("#ds-q-files input")
    files.fill("5_demo/demo_00.png")
    files.press("Enter")
    page.locator("#ds-fix-quarantine").click()
    expect(page.locator("#ds-fix-log")).to_contain_text("Moved to _quarantine: 2 change", timeout=30_000)
    _tab(page, "Training")
    page.locator("#opt-dataset-path input").click()
    expect(page.get_by_role("option", name=f"demo ({before - 1} images)")).to_be_visible(timeout=20_000)


def test_checkpoints_have_no_button_that_looks_like_delete(page):
    """Bug 11: a "×" (Remove this file) beside each checkpoint."""
    _tab(page, "Runs")
    page.locator("#jobs-table").get_by_text("run with checkpoints").locator("visible=true").first.click()
    links = page.locator("#tab-runs a[download^='lora-step']")
    expect(links).to_have_count(2, timeout=30_000)
    assert page.locator("#tab-runs").get_by_role("button", name="Remove this file").locator("visible=true").count() == 0


def test_unsaved_caption_edits_are_kept_and_saving_says_so(page, app):
    """Bug 7: Next dropped an edit without a word; Save gave no visible confirmation."""
    _tab(page, "Captioning")
    _pick(page, "cap-dataset-path", "demo")
    page.locator("#cap-gallery img").first.click()
    box = page.locator("#cap-caption textarea")
    wait_for(lambda: box.input_value().startswith("dashdemo"), 20, "the caption in the editor")
    info = page.locator("#cap-image-info")
    first = info.inner_text()
    caption_file = app.workspace / "datasets" / "demo" / "5_demo" / re.search(r"demo_\d+", first).group(0)
    caption_file = caption_file.with_suffix(".txt")
    original = caption_file.read_text()

    box.fill("dashdemo, edited in the browser")
    page.locator("#cap-next").click()
    wait_for(lambda: "unsaved" in _toasts(page).lower(), 20, "a warning about the unsaved edit")
    assert box.input_value() == "dashdemo, edited in the browser"  # still there, still on the same image
    assert _file_of(info.inner_text()) == _file_of(first)
    assert caption_file.read_text() == original

    page.locator("#cap-save").click()
    wait_for(lambda: caption_file.read_text() == "dashdemo, edited in the browser\n", 20, "the caption saved")
    expect(info).to_contain_text("✓ saved at", timeout=20_000)  # the save's answer is on the page
    wait_for(lambda: "Saved the caption" in _toasts(page), 20, "a toast confirming the save")

    box.fill("dashdemo, an edit to throw away")
    page.locator("#cap-next").click()
    wait_for(lambda: "unsaved" in info.inner_text().lower(), 20, "the unsaved note")
    page.locator("#cap-next").click()  # a second Next discards the edit
    wait_for(lambda: _file_of(info.inner_text()) != _file_of(first), 20, "the next image")
    assert caption_file.read_text() == "dashdemo, edited in the browser\n"


def test_a_reload_while_a_job_runs_opens_the_runs_tab(page, app):
    """Bug 11: a reload always opened the Dataset tab, even mid-run."""
    sup = Supervisor(WorkspacePaths(app.workspace))
    rec = sup.submit("selftest", {"steps": 600, "step_s": 0.1}, "long job")
    try:
        wait_for(lambda: load_job(app.workspace / "jobs" / rec.id).status == "running", 60, "the job to run")
        page.reload()
        runs = page.get_by_role("tab", name="Runs")
        expect(runs).to_have_attribute("aria-selected", "true", timeout=30_000)
        expect(page.locator("#job-header")).to_contain_text("long job", timeout=30_000)
    finally:
        sup.stop(rec.id)
        wait_for(lambda: load_job(app.workspace / "jobs" / rec.id).finished, 60, "the job to stop")
