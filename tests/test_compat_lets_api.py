"""The LETS-compatible API, driven with the request shapes the LETS front end sends (MainUI.train_helper)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from starlette.testclient import TestClient

from backend.compat.lets_api import create_lets_app, serve_lets_api
from backend.errors import ConfigError
from backend.jobs.supervisor import Supervisor
from backend.roots import AllowedRoots
from tests._compat_fixtures import FIXTURES, make_env
from tests._jobs_fixtures import wait_for


@pytest.fixture
def env(tmp_path):
    return make_env(tmp_path)


def lets_body(env) -> dict:
    return env.sub(json.loads((FIXTURES / "lets_validate_body.json").read_text()))


def lets_client(env, sup, **kw) -> TestClient:
    """The app with the test's data and model folders allowed, called at the address it serves."""
    app = create_lets_app(env.paths, sup, roots=AllowedRoots.of(env.paths, [env.root]), **kw)
    return TestClient(app, base_url="http://127.0.0.1:8000")


@pytest.fixture
def queued(env):
    """An app whose supervisor queues jobs without starting them: a run stays 'waiting' for the 409 checks."""
    sup = Supervisor(env.paths, autostart=False)
    return lets_client(env, sup), sup


def test_validate_returns_processed_args_dataset_and_tags(env, queued):
    client, _ = queued
    r = client.post("/validate", content=json.dumps(lets_body(env)))  # LETS posts data=json.dumps(...)
    assert r.status_code == 200, r.text
    data = r.json()
    assert "network_module = \"networks.lora\"" in data["args"] and "network_dim = 4" in data["args"]
    assert "max_train_steps = 2" in data["args"] and "seed = 23" in data["args"]
    assert "resolution = 64" in data["dataset"]["general"]
    assert data["dataset"]["subsets"] == [[f'image_dir = "{env.data.as_posix()}/10_char"', "num_repeats = 10",
                                           "is_reg = false"]]
    assert data["tags"] == {"trig": 1, "red": 1, "square": 1}
    preset = data["loradash"]["preset"]
    assert preset["network"] == {"rank": 4, "alpha": 2.0} and preset["training"]["max_steps"] == 2
    assert {e["key"] for e in data["loradash"]["report"]["mapped"]} >= {"tag_occurrence", "subset #1 name"}


@pytest.mark.parametrize("mutate, error", [
    (lambda b: b.pop("dataset"), "dataset is not present"),
    (lambda b: b["args"].update(saving_args=None), "No data filled in for saving_args"),
    (lambda b: b["dataset"]["subsets"][0].update(image_dir="{DATA}/no/such/dir"),
     "Image directory path for 'char' does not exist"),
    (lambda b: b["args"]["general_args"].update(pretrained_model_name_or_path="{DATA}/no/model.safetensors"),
     "pretrained_model_name_or_path input '{DATA}/no/model.safetensors' does not exist"),
    (lambda b: b["dataset"]["subsets"][0].update(keep_tokens=999), "dataset.keep_tokens"),
])
def test_bad_body_is_400_with_the_errors(env, queued, mutate, error):
    client, sup = queued
    body = json.loads((FIXTURES / "lets_validate_body.json").read_text())
    mutate(body)
    body, error = env.sub(body), env.sub(error)
    r = client.post("/validate", json=body)
    assert r.status_code in (200, 400)
    if error == "dataset.keep_tokens":  # a value the schema refuses: imported without it, and said so
        assert r.status_code == 200
        assert any(error in e["note"] for e in r.json()["loradash"]["report"]["unmapped"])
        return
    assert r.status_code == 400 and isinstance(r.json(), list) and error in r.json()
    assert client.get("/train").json() == {"detail": "No Previously Validated Args"}
    assert sup.jobs() == []


def test_not_json_and_no_validation_yet(queued):
    client, _ = queued
    r = client.post("/validate", content=b"{not json")
    assert r.status_code == 400 and r.json()[0].startswith("body is not a JSON object with args and dataset")
    r = client.get("/train")
    assert r.status_code == 400 and r.json() == {"detail": "No Previously Validated Args"}
    assert client.get("/is_training").json() == {"training": False, "errored": False}
    assert client.get("/stop_training").status_code == 400


