"""The training runner in-process on the demo model: every algorithm, the options, the checks."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from safetensors import safe_open

from backend.errors import ConfigError, DatasetError, ModelError, TrainingError
from tests._training_fixtures import (
    context,
    events,
    new_job,
    run_in_process,
    start_worker,
    unchecked_job,
    wait_worker,
)

ALGOS = ["lora", "locon", "loha", "lokr", "dylora", "ia3", "glora", "diag-oft", "boft", "full"]


def _file(job_dir, name="demo-lora"):
    path = job_dir / "output" / f"{name}.safetensors"
    with safe_open(str(path), "pt") as fh:
        return list(fh.keys()), fh.metadata()


@pytest.mark.parametrize("algo", ALGOS)
def test_each_algorithm_trains_and_writes_a_kohya_file(demo_copy, algo):
    extra = ["network.train_text_encoder=true", "network.text_encoder_lr=0.0005"] if algo == "lora" else []
    job = new_job(demo_copy, [f"network.algo='{algo}'", "training.max_steps=2", "network.conv_rank=2",
                              "network.block_size=2", *extra])
    result = run_in_process(job)
    assert result["output"] == "output/demo-lora.safetensors" and result["steps"] == 2
    keys, meta = _file(job)
    assert keys and all(k.startswith(("lora_unet_", "lora_te_text_model_encoder_layers_")) for k in keys)
    assert json.loads(meta["ss_network_args"])["algo"] == algo
    assert any("resnets_0_conv1" in k for k in keys)  # conv_rank 2 adds the ResNet 3×3 convs
    metrics = events(job, "metric")
    assert [m["step"] for m in metrics] == [1, 2] and all(math.isfinite(m["loss"]) for m in metrics)
    if extra:
        assert any(k.startswith("lora_te_") for k in keys)
        assert metrics[0]["lr_text_encoder"] == 0.0005 and metrics[0]["lr_unet"] == 0.001


def test_every_loss_option_and_optimizer_runs(demo_copy):
    for opts in (["loss.min_snr_gamma=5.0", "loss.noise_offset=0.05", "loss.multires_noise_iterations=4",
                  "optimizer.name='prodigy'", "optimizer.lr=1.0"],
                 ["model.v_prediction=true", "loss.zero_terminal_snr=true", "loss.min_snr_gamma=5.0",
                  "optimizer.name='lion'", "optimizer.lr=1e-4", "schedule.lr_scheduler='cosine'"],
                 ["optimizer.name='adafactor'", "training.gradient_accumulation_steps=2", "model.clip_skip=2",
                  "dataset.shuffle_caption=true", "dataset.caption_tag_dropout_rate=0.3",
                  "dataset.caption_dropout_rate=0.2", "dataset.flip_aug=true", "training.cache_latents='off'"],
                 ["optimizer.name='sgd'", "training.gradient_checkpointing=true", "training.cache_latents='disk'",
                  "model.vae_path='models/demo-sd15/vae'",
                  "schedule.lr_scheduler='polynomial'", "schedule.warmup_steps=1", "saving.save_dtype='bf16'"]):
        job = new_job(demo_copy, ["training.max_steps=2", *opts])
        result = run_in_process(job)
        assert result["steps"] == 2 and math.isfinite(result["final_loss"]), opts
        _, meta = _file(job)
        assert meta["ss_base_model_version"] in ("sd_v1", "sd_v1_v")


def test_bf16_autocast_on_the_cpu_trains_in_a_worker(demo_copy):
    """bf16 through the CPU paths (frozen convolutions, lean GEGLU), conv adapters and checkpointing.
    A worker process of its own: accelerate's precision is fixed once per process."""
    job = new_job(demo_copy, ["training.max_steps=2", "training.mixed_precision='bf16'", "network.target='all'",
                              "network.conv_rank=4", "training.gradient_checkpointing=true"])
    assert wait_worker(start_worker(job), job) == 0, (job / "job.log").read_text()[-3000:]
    losses = [e["loss"] for e in events(job, "metric") if "loss" in e]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    _, meta = _file(job)
    assert meta["ss_mixed_precision"] == "bf16"


