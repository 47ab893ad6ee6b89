"""The LETS-compatible API attacked: file disclosure through paths, cross-site requests, DNS rebinding,
huge and malformed bodies. Each is refused with a 4xx and a message; nothing is read or started."""

from __future__ import annotations

import json
import threading
import tracemalloc

import httpx
import pytest
from starlette.testclient import TestClient

from backend.compat.lets_api import create_lets_app, serve_lets_api
from backend.jobs.supervisor import Supervisor
from backend.paths import PROJECT_ROOT
from backend.roots import AllowedRoots
from tests._compat_fixtures import FIXTURES, make_env

SERVED = "http://127.0.0.1:8000"


@pytest.fixture
def env(tmp_path):
    return make_env(tmp_path)


@pytest.fixture
def sup(env):
    return Supervisor(env.paths, autostart=False)


def client_for(env, sup, extra=()) -> TestClient:
    return TestClient(create_lets_app(env.paths, sup, roots=AllowedRoots.of(env.paths, extra)), base_url=SERVED)


def body_for(env) -> dict:
    return env.sub(json.loads((FIXTURES / "lets_validate_body.json").read_text()))


def test_a_folder_outside_the_roots_is_never_read(env, sup):
    client = client_for(env, sup)  # the workspace only: the test's data folder is not allowed
    body = body_for(env)
    body["dataset"]["subsets"] = [{"name": "x", "image_dir": "/etc", "caption_extension": "passwd"}]
    r = client.post("/validate", json=body)
    assert r.status_code == 400 and "root:x:0:0" not in r.text and "nologin" not in r.text
    problems = r.json()
    assert any(p.startswith("subset 'x' image_dir: /etc is outside the folders this server may use") for p in problems)
    assert any("caption_extension: 'passwd' is not a file extension" in p for p in problems)
    assert any("--allow-dir DIR" in p for p in problems)
    assert sup.jobs() == []


def test_a_caption_extension_must_be_an_extension_even_inside_the_roots(env, sup):
    (env.data / "10_char" / "notes.passwd").write_text("secret, tags\n")
    client = client_for(env, sup, [env.root])
    for ext in ("passwd", "../img0.txt", "/etc/passwd", ".txt/../../x", ""):
        body = body_for(env)
        body["dataset"]["subsets"][0]["caption_extension"] = ext
        r = client.post("/validate", json=body)
        if ext == "":  # empty: the general default applies, as in LETS
            assert r.status_code == 200 and "secret" not in r.json()["tags"]
            continue
        assert r.status_code == 400 and "is not a file extension" in r.text, ext
    body = body_for(env)
    body["dataset"]["general_args"]["caption_extension"] = "passwd"
    assert client.post("/validate", json=body).status_code == 400


