"""Text that is not ours, shown safely (issue 17, bugs 3 and 8): Gradio renders Markdown, HTML and toast
messages as HTML, so an error holding "<file>" was cut off there; LyCORIS's colour codes showed as
"[0;32mINFO[0m" in the Runs tab's log. The rendering itself is checked in a real browser by
tests/test_browser_rough_edges.py; these check every producer of such text on hostile input."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
import pytest

from backend.compare.runs import load_run
from backend.dataset.fixes import Change
from backend.dataset.importer import ImportResult
from backend.errors import ModelError
from backend.jobs.registry import JobRecord, create_job
from backend.models.inspect import LoraInfo, ModelInfo
from backend.paths import WorkspacePaths
from webui import captioning_view as cv
from webui import dataset_view as dv
from webui import models_view as mv
from webui import runs_view as rv
from webui.handlers import reported, user_errors
from webui.text import code, md, strip_ansi, toast

HOSTILE = "bad <file> & <b>bold</b> *star* `tick` [link](x) ~a~"
TAG = re.compile(r"<[A-Za-z/]")  # the start of a tag (Markdown renders it as HTML)
CODE_SPAN = re.compile(r"(`+)(.+?)\1")  # shown as written: a tag inside one is text


def _no_foreign_tags(text: str) -> None:
    """No tag outside code spans: every < of the shown text is written &lt;."""
    outside = CODE_SPAN.sub("", text.replace("\\`", ""))
    assert not TAG.search(outside), text


def test_md_escapes_html_and_the_markdown_that_hides_text():
    out = md(HOSTILE)
    _no_foreign_tags(out)
    assert "&lt;file&gt;" in out and r"\*star\*" in out and r"\`tick\`" in out and r"\[link\]" in out
    assert md("Moved to _quarantine: 2 change(s)") == "Moved to _quarantine: 2 change(s)"  # left readable


def test_code_shows_any_text_as_one_code_span():
    assert code("<file>") == "`<file>`"
    assert code("a`b") == "``a`b``"
    assert code("`x`") == "`` `x` ``"
    assert "\n" not in code("two\nlines")


def test_toast_escapes_the_tag_only():
    assert toast("expected <file>; must be > 0 & more") == "expected &lt;file>; must be > 0 & more"


def test_ansi_colour_codes_are_stripped():
    assert strip_ansi("\x1b[0;32mINFO\x1b[0m lycoris \x1b[1;31mERR\x1b[0m\x1b]0;title\x07!") == "INFO lycoris ERR!"


def test_the_runs_tabs_log_has_no_colour_codes(tmp_path):
    """Bug 8."""
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    d = create_job(paths, "train", {}, "coloured", status="running")
    (d / "job.log").write_bytes(b"\x1b[0;32mINFO\x1b[0m Using LyCORIS\n\x1b[33mWARNING\x1b[0m careful\n")
    view = rv.new_view(d.name)
    assert "log" in rv.read_new(view, load_run(d))
    assert view["log"] == "INFO Using LyCORIS\nWARNING careful\n"


def test_runs_header_and_export_notes_escape_names_and_errors():
    rec = JobRecord(id="20260101-000000-x", kind="train", name="my <b>run</b>", status="failed",
                    error="expected <file>\nmore")
    header = rv.job_header(rec)
    _no_foreign_tags(header)
    assert "&lt;file&gt;" in header
    notes = rv.export_notes_markdown([("network.<x>", "no <equivalent>")], {})
    _no_foreign_tags(notes)


def test_models_tab_details_escape_errors_and_metadata():
    lora = LoraInfo(algo="lora", network_module="<mod>", rank=4, alpha=1.0, modules=2, trains_text_encoder=False,
                    base_model="sd <1.5>", base_model_name="", trigger_words=["<trig>"], num_train_images=1,
                    steps=1, epochs=1, resolution="<512>", top_tags=[("<tag>", 3)])
    info = ModelInfo(path="/m/<x>.safetensors", name="<x>", kind="lora", error="cannot read <file>",
                     notes=["note <n>"], lora=lora)
    text = mv.details_markdown(info)
    _no_foreign_tags(text)
    assert "cannot read &lt;file&gt;" in text
    _no_foreign_tags(mv.summary_markdown([info], Path("/models/<m>")))


def test_dataset_tab_texts_escape_names_and_reasons(tmp_path):
    root = tmp_path / "set <b>x</b>"
    result = ImportResult(name="<b>x</b>", path=root, images=1, captions=0, skipped=[("a<b>.doc", "not <an> image")])
    _no_foreign_tags(dv.import_markdown(result))
    changes = [Change(action="moved", path=root / "<a>.png", target=root / "_quarantine" / "<a>.png", detail="<d>")]
    _no_foreign_tags(dv.changes_markdown("Moved <x>", changes, root))


def test_captioning_summary_escapes_errors():
    rec = JobRecord(id="j", kind="caption", name="tag <set>", status="completed")
    follow = {"kind": "caption", "summary": {"written": 1, "total": 2, "provider": "<cpu>",
                                              "failed": [{"path": "/d/<a>.png", "error": "cannot identify <file>"}]}}
    _no_foreign_tags(cv.summary_markdown(rec, follow))
    failed = JobRecord(id="j", kind="caption", name="<x>", status="failed", error="boom <file>")
    _no_foreign_tags(cv.summary_markdown(failed, {"kind": "caption", "errors": []}))


def test_handler_errors_reach_the_toast_whole_and_a_status_line_escaped():
    @user_errors
    def fails() -> dict:
        raise ModelError("a link looks like https://huggingface.co/<owner>/<repo>/resolve/main/<file>")

    with pytest.raises(gr.Error) as err:
        fails()
    assert "&lt;file>" in err.value.message and "<file>" not in err.value.message
    status = gr.Markdown()
    out = reported(fails, status)()
    assert set(out) == {status}
    _no_foreign_tags(out[status])
    assert "&lt;file&gt;" in out[status]


def test_image_errors_never_show_python_objects(tmp_path):
    """Bug 11: "cannot identify image file <_io.BytesIO object at 0x…>" in the Dataset tab's table."""
    from backend.captioning.loader import load_one
    from backend.dataset.images import load_rgb
    from backend.dataset.scan import scan_dataset
    from backend.dataset.validate import validate_dataset

    root = tmp_path / "set"
    root.mkdir()
    (root / "garbage.png").write_bytes(b"not an image at all")
    (root / "garbage.txt").write_text("trig")
    report = validate_dataset(scan_dataset(root), cache_dir=None)
    (problem,) = [p for p in report.problems if p.kind == "unreadable"]
    assert "object at 0x" not in problem.detail and "not an image" in problem.detail, problem.detail
    loaded = load_one(load_rgb, root / "garbage.png")
    assert "object at 0x" not in loaded.error and "not an image" in loaded.error, loaded.error


def test_damaged_job_panel_and_estimate_errors_escape_what_they_show(tmp_path):
    """Review: the damaged-job panel escaped inside a code span (showing &amp;lt;) and left Markdown live in
    the problems; the estimate's error went into Markdown as it was."""
    from webui import estimate_view as ev
    from webui.runs_damaged import panel_text

    rec = JobRecord(id="20260101-000000-x", kind="train", name="x", status="damaged",
                    extra={"folder": "/srv/R&D <ws>", "problems": [f"created_at: {HOSTILE}"]})
    text = panel_text(rec)
    _no_foreign_tags(text)
    assert "`/srv/R&D <ws>`" in text and "&amp;lt;" not in text and r"\*star\*" in text

    # The real backend's refusal of an option named with markup (the form itself would never send one).
    view = ev.EstimateView(type("Ctx", (), {"paths": WorkspacePaths(tmp_path).ensure()})())
    view.form = type("Form", (), {"config": staticmethod(lambda data: None)})()
    view.resolved_toml = lambda cfg: '[model]\n"<img src=x>" = 1\n'
    out = view.estimate({})
    _no_foreign_tags(out)
    assert out.startswith("⚠ Could not estimate the VRAM: ") and "&lt;img src=x&gt;" in out
