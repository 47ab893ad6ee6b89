"""The dashboard's guards: server folders limited to the allowed roots (--allow-dir), logins throttled
per client, and a damaged job that no longer stops the app from starting."""

from __future__ import annotations

import json
import time

import gradio as gr
import httpx
import pytest
from gradio_client import Client
from PIL import Image

from backend.errors import ConfigError
from backend.jobs.registry import create_job
from backend.paths import WorkspacePaths
from tests._webui_fixtures import build_tab, running_app, sd15_configs
from webui import training_actions
from webui.context import make_context
from webui.launching import LaunchError, settings_from
from webui.login_throttle import LoginBackoff
from webui.tabs import dataset

USER, PASSWORD = "ann", "right-one"


def test_allow_dir_flag_and_environment(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    s = settings_from(["--allow-dir", str(a)], {"LORADASH_ALLOW_DIRS": f"{b}:"})
    assert s.allow_dirs == [str(a), str(b)]
    with pytest.raises(LaunchError, match="--allow-dir .*missing: not an existing folder"):
        settings_from(["--allow-dir", str(tmp_path / "missing")], {})


def _set(folder):
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (200, 10, 10)).save(folder / "a.png")
    (folder / "a.txt").write_text("red")
    return folder


def test_server_folders_outside_the_roots_are_refused_in_the_dashboard(tmp_path):
    allowed, other = _set(tmp_path / "allowed"), _set(tmp_path / "other")
    ctx = make_context(str(tmp_path / "ws"), allow_dirs=[str(allowed)])
    _, tab = build_tab(ctx, dataset)
    with pytest.raises(gr.Error, match=r"outside the folders this server may use .*--allow-dir DIR"):
        tab.import_folder({tab.server_folder: str(other), tab.folder_mode: "Use in place", tab.import_name: "",
                           tab.overwrite: False})
    with pytest.raises(gr.Error, match="outside the folders"):
        tab.import_folder({tab.server_folder: "/etc", tab.folder_mode: "Copy into the workspace",
                           tab.import_name: "etc", tab.overwrite: False})
    out = tab.import_folder({tab.server_folder: str(allowed), tab.folder_mode: "Use in place", tab.import_name: "",
                             tab.overwrite: False})
    assert out[tab.dataset].value == str(allowed)  # imported in place: it is the picked dataset now
    # The Training tab's checks: an outside path is named, and not even looked at.
    sd15_configs(ctx.paths.models / "m")
    problems = training_actions.path_problems({"model.path": "models/m", "dataset.path": str(other),
                                               "model.vae_path": "/etc/passwd"}, ctx)
    assert sorted(p for p, _ in problems) == ["dataset.path", "model.vae_path"]  # in the form's order
    assert all("outside the folders this server may use" in m for _, m in problems)
    # Jobs submitted from the dashboard (its supervisor has the roots): refused before a folder is made.
    with pytest.raises(ConfigError, match="dataset.path: .* is outside"):
        ctx.supervisor.submit("caption", {"dataset": {"path": str(other)}, "model": {"path": "models/m"}}, "x")
    assert ctx.supervisor.jobs() == []


def test_a_caption_job_looks_at_nothing_outside_the_roots(tmp_path):
    """The Captioning tab's Run said whether an outside folder existed and what it held ("/etc is not a
    captioner folder: config.json missing") before the supervisor refused it."""
    from backend.captioning.config import load_caption_config
    from webui import captioning_view as cv

    ctx = make_context(str(tmp_path / "ws"))
    inside = _set(ctx.paths.datasets / "mine")
    for dataset_path, model_path, what in ((str(inside), "/etc", "model.path"), ("/etc", "/etc", "dataset"),
                                           (str(tmp_path / "nope"), "/etc", "dataset")):
        cfg = load_caption_config({"dataset": {"path": dataset_path},
                                   "model": {"path": model_path, "mode": "captioner"}})
        with pytest.raises(ConfigError) as err:
            cv.job_config(ctx.paths, cfg, ctx.allowed)
        [(path, message)] = err.value.problems
        assert path == what and "outside the folders this server may use" in message
        assert "does not exist" not in message and "config.json" not in message