def test_caching_on_and_off_give_the_same_loss_at_step_one(demo_copy):
    from backend.training.trainer import Trainer

    losses = {}
    for mode in ("off", "memory", "disk", "disk"):
        job = new_job(demo_copy, [f"training.cache_latents='{mode}'", "training.cache_text_encoder_outputs="
                                  + ("true" if mode != "off" else "false")])
        ctx = context(job)
        from backend.config import load_config, resolve_paths

        tr = Trainer(resolve_paths(load_config(ctx.config), ctx.paths), ctx)
        tr.prepare()
        with torch.no_grad():
            losses.setdefault(mode, []).append(float(tr._loss(tr.data.epoch_batches(0)[0], 0)))
        if mode == "disk":
            losses.setdefault("disk_reused", []).append(tr.latent_cache.reused)
    assert losses["memory"][0] == pytest.approx(losses["off"][0], rel=1e-4)
    assert losses["disk"][0] == pytest.approx(losses["off"][0], rel=1e-4)
    assert losses["disk_reused"] == [0, 18]   # the second run reuses every latent from workspace/cache


def test_overfitting_one_image_lowers_its_loss(demo_copy):
    from backend.config import load_config, resolve_paths
    from backend.training.trainer import Trainer

    one = demo_copy / "datasets" / "one" / "1_one"
    one.mkdir(parents=True)
    src = demo_copy / "datasets" / "demo" / "5_demo"
    for ext in (".png", ".txt"):
        (one / f"demo_00{ext}").write_bytes((src / f"demo_00{ext}").read_bytes())
    job = new_job(demo_copy, ["dataset.path='datasets/one'", "training.batch_size=1", "training.max_steps=60",
                              "optimizer.lr=3e-3", "network.rank=8", "network.alpha=8.0"])
    ctx = context(job)
    tr = Trainer(resolve_paths(load_config(ctx.config), ctx.paths), ctx)
    tr.prepare()
    batch = tr.data.epoch_batches(0)[0]

    def fixed_loss() -> float:  # the same noises and timesteps before and after training
        saved, values = tr.pos.step, []
        with torch.no_grad():
            for k in range(8):
                tr.pos.step = 10_000 + k
                values.append(float(tr._loss(batch, 0)))
        tr.pos.step = saved
        return sum(values) / len(values)

    before = fixed_loss()
    result = tr.train()
    after = fixed_loss()
    assert result["steps"] == 60
    assert after < 0.8 * before, (before, after)


def test_problems_are_reported_before_the_first_step(demo_copy):
    (demo_copy / "models" / "broken").mkdir()
    (demo_copy / "models" / "broken" / "model_index.json").write_text("{}")
    (demo_copy / "datasets" / "empty").mkdir()
    cases = [("model.path='models/broken'", "model.path", ModelError, "unet/"),
             ("dataset.path='datasets/empty'", "dataset.path", DatasetError, "no images"),
             ("model.vae_path='models/missing-vae'", "model.vae_path", ModelError, "vae_path"),
             ("training.batch_size=200", "training.batch_size", TrainingError, "batch_size"),
             ("optimizer.name='adamw8bit'", "optimizer.name", TrainingError, "adamw8bit"),
             ("training.mixed_precision='fp16'", "training.mixed_precision", TrainingError, "fp16")]
    for override, field, error, fragment in cases:
        # the gate refuses it before any job exists (backend.preflight) …
        with pytest.raises(ConfigError, match=re.escape(field)):
            new_job(demo_copy, [override])
        # … and the worker still does, for a config that changed after it
        with pytest.raises(error, match=fragment):
            run_in_process(unchecked_job(demo_copy, [override]))


