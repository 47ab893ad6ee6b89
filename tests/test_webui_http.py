"""The launched app over HTTP, with --auth and --root-path: logins, the API, and which files it serves."""

from __future__ import annotations

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError, AuthenticationError
from PIL import Image

from backend.jobs.registry import create_job, list_jobs
from backend.paths import PROJECT_ROOT, WorkspacePaths
from tests._webui_fixtures import ARTIFACTS, prefix_proxy, running_app, sd15_configs
from tests.conftest import wait_for

USER, PASSWORD = "tester", "pw-123:x"
PREFIX = "/ld"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    paths = WorkspacePaths(tmp_path_factory.mktemp("http") / "ws").ensure()
    sd15_configs(paths.models / "fake-sd15")
    subset = paths.datasets / "fake" / "2_thing"
    subset.mkdir(parents=True)
    Image.new("RGB", (64, 64), (10, 200, 10)).save(subset / "a.png")
    (subset / "a.txt").write_text("thing, green")
    (paths.presets / "mine.toml").write_text("schema_version = 1\n")
    done = create_job(paths, "selftest", {"steps": 1}, "finished one", status="completed")
    (done / "output" / "lora.safetensors").write_bytes(b"LORA" * 16)
    for cached in ("thumbs/ab/t.png", "dataset/facts.json"):  # gallery thumbnails are served, the rest not
        (paths.root / "cache" / cached).parent.mkdir(parents=True)
        (paths.root / "cache" / cached).write_bytes(b"CACHE")
    with running_app(paths.root, "--auth", f"{USER}:{PASSWORD}", "--root-path", PREFIX, prefix=PREFIX) as a:
        yield a


@pytest.fixture(scope="module")
def http(app):
    """An HTTP client logged in through the app's /login route."""
    with httpx.Client(base_url=app.url, timeout=30) as client:
        r = client.post("login", data={"username": USER, "password": PASSWORD})
        assert r.status_code == 200 and r.json() == {"success": True}
        yield client


def test_without_credentials_the_api_is_refused(app):
    with pytest.raises(AuthenticationError):
        Client(app.url, verbose=False)
    assert httpx.get(app.url + "gradio_api/info", timeout=30).status_code == 401
    r = httpx.post(app.url + "login", data={"username": USER, "password": "wrong"}, timeout=30)
    assert r.status_code == 400


def test_with_credentials_a_job_starts_through_the_api(app):
    client = Client(app.url, auth=(USER, PASSWORD), verbose=False)
    toml = '[model]\npath = "models/fake-sd15"\n[dataset]\npath = "datasets/fake"\n[network]\nrank = 4\n'
    result = client.predict(toml, "api run", True, api_name="/start_training")
    assert result["status"] in ("queued", "starting", "running")
    jobs = {j["id"]: j for j in client.predict(api_name="/jobs")}
    assert jobs[result["id"]]["name"] == "api run" and jobs[result["id"]]["kind"] == "train"
    stored = (app.workspace / "jobs" / result["id"] / "config.toml").read_text()
    assert "rank = 4" in stored and str(app.workspace / "models" / "fake-sd15") in stored
    # Known problems come back in words, naming the option.
    with pytest.raises(AppError, match=r"network\.rank"):
        client.predict("[network]\nrank = 0\n", "", True, api_name="/start_training")
    with pytest.raises(AppError, match=r"model\.path"):
        client.predict('[model]\npath = "models/nothing-here"\n[dataset]\npath = "datasets/fake"\n', "",
                       True, api_name="/start_training")
    assert len(list_jobs(WorkspacePaths(app.workspace))) == 2  # the refused ones made no folder


def test_root_path_is_in_the_app_config(app, http):
    config = http.get("config").json()
    assert config["root"].rstrip("/").endswith(PREFIX)


def test_only_job_outputs_and_datasets_are_served(app, http):
    ws = app.workspace
    job = next(p for p in (ws / "jobs").iterdir() if (p / "output" / "lora.safetensors").exists())

    def get(path) -> httpx.Response:
        return http.get(f"gradio_api/file={path}")

    r = get(job / "output" / "lora.safetensors")
    assert r.status_code == 200 and r.content == b"LORA" * 16
    assert get(ws / "datasets" / "fake" / "2_thing" / "a.png").status_code == 200
    assert get(ws / "cache" / "thumbs" / "ab" / "t.png").content == b"CACHE"
    for refused in (ws / "models" / "fake-sd15" / "model_index.json", ws / "presets" / "mine.toml",
                    ws / "cache" / "dataset" / "facts.json",
                    ws / "cache" / "thumbs" / ".." / "dataset" / "facts.json",
                    PROJECT_ROOT / "launch.py", "/etc/passwd", job / ".." / ".." / "presets" / "mine.toml"):
        assert get(refused).status_code in (403, 404), refused
    # Not logged in: even a job file is refused.
    assert httpx.get(f"{app.url}gradio_api/file={job / 'output' / 'lora.safetensors'}",
                     timeout=30).status_code in (401, 403)


@pytest.fixture(scope="module")
def proxied(app):
    """The app behind a reverse proxy that serves it under PREFIX and strips the prefix."""
    with prefix_proxy(PREFIX, f"http://127.0.0.1:{app.port}") as url:
        yield url


def test_gradio_client_works_through_the_proxy(proxied):
    client = Client(proxied, auth=(USER, PASSWORD), verbose=False)
    assert any(j["name"] == "finished one" for j in client.predict(api_name="/jobs"))


@pytest.mark.browser
def test_the_browser_gets_the_login_page_then_the_app(app, proxied, browser):
    """Through the proxy: the login page, then the app, whose timer updates stream through it."""
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    try:
        direct: list[str] = []
        page.on("request", lambda r: direct.append(r.url) if f":{app.port}/" in r.url else None)
        page.goto(proxied)
        page.get_by_label("username").wait_for(timeout=30_000)
        assert page.locator("#tab-training").count() == 0
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "login.png"))
        page.get_by_label("username").fill(USER)
        page.get_by_label("password").fill(PASSWORD)
        page.get_by_role("button", name="Login").click()
        page.get_by_role("tab", name="Runs").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Runs").click()
        wait_for(lambda: "finished one" in page.locator("#jobs-table").inner_text(), 30, "the jobs table")
        assert direct == []  # every request went through the proxy
    finally:
        page.close()
