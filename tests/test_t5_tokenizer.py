"""The T5 tokenizer a single T5 file lacks: fetched once through huggingface_hub from a hub (here a real
HTTP server on 127.0.0.1 serving the demo's tokenizer in the hub's URL layout), then read offline; an
unreachable hub gives an error that says which files to put where, and leaves no half folder."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backend.errors import ModelError
from backend.models import t5_tokenizer
from backend.models.flux_demo import demo_texts, write_t5_tokenizer

COMMIT = "0" * 40


class Hub(BaseHTTPRequestHandler):
    """HEAD/GET /<repo>/resolve/<revision>/<path>, with the headers huggingface_hub reads."""

    def log_message(self, *args):
        pass

    def _file(self) -> bytes | None:
        prefix = f"/{t5_tokenizer.REPO_ID}/resolve/main/{t5_tokenizer.SUBFOLDER}/"
        self.server.seen.append((self.command, self.path))
        if not self.path.startswith(prefix):
            return None
        path = self.server.root / self.path[len(prefix):]
        return path.read_bytes() if path.is_file() else None

    def _head(self, body: bytes | None) -> None:
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha1(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()

    def do_HEAD(self):  # noqa: N802 - http.server's hook
        self._head(self._file())

    def do_GET(self):  # noqa: N802
        body = self._file()
        self._head(body)
        if body is not None:
            self.wfile.write(body)


@pytest.fixture
def hub(tmp_path):
    root = write_t5_tokenizer(tmp_path / "served", demo_texts())
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    server.root, server.seen = root, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_fetched_once_then_read_offline(hub, tmp_path):
    from transformers import AutoTokenizer

    server, endpoint = hub
    folder = t5_tokenizer.t5_tokenizer_folder(tmp_path / "configs", endpoint=endpoint)
    assert folder == tmp_path / "configs" / "t5-tokenizer"
    assert sorted(p.name for p in folder.iterdir()) == sorted(t5_tokenizer.FILES)
    assert all((folder / n).read_bytes() == (server.root / n).read_bytes() for n in t5_tokenizer.FILES)
    ours, served = AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(server.root)
    assert ours("dashdemo, red circle").input_ids == served("dashdemo, red circle").input_ids
    n = len(server.seen)
    assert n >= len(t5_tokenizer.FILES)
    assert t5_tokenizer.t5_tokenizer_folder(tmp_path / "configs", endpoint="http://127.0.0.1:9") == folder
    assert len(server.seen) == n  # the second run asked nobody
    assert not [p for p in (tmp_path / "configs").iterdir() if p.name.startswith(".")]


def test_failed_download_says_what_to_put_where(hub, tmp_path):
    server, endpoint = hub
    (server.root / "special_tokens_map.json").unlink()  # the hub lacks one file: nothing half-made stays
    with pytest.raises(ModelError) as err:
        t5_tokenizer.t5_tokenizer_folder(tmp_path / "configs", endpoint=endpoint)
    assert not (tmp_path / "configs" / "t5-tokenizer").exists()
    msg = str(err.value)
    assert "tokenizer.json" in msg and str(tmp_path / "configs" / "t5-tokenizer") in msg
    assert t5_tokenizer.REPO_ID in msg and "diffusers Flux folder" in msg
    assert [p.name for p in (tmp_path / "configs").iterdir()] == []


def test_flux_single_file_without_tokenizer_uses_the_fetched_one(hub, tmp_path):
    """A Flux source whose config folder has no tokenizer_2/ (the shipped configs) reads the T5 tokenizer
    from the hub named by $HF_ENDPOINT, as a worker process would (huggingface_hub reads it at import)."""
    import os
    import subprocess
    import sys

    from backend.paths import PROJECT_ROOT

    _, endpoint = hub
    (tmp_path / "shipped" / "tokenizer_2").mkdir(parents=True)
    code = ("import sys; from pathlib import Path\n"
            "from backend.models.components import ModelSource\n"
            "from backend.models.detect import Detected\n"
            "from backend.models.flux import FluxFamily\n"
            "src = ModelSource(Path('flux1-dev.safetensors'), 'flux', True, Path(sys.argv[2]),\n"
            "                  Detected('checkpoint', 'flux', variant='dev'))\n"
            "print(FluxFamily(configs_root=Path(sys.argv[1]))._t5_tokenizer_folder(src))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "configs"), str(tmp_path / "shipped")],
                          cwd=PROJECT_ROOT, env={**os.environ, "HF_ENDPOINT": endpoint}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(tmp_path / "configs" / "t5-tokenizer")
    assert (tmp_path / "configs" / "t5-tokenizer" / "tokenizer.json").is_file()
