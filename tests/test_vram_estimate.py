"""The VRAM estimator: its measured step on the meta device, its counted parts, verdicts, fixes, cache, CLI.

The tiny demo model (a real SD 1.5-architecture diffusers folder with small shapes) keeps each meta
measurement to a few seconds; one test runs the real SD 1.5 architecture from the shipped configs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from backend.config import TrainConfig
from backend.paths import PROJECT_ROOT
from backend.training.cost.estimate import GIB, TIGHT, Estimator, Settings, optimizer_state_bytes, verdict
from backend.training.cost.profile import _adafactor_elements


def _cfg(model, res: int = 64, **training) -> TrainConfig:
    net = {"rank": 4, "alpha": 4, "target": "attn-mlp"}
    return TrainConfig.model_validate({"model": {"family": "sd15", "path": str(model)}, "network": net,
                                       "training": {"mixed_precision": "bf16", **training},
                                       "dataset": {"resolution": res, "min_bucket_reso": 64}})


@pytest.fixture(scope="module")
def demo_model(demo_workspace):
    return demo_workspace / "models" / "demo-sd15"


def _total(model, cache, **training) -> int:
    cfg = _cfg(model, **training)
    return Estimator(cfg, cache_dir=cache).total(Settings.from_config(cfg))


def test_estimate_grows_with_batch_and_resolution_and_shrinks_with_checkpointing_and_fp8(demo_model, tmp_path):
    cache = tmp_path / "cache"
    by_batch = [_total(demo_model, cache, batch_size=b) for b in (1, 2, 4)]
    assert by_batch[0] < by_batch[1] < by_batch[2]
    by_res = [_total(demo_model, cache, res=r) for r in (64, 128, 256)]
    assert by_res[0] < by_res[1] < by_res[2]
    plain = _total(demo_model, cache, batch_size=4, res=128)
    assert _total(demo_model, cache, batch_size=4, res=128, gradient_checkpointing=True) < plain
    assert _total(demo_model, cache, batch_size=4, res=128, fp8_base=True) < plain


def test_counted_parts_are_the_real_models_bytes(demo_model, demo_workspace, tmp_path):
    """Weights: what the family's own loader gives in bf16; trainable weights: what build_network makes."""
    from backend.config.schema import NetworkSection
    from backend.models.registry import get_family
    from backend.training.networks import build_network

    cfg = _cfg(demo_model, cache_latents="off")
    est = Estimator(cfg, cache_dir=tmp_path)
    parts = est.parts(est.base)
    fam = get_family("sd15")
    src = fam.open(demo_model)
    unet = fam.load_unet(src, device="cpu", dtype=torch.bfloat16)
    te = fam.load_text_encoders(src, device="cpu", dtype=torch.bfloat16)
    vae = fam.load_vae(src, device="cpu", dtype=torch.float32)
    nbytes = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())  # noqa: E731
    assert parts["denoiser weights"] == nbytes(unet)
    assert parts["text encoders"] == sum(nbytes(e) for e in te.encoders)   # not cached: resident
    assert parts["VAE"] == nbytes(vae)                                      # latents not cached: resident
    net = build_network(NetworkSection(rank=4, alpha=4, target="attn-mlp"), fam, unet.float(), None)
    n = sum(p.numel() for p in net.trainable_parameters())
    assert parts["adapter weights"] == 4 * n and parts["optimizer state"] == 8 * n  # AdamW: two fp32 moments
    net.restore()


def test_scaled_figures_agree_with_a_meta_measurement(demo_model, tmp_path):
    """The fixes scale a measured step to other batches and resolutions; a measurement there agrees."""
    cfg = _cfg(demo_model, res=256, batch_size=4)
    est = Estimator(cfg, cache_dir=tmp_path)
    for batch, res in ((2, 256), (4, 128), (1, 128)):
        scaled = est.parts(Settings(batch, res, False, False, False))["step peak (activations, gradients)"]
        other = _cfg(demo_model, res=res, batch_size=batch)
        direct = Estimator(other, cache_dir=tmp_path)
        measured = direct.parts(direct.base)["step peak (activations, gradients)"]
        assert abs(scaled - measured) <= 0.15 * measured, (batch, res, scaled, measured)


def test_profiles_are_cached_by_their_settings(demo_model, tmp_path):
    cfg = _cfg(demo_model)
    first = Estimator(cfg, cache_dir=tmp_path)
    report = first.report()
    assert not first.cached and list(tmp_path.glob("sd15-*.json"))
    again = Estimator(cfg, cache_dir=tmp_path)
    assert again.report()["peak_bytes"] == report["peak_bytes"] and again.cached and again.measured_s == 0
    cfg.network.rank = 8   # another network: measured again
    other = Estimator(cfg, cache_dir=tmp_path)
    other.report()
    assert not other.cached