def test_symlinks_and_traversal_out_of_the_workspace_are_refused(env, sup, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (env.paths.datasets / "link").symlink_to(outside, target_is_directory=True)
    client = client_for(env, sup)
    for image_dir in (str(env.paths.datasets / "link"), f"{env.paths.datasets}/../../outside", "datasets/../../outside"):
        body = body_for(env)
        body["dataset"]["subsets"][0]["image_dir"] = image_dir
        r = client.post("/validate", json=body)
        assert r.status_code == 400 and f"image_dir: {image_dir} is outside" in r.text, image_dir


def test_a_nul_byte_in_a_path_is_a_400(env, sup):
    client = client_for(env, sup, [env.root])
    body = body_for(env)
    body["args"]["general_args"]["pretrained_model_name_or_path"] = str(env.model) + "\x00.txt"
    r = client.post("/validate", json=body)
    assert r.status_code == 400 and "pretrained_model_name_or_path: contains a NUL byte" in r.text


@pytest.mark.parametrize("section, key", [
    ("general_args", "pretrained_model_name_or_path"), ("general_args", "vae"), ("saving_args", "output_dir"),
    ("logging_args", "logging_dir"), ("sample_args", "sample_prompts"), ("network_args", "network_weights"),
    ("general_args", "resume"), ("network_args", "base_weights"), ("general_args", "train_data_dir"),
    ("general_args", "reg_data_dir"), ("general_args", "dataset_config"),
])
def test_every_path_option_must_be_inside_the_roots(env, sup, tmp_path, section, key):
    secret = tmp_path / "elsewhere" / "file.safetensors"
    secret.parent.mkdir()
    secret.write_bytes(b"x")
    client = client_for(env, sup, [env.data])
    body = body_for(env)
    body["args"]["general_args"]["pretrained_model_name_or_path"] = str(env.data / "10_char" / "img0.png")
    body["args"].setdefault(section, {})[key] = [str(secret)] if key == "base_weights" else str(secret)
    r = client.post("/validate", json=body)
    assert r.status_code == 400 and f"{key}: {secret} is outside the folders" in r.text


@pytest.mark.parametrize("section, key", [("general_args", "sample_prompts"), ("saving_args", "output_dir")])
def test_a_path_in_a_nested_table_is_checked_too(env, sup, tmp_path, section, key):
    """The import lifts a nested table's keys to the top (as sd-scripts does): one level down was never
    checked, so /etc/passwd came back as sample prompts and a run could write its LoRA anywhere."""
    client = client_for(env, sup, [env.data])
    body = body_for(env)
    body["args"]["general_args"]["pretrained_model_name_or_path"] = str(env.data / "10_char" / "img0.png")
    body["args"][section].pop(key, None)
    target = "/etc/passwd" if key == "sample_prompts" else str(tmp_path / "outside")
    body["args"][section]["sneaky"] = {"deeper": {key: target}} if key == "output_dir" else {key: target}
    r = client.post("/validate", json=body)
    assert r.status_code == 400 and f"{key}: {target} is outside the folders" in r.text
    assert "root:x:0:0" not in r.text
    assert client.post("/train").status_code == 400 and sup.jobs() == []


def test_a_regularization_subset_must_be_inside_the_roots(env, sup, tmp_path):
    client = client_for(env, sup, [env.data])
    body = body_for(env)
    body["args"]["general_args"]["pretrained_model_name_or_path"] = str(env.data / "10_char" / "img0.png")
    body["dataset"]["subsets"].append({"name": "reg", "image_dir": str(tmp_path), "is_reg": True})
    r = client.post("/validate", json=body)
    assert r.status_code == 400 and f"subset 'reg' image_dir: {tmp_path} is outside" in r.text


def test_check_path_answers_only_inside_the_roots(env, sup):
    client = client_for(env, sup, [env.data])
    assert client.post("/check_path", json={"path": str(env.data), "type": "folder"}).json() == {"valid": True}
    r = client.post("/check_path", json={"path": "/etc/passwd", "type": "file"})
    assert r.status_code == 403 and r.json()["valid"] is False and "outside" in r.json()["detail"]
    r = client.post("/check_path", json={"path": "/etc\x00", "type": "folder"})
    assert r.status_code == 400 and "NUL byte" in r.json()["detail"]
    r = client.post("/check_path", json={"path": str(env.data), "type": "folder", "extensions": [3]})
    assert r.status_code == 400


def test_cross_site_requests_are_refused_and_start_nothing(env, sup):
    client = client_for(env, sup, [env.root])
    body = json.dumps(body_for(env))
    page = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    r = client.post("/validate", content=body, headers=page)
    assert r.status_code == 403 and "web pages" in r.json()["detail"]
    r = client.post("/validate", content=body, headers={"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"})
    assert r.status_code == 403
    r = client.post("/validate", content=body, headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()[0]
    assert client.get("/train", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}).status_code == 403
    assert client.get("/train", headers={"Referer": "http://evil.example/page"}).status_code == 403
    assert sup.jobs() == []
    # What LETS' front end sends (python-requests, data=json.dumps(...): no Content-Type) still works.
    assert client.post("/validate", content=body).status_code == 200
    # A same-origin page could only GET /train from an <img>: state changes need POST from a page.
    r = client.get("/train", headers={"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "no-cors"})
    assert r.status_code == 405 and "use POST" in r.json()["detail"]
    assert sup.jobs() == []


def test_one_validation_starts_one_run(env, sup):
    client = client_for(env, sup, [env.root])
    assert client.post("/validate", json=body_for(env)).status_code == 200
    started = client.get("/train")  # as LETS' front end: GET, from a program
    assert started.status_code == 200
    client.post("/stop_training")  # a queued run leaves the queue
    r = client.post("/train")
    assert r.status_code == 400 and r.json() == {"detail": "No Previously Validated Args"}
    assert len(sup.jobs()) == 1


@pytest.mark.parametrize("host, ok", [("evil.example:8000", False), ("127.0.0.1.evil.example", False),
                                      ("localhost:8000", True), ("[::1]:8000", True), ("127.0.0.1:9999", True)])
def test_dns_rebinding_foreign_host_is_refused(env, sup, host, ok):
    client = client_for(env, sup)
    r = client.get("/is_training", headers={"Host": host})
    assert (r.status_code == 200) is ok and (ok or "Host" in r.json()["detail"])


@pytest.mark.parametrize("raw", [
    b"[]", b'"text"', b"null", b"42", b'{"args": [], "dataset": {}}', b'{"args": {}, "dataset": []}',
    b'{"args": {"general_args": "x"}, "dataset": {"subsets": [1, "a", null]}}',
    b'{"args": {"general_args": {"pretrained_model_name_or_path": 5}}, "dataset": {"subsets": [{"image_dir": 7}]}}',
    b'{"args": {"general_args": {"pretrained_model_name_or_path": ["a"]}}, "dataset": {"subsets": [{}]}}',
    b'{"args": {"g": {"pretrained_model_name_or_path": "m"}}, "dataset": {"subsets": [{"image_dir": "d",'
    b' "caption_extension": 5}]}}',
    b'{"args": {"g": {"x": 1}}, "dataset": {"general_args": 3, "subsets": {"a": 1}}}',
    b"[" * 100_000, b'{"a": 1' + b"0" * 5000 + b"}", b"\xff\xfe{}", b"", b"{\"args\": 1e999}",
])
def test_malformed_bodies_get_a_4xx_with_a_message(env, sup, raw):
    client = client_for(env, sup, [env.root])
    r = client.post("/validate", content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500 and r.json() and all(isinstance(m, str) and m for m in r.json())
    r = client.post("/check_path", content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500 and r.json()["detail"]


def test_a_huge_body_is_refused_without_being_read(env, sup):
    client = client_for(env, sup, [env.root])
    r = client.post("/validate", content=b" " * (2 << 20), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()[0]
    server = serve_lets_api(env.paths, port=0, supervisor=sup)
    chunk = b" " * (1 << 16)

    def chunks():  # 32 MB with no Content-Length: only reading it would tell its size
        for _ in range(512):
            yield chunk

    try:
        tracemalloc.start()
        r = httpx.post(server.url + "/validate", content=chunks(), timeout=60,
                       headers={"Content-Type": "application/json"})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        server.stop()
    assert r.status_code == 413
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while refusing a 32 MiB body"
    assert threading.active_count() >= 1


def test_relative_paths_are_taken_from_the_workspace_never_the_working_folder(env, sup, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)  # the server's working folder holds backend/*.py
    client = client_for(env, sup, [env.root])
    body = body_for(env)
    body["dataset"]["subsets"][0].update(image_dir="backend", caption_extension=".py")
    r = client.post("/validate", json=body)
    assert r.status_code == 400 and "import" not in r.text
    assert "Image directory path for 'char' does not exist" in r.json()
    (env.paths.datasets / "mine").mkdir()
    (env.paths.datasets / "mine" / "a.png").write_bytes((env.data / "10_char" / "img0.png").read_bytes())
    (env.paths.datasets / "mine" / "a.txt").write_text("from the workspace\n")
    body["dataset"]["subsets"][0].update(image_dir="datasets/mine", caption_extension=".txt")
    r = client.post("/validate", json=body)
    assert r.status_code == 200 and r.json()["tags"] == {"from the workspace": 1}


def test_odd_but_well_formed_requests_get_a_4xx_not_a_500(env, sup):
    """Found by review: `~nosuchuser` raised inside path expansion (500), an infinite learning rate broke
    the JSON answer (500), a path holding "NUL" was told apart by the message text, and HEAD (which
    Starlette adds to GET routes) started and stopped runs."""
    client = TestClient(create_lets_app(env.paths, sup, roots=AllowedRoots.of(env.paths, [env.root])),
                        base_url=SERVED, raise_server_exceptions=False)
    r = client.post("/check_path", json={"path": "~nosuchuser-xyz/x", "type": "folder"})
    assert r.status_code == 400 and "cannot be resolved" in r.json()["detail"]
    body = body_for(env)
    body["dataset"]["subsets"][0]["image_dir"] = "~nosuchuser-xyz/images"
    assert client.post("/validate", json=body).status_code == 400
    assert client.post("/check_path", json={"path": "/etc/NUL", "type": "file"}).status_code == 403
    for lr in ("inf", "nan"):
        body = body_for(env)
        body["args"]["optimizer_args"]["learning_rate"] = lr
        r = client.post("/validate", json=body)
        assert r.status_code in (200, 400), r.text
        assert "learning_rate" in r.text
    for path in ("/train", "/stop_training"):
        r = client.head(path)
        assert r.status_code == 405
    assert sup.jobs() == []
