"""Helpers for the web UI tests: launch the real app (`python launch.py …`) as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from backend.jobs.registry import ACTIVE, list_jobs
from backend.paths import PROJECT_ROOT, WorkspacePaths
from tests.conftest import wait_for
from webui.context import AppContext, SharedUI

READY = "LoRA Dash is running at"
ARTIFACTS = PROJECT_ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class App:
    proc: subprocess.Popen
    port: int
    url: str
    log: Path
    workspace: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def launch_argv(workspace: Path, port: int, *flags: str) -> list[str]:
    return [sys.executable, "launch.py", "--workspace", str(workspace), "--port", str(port), *flags]


@contextmanager
def running_app(workspace: Path, *flags: str, env: dict | None = None, timeout_s: float = 180,
                prefix: str = "") -> Iterator[App]:
    """Start launch.py, wait for its "running at" line, yield; then stop it and any job it started."""
    port = free_port()
    log = workspace.parent / f"app-{port}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(launch_argv(workspace, port, *flags), cwd=PROJECT_ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    app = App(proc, port, f"http://127.0.0.1:{port}{prefix}/", log, workspace)
    try:
        def started() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the app exited ({proc.returncode}):\n{app.output()[-3000:]}")
            return READY in app.output()

        wait_for(started, timeout_s, "the app to start", 0.3)
        yield app
    finally:
        stop(proc)
        stop_workers(WorkspacePaths(workspace))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def stop_workers(paths: WorkspacePaths) -> None:
    """Workers run in their own process group and outlive the app: end the ones this test started."""
    for rec in list_jobs(paths):
        if rec.status in ACTIVE and rec.pgid:
            try:
                os.killpg(rec.pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def sd15_configs(folder: Path) -> Path:
    """An SD 1.5 diffusers folder without tensors (tests._preflight_fixtures.sd15_folder): complete for
    the UI's checks; a worker given it fails at load time."""
    from tests._preflight_fixtures import sd15_folder

    return sd15_folder(folder)


def build_tab(ctx: AppContext, module) -> tuple[gr.Blocks, object]:
    """Build one tab module in a fresh Blocks, as create_app does (for tests that need its object)."""
    with gr.Blocks() as demo:
        ui = SharedUI(blocks=demo, tabs=gr.Tabs(), timer=gr.Timer(), job_id=gr.State())
        tab_ctx = AppContext(paths=ctx.paths, supervisor=ctx.supervisor, ui=ui, lock=ctx.lock, cache=ctx.cache,
                             roots=ctx.roots)
        tab = module.build(tab_ctx)
    return demo, tab


@contextmanager
def prefix_proxy(prefix: str, upstream: str) -> Iterator[str]:
    """A reverse proxy as RunPod's or nginx's: serves `http://127.0.0.1:PORT{prefix}/…` by forwarding
    to `upstream/…` with the prefix stripped (responses streamed, so Gradio's event streams pass).
    Yields the public URL."""
    import threading

    import httpx
    import uvicorn
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    hop = {"content-length", "transfer-encoding", "connection"}  # Host passes, as nginx is set up to

    async def forward(request: Request) -> Response:
        path = request.url.path
        if not path.startswith(prefix):
            return Response("not under the proxy prefix", status_code=404)
        url = httpx.URL(path=path[len(prefix):] or "/", query=request.url.query.encode())
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in hop]
        client = httpx.AsyncClient(base_url=upstream, timeout=None)
        req = client.build_request(request.method, url, headers=headers, content=await request.body())
        resp = await client.send(req, stream=True)
        out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in hop}

        async def close() -> None:
            await resp.aclose()
            await client.aclose()

        return StreamingResponse(resp.aiter_raw(), status_code=resp.status_code, headers=out_headers,
                                 background=BackgroundTask(close))

    methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]
    app = Starlette(routes=[Route("/{path:path}", forward, methods=methods)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, "the proxy to start", 0.05)
    try:
        yield f"http://127.0.0.1:{port}{prefix}/"
    finally:
        server.should_exit = True
        thread.join(10)