def test_fixes_are_applied_cheapest_first_until_it_fits(demo_model, tmp_path):
    cfg = _cfg(demo_model, res=256, batch_size=8, cache_text_encoder_outputs=False)
    est = Estimator(cfg, cache_dir=tmp_path)
    total = est.total(est.base)
    best = est.total(Settings(1, 256, True, True, True))
    card = (best + total) / 2 / TIGHT / GIB           # a card between "all fixes" and "as configured"
    fixes, fits = est.fixes(card)
    names = [f["setting"] for f in fixes]
    assert fits and names[0] == "training.cache_text_encoder_outputs"
    assert names == sorted(names, key=["training.cache_text_encoder_outputs", "training.gradient_checkpointing",
                                       "training.fp8_base", "training.batch_size", "dataset.resolution"].index)
    assert all(f["saving_bytes"] > 0 for f in fixes)
    assert total - sum(f["saving_bytes"] for f in fixes) <= TIGHT * card * GIB
    assert verdict(total, 80) == "fits" and verdict(total, total / GIB / 0.96) == "tight"
    assert verdict(total, total / GIB / 2) == "does not fit"


def test_optimizer_state_table_matches_the_real_optimizers():
    from backend.training.optim import build_optimizer

    shapes = [(16, 320), (640, 16), (4, 4), (1280,)]
    profile = {"adapter_params": sum(torch.Size(s).numel() for s in shapes),
               "adapter_small_params": sum(torch.Size(s).numel() for s in shapes if torch.Size(s).numel() < 4096),
               "adafactor_elements": _adafactor_elements(shapes)}
    for name in ("adamw", "prodigy", "adafactor", "lion", "sgd"):
        params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
        cfg = TrainConfig.model_validate({"optimizer": {"name": name, "lr": 1.0 if name == "prodigy" else 1e-4}})
        opt, _ = build_optimizer(cfg, [{"params": params, "lr": cfg.optimizer.lr}], "cpu")
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
        state = sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values()
                    if isinstance(v, torch.Tensor) and v.numel() > 1)
        assert state == optimizer_state_bytes(name, profile), name


def test_real_sd15_architecture_at_512(tmp_path):
    """The shipped SD 1.5 configs (no model needed): weights of the real UNet and a plausible step."""
    cfg = TrainConfig.model_validate({"model": {"family": "sd15"}, "network": {"rank": 16, "alpha": 16},
                                      "training": {"mixed_precision": "bf16", "cache_text_encoder_outputs": True}})
    est = Estimator(cfg, cache_dir=tmp_path, configs_root=tmp_path / "configs")
    r = est.report()
    assert r["parts"]["denoiser weights"] == 859_520_964 * 2           # 859.52 M parameters in bf16
    assert r["parts"]["text encoders"] == 0                              # cached, frozen
    step = r["parts"]["step peak (activations, gradients)"]
    assert 0.5 * GIB < step < 4 * GIB                                    # batch 1 at 512²
    assert [c["gb"] for c in r["cards"]] == [8, 12, 16, 24, 48, 80] and r["cards"][-1]["verdict"] == "fits"