def test_login_backoff_per_client():
    now = [100.0]
    b = LoginBackoff(free=2, base_s=1.0, max_s=4.0, clock=lambda: now[0])
    assert [b.failed("x") for _ in range(5)] == [0.0, 0.0, 1.0, 2.0, 4.0]
    assert b.wait_s("x") == 4.0 and b.wait_s("y") == 0.0
    now[0] += 4.0
    assert b.wait_s("x") == 0.0
    b.succeeded("x")
    assert b.failed("x") == 0.0


def test_parallel_guesses_cannot_pass_one_check():
    """Review: the back-off was checked when a login began but counted when it ended, so 60 guesses
    whose bodies arrived late were all checked against the password."""
    import asyncio

    from webui.serve import _app_kwargs

    with gr.Blocks() as demo:
        gr.Markdown("x")
    _, url, _ = demo.launch(auth=[(USER, PASSWORD)], prevent_thread_lock=True, quiet=True,
                            app_kwargs=_app_kwargs([(USER, PASSWORD)]))

    async def guesses() -> list[int]:
        def slow_body(i: int):
            async def gen():
                await asyncio.sleep(0.5)  # every request has begun before any body arrives
                yield f"username={USER}&password=guess{i}".encode()
            return gen()

        async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=30) as http:
            replies = await asyncio.gather(*[
                http.post("/login", content=slow_body(i),
                          headers={"content-type": "application/x-www-form-urlencoded"}) for i in range(20)])
        return [r.status_code for r in replies]

    try:
        codes = asyncio.run(guesses())
    finally:
        demo.close()
    assert codes.count(400) == 4 and codes.count(429) == 16, codes  # 3 free + the one that starts the wait


def test_ipv6_clients_share_their_64():
    from webui.login_throttle import client_key

    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:10.0.0.7") == "10.0.0.7" and client_key("10.0.0.7") == "10.0.0.7"
    assert client_key("testclient") == "testclient"


def test_app_with_a_damaged_job_starts_throttles_logins_and_lists_it(tmp_path):
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    extra = tmp_path / "data"
    extra.mkdir()
    good = create_job(paths, "selftest", {"steps": 1}, "fine", status="completed")
    bad = create_job(paths, "selftest", {"steps": 1}, "broken", status="completed")
    (bad / "job.json").write_text(json.dumps({"id": bad.name, "kind": "selftest", "name": "broken",
                                              "created_at": "yesterday"}))
    with running_app(paths.root, "--auth", f"{USER}:{PASSWORD}", "--allow-dir", str(extra)) as app:
        assert f"Server folders the browser may name: the workspace {paths.root.resolve()} and {extra}" in app.output()
        with httpx.Client(base_url=app.url, timeout=30) as http:
            def login(password):
                return http.post("login", data={"username": USER, "password": password})

            assert [login("wrong").status_code for _ in range(3)] == [400, 400, 400]
            r = login("wrong")
            assert r.status_code == 400  # the fourth failure starts the back-off
            r = login(PASSWORD)
            assert r.status_code == 429 and "Too many failed logins" in r.json()["detail"]
            time.sleep(int(r.headers["retry-after"]) + 0.2)
            assert login(PASSWORD).status_code == 200
            assert login("wrong").status_code == 400  # forgotten after a success: free attempts again
        client = Client(app.url, auth=(USER, PASSWORD), verbose=False)
        jobs = {j["id"]: j for j in client.predict(api_name="/jobs")}
        assert jobs[good.name]["status"] == "completed" and jobs[bad.name]["status"] == "damaged"
        assert "created_at must be a number" in jobs[bad.name]["error"]


def test_every_tab_of_the_app_gets_the_allowed_roots(tmp_path):
    from webui.app import create_app

    extra = tmp_path / "data"
    extra.mkdir()
    ctx = make_context(str(tmp_path / "ws"), allow_dirs=[str(extra)])
    demo = create_app(ctx)
    tabs = {}
    for block_fn in (demo.fns.values() if isinstance(demo.fns, dict) else demo.fns):
        fn = getattr(block_fn.fn, "__wrapped__", block_fn.fn)
        tab = getattr(fn, "__self__", None)
        if getattr(tab, "ctx", None) is not None:
            tabs[type(tab).__name__] = tab.ctx.allowed.roots
    assert "DatasetTab" in tabs and "CaptioningTab" in tabs
    assert set(tabs.values()) == {(ctx.paths.root.resolve(), extra)}