def test_train_409_stop_and_is_training(env, queued):
    client, sup = queued
    assert client.post("/validate", json=lets_body(env)).status_code == 200
    r = client.get("/train")
    assert r.status_code == 200 and r.json()["detail"] == "Training Started" and r.json()["training"] is True
    job_id = r.json()["job_id"]
    (rec,) = sup.jobs()
    assert (rec.id, rec.kind, rec.group, rec.name) == (job_id, "train", "lets-api", "lets_run")  # in the dashboard
    assert client.get("/is_training").json() == {"training": True, "errored": False}
    assert client.get("/train").status_code == 409
    assert client.post("/validate", json=lets_body(env)).status_code == 409
    assert client.get("/train?train_mode=textual_inversion").status_code == 400
    r = client.get("/stop_training")
    assert r.status_code == 200 and r.json() == {"detail": "Training Thread Requested to Die"}
    assert client.get("/is_training").json() == {"training": False, "errored": True}  # as LETS' killed process
    assert client.get("/stop_training").json() == {"detail": "Not Currently Training"}


def test_a_failing_run_reports_errored(env):
    """A real worker on a file that is no model fails; /is_training says so once it has."""
    client = lets_client(env, Supervisor(env.paths))
    assert client.post("/validate", json=lets_body(env)).status_code == 200
    assert client.get("/train").status_code == 200
    state = wait_for(lambda: (lambda s: s if not s["training"] else None)(client.get("/is_training").json()),
                     timeout=120, what="the run to end")
    assert state == {"training": False, "errored": True}


def test_check_path_tokenize_and_unsupported_routes(env, queued):
    client, _ = queued
    assert client.post("/check_path", json={"path": str(env.data), "type": "folder"}).json() == {"valid": True}
    assert client.post("/check_path", json={"path": str(env.model), "type": "file",
                                            "extensions": [".safetensors", ".ckpt"]}).json() == {"valid": True}
    assert client.post("/check_path", json={"path": str(env.model), "type": "file",
                                            "extensions": [".ckpt"]}).json() == {"valid": False}
    assert client.post("/check_path", json={"path": 3}).status_code == 400
    r = client.get("/tokenize", params={"text": "a cat, red hair"})
    assert r.json() == {"tokens": ["a</w>", "cat</w>", ",</w>", "red</w>", "hair</w>"],
                        "token_ids": [320, 2368, 267, 736, 2225], "length": 5}   # CLIP's own ids
    assert client.get("/resize").status_code == 501


def test_token_is_required_when_set(env):
    client = lets_client(env, Supervisor(env.paths, autostart=False), token="s3cret")
    assert client.get("/is_training").status_code == 401
    assert client.get("/is_training", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/is_training", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/is_training", params={"token": "s3cret"}).status_code == 200


def test_real_server_on_loopback_and_public_needs_a_token(env):
    server = serve_lets_api(env.paths, port=0, supervisor=Supervisor(env.paths, autostart=False),
                            roots=AllowedRoots.of(env.paths, [env.root]))
    try:
        assert server.url.startswith("http://127.0.0.1:") and "SSH tunnel" in server.message
        r = httpx.post(server.url + "/validate", content=json.dumps(lets_body(env)), timeout=30)
        assert r.status_code == 200 and r.json()["tags"]["trig"] == 1
        assert httpx.get(server.url + "/is_training", timeout=10).json() == {"training": False, "errored": False}
        port = int(server.url.rsplit(":", 1)[1])
        with pytest.raises(ConfigError, match="could not listen"):
            serve_lets_api(env.paths, port=port, supervisor=Supervisor(env.paths, autostart=False), start_timeout=5)
    finally:
        server.stop()
    with pytest.raises(ConfigError, match="needs a token"):
        serve_lets_api(env.paths, host="0.0.0.0", port=0)
    assert not _listening(port)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
