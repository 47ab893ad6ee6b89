"""The Models tab's handlers on a real workspace: the scan with LoRA metadata, and a download job run by
a real worker against an HTTP server on 127.0.0.1 (progress from its events, token kept out of files)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gradio as gr
import numpy as np
import pytest
from safetensors.numpy import save_file

from backend.jobs.registry import list_jobs
from backend.jobs.supervisor import Supervisor
from tests._jobs_fixtures import wait_finished
from tests._webui_fixtures import build_tab, sd15_configs
from webui import models_view as mv
from webui.context import AppContext, make_context
from webui.tabs import models

BLOB = os.urandom(300_000)
SHA = hashlib.sha256(BLOB).hexdigest()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server's hook
        self.send_response(200)
        self.send_header("Content-Length", str(len(BLOB)))
        self.end_headers()
        self.wfile.write(BLOB)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def _lora(path):
    meta = {"ss_network_module": "lycoris.kohya", "ss_network_dim": "8", "ss_network_alpha": "4.0",
            "ss_network_args": json.dumps({"algo": "lokr"}), "ss_base_model_version": "sdxl_base_v1-0",
            "ss_tag_frequency": json.dumps({"10_mychar": {"mychar": 20, "smile": 7}}),
            "modelspec.trigger_phrase": "mychar"}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_input_blocks_4_1_proj_in.lokr_w1": np.zeros((8, 8), np.float16)}, str(path),
              metadata=meta)


def _data(tab, **values) -> dict:
    data = {tab.url: "", tab.dest: "", tab.sha256: "", tab.token: ""}
    data.update({getattr(tab, k): v for k, v in values.items()})
    return data


def test_scan_lists_models_with_lora_metadata(tmp_path):
    ctx = make_context(str(tmp_path / "ws"))
    _lora(ctx.paths.models / "Lora" / "mychar.safetensors")
    sd15_configs(ctx.paths.models / "tiny")
    _, tab = build_tab(ctx, models)
    rows, summary, found = tab.scan()
    by_name = {r[0]: dict(zip(mv.TABLE_HEADERS, r, strict=True)) for r in rows}
    lora = by_name["mychar.safetensors"]
    assert (lora["kind"], lora["precision"], lora["network"], lora["rank"]) == (
        "lora", "fp16", "lokr", "8 (α 4)")
    assert (lora["base model"], lora["trigger words"], lora["path"]) == (
        "sdxl_base_v1-0", "mychar", "Lora/mychar.safetensors")
    assert by_name["tiny"]["kind"] == "diffusers" and by_name["tiny"]["family"]
    assert summary.startswith("2 in ")
    row = [r[0] for r in rows].index("mychar.safetensors")
    details = tab.show_details(found, gr.SelectData(None, {"index": [row, 0], "value": "mychar.safetensors"}))
    assert "trigger words:** mychar" in details and "mychar (20)" in details and "sdxl_base_v1-0" in details


def test_bad_download_input_is_named_before_any_job(tmp_path):
    ctx = make_context(str(tmp_path / "ws"))
    _, tab = build_tab(ctx, models)
    for values, message in (({"url": ""}, "Enter the URL"), ({"url": "ftp://x/y"}, "url"),
                            ({"url": "http://127.0.0.1/x", "sha256": "abc"}, "sha256"),
                            ({"url": "http://127.0.0.1/x", "dest": "../../etc/"}, "leaves the models folder"),
                            ({"url": "https://huggingface.co/a/b"}, "resolve/main")):
        with pytest.raises(gr.Error, match=message):
            tab.download(_data(tab, **values))
    assert list_jobs(ctx.paths) == []


def test_the_token_goes_to_the_supervisor_not_into_the_job(tmp_path):
    ctx = make_context(str(tmp_path / "ws"))
    sup = Supervisor(ctx.paths, autostart=False)  # queued only: there is no Hugging Face here
    _, tab = build_tab(AppContext(paths=ctx.paths, supervisor=sup), models)
    url = "https://huggingface.co/owner/repo/blob/main/model.safetensors"
    out = tab.download(_data(tab, url=url, dest="sdxl/", token="hf_s3cret"))
    assert out[tab.token] == ""  # cleared from the page
    (rec,) = list_jobs(ctx.paths)
    assert (rec.kind, rec.name, rec.status) == ("download_url", "download model.safetensors", "queued")
    assert sup._secret_env == {"HF_TOKEN": "hf_s3cret"}  # handed to workers in their environment only
    job_files = [p for p in (ctx.paths.jobs / rec.id).rglob("*") if p.is_file()]
    assert job_files and not any(b"hf_s3cret" in p.read_bytes() for p in job_files)


def test_a_download_runs_as_a_job_and_its_progress_shows(tmp_path, server):
    ctx = make_context(str(tmp_path / "ws"))
    _, tab = build_tab(ctx, models)
    assert tab.follow(None) == [gr.skip()] * 5  # no downloads: nothing to draw
    out = tab.download(_data(tab, url=f"{server}/files/tiny.safetensors", dest="got/", sha256=SHA.upper()))
    assert "download tiny.safetensors" in out[tab.downloads]
    seen = tab.follow(None)[1]
    (rec,) = list_jobs(ctx.paths)
    assert wait_finished(ctx.supervisor, rec.id).status == "completed"
    html, seen2, rows, summary, _ = tab.follow(seen)
    assert "completed" in html and "293.0 KiB of 293.0 KiB" in html and "width:100.0%" in html
    assert seen2["completed"] == [rec.id]
    assert (ctx.paths.models / "got" / "tiny.safetensors").read_bytes() == BLOB
    assert any(r[-1] == "got/tiny.safetensors" for r in rows) and summary.startswith("1 in ")
    assert tab.follow(seen2)[2] == gr.skip()  # no new completion: no rescan


def test_base_model_choices_leave_out_unfinished_downloads(tmp_path):
    """A Hugging Face download still in `<name>.partial/` may already hold model_index.json: not offered."""
    from backend.paths import open_workspace
    from webui.choices import model_choices

    paths = open_workspace(tmp_path / "ws")
    for name in ("done", "busy.partial"):
        (paths.models / name).mkdir(parents=True)
        (paths.models / name / "model_index.json").write_text("{}")
    (paths.models / "one.safetensors").write_bytes(b"x" * 16)
    values = [value for _, value in model_choices(paths)]
    assert any(v.endswith("done") for v in values) and any(v.endswith("one.safetensors") for v in values)
    assert not any("partial" in v for v in values)
