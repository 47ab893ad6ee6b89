"""The VRAM estimate on the Training tab: the handler as Gradio calls it (a real backend subprocess on the
tiny demo model), and the button in a real headless Chromium."""

from __future__ import annotations

import gradio as gr
import pytest

from backend.config import TrainConfig
from tests._webui_fixtures import build_tab, running_app
from webui import forms
from webui.context import make_context
from webui.estimate_view import to_markdown
from webui.tabs import training


@pytest.fixture
def tab(demo_copy):
    ctx = make_context(str(demo_copy))
    _, tab = build_tab(ctx, training)
    return tab


def _data(tab, cfg: TrainConfig) -> dict:
    values = forms.config_to_values(cfg)
    return {comp: values[path] for path, comp in tab.form.components.items()}


def test_the_estimate_button_shows_the_peak_and_a_verdict_per_card(tab):
    cfg = TrainConfig.model_validate({"model": {"family": "sd15", "path": "models/demo-sd15"},
                                      "dataset": {"path": "datasets/demo", "resolution": 128, "min_bucket_reso": 64},
                                      "training": {"mixed_precision": "bf16", "batch_size": 2}})
    text = tab.estimate.estimate(_data(tab, cfg))
    assert "Estimated peak VRAM" in text and "not yet calibrated" in text
    for gb in (8, 12, 16, 24, 48, 80):
        assert f"| {gb} GB | ✓ fits |" in text
    assert list((tab.ctx.paths.root / "cache" / "vram").glob("sd15-*.json"))   # the next one is instant
    bad = TrainConfig.model_validate({"model": {"family": "sd15"}})
    data = _data(tab, bad)
    data[tab.form.components["network.rank"]] = 0
    with pytest.raises(gr.Error, match="network.rank"):
        tab.estimate.estimate(data)


def test_fixes_are_listed_where_it_does_not_fit():
    report = {"expected_error": 0.15, "peak_gib": 13.2, "family": "sdxl", "batch_size": 4, "resolution": 1024,
              "parts": {"denoiser weights": 5 * 2**30}, "cards": [
                  {"gb": 8, "verdict": "does not fit", "fits_with_fixes": False, "fixes": [
                      {"setting": "training.gradient_checkpointing", "value": True, "saving_bytes": 6 * 2**30,
                       "note": "about 20–30 % slower steps"}]},
                  {"gb": 16, "verdict": "fits"}]}
    text = to_markdown(report)
    assert "`training.gradient_checkpointing = true` (−6.0 GiB" in text and "still does not fit" in text
    assert "| 16 GB | ✓ fits |" in text


@pytest.mark.browser
def test_the_training_tab_shows_the_estimate_in_a_browser(tmp_path, browser):
    with running_app(tmp_path / "ws", "--no-auth", "--demo", timeout_s=300) as app:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(app.url)
        page.get_by_role("tab", name="Training").click()
        page.locator("#opt-model-path input").click()
        page.get_by_role("option", name="models/demo-sd15").first.click()
        page.locator("#estimate-btn").click()
        page.locator("#vram-estimate").get_by_text("Estimated peak VRAM").wait_for(timeout=300_000)
        text = page.locator("#vram-estimate").inner_text()
        assert "not yet calibrated" in text and "80 GB" in text
        page.close()