def test_model_and_starting_lora_mismatches_are_refused_before_caching(demo_copy):
    import shutil

    from safetensors.torch import save_file

    vpred = demo_copy / "models" / "demo-vpred"
    shutil.copytree(demo_copy / "models" / "demo-sd15", vpred)
    sched = vpred / "scheduler" / "scheduler_config.json"
    sched.write_text(json.dumps({**json.loads(sched.read_text()), "prediction_type": "v_prediction"}))
    with pytest.raises(ConfigError, match="model.v_prediction: .* is a v-prediction model"):
        new_job(demo_copy, ["model.path='models/demo-vpred'", "training.cache_latents='disk'"])
    job = unchecked_job(demo_copy, ["model.path='models/demo-vpred'", "training.cache_latents='disk'"])
    with pytest.raises(ModelError, match="v-prediction"):
        run_in_process(job)
    assert not (demo_copy / "cache" / "latents").exists()

    sdxl_lora = demo_copy / "sdxl-lora.safetensors"
    save_file({"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(4, 8)},
              str(sdxl_lora), metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    for weights in (sdxl_lora, demo_copy / "gone.safetensors"):
        with pytest.raises(ConfigError, match="network.network_weights"):
            new_job(demo_copy, [f"network.network_weights='{weights}'"])
    with pytest.raises(ModelError, match="network_weights"):
        run_in_process(unchecked_job(demo_copy, [f"network.network_weights='{sdxl_lora}'"]))
    with pytest.raises(ModelError, match="network.network_weights: .* does not exist; pick"):
        run_in_process(unchecked_job(demo_copy, [f"network.network_weights='{demo_copy / 'gone.safetensors'}'"]))


def test_a_run_starts_from_an_earlier_lora_of_the_same_shape(demo_copy):
    first = new_job(demo_copy, ["training.max_steps=2"])
    run_in_process(first)
    earlier = first / "output" / "demo-lora.safetensors"
    result = run_in_process(new_job(demo_copy, ["training.max_steps=1", f"network.network_weights='{earlier}'"]))
    assert result["steps"] == 1
    mismatch = ["training.max_steps=1", "network.rank=8", f"network.network_weights='{earlier}'"]
    with pytest.raises(ConfigError, match="demo-lora.safetensors has rank 4; set network.rank to 4"):
        new_job(demo_copy, mismatch)
    with pytest.raises(ConfigError, match="demo-lora.safetensors does not match this network"):
        run_in_process(unchecked_job(demo_copy, mismatch))


def test_non_finite_loss_stops_the_run_naming_the_causes(demo_copy):
    # alpha/rank = 1024 multiplies the effective step: a learning rate far too high, unclipped.
    job = new_job(demo_copy, ["optimizer.name='sgd'", "optimizer.lr=10.0", "network.alpha=4096.0",
                              "training.max_grad_norm=0.0", "training.max_steps=30", "saving.every_n_steps=1",
                              "saving.keep_last_n=2"])
    with pytest.raises(TrainingError, match="learning rate") as err:
        run_in_process(job)
    assert "fp16" in str(err.value)
    saved = sorted((job / "checkpoints").glob("*.safetensors"))
    assert 1 <= len(saved) <= 2
    for path in saved:   # every checkpoint written is finite: saving flushes and checks first
        with safe_open(str(path), "pt") as fh:
            assert all(torch.isfinite(fh.get_tensor(k)).all() for k in fh.keys())


def test_epochs_schedule_and_control_requests(demo_copy):
    """Saving and sampling every epoch, a sample at start, and save_now / sample_now between steps."""
    from backend.jobs import control

    one = demo_copy / "datasets" / "two" / "1_two"
    one.mkdir(parents=True)
    src = demo_copy / "datasets" / "demo" / "5_demo"
    for stem in ("demo_00", "demo_01"):
        for ext in (".png", ".txt"):
            (one / f"{stem}{ext}").write_bytes((src / f"{stem}{ext}").read_bytes())
    job = new_job(demo_copy, [
        "dataset.path='datasets/two'", "training.max_steps=''", "training.epochs=3", "saving.every_n_epochs=1",
        "sampling.every_n_epochs=2", "sampling.sample_at_start=true", "sampling.sampler='euler_a'",
        "sampling.prompts=[{prompt='dashdemo, a square', negative='blurry', width=64, height=64, steps=2}]"])
    control.request(job, "save_now")
    control.request(job, "sample_now")
    result = run_in_process(job)
    assert result["steps"] == 3
    ckpts = [(c["reason"], c["step"]) for c in events(job, "checkpoint")]
    assert ckpts == [("save_now", 0), ("periodic", 1), ("periodic", 2), ("final", 3)]
    samples = [(s["step"], s["prompt"]) for s in events(job, "sample")]
    assert samples == [(0, "dashdemo, a square")] * 2 + [(2, "dashdemo, a square"), (3, "dashdemo, a square")]
    assert all((job / s["path"]).is_file() for s in events(job, "sample"))
    assert control.pending(job) == []
