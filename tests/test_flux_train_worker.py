"""The tiny Flux demo trains through the real worker process (flow matching, CLIP-L adapters too), draws
samples with the Flux pipeline, writes a LoRA with Flux metadata that applies back onto the transformer,
and a run resumed from its saved state continues exactly as the uninterrupted run. Bad Flux inputs are
refused by validate before a job exists."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from backend.config import load_config, resolve_paths, to_dict
from backend.errors import ConfigError
from backend.jobs.events import EventReader
from backend.jobs.registry import create_job, load_job, update_job
from backend.jobs.validation import validate_config
from backend.models.flux import FluxFamily
from backend.models.flux_demo import build_flux_demo
from backend.paths import PROJECT_ROOT, WorkspacePaths
from backend.training.networks import load_network_file

PRESET = PROJECT_ROOT / "presets" / "demo-flux.toml"
RUN = ["training.max_steps=6", "training.batch_size=2", "dataset.resolution=64", "dataset.max_bucket_reso=128",
       "saving.every_n_steps=3", "sampling.every_n_steps=3", "saving.save_state=true",
       "network.train_text_encoder=true", "network.text_encoder_lr=0.001", "dataset.flip_aug=true",
       "sampling.prompts=[{prompt='dashdemo, red circle', width=64, height=64, steps=2, guidance=3.5, seed=5}]"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    paths = WorkspacePaths(tmp_path_factory.mktemp("ws")).ensure()
    build_flux_demo(paths)
    return paths


def job_for(paths, overrides, name):
    cfg = resolve_paths(load_config(PRESET, RUN + overrides), paths)
    return create_job(paths, "train", validate_config("train", to_dict(cfg), paths), name)


def run_worker(job):
    proc = subprocess.run([sys.executable, "-m", "backend.worker", str(job)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=600)
    rec = load_job(job)
    assert rec.status == "completed", (rec.error, proc.stdout[-3000:], proc.stderr[-3000:])
    return rec


def events(job, kind):
    return [e for e in EventReader(job).read_all() if e["type"] == kind]


@pytest.fixture(scope="module")
def reference(ws):
    job = job_for(ws, [], "flux-ref")
    run_worker(job)
    return job


def test_flux_run_writes_samples_checkpoints_and_a_flux_lora(reference, ws):
    job = reference
    assert [e["step"] for e in events(job, "metric")] == [1, 2, 3, 4, 5, 6]
    samples = events(job, "sample")
    assert [s["step"] for s in samples] == [3, 6] and all((job / s["path"]).is_file() for s in samples)
    assert [c["reason"] for c in events(job, "checkpoint")] == ["periodic", "final"]
    out = job / "output" / "demo-flux-lora.safetensors"
    with safe_open(str(out), "pt") as fh:
        tensors, meta = {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()
    names = {k.partition(".")[0] for k in tensors}
    # the kohya Flux layout: BFL module names, q/k/v (and a single block's mlp) fused
    assert "lora_unet_double_blocks_0_img_attn_qkv" in names and "lora_unet_single_blocks_1_linear1" in names
    assert not any("transformer_blocks" in n for n in names)
    assert any(n.startswith("lora_te1_text_model_encoder_layers_") for n in names)  # CLIP-L, never T5
    assert not any("SelfAttention" in n or "DenseReluDense" in n for n in names)
    assert meta["ss_base_model_version"] == "flux1" and meta["modelspec.architecture"] == "flux-1-dev/lora"
    assert meta["ss_timestep_sampling"] == "shift" and meta["ss_guidance_scale"] == "1.0"
    assert meta["ss_t5xxl_max_token_length"] == "32" and "modelspec.prediction_type" not in meta
    assert json.loads(meta["ss_network_args"])["algo"] == "lora"
    assert "dashdemo" in json.loads(meta["ss_tag_frequency"])["5_demo"]
    # the file applies back onto the transformer and changes its prediction
    fam = FluxFamily()
    src = fam.open(ws.models / "demo-flux")
    unet = fam.load_unet(src, device="cpu", dtype=torch.float32)
    latents, sigma = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0.5])
    cond = {"prompt_embeds": torch.randn(1, 32, 32), "pooled_prompt_embeds": torch.randn(1, 32)}
    extra = {"guidance": torch.tensor([1.0])}
    with torch.no_grad():
        before = fam.predict(unet, latents, sigma, cond, extra)
    te = fam.load_text_encoders(src, device="cpu", dtype=torch.float32)
    mods = load_network_file(out, fam, unet, te)
    assert len(mods) == len({k.partition(".")[0] for k in fam.lora_keys_from_file(tensors, unet)})
    with torch.no_grad():
        after = fam.predict(unet, latents, sigma, cond, extra)
    assert (after - before).abs().max() > 1e-4


def test_resume_from_saved_state_continues_like_the_reference(reference, ws):
    """A job resumed from the state the reference saved at step 3 trains steps 4–6 with the same losses."""
    job = job_for(ws, [], "flux-resumed")
    state = next((reference / "checkpoints").glob("*.state.pt"))
    (job / "checkpoints").mkdir(exist_ok=True)
    shutil.copy(state, job / "checkpoints" / state.name)

    def mark_resume(rec):
        rec.resume, rec.status = True, "starting"

    update_job(job, mark_resume)
    run_worker(job)
    ref = {m["step"]: m["loss"] for m in events(reference, "metric")}
    got = {m["step"]: m["loss"] for m in events(job, "metric")}
    assert sorted(got) == [4, 5, 6]
    for step in (4, 5, 6):
        assert got[step] == pytest.approx(ref[step], rel=1e-4, abs=1e-6), step


def test_validate_refuses_bad_flux_inputs(ws, tmp_path):
    from backend.models import flux_files, single_file
    from backend.models.flux_demo import tiny_flux_pipeline
    from backend.models.sdxl_demo import tiny_sdxl_pipeline

    files = flux_files.write_component_files(tiny_flux_pipeline(tmp_path / "tok", variant="schnell"),
                                             ws.models / "comfy", "tiny-schnell")
    xl = single_file.write_single_file_model(tiny_sdxl_pipeline(tmp_path / "tok-xl"), ws.models / "xl.safetensors",
                                             "sdxl")

    def problems(*sets):
        cfg = resolve_paths(load_config(PRESET, list(sets)), ws)
        with pytest.raises(ConfigError) as err:
            validate_config("train", to_dict(cfg), ws)
        return dict(err.value.problems)

    parts = [f"model.path={files['transformer']}", f"model.clip_l_path={files['clip_l']}",
             f"model.t5_path={files['t5']}", f"model.vae_path={files['ae']}"]
    # a Flux file as SDXL, an SDXL file as Flux
    assert "model.family = 'flux'" in problems("model.family='sdxl'", f"model.path={files['transformer']}",
                                               "model.t5_max_length=''")["model.family"]
    assert "model.family = 'sdxl'" in problems(f"model.path={xl}")["model.family"]
    # a missing T5 file, a missing CLIP file, swapped files, an SD VAE as the AE
    got = problems(*parts[:2], parts[3])
    assert "t5xxl_fp16" in got["model.t5_path"]
    got = problems(parts[0], f"model.clip_l_path={ws.models / 'nope.safetensors'}", parts[2], parts[3])
    assert "does not exist" in got["model.clip_l_path"]
    got = problems(parts[0], f"model.clip_l_path={files['t5']}", f"model.t5_path={files['clip_l']}", parts[3])
    assert "model.t5_path" in got["model.clip_l_path"] and "model.clip_l_path" in got["model.t5_path"]
    sd_vae = tmp_path / "sd-vae.safetensors"
    from safetensors.torch import save_file

    save_file({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3), "encoder.conv_out.weight": torch.zeros(8, 8, 3, 3),
               "decoder.conv_out.weight": torch.zeros(3, 8, 3, 3)}, str(sd_vae))
    assert "16-channel" in problems(*parts[:3], f"model.vae_path={sd_vae}")["model.vae_path"]
    # schnell with dev-only settings
    got = problems(*parts, "flow.guidance_scale=3.5", "model.t5_max_length=512")
    assert "schnell" in got["flow.guidance_scale"] and "256" in got["model.t5_max_length"]
    # SD settings that do not apply, sizes that do not pack
    got = problems("model.v_prediction=true", "loss.min_snr_gamma=5", "dataset.bucket_reso_steps=40")
    assert set(got) >= {"model.v_prediction", "loss.min_snr_gamma", "dataset.bucket_reso_steps"}
    # the whole schnell set is accepted
    cfg = resolve_paths(load_config(PRESET, [*parts, "model.t5_max_length=''"]), ws)
    assert validate_config("train", to_dict(cfg), ws)["model"]["t5_path"] == str(files["t5"])
