"""The tiny SDXL demo (a single-file checkpoint) trains through the real worker process with LoRA (both
text encoders too) and LoKr; the files load back into the SDXL pipeline and change its images; keys and
metadata are sd-scripts'. Bad models and LoRAs of the wrong family fail before the first step."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from backend.config import load_config, resolve_paths, to_dict
from backend.errors import LoraDashError
from backend.jobs.events import EventReader
from backend.jobs.registry import create_job, load_job
from backend.jobs.registry import load_config as load_job_config
from backend.models import single_file
from backend.models.sdxl import SDXLFamily
from backend.models.sdxl_demo import build_sdxl_demo
from backend.paths import PROJECT_ROOT, WorkspacePaths
from backend.training.networks import load_network_file
from backend.worker.context import WorkerContext

FAST = ["training.max_steps=3", "training.batch_size=2", "sampling.every_n_steps=0", "saving.every_n_steps=0",
        "dataset.resolution=64", "dataset.min_bucket_reso=64", "dataset.max_bucket_reso=128"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    paths = WorkspacePaths(tmp_path_factory.mktemp("ws")).ensure()
    ckpt, _ = build_sdxl_demo(paths)
    return paths, ckpt


def job_for(paths, overrides, name):
    cfg = resolve_paths(load_config(PROJECT_ROOT / "presets" / "demo-sdxl.toml", FAST + overrides), paths)
    return create_job(paths, "train", to_dict(cfg), name)


def run_worker(job):
    proc = subprocess.run([sys.executable, "-m", "backend.worker", str(job)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=600)
    rec = load_job(job)
    assert rec.status == "completed", (rec.error, proc.stdout[-3000:], proc.stderr[-3000:])
    return rec


def images(pipe):
    with torch.no_grad():
        return pipe("dashdemo, red circle", num_inference_steps=2, height=64, width=64, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).images


def read(path):
    with safe_open(str(path), "pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()


@pytest.mark.slow
def test_lora_with_both_text_encoders_trains_and_loads_in_diffusers(ws):
    paths, ckpt = ws
    job = job_for(paths, ["network.train_text_encoder=true", "network.text_encoder_lr=0.001"], "xl-lora")
    run_worker(job)
    out = job / "output" / "demo-sdxl-lora.safetensors"
    tensors, meta = read(out)
    names = {k.partition(".")[0] for k in tensors}
    assert any(n.startswith("lora_unet_input_blocks_") for n in names)
    assert any(n.startswith("lora_unet_output_blocks_") for n in names) and "lora_unet_middle_block_1_proj_in" in names
    assert not any("down_blocks" in n or "up_blocks" in n for n in names)
    assert {n[:8] for n in names if n.startswith("lora_te")} == {"lora_te1", "lora_te2"}
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert json.loads(meta["ss_network_args"])["algo"] == "lora" and meta["ss_network_dim"] == "4"
    assert "dashdemo" in json.loads(meta["ss_tag_frequency"])["5_demo"]
    progress = [e for e in EventReader(job).read_all() if e["type"] == "progress"]
    assert progress[-1]["step"] == 3
    pipe = single_file.load_pipeline(ckpt, family="sdxl").pipe
    pipe.set_progress_bar_config(disable=True)
    before = images(pipe)
    pipe.load_lora_weights(str(out))
    assert len(pipe.get_list_adapters()) and set(pipe.get_list_adapters()["unet"]) \
        == set(pipe.get_list_adapters()["text_encoder"]) == set(pipe.get_list_adapters()["text_encoder_2"])
    assert (images(pipe) - before).abs().max() > 1e-4


@pytest.mark.slow
def test_lokr_trains_and_reloads(ws):
    paths, ckpt = ws
    job = job_for(paths, ["network.algo=lokr", "network.rank=8", "network.factor=4"], "xl-lokr")
    run_worker(job)
    out = job / "output" / "demo-sdxl-lora.safetensors"
    tensors, meta = read(out)
    assert any(k.startswith("lora_unet_input_blocks_") and ".lokr_w" in k for k in tensors)
    assert json.loads(meta["ss_network_args"])["algo"] == "lokr"
    pipe = single_file.load_pipeline(ckpt, family="sdxl").pipe
    pipe.set_progress_bar_config(disable=True)
    before = images(pipe)
    mods = load_network_file(out, SDXLFamily(), pipe.unet, None)
    assert len(mods) == len({k.partition(".")[0] for k in tensors})
    assert (images(pipe) - before).abs().max() > 1e-4


def fails_before_training(paths, overrides, name):
    """Run the train job's runner in-process (a real WorkerContext and job folder); return its error."""
    from backend.training.run import run_job

    job = job_for(paths, overrides, name)
    ctx = WorkerContext(job, paths, load_job(job), load_job_config(job), logging.getLogger("test"))
    with pytest.raises(LoraDashError) as err:
        run_job(ctx)
    assert not [e for e in EventReader(job).read_all() if e["type"] == "progress" and e.get("step", 0) >= 1]
    return str(err.value)


def test_bad_inputs_fail_before_the_first_step(ws, tmp_path):
    paths, ckpt = ws
    cut = paths.models / "cut-xl.safetensors"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    assert "truncated" in fails_before_training(paths, [f"model.path={cut}"], "cut")
    from safetensors.torch import save_file

    sd15_lora = paths.models / "sd15-lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
               "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 32)},
              str(sd15_lora), metadata={"ss_base_model_version": "sd_v1"})
    msg = fails_before_training(paths, [f"network.network_weights={sd15_lora}"], "wrong-lora")
    assert "network.network_weights" in msg
    sd15_ckpt = paths.models / "sd15.safetensors"
    from tests._single_file_fixtures import tiny_sd15_pipeline

    single_file.write_single_file_model(tiny_sd15_pipeline(tmp_path / "tok"), sd15_ckpt, "sd15")
    assert "model.family = 'sd15'" in fails_before_training(paths, [f"model.path={sd15_ckpt}"], "wrong-family")
