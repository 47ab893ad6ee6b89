"""URL downloads against a real HTTP server on 127.0.0.1 that drops connections, ignores ranges,
redirects and names files: resume completes with the right hash, and nothing half-done gets the final name."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backend.errors import ConfigError, ModelError
from backend.jobs.events import EventReader
from backend.jobs.registry import create_job, load_job
from backend.models import http_download as hd
from backend.paths import WorkspacePaths
from backend.worker.context import WorkerContext

BLOB = os.urandom(3 * hd.CHUNK + 12345)
SHA = hashlib.sha256(BLOB).hexdigest()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server's hook
        srv = self.server
        srv.seen.append((self.path, dict(self.headers)))
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{srv.server_port}/file.bin")
            self.end_headers()
            return
        if self.path.startswith("/secret") and self.headers.get("Authorization") != "Bearer s3cret":
            self.send_response(401)
            self.end_headers()
            return
        start = 0
        m = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m and not srv.ignore_range:
            start = int(m.group(1))
            if start >= len(BLOB):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(BLOB)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(BLOB) - start))
        if self.path.startswith("/named"):
            self.send_header("Content-Disposition", 'attachment; filename="../../evil name.safetensors"')
        self.end_headers()
        body = BLOB[start:]
        if srv.drops:
            cut = srv.drops.pop(0)
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.close()  # the connection dies mid-file
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.seen, srv.drops, srv.ignore_range = [], [], False
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url(srv, path="/file.bin"):
    return f"http://127.0.0.1:{srv.server_port}{path}"


def ranges(srv):
    return [h.get("Range") for _, h in srv.seen]


def test_dropped_connection_resumes_with_range_and_hash_matches(server, tmp_path):
    server.drops = [hd.CHUNK + 777, 5000]  # two drops, then the rest
    seen_progress = []
    res = hd.download(url(server), tmp_path / "m.safetensors", sha256=SHA, size=len(BLOB),
                      progress=lambda d, t, r: seen_progress.append((d, t)), backoff_s=0.01,
                      progress_interval_s=0)
    out = tmp_path / "m.safetensors"
    assert out.read_bytes() == BLOB and res.sha256 == SHA and res.bytes == len(BLOB)
    assert not (tmp_path / "m.safetensors.partial").exists()
    assert ranges(server) == [None, f"bytes={hd.CHUNK + 777}-", f"bytes={hd.CHUNK + 777 + 5000}-"]
    assert res.reconnects == 2
    assert seen_progress[-1] == (len(BLOB), len(BLOB))


def test_stop_keeps_partial_and_next_call_resumes(server, tmp_path):
    dest = tmp_path / "m.bin"
    calls = {"n": 0}

    def stop_after_two_chunks():
        calls["n"] += 1
        return calls["n"] > 2

    first = hd.download(url(server), dest, should_stop=stop_after_two_chunks)
    partial = tmp_path / "m.bin.partial"
    assert first.stopped and not dest.exists() and partial.stat().st_size == 2 * hd.CHUNK
    second = hd.download(url(server), dest, sha256=SHA)
    assert second.resumed_from == 2 * hd.CHUNK and dest.read_bytes() == BLOB
    assert ranges(server)[-1] == f"bytes={2 * hd.CHUNK}-"


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.ignore_range = True
    server.drops = [1000]
    res = hd.download(url(server), tmp_path / "m.bin", sha256=SHA, backoff_s=0.01)
    assert (tmp_path / "m.bin").read_bytes() == BLOB and res.reconnects == 1


def test_whole_partial_answered_416_completes(server, tmp_path):
    (tmp_path / "m.bin.partial").write_bytes(BLOB)
    res = hd.download(url(server), tmp_path / "m.bin", sha256=SHA, size=len(BLOB))
    assert (tmp_path / "m.bin").read_bytes() == BLOB and res.resumed_from == len(BLOB)


def test_wrong_hash_or_size_never_gets_the_final_name(server, tmp_path):
    with pytest.raises(ModelError, match="sha256 mismatch"):
        hd.download(url(server), tmp_path / "a.bin", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ModelError, match="expected 10 bytes|offers"):
        hd.download(url(server), tmp_path / "b.bin", size=10)
    assert not (tmp_path / "b.bin").exists()
    with pytest.raises(ModelError, match="64 hexadecimal"):
        hd.download(url(server), tmp_path / "c.bin", sha256="abc")


def test_folder_destination_takes_safe_server_name(server, tmp_path):
    res = hd.download(url(server, "/named"), tmp_path)
    assert res.path == str(tmp_path / "evil name.safetensors")
    assert (tmp_path / "evil name.safetensors").read_bytes() == BLOB


def test_token_goes_to_the_same_host_only(server, tmp_path):
    hd.download(url(server, "/secret"), tmp_path / "s.bin", token="s3cret")
    with pytest.raises(ModelError, match="HTTP 401"):
        hd.download(url(server, "/secret"), tmp_path / "t.bin")
    hd.download(url(server, "/redirect"), tmp_path / "r.bin", token="s3cret")
    (first_path, first), (second_path, second) = server.seen[-2:]
    assert first_path == "/redirect" and first.get("Authorization") == "Bearer s3cret"
    assert second_path == "/file.bin" and "Authorization" not in second  # another host: not forwarded


def test_gives_up_after_retries_and_keeps_partial(tmp_path):
    with pytest.raises(ModelError, match="connection failed"):
        hd.download("http://127.0.0.1:9/x.bin", tmp_path / "x.bin", retries=1, backoff_s=0.01, timeout=2)


def test_resolve_url_shapes():
    hf = hd.resolve("https://huggingface.co/owner/repo/blob/main/sub/model.safetensors")
    assert hf.url == "https://huggingface.co/owner/repo/resolve/main/sub/model.safetensors"
    assert (hf.kind, hf.name_hint) == ("huggingface", "model.safetensors")
    civ = hd.resolve("https://civitai.com/models/12345/some-model?modelVersionId=67890")
    assert (civ.url, civ.kind) == ("https://civitai.com/api/download/models/67890", "civitai")
    assert hd.resolve("https://civitai.com/api/download/models/5?type=Model").kind == "civitai"
    with pytest.raises(ModelError, match="modelVersionId"):
        hd.resolve("https://civitai.com/models/12345/some-model")
    with pytest.raises(ModelError, match="resolve"):
        hd.resolve("https://huggingface.co/owner/repo")
    with pytest.raises(ModelError, match="http"):
        hd.resolve("ftp://example.com/x")


def test_download_url_job_runner(server, tmp_path):
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    server.drops = [4096]
    cfg = {"url": url(server, "/named"), "dest": "checkpoints/", "sha256": SHA}
    job = create_job(paths, "download_url", cfg, "get model")
    ctx = WorkerContext(job, paths, load_job(job), cfg, logging.getLogger("test"), progress_interval_s=0)
    summary = hd.run_job(ctx)
    out = paths.models / "checkpoints" / "evil name.safetensors"
    assert summary["path"] == str(out) and out.read_bytes() == BLOB and summary["reconnects"] == 1
    events = EventReader(job).read_all()
    progress = [e for e in events if e["type"] == "progress"]
    assert progress and progress[-1]["step"] == len(BLOB) and progress[-1]["unit"] == "bytes"
    assert any(e["type"] == "download_summary" for e in events)
    assert "token" not in (job / "config.toml").read_text()
    with pytest.raises(ConfigError, match="dest"):
        hd.run_job(WorkerContext(job, paths, load_job(job), {**cfg, "dest": "../../etc"},
                                 logging.getLogger("test")))
