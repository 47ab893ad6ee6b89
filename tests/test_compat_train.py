"""Imported kohya configs train: a few real steps on the demo model in a real worker, then export back."""

from __future__ import annotations

import importlib.util
import json

import pytest
from starlette.testclient import TestClient

from backend.compat.export import export_job
from backend.compat.kohya_import import import_kohya_files
from backend.compat.lets_api import create_lets_app
from backend.config import load_config, to_dict
from backend.jobs.supervisor import Supervisor
from backend.roots import AllowedRoots
from tests._compat_fixtures import FIXTURES, make_env
from tests._jobs_fixtures import wait_finished, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("backend.training.run") is None,
                       reason="the training engine (backend.training.run) is not in this tree yet"),
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One workspace with the demo model and dataset, shared by this module's runs (each its own job)."""
    from backend.models.demo import build_demo

    env = make_env(tmp_path_factory.mktemp("compat-train"))
    model_dir, dataset_dir = build_demo(env.paths)
    return env, model_dir, dataset_dir


@pytest.mark.parametrize("config, dataset", [("lora_sd15.toml", "lora_sd15_dataset.toml"),
                                             ("lokr_dora_sdxl.toml", "sdxl_dataset.toml")])
def test_imported_config_trains_on_the_demo_model(demo, config, dataset):
    env, model_dir, dataset_dir = demo
    imported = import_kohya_files(env.file(config), env.file(dataset), paths=env.paths).config
    # Keep the imported network, optimizer, schedule and loss; make the run tiny and CPU-friendly.
    cfg = load_config(to_dict(imported), {
        "model.family": "sd15", "model.path": str(model_dir), "dataset.path": str(dataset_dir),
        "dataset.resolution": 64, "dataset.min_bucket_reso": 64, "dataset.max_bucket_reso": 128,
        "training.max_steps": 2, "training.batch_size": 1, "training.mixed_precision": "no",
        "training.cache_text_encoder_outputs": False, "training.gradient_checkpointing": False,
        "optimizer.name": "adamw" if imported.optimizer.name == "adamw8bit" else imported.optimizer.name,
        "network.rank": min(imported.network.rank, 4), "network.conv_rank": min(imported.network.conv_rank, 4),
        "saving.every_n_epochs": 0, "saving.every_n_steps": 0, "sampling.every_n_steps": 0})
    sup = Supervisor(env.paths)
    rec = sup.submit("train", to_dict(cfg), f"kohya {config}")
    done = wait_finished(sup, rec.id, timeout=600)
    assert done.status == "completed", (done.error, (env.paths.jobs / rec.id / "job.log").read_text()[-3000:])
    assert list((env.paths.jobs / rec.id / "output").glob("*.safetensors"))
    out = export_job(env.paths, rec.id)
    back = import_kohya_files(out.out_dir / "config.toml", out.out_dir / "dataset.toml", paths=env.paths)
    assert to_dict(back.config) == to_dict(load_config(env.paths.jobs / rec.id / "config.toml"))


def test_lets_front_end_flow_trains_and_reports(demo):
    """validate → train → is_training true → … → is_training false (not errored), as LETS' MainUI polls."""
    env, model_dir, dataset_dir = demo
    body = env.sub(json.loads((FIXTURES / "lets_validate_body.json").read_text()))
    body["args"]["general_args"]["pretrained_model_name_or_path"] = str(model_dir)
    body["dataset"]["subsets"][0]["image_dir"] = str(next(p for p in dataset_dir.iterdir() if p.is_dir()))
    sup = Supervisor(env.paths)
    client = TestClient(create_lets_app(env.paths, sup, roots=AllowedRoots.of(env.paths, [env.root])),
                        base_url="http://127.0.0.1:8000")  # the address the API serves
    assert client.post("/validate", json=body).status_code == 200
    started = client.get("/train")
    assert started.status_code == 200
    assert client.get("/is_training").json() == {"training": True, "errored": False}
    assert client.get("/train").status_code == 409
    final = wait_for(lambda: (lambda s: s if not s["training"] else None)(client.get("/is_training").json()),
                     timeout=600, interval=0.5, what="the LETS-started run to end")
    rec = sup.get(started.json()["job_id"])
    assert final == {"training": False, "errored": False}, (rec.status, rec.error)
    assert rec.status == "completed" and rec.group == "lets-api"
    assert list((env.paths.jobs / rec.id / "output").glob("lets_run*.safetensors"))