def test_validate_estimate_on_the_command_line(demo_model, tmp_path):
    toml = tmp_path / "run.toml"
    dataset = demo_model.parent.parent / "datasets" / "demo"
    toml.write_text(f'schema_version = 1\n[model]\nfamily = "sd15"\npath = "{demo_model}"\n'
                    f'[dataset]\npath = "{dataset}"\nresolution = 128\nmin_bucket_reso = 64\n'
                    '[training]\nmixed_precision = "bf16"\nbatch_size = 2\n')
    ws = tmp_path / "ws"
    argv = [sys.executable, "-m", "backend", "validate", str(toml), "--estimate", "--workspace", str(ws)]
    out = subprocess.run([*argv, "--json"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    est = result["estimate"]
    assert result["valid"] and est["batch_size"] == 2 and est["resolution"] == 128 and not est["calibrated"]
    assert est["peak_bytes"] == sum(est["parts"].values()) and len(est["cards"]) == 6
    assert list(ws.glob("cache/vram/sd15-*.json"))
    # Answered from the cache: no measurement, not even torch imported (the Training tab waits on this).
    script = ("import sys; from backend.__main__ import main; main(sys.argv[1:]); "
              "print('TORCH', 'torch' in sys.modules)")
    again = subprocess.run([sys.executable, "-c", script, "validate", str(toml), "--estimate", "--json",
                            "--workspace", str(ws)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    first, _, flag = again.stdout.rpartition("TORCH")
    assert json.loads(first)["estimate"]["cached"] and flag.strip() == "False"
    text = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert text.returncode == 0 and "Estimated peak VRAM" in text.stdout and "not yet calibrated" in text.stdout


# -- Flux.1 -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flux_ws(tmp_path_factory):
    """A workspace with the tiny Flux demo (a FLUX.1 [dev]-architecture diffusers folder) and the demo dataset."""
    from backend.models.flux_demo import build_flux_demo
    from backend.paths import WorkspacePaths

    paths = WorkspacePaths(tmp_path_factory.mktemp("flux-ws")).ensure()
    build_flux_demo(paths)
    return paths


def _flux_cfg(paths, res: int = 64, network: dict | None = None, dataset: dict | None = None, **training):
    return TrainConfig.model_validate({
        "model": {"family": "flux", "path": str(paths.models / "demo-flux"), "t5_max_length": 32},
        "network": {"rank": 4, "alpha": 2, **(network or {})},
        "dataset": {"resolution": res, "min_bucket_reso": 64, **(dataset or {})},
        "training": {"mixed_precision": "bf16", **training}})


def _nbytes(modules) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def test_flux_counted_parts_are_the_real_models_bytes(flux_ws, tmp_path):
    """What FluxFamily loads from the demo folder: the transformer in bf16 (fp8_base: its linear weights in
    float8, as store_linear_weights_in_fp8 leaves them), no text encoder resident while the step runs
    (Flux caches T5 and CLIP-L outputs by default), both in bf16 when captions change every step, CLIP-L
    in fp32 and T5 in bf16 when CLIP-L trains; the VAE when latents are not cached; the adapters."""
    from backend.config.schema import NetworkSection
    from backend.models.registry import get_family
    from backend.training.fp8 import store_linear_weights_in_fp8
    from backend.training.networks import build_network

    fam = get_family("flux")
    cfg = _flux_cfg(flux_ws, cache_latents="off")
    src = fam.open(cfg.model)
    est = Estimator(cfg, cache_dir=tmp_path)
    parts = est.parts(est.base)
    unet = fam.load_unet(src, device="cpu", dtype=torch.bfloat16)
    assert parts["denoiser weights"] == _nbytes([unet])
    assert parts["text encoders"] == 0 and est.base.cache_text and not cfg.training.cache_text_encoder_outputs
    assert parts["VAE"] == _nbytes([fam.load_vae(src, device="cpu", dtype=torch.float32)])
    net = build_network(NetworkSection(rank=4, alpha=2), fam, unet.float(), None)
    n = sum(p.numel() for p in net.trainable_parameters())
    assert parts["adapter weights"] == 4 * n and parts["optimizer state"] == 8 * n
    net.restore()

    fp8 = _flux_cfg(flux_ws, cache_latents="off", fp8_base=True)
    stored = fam.load_unet(src, device="cpu", dtype=torch.bfloat16)
    store_linear_weights_in_fp8(stored)
    fp8_est = Estimator(fp8, cache_dir=tmp_path)
    assert fp8_est.parts(fp8_est.base)["denoiser weights"] == _nbytes([stored]) < parts["denoiser weights"]

    varying = _flux_cfg(flux_ws, dataset={"shuffle_caption": True})
    te = fam.load_text_encoders(src, device="cpu", dtype=torch.bfloat16)
    v_est = Estimator(varying, cache_dir=tmp_path)
    assert v_est.parts(v_est.base)["text encoders"] == _nbytes(te.encoders)     # CLIP-L and T5, bf16
    trained = _flux_cfg(flux_ws, network={"train_text_encoder": True})
    te = fam.load_text_encoders(src, device="cpu", dtype=torch.float32, frozen_dtype=torch.bfloat16)
    t_est = Estimator(trained, cache_dir=tmp_path)
    assert t_est.parts(t_est.base)["text encoders"] == _nbytes(te.encoders)     # CLIP-L fp32, T5 bf16


def test_flux_step_on_the_meta_device_is_the_trainers_step_on_the_real_model(flux_ws):
    """The step counted from the configs (the architecture on the meta device, the cached-text conditioning,
    FlowObjective) does the work of the trainer's step on the real demo model: FluxFamily's loaders, its
    encode_prompts (T5 at model.t5_max_length, CLIP-L pooled), its predict with [dev]'s guidance input, the
    same adapters, noise, loss and backward, counted by torch's FLOP counter on the CPU. Forward FLOPs are
    equal; backward, every operator but attention (the GPU's fused attention recomputes its scores in
    backward, which the CPU's math path does not)."""
    import random

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from backend.models.registry import get_family
    from backend.training.cost.arch import architecture
    from backend.training.cost.step import FORWARD, StepSettings, measure_step
    from backend.training.networks import build_network

    def linear_algebra(counter: FlopCounterMode) -> dict:
        return {str(op): n for op, n in counter.get_flop_counts()["Global"].items() if "attention" not in str(op)
                and str(op) != "aten.bmm"}   # the CPU's math attention: its two products forward, four backward

    fam = get_family("flux")
    for network, batch, res in (({"algo": "lora"}, 2, 64), ({"algo": "lokr", "target": "all"}, 1, 128)):
        cfg = _flux_cfg(flux_ws, res, network, mixed_precision="no")
        with FlopCounterMode(display=False) as meta:
            cost = measure_step(architecture("flux", cfg.model.path), StepSettings(cfg, batch, res, res,
                                                                                   optimizer=False))
        src = fam.open(cfg.model)
        unet = fam.load_unet(src, device="cpu", dtype=torch.float32)
        te = fam.load_text_encoders(src, device="cpu", dtype=torch.float32)
        net = build_network(cfg.network, fam, unet, None)
        objective = fam.training_objective(cfg, None, src)
        with torch.no_grad():
            cond = fam.encode_prompts(te, ["dashdemo, red circle"] * batch)
        latents = torch.randn(batch, 16, res // 8, res // 8)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as step:
            with FlopCounterMode(display=False) as forward:
                noised = objective.noise(latents, torch.Generator().manual_seed(0), random.Random(0))
                pred = fam.predict(unet, noised.noisy, noised.timesteps, cond, dict(noised.model_inputs))
            objective.per_sample_loss(pred, latents, noised).mean().backward()
        net.restore()
        assert cond["prompt_embeds"].shape[1] == 32 and "guidance" in noised.model_inputs
        assert cost.adapters == len(net.net.loras)
        assert cost.total("flops", None, (FORWARD,)) == forward.get_total_flops() > 0, network
        assert linear_algebra(meta) == linear_algebra(step), network


def test_flux_scaled_figures_agree_with_a_meta_measurement(flux_ws, tmp_path):
    cfg = _flux_cfg(flux_ws, res=256, batch_size=4)
    est = Estimator(cfg, cache_dir=tmp_path)
    for batch, res in ((2, 256), (4, 128)):
        scaled = est.parts(Settings(batch, res, False, False, True))["step peak (activations, gradients)"]
        direct = Estimator(_flux_cfg(flux_ws, res=res, batch_size=batch), cache_dir=tmp_path)
        measured = direct.parts(direct.base)["step peak (activations, gradients)"]
        assert abs(scaled - measured) <= 0.15 * measured, (batch, res, scaled, measured)
    checkpointed = Estimator(_flux_cfg(flux_ws, res=256, batch_size=4, gradient_checkpointing=True), cache_dir=tmp_path)
    assert checkpointed.total(checkpointed.base) < est.total(est.base)


def test_validate_estimate_on_a_flux_preset(flux_ws):
    """`validate --estimate` on the shipped Flux demo preset, in the demo's workspace: a full report, its
    profile cached under the workspace, keyed by the T5 length it was measured with."""
    argv = [sys.executable, "-m", "backend", "validate", "demo-flux", "--estimate", "--json",
            "--workspace", str(flux_ws.root)]
    out = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    est = result["estimate"]
    assert result["valid"] and est["family"] == "flux" and est["batch_size"] == 4 and est["resolution"] == 128
    assert est["parts"]["text encoders"] == 0 and est["parts"]["denoiser weights"] > 0
    assert est["peak_bytes"] == sum(est["parts"].values()) and [c["verdict"] for c in est["cards"]] == ["fits"] * 6
    profiles = list(flux_ws.root.glob("cache/vram/flux-*.json"))
    assert len(profiles) == 1 and json.loads(profiles[0].read_text())["key"]["text"]["t5_max_length"] == 32
    longer = subprocess.run([*argv, "--set", "model.t5_max_length=64"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=600)
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert json.loads(longer.stdout)["estimate"]["peak_bytes"] > est["peak_bytes"]
