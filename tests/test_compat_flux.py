"""kohya flux_train_network.py runs in and out: its configs and command lines import (with sd-scripts'
flow defaults for Flux only), the export writes the matching command, and the LETS API's flux=True."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest
from starlette.testclient import TestClient

from backend.compat.detect import import_file, import_text
from backend.compat.export import export_config
from backend.compat.kohya_import import flatten_config, import_kohya, import_kohya_files
from backend.compat.lets_api import create_lets_app
from backend.compat.mapping import MAPPING, OURS_ALONE, UNSUPPORTED
from backend.config import load_config, sparse_dict
from backend.jobs.supervisor import Supervisor
from backend.paths import PROJECT_ROOT
from backend.roots import AllowedRoots
from tests._compat_fixtures import FIXTURES, make_env
from tests._preflight_fixtures import flux_stub


@pytest.fixture
def env(tmp_path):
    return make_env(tmp_path)


def test_flux_config_imports_with_its_files_and_flow_settings(env):
    result = import_file(env.file("flux_lora.toml"), env.file("flux_dataset.toml"), paths=env.paths)
    assert result.preset == env.sub({
        "schema_version": 1,
        "model": {"family": "flux", "path": "{MODEL}", "vae_path": "{ROOT}/ae.safetensors",
                  "clip_l_path": "{ROOT}/clip_l.safetensors", "t5_path": "{ROOT}/t5xxl_fp16.safetensors",
                  "t5_max_length": 512, "apply_t5_attn_mask": True},
        "dataset": {"path": "{DATA}/10_char", "enable_bucket": False, "keep_tokens": 1, "num_workers": 2},
        "network": {"rank": 16, "alpha": 16.0},
        "optimizer": {"name": "adamw8bit"},
        "training": {"epochs": 4, "mixed_precision": "bf16", "fp8_base": True, "gradient_checkpointing": True,
                     "cache_latents": "disk", "cache_text_encoder_outputs": True},
        "saving": {"output_name": "flux-lora", "save_state": False, "save_dtype": "bf16"}})
    # sd-scripts' recommended Flux settings are LoRA Dash's flow defaults: nothing to set
    assert result.config.flow.model_dump() == load_config({}).flow.model_dump()
    assert not result.report.problems, result.report.to_text()
    changed = {e.key: e.note for e in result.report.changed}
    assert "guessed flux" in changed["training script (not given)"]
    keys = set(flatten_config(tomllib.loads(env.file("flux_lora.toml").read_text())))
    words = {w for k in result.report.keys() for w in k.split()}
    assert keys <= words, f"not in the report: {sorted(keys - words)}"


def test_flux_command_gets_sd_scripts_flow_defaults(env):
    env.file("flux_dataset.toml")
    result = import_file(env.file("flux_command.sh"), paths=env.paths)
    c = result.config
    assert c.model.family == "flux" and c.model.clip_l_path == env.sub("{ROOT}/clip_l.safetensors")
    assert c.flow.model_dump() == {"timestep_sampling": "sigmoid", "sigmoid_scale": 1.5,
                                   "discrete_flow_shift": 3.0, "model_prediction_type": "sigma_scaled",
                                   "weighting_scheme": "none", "guidance_scale": 3.5}
    changed = {e.key: e.note for e in result.report.changed}
    assert "sd-scripts' default" in changed["guidance_scale (not set)"]
    assert "sigma sampling" in changed["weighting_scheme"]
    assert "split_qkv=True" in changed["network_args split_qkv (not set)"]
    assert not c.network.train_text_encoder  # cached text-encoder outputs: sd-scripts trains no text encoder
    unmapped = {e.key: e.note for e in result.report.unmapped}
    assert "T5-XXL" in unmapped["text_encoder_lr (second value)"]


def test_sigma_sampling_becomes_shift_and_is_said(env):
    args = {"pretrained_model_name_or_path": str(env.model), "max_train_steps": 5, "timestep_sampling": "sigma"}
    result = import_kohya(args, None, family="flux", paths=env.paths)
    assert result.config.flow.timestep_sampling == "shift"
    changed = {e.key: e for e in result.report.changed}
    assert changed["timestep_sampling"].value == "sigma" and "no equivalent" in changed["timestep_sampling"].note
    absent = import_kohya({"max_train_steps": 5}, None, family="flux")
    assert "timestep_sampling (not set)" in {e.key for e in absent.report.changed}
    assert absent.config.flow.discrete_flow_shift == 3.0 and absent.config.flow.guidance_scale == 3.5


def test_flow_defaults_and_options_stay_out_of_sd_runs(env):
    result = import_kohya({"max_train_steps": 5, "guidance_scale": 1.0, "vae": str(env.model)}, None,
                          family="sdxl", paths=env.paths)
    assert result.config.flow.model_dump() == load_config({}).flow.model_dump()
    assert result.config.model.vae_path == str(env.model)
    unmapped = {e.key: e.note for e in result.report.unmapped}
    assert "not read when training sdxl" in unmapped["guidance_scale"]


def test_missing_flux_files_are_problems(env):
    result = import_kohya({"max_train_steps": 5, "t5xxl": str(env.root / "no_t5.safetensors")}, None,
                          family="flux", paths=env.paths)
    problems = {e.key: e.note for e in result.report.problems}
    assert "model.t5_path" in problems["t5xxl"]


FLUX_CASES = {
    "lora": {"network": {"rank": 16, "alpha": 16.0}},
    "shifted": {"model": {"t5_max_length": 256, "apply_t5_attn_mask": True},
                "flow": {"timestep_sampling": "flux_shift", "sigmoid_scale": 1.2, "weighting_scheme": "sigma_sqrt",
                         "model_prediction_type": "additive", "guidance_scale": 3.5},
                "training": {"fp8_base": True, "cache_text_encoder_outputs": True}},
    "lokr": {"network": {"algo": "lokr", "rank": 10000, "factor": 16, "target": "all"}},
}


@pytest.mark.parametrize("case", sorted(FLUX_CASES))
def test_flux_export_reads_back_as_it_was(env, case):
    cfg = load_config({**FLUX_CASES[case], "model": {"family": "flux", "path": str(env.model),
                                                     "clip_l_path": str(env.root / "clip_l.safetensors"),
                                                     "t5_path": str(env.root / "t5xxl_fp16.safetensors"),
                                                     "vae_path": str(env.root / "ae.safetensors"),
                                                     **FLUX_CASES[case].get("model", {})},
                       "dataset": {"path": str(env.data / "10_char")}, "training": {
                           "max_steps": 50, **FLUX_CASES[case].get("training", {})}})
    out = export_config(cfg, env.root / "kohya")
    assert out.script == "flux_train_network.py" and out.argv[2] == "flux_train_network.py"
    config = tomllib.loads((out.out_dir / "config.toml").read_text())
    known = {a.key for a in MAPPING} | set(UNSUPPORTED) | {"network_args"}
    assert set(config) <= known, set(config) - known
    assert {"clip_l", "t5xxl", "ae", "guidance_scale", "timestep_sampling", "discrete_flow_shift"} <= set(config)
    assert not {"vae", "clip_skip", "v_parameterization"} & set(config)
    if case == "lora":
        assert config["network_module"] == "networks.lora_flux" and config["network_args"] == ["split_qkv=True"]
    back = import_kohya_files(out.out_dir / "config.toml", out.out_dir / "dataset.toml")
    assert back.preset == sparse_dict(cfg)
    assert all(p in OURS_ALONE for p, _ in out.notes), out.notes
    again = import_text((out.out_dir / "train_command.txt").read_text(), ".txt")
    assert again.preset == back.preset


def test_cli_exports_a_flux_job(env):
    sup = Supervisor(env.paths, autostart=False)
    cfg = {"model": {"family": "flux", "path": str(env.flux_model), "clip_l_path": str(env.root / "clip_l.safetensors"),
                     "t5_path": str(env.root / "t5xxl_fp16.safetensors"), "vae_path": str(env.root / "ae.safetensors")},
           "dataset": {"path": str(env.data / "train"), "caption_extension": ".txt"},
           "training": {"max_steps": 3, "fp8_base": True}, "flow": {"guidance_scale": 2.0}}
    rec = sup.submit("train", cfg, "flux run", start=False)
    r = subprocess.run([sys.executable, "-m", "backend", "export-kohya", rec.id, "--json", "--workspace",
                        str(env.paths.root)], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["script"] == "flux_train_network.py" and "flux_train_network.py" in data["argv"]
    config = tomllib.loads((env.paths.jobs / rec.id / "kohya" / "config.toml").read_text())
    assert config["fp8_base"] is True and config["guidance_scale"] == 2.0
    assert config["ae"] == str(env.root / "ae.safetensors")
    subsets = tomllib.loads((env.paths.jobs / rec.id / "kohya" / "dataset.toml").read_text())["datasets"][0]["subsets"]
    assert [s["num_repeats"] for s in subsets] == [10, 3]


def lets_flux_body(env) -> dict:
    """What the LETS front end posts with its Flux section (FluxUI.py) switched on."""
    body = env.sub(json.loads((FIXTURES / "lets_validate_body.json").read_text()))
    body["args"]["general_args"]["pretrained_model_name_or_path"] = str(env.flux_model)
    body["args"]["flux_args"] = env.sub({
        "ae": "{ROOT}/ae.safetensors", "clip_l": "{ROOT}/clip_l.safetensors",
        "t5xxl": "{ROOT}/t5xxl_fp16.safetensors", "apply_t5_attn_mask": True, "t5xxl_max_token_length": 256,
        "discrete_flow_shift": 3.1582, "timestep_sampling": "shift", "weighting_scheme": "none",
        "guidance_scale": 1.0, "model_prediction_type": "raw"})
    body["args"]["general_args"].pop("clip_skip")
    return body


def test_lets_flux_validate_and_train(env):
    sup = Supervisor(env.paths, autostart=False)
    client = TestClient(create_lets_app(env.paths, sup, roots=AllowedRoots.of(env.paths, [env.root])),
                        base_url="http://127.0.0.1:8000")
    r = client.post("/validate", json=lets_flux_body(env))
    assert r.status_code == 200, r.text
    lines = r.json()["args"]
    assert 'network_module = "networks.lora_flux"' in lines and "t5xxl_max_token_length = 256" in lines
    assert f'ae = "{env.root.as_posix()}/ae.safetensors"' in lines
    preset = r.json()["loradash"]["preset"]
    assert preset["model"]["family"] == "flux" and preset["model"]["t5_max_length"] == 256
    assert client.post("/train?train_mode=lora&sdxl=False&flux=True").status_code == 200
    (rec,) = sup.jobs()
    cfg = load_config(env.paths.jobs / rec.id / "config.toml")
    assert cfg.model.family == "flux" and cfg.model.clip_l_path == str(env.root / "clip_l.safetensors")


def test_lets_flux_switch_names_the_family(env):
    """POST /train?flux=True with a body that has no Flux section (LETS picks flux_train_network.py from
    the switch alone) trains a Flux run on a diffusers Flux folder."""
    sup = Supervisor(env.paths, autostart=False)
    client = TestClient(create_lets_app(env.paths, sup, roots=AllowedRoots.of(env.paths, [env.root])),
                        base_url="http://127.0.0.1:8000")
    body = env.sub(json.loads((FIXTURES / "lets_validate_body.json").read_text()))
    assert client.post("/validate", json=body).status_code == 200          # an SD 1.5 model …
    refused = client.post("/train?flux=True")                               # … trained as Flux: refused
    assert refused.status_code == 400 and "model.family" in refused.text and not sup.jobs()
    folder = flux_stub(env.root, "demo-flux")["path"]  # a diffusers Flux folder: it needs no separate files
    body["args"]["general_args"]["pretrained_model_name_or_path"] = folder
    assert client.post("/validate", json=body).status_code == 200
    assert client.post("/train?flux=True").status_code == 200
    (rec,) = sup.jobs()
    assert load_config(env.paths.jobs / rec.id / "config.toml").model.family == "flux"


def test_kohya_ss_flux_preset(env):
    result = import_file(env.file("kohya_ss_flux.json"), paths=env.paths)
    c = result.config
    assert c.model.family == "flux" and c.model.vae_path == env.sub("{ROOT}/ae.safetensors")
    assert (c.network.algo, c.network.target, c.network.rank, c.network.alpha) == ("lora", "attn-mlp", 8, 8.0)
    assert c.training.fp8_base and c.training.cache_text_encoder_outputs and c.training.epochs == 10
    assert (c.flow.timestep_sampling, c.flow.discrete_flow_shift, c.flow.guidance_scale) == ("sigmoid", 3.0, 1.0)
    assert c.dataset.path == env.sub("{DATA}/train") and c.dataset.resolution == 512
    assert not result.report.problems, result.report.to_text()
    data = json.loads((env.root / "kohya_ss_flux.json").read_text())
    words = {w for k in result.report.keys() for w in k.split()}
    assert set(data) <= words, f"not in the report: {sorted(set(data) - words)}"


def test_flux_export_from_a_diffusers_folder_says_what_to_point_at(env):
    folder = env.root / "flux-dev"
    folder.mkdir()
    cfg = load_config({"model": {"family": "flux", "path": str(folder)}, "training": {"max_steps": 5},
                       "dataset": {"path": str(env.data / "10_char")}})
    out = export_config(cfg, env.root / "kohya")
    assert any("diffusers folder" in w for w in out.warnings)
    assert any("--clip_l, --t5xxl, --ae" in w for w in out.warnings)
    assert not export_config(load_config({"training": {"max_steps": 5}}), env.root / "sd").warnings
