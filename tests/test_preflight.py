"""Validate is the whole gate (issue 14): what `python -m backend validate` and the dashboard's Start pass
does not fail for a config reason once the worker runs. One test per escape found, each through the
real entry points (validate_train, the supervisor's submit, the CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from backend.config import load_config
from backend.config.fields import path_fields
from backend.config.schema import Family
from backend.errors import ConfigError
from backend.jobs.supervisor import Supervisor
from backend.jobs.validation import validate_train
from backend.models.registry import FAMILIES
from backend.paths import PROJECT_ROOT, WorkspacePaths
from backend.preflight import path_problems
from backend.preflight.device import Machine, device_problems, probe
from tests._preflight_fixtures import (
    FLUX_COMPONENTS,
    architecture_configs,
    flux_stub,
    sd15_folder,
    stub_checkpoint,
    stub_model,
    tiny_dataset,
    write_safetensors,
)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=180)


@pytest.fixture
def ws(tmp_path) -> WorkspacePaths:
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    tiny_dataset(paths.datasets / "tiny", count=3)
    return paths


def problems_of(config: dict, paths: WorkspacePaths) -> list[tuple[str, str]]:
    try:
        validate_train(config, paths)
    except ConfigError as err:
        return err.problems
    return []


def config_for(paths: WorkspacePaths, arch: str = "sd15", **sections: dict) -> dict:
    family, checkpoint = stub_model(paths.models, arch)
    base = {"model": {"family": family, "path": str(checkpoint)}, "dataset": {"path": "datasets/tiny"}}
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return base


# -- the escapes the issue names --------------------------------------------------------------------------
def test_resolution_below_the_default_min_bucket_is_refused_naming_both_options(ws):
    with pytest.raises(ConfigError) as err:
        load_config({"dataset": {"resolution": 128}})
    (path, message), = err.value.problems
    assert path == "dataset.min_bucket_reso"
    assert "dataset.resolution (128)" in message and "64–128" in message
    assert problems_of(config_for(ws, dataset={"resolution": 128, "min_bucket_reso": 64}), ws) == []
    # bucket_reso_steps is made for the resolution too; with buckets off neither applies
    with pytest.raises(ConfigError, match="bucket_reso_steps"):
        load_config({"dataset": {"resolution": 128, "min_bucket_reso": 64, "bucket_reso_steps": 256}})
    assert load_config({"dataset": {"resolution": 128, "enable_bucket": False}}).dataset.resolution == 128


def test_cli_validate_names_the_bucket_option_in_one_line(tmp_path):
    cfg = tmp_path / "low.toml"
    cfg.write_text("[dataset]\nresolution = 128\n")
    res = run_cli("validate", str(cfg), "--schema-only")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        "dataset.min_bucket_reso: 256 must not exceed dataset.resolution (128) when buckets are on: set "
        "dataset.min_bucket_reso to 64–128, raise dataset.resolution to 256 or more, or turn "
        "dataset.enable_bucket off"]


@pytest.mark.parametrize("field", ["model.path", "model.vae_path"])
def test_a_nul_byte_in_a_model_path_is_refused(ws, field):
    section, key = field.split(".")
    config = config_for(ws)
    config[section][key] = "models/a\x00b.safetensors"
    assert problems_of(config, ws) == [(field, "contains a NUL byte (\\x00); remove it")]


def test_a_missing_model_is_refused_against_the_workspace(ws):
    config = config_for(ws, model={"path": "models/not-there.safetensors"})
    (problem,) = problems_of(config, ws)
    assert problem[0] == "model.path" and f"{ws.models / 'not-there.safetensors'} does not exist" in problem[1]
    assert problems_of(config_for(ws), ws) == []


@pytest.mark.parametrize("rank, ok", [(4, False), (8, False), (10, True), (16, True)])
def test_boft_rank_must_fit_the_butterfly_blocks_of_sd15(ws, rank, ok):
    problems = problems_of(config_for(ws, network={"algo": "boft", "rank": rank}), ws)
    if ok:
        assert problems == []
    else:
        (path, message), = problems
        assert path == "network.rank"
        assert f"{rank} is too small for BOFT" in message and "set network.rank to 10 or more" in message


def test_boft_on_sdxl_and_on_conv_layers_names_the_option_that_sets_their_rank(ws):
    (problem,) = problems_of(config_for(ws, "sdxl", network={"algo": "boft", "rank": 8}), ws)
    assert problem[0] == "network.rank" and "640 outputs" in problem[1] and "10 or more" in problem[1]
    config = config_for(ws, network={"algo": "boft", "rank": 16, "target": "all", "conv_rank": 4})
    (problem,) = problems_of(config, ws)
    assert problem[0] == "network.conv_rank" and "10 or more" in problem[1]


def test_dylora_conv_rank_must_be_a_multiple_of_the_block_size(ws):
    net = {"algo": "dylora", "rank": 8, "block_size": 4, "target": "all"}
    (problem,) = problems_of(config_for(ws, network={**net, "conv_rank": 6}), ws)
    assert problem[0] == "network.conv_rank" and "multiple of network.block_size (4)" in problem[1]
    assert problems_of(config_for(ws, network={**net, "conv_rank": 12}), ws) == []


# -- the rest of the worker's start, moved before it ---------------------------------------------------------
def test_every_path_option_of_the_schema_is_checked_for_nul_existence_and_kind(tmp_path):
    paths = WorkspacePaths(tmp_path)
    (tmp_path / "a-file.safetensors").write_bytes(b"x")
    (tmp_path / "a-folder").mkdir()
    specs = path_fields()
    assert {s.path for s in specs} >= {"model.path", "model.vae_path", "model.clip_l_path", "model.t5_path",
                                       "dataset.path", "dataset.reg_path", "network.network_weights"}
    for spec in specs:
        def problem(value, spec=spec):
            found = dict(path_problems({spec.path: value}, paths))
            return found.get(spec.path)
        assert "NUL byte" in problem("x\x00y")
        assert "does not exist" in problem("nothing-here")
        wrong = {"file": "a-folder", "folder": "a-file.safetensors"}.get(spec.accepts)
        if wrong:
            assert f"takes a {spec.accepts}" in problem(wrong), spec.path
        right = "a-folder" if spec.accepts == "folder" else "a-file.safetensors"
        assert problem(right) is None, spec.path
        assert (problem("") is not None) == spec.required, spec.path


def test_clip_skip_must_fit_the_text_encoder(ws):
    config = config_for(ws, "demo-sd15", model={"clip_skip": 4})
    assert problems_of(config, ws) == [
        ("model.clip_skip", "4 is more than the 3 layers of this model's text encoder; choose 1–3")]
    assert problems_of(config_for(ws, "demo-sd15", model={"clip_skip": 3}), ws) == []


def test_flow_options_on_an_sd_family_are_refused_not_ignored(ws):
    """Review: [flow] options on SD 1.5/SDXL validated and were silently ignored by the DDPM objective."""
    config = config_for(ws, "demo-sd15", flow={"timestep_sampling": "sigmoid", "guidance_scale": 3.5})
    got = dict(problems_of(config, ws))
    assert set(got) == {"flow.timestep_sampling", "flow.guidance_scale"}
    assert "leave it at its default ('shift')" in got["flow.timestep_sampling"]
    assert problems_of(config_for(ws, "demo-sd15", flow={"timestep_sampling": "shift"}), ws) == []


def test_a_family_this_version_cannot_train_is_refused(ws):
    missing = [f for f in get_args(Family) if f not in FAMILIES]
    if not missing:
        pytest.skip("every declared family is available")
    config = config_for(ws, model={"family": missing[0]})
    assert ("model.family", f"{missing[0]!r} is not available in this version yet; choose one of "
                            f"{', '.join(FAMILIES)}") in problems_of(config, ws)


def test_the_family_must_match_the_model(ws):
    config = config_for(ws, "sdxl", model={"family": "sd15"})
    (problem,) = problems_of(config, ws)
    assert problem[0] == "model.family" and "set model.family = 'sdxl'" in problem[1]


def test_device_settings_need_the_gpu_they_name():
    cpu, gpu1 = Machine(0, bitsandbytes=True), Machine(1, bitsandbytes=True)

    def found(machine, **training):
        cfg = load_config({"training": training})
        return {p for p, _ in device_problems(cfg, machine)}

    assert found(cpu, device="cuda") == {"training.device"}
    assert found(cpu, mixed_precision="fp16") == {"training.mixed_precision"}
    assert found(cpu, num_processes=2) == set()          # ranks on the CPU (gloo) are allowed
    assert found(gpu1, num_processes=2) == {"training.num_processes"}
    assert found(gpu1, num_processes=2, num_machines=2, main_process_ip="10.0.0.1") == set()  # one GPU each
    assert found(gpu1, device="cuda", mixed_precision="fp16") == set()
    cfg = load_config({"optimizer": {"name": "adamw8bit"}})
    assert {p for p, _ in device_problems(cfg, cpu)} == {"optimizer.name"}
    assert "pip install bitsandbytes" in device_problems(cfg, Machine(1, bitsandbytes=False))[0][1]
    assert device_problems(cfg, gpu1) == []
    assert device_problems(load_config({"training": {"device": "cuda"}}), Machine(None, True)) == []


def test_this_machine_without_cuda_refuses_cuda_settings_before_the_start(ws):
    if probe({}).cuda_gpus != 0:
        pytest.skip("this machine has (or may have) a CUDA GPU")
    for training in ({"device": "cuda"}, {"mixed_precision": "fp16"}):
        assert [p for p, _ in problems_of(config_for(ws, training=training), ws)] == \
            [f"training.{next(iter(training))}"]
    assert [p for p, _ in problems_of(config_for(ws, optimizer={"name": "adamw8bit"}), ws)] == ["optimizer.name"]


def test_optimizer_extra_args_are_named_and_typed(ws):
    extra = {"amsgrad": "yes", "nonsense": 1, "betas": 0.9, "maximize": False}
    problems = dict(problems_of(config_for(ws, optimizer={"extra_args": extra}), ws))
    assert set(problems) == {"optimizer.extra_args.amsgrad", "optimizer.extra_args.nonsense",
                             "optimizer.extra_args.betas"}
    assert "no argument 'nonsense'" in problems["optimizer.extra_args.nonsense"]
    assert "optimizer.beta1 and optimizer.beta2" in problems["optimizer.extra_args.betas"]
    ok = {"optimizer": {"name": "prodigy", "lr": 1.0, "extra_args": {"d_coef": 2, "use_bias_correction": True}}}
    assert problems_of(config_for(ws, **ok), ws) == []


def test_polynomial_schedule_needs_a_learning_rate_above_its_end(ws):
    config = config_for(ws, schedule={"lr_scheduler": "polynomial"}, optimizer={"lr": 1e-8})
    assert [p for p, _ in problems_of(config, ws)] == ["optimizer.lr"]


def test_batch_larger_than_the_dataset_is_refused(ws):
    (problem,) = problems_of(config_for(ws, training={"batch_size": 4}), ws)
    assert problem[0] == "training.batch_size" and "3 images × repeats = 3 per epoch" in problem[1]


def test_an_empty_dataset_folder_is_refused(ws):
    (ws.datasets / "empty").mkdir()
    (problem,) = problems_of(config_for(ws, dataset={"path": "datasets/empty"}), ws)
    assert problem[0] == "dataset.path" and "no images found" in problem[1]


def test_vae_and_starting_lora_must_be_what_they_claim(ws):
    not_vae = ws.models / "folder-vae"
    not_vae.mkdir()
    (problem,) = problems_of(config_for(ws, model={"vae_path": str(not_vae)}), ws)
    assert problem[0] == "model.vae_path" and "not a diffusers VAE folder" in problem[1]
    write_safetensors(ws.models / "vae.safetensors", {"encoder.conv_in.weight": (1,), "decoder.conv_out.weight": (1,)})
    assert problems_of(config_for(ws, model={"vae_path": "models/vae.safetensors"}), ws) == []
    lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (320, 4),
            "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 768)}
    write_safetensors(ws.models / "start.safetensors", lora, {"ss_base_model_version": "sd_v1"})
    start = {"network_weights": "models/start.safetensors", "train_text_encoder": True}  # (it has lora_te_)
    assert problems_of(config_for(ws, network={**start, "rank": 4}), ws) == []
    (problem,) = problems_of(config_for(ws, network={**start, "rank": 8}), ws)
    assert problem[0] == "network.network_weights" and "has rank 4; set network.rank to 4" in problem[1]
    (problem,) = problems_of(config_for(ws, network={**start, "rank": 4, "algo": "loha"}), ws)
    assert "holds a dylora / locon / lora network, not loha" in problem[1]
    (problem,) = problems_of(config_for(ws, "sdxl", network={**start, "rank": 4}), ws)
    assert "LoRA" in problem[1] and "SDXL" in problem[1]


def test_the_vae_must_have_the_latent_channels_of_the_family(ws):
    flux_pipe = Path(config_for(ws, "demo-flux")["model"]["path"])  # a diffusers folder with a 16-channel vae/
    sd_pipe = sd15_folder(ws.models / "sd-pipe")
    flux_ae = write_safetensors(ws.models / "ae.safetensors", FLUX_COMPONENTS["vae_path"])
    for vae in (flux_pipe, flux_pipe / "vae", flux_ae):
        (problem,) = problems_of(config_for(ws, model={"vae_path": str(vae)}), ws)
        assert problem[0] == "model.vae_path" and "16 latent channels; SD 1.x needs 4" in problem[1], problem
    for vae in (sd_pipe, sd_pipe / "vae"):
        (problem,) = problems_of(config_for(ws, "demo-flux", model={"vae_path": str(vae)}), ws)
        assert problem[0] == "model.vae_path" and "4 latent channels; Flux.1 needs 16" in problem[1], problem
    sd_ae = write_safetensors(ws.models / "sd-vae.safetensors", {**FLUX_COMPONENTS["vae_path"],
                                                                  "encoder.conv_out.weight": (8, 1, 1, 1)})
    (problem,) = problems_of(config_for(ws, "demo-flux", model={"vae_path": str(sd_ae)}), ws)  # said once
    assert problem[0] == "model.vae_path" and "4 latent channels" in problem[1]
    for arch, vae in (("sd15", sd_pipe), ("sd15", sd_ae), ("sdxl", sd_pipe / "vae"), ("demo-flux", flux_ae),
                      ("demo-flux", flux_pipe / "vae")):
        assert problems_of(config_for(ws, arch, model={"vae_path": str(vae)}), ws) == [], (arch, vae)


@pytest.mark.parametrize("remove", ["tokenizer_2", "text_encoder_2/model.safetensors"])
def test_an_incomplete_flux_folder_is_refused(ws, remove):
    import shutil

    config = config_for(ws, "demo-flux")
    assert problems_of(config, ws) == []
    gone = Path(config["model"]["path"]) / remove
    shutil.rmtree(gone) if gone.is_dir() else gone.unlink()
    (problem,) = problems_of(config, ws)
    assert problem[0] == "model.path" and "not a complete diffusers pipeline (a Flux pipeline" in problem[1]
    assert remove.split("/")[0] in problem[1]


def test_output_dir_must_be_a_folder_that_can_be_made_and_written(ws):
    (ws.root / "a-file").write_text("x")
    for value in ("a-file", "a-file/sub"):
        (problem,) = problems_of(config_for(ws, saving={"output_dir": value}), ws)
        assert problem[0] == "saving.output_dir" and "not a folder" in problem[1], problem
    for value in ("", "out", "out/new/deeper", str(ws.datasets)):
        assert problems_of(config_for(ws, saving={"output_dir": value}), ws) == [], value


def test_an_unwritable_output_dir_is_refused(ws):
    import os

    locked = ws.root / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user writes anywhere (root)")
        for value in ("locked", "locked/new"):
            (problem,) = problems_of(config_for(ws, saving={"output_dir": value}), ws)
            assert problem[0] == "saving.output_dir" and "writ" in problem[1]
    finally:
        locked.chmod(0o700)


def test_optimizer_value_ranges_are_checked_by_the_worker_before_loading(ws):
    """Ranges inside an optimizer's constructor are not readable without torch: the worker's first check
    (before the model loads) refuses them by name, without a traceback."""
    from backend.training.optim import check_optimizer

    config = config_for(ws, optimizer={"extra_args": {"eps": -1.0}})
    with pytest.raises(ConfigError, match=r"optimizer\.extra_args: not accepted by adamw: Invalid epsilon"):
        check_optimizer(load_config(config), "cpu")


@pytest.mark.parametrize("name, key, value, owner", [
    ("lion", "lr", -1.0, "optimizer.lr"), ("adamw", "eps", -1.0, "optimizer.eps"),
    ("adamw", "betas", 0.5, "optimizer.beta1 and optimizer.beta2"),
    ("sgd", "momentum", 2.0, "optimizer.momentum"), ("prodigy", "weight_decay", -1.0, "optimizer.weight_decay")])
def test_extra_args_cannot_override_what_the_schema_bounds(ws, name, key, value, owner):
    (problem,) = problems_of(config_for(ws, optimizer={"name": name, "lr": 1e-4, "extra_args": {key: value}}), ws)
    assert problem[0] == f"optimizer.extra_args.{key}" and owner in problem[1]


def test_polynomial_schedule_with_an_extra_args_lr_is_one_problem_not_a_crash(ws):
    config = config_for(ws, schedule={"lr_scheduler": "polynomial"}, optimizer={"extra_args": {"lr": 1e-8}})
    assert [p for p, _ in problems_of(config, ws)] == ["optimizer.extra_args.lr"]


@pytest.mark.parametrize("name, extra", [
    ("prodigy", {"beta3": "x"}), ("prodigy", {"slice_p": 1.5}), ("prodigy", {"slice_p": 0}),
    ("adafactor", {"beta1": "x"}), ("adafactor", {"beta1": 1.5}), ("adamw", {"foreach": 1})])
def test_extra_args_without_a_typed_default_are_typed_from_a_table(ws, name, extra):
    (problem,) = problems_of(config_for(ws, optimizer={"name": name, "extra_args": extra}), ws)
    assert problem[0] == f"optimizer.extra_args.{next(iter(extra))}" and "is not" in problem[1]
    ok = {"prodigy": {"beta3": 0.99, "slice_p": 11}, "adafactor": {"beta1": 0.9}, "adamw": {"foreach": False}}[name]
    assert problems_of(config_for(ws, optimizer={"name": name, "extra_args": ok}), ws) == []


def test_capturable_is_refused_on_the_cpu(ws):
    cfg = load_config(config_for(ws, optimizer={"extra_args": {"capturable": True}}))
    assert [p for p, _ in device_problems(cfg, Machine(0, True))] == ["optimizer.extra_args.capturable"]
    cfg_cpu = load_config(config_for(ws, training={"device": "cpu"}, optimizer={"extra_args": {"capturable": True}}))
    assert [p for p, _ in device_problems(cfg_cpu, Machine(1, True))] == ["optimizer.extra_args.capturable"]
    assert device_problems(cfg, Machine(1, True)) == []


@pytest.mark.parametrize("key, value", [("layers_per_block", "2"), ("attention_head_dim", 0),
                                        ("block_out_channels", [32, "64"]), ("in_channels", None),
                                        ("only_cross_attention", "no"), ("down_block_types", "CrossAttnDownBlock2D")])
def test_a_malformed_unet_config_is_one_model_path_problem(ws, key, value):
    family, configs = architecture_configs("demo-sd15")
    configs["unet"][key] = value
    checkpoint = stub_checkpoint(ws.models / "bad.safetensors", family, configs)
    config = {"model": {"family": family, "path": str(checkpoint)}, "dataset": {"path": "datasets/tiny"}}
    (problem,) = problems_of(config, ws)
    assert problem[0] == "model.path" and f"unet config {key} = {value!r}" in problem[1]
    assert "unet/config.json" in problem[1]


@pytest.mark.parametrize("key, value", [("num_attention_heads", "2"), ("attention_head_dim", 0),
                                        ("num_layers", True)])
def test_a_malformed_flux_transformer_config_is_one_model_path_problem(ws, key, value):
    section = flux_stub(ws.models, "demo-flux")
    config_file = Path(section["path"]) / "transformer" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), key: value}))
    config = {"model": section, "dataset": {"path": "datasets/tiny"}}
    problems = problems_of(config, ws)
    assert [p for p, _ in problems] == ["model.path"], problems
    assert f"transformer config {key} = {value!r}" in problems[0][1]


# -- the same gate everywhere --------------------------------------------------------------------------------
def test_the_dashboard_start_refuses_and_makes_no_job(ws):
    sup = Supervisor(ws, autostart=False)
    with pytest.raises(ConfigError) as err:
        sup.submit("train", config_for(ws, network={"algo": "boft", "rank": 4}), "boft")
    assert err.value.problems[0][0] == "network.rank"
    assert [p.name for p in ws.jobs.iterdir() if not p.name.startswith(".")] == []   # (the queue's lock file)


def test_cli_validate_and_train_refuse_before_any_worker(ws):
    cfg = ws.root / "boft.toml"
    config = config_for(ws, network={"algo": "boft", "rank": 8})
    cfg.write_text(f'[model]\npath = "{config["model"]["path"]}"\n[dataset]\npath = "datasets/tiny"\n'
                   '[network]\nalgo = "boft"\nrank = 8\n')
    res = run_cli("validate", str(cfg), "--workspace", str(ws.root), "--json")
    assert res.returncode == 2
    assert [p["path"] for p in json.loads(res.stdout)["problems"]] == ["network.rank"]
    res = run_cli("train", str(cfg), "--workspace", str(ws.root))
    assert res.returncode == 2 and "network.rank" in res.stderr and "Traceback" not in res.stderr
    assert list(ws.jobs.iterdir()) == []
    assert run_cli("validate", str(cfg), "--workspace", str(ws.root), "--set", "network.rank=10").returncode == 0


def test_a_preset_without_model_and_dataset_is_not_trainable_but_its_options_are_valid(tmp_path):
    res = run_cli("validate", "sd15-character-lora", "--workspace", str(tmp_path))
    assert res.returncode == 2
    named = [ln.split(":")[0] for ln in res.stderr.strip().splitlines()]
    assert named[:2] == ["model.path", "dataset.path"]
    assert set(named[2:]) <= {"training.mixed_precision"}  # an fp16 preset, on a machine without CUDA
    assert run_cli("validate", "sd15-character-lora", "--schema-only").returncode == 0


def test_the_checks_import_no_torch(tmp_path):
    """They run in the UI process (tests/test_webui_imports.py): an SDXL BOFT config end to end."""
    script = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(PROJECT_ROOT)!r})
from tests._preflight_fixtures import stub_model, tiny_dataset
from backend.jobs.validation import validate_train
from backend.errors import ConfigError
from backend.paths import WorkspacePaths
ws = WorkspacePaths(Path({str(tmp_path)!r})).ensure()
tiny_dataset(ws.datasets / "t")
family, path = stub_model(ws.models, "sdxl")
try:
    validate_train({{"model": {{"family": family, "path": str(path)}}, "dataset": {{"path": "datasets/t"}},
                    "network": {{"algo": "boft", "rank": 4, "train_text_encoder": True}},
                    "optimizer": {{"extra_args": {{"amsgrad": True}}}}}}, ws)
except ConfigError as err:
    print(err.problems[0][0])
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "diffusers", "transformers", "lycoris")))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["network.rank", "[]"]


# -- the worker's own failures are said once -------------------------------------------------------------
def test_train_prints_a_worker_failure_once(demo_copy):
    broken = next((demo_copy / "datasets" / "demo").rglob("*.png"))
    broken.write_bytes(b"not a png any more")  # the scan lists it; only decoding it fails, in the worker
    res = run_cli("train", "demo", "--workspace", str(demo_copy))  # with progress: the error event shows
    assert res.returncode == 1
    assert res.stderr.count("cannot read image") == 1, res.stderr
    assert "log: " in res.stderr


# -- what the checks assume about the code they stand in for ---------------------------------------------------
def test_the_checks_agree_with_the_family_and_optimizer_code():
    import torch

    from backend.models import sdxl
    from backend.preflight.optimizer import OPTIMIZER_CLASSES
    from backend.preflight.sd import SDXL_PARTS
    from backend.training.optim import build_optimizer

    assert SDXL_PARTS == sdxl.PIPELINE_PARTS
    for name, (module, cls, _) in OPTIMIZER_CLASSES.items():
        if name == "adamw8bit":
            continue  # bitsandbytes is not installed here: preflight.device refuses it
        cfg = load_config({"optimizer": {"name": name}})
        opt, _ = build_optimizer(cfg, [{"params": [torch.nn.Parameter(torch.zeros(2))]}], "cpu")
        assert (type(opt).__module__, type(opt).__name__) == (module, cls), name


def test_the_path_fields_come_from_the_schema():
    from backend.config.presets import INPUT_PATH_FIELDS

    assert INPUT_PATH_FIELDS == tuple((f.section, f.name) for f in path_fields())
    assert all(f.accepts in ("file", "folder", "file or folder") for f in path_fields())
    assert Path(PROJECT_ROOT / "backend" / "config" / "schema.py").read_text().count('widget="path"') == \
        len(INPUT_PATH_FIELDS)
