"""SDXL LoRA training speed through the engine's parts (SDXL family, LyCORIS network of
backend.training.networks, AdamW, the epsilon loss), from a single-file checkpoint; prints JSON.

    python benchmarks/train_speed_sdxl.py --case demo            # the tiny demo model (CPU is fine)
    python benchmarks/train_speed_sdxl.py --case real --shapes 4x32,1x128  # SDXL base, random weights

The "real" case builds SDXL base (2.57 B UNet parameters) from the shipped configs with random weights
on the device, writes it as an fp16 single file, loads it back offline through the SDXL family (checking
every UNet tensor survived the round trip), then trains: steps/s and samples/s are the median of the
steady steps; time to first step is split into load / setup; peak RSS and (on CUDA) peak VRAM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# As the training worker does: OpenMP threads that spin while waiting slow CPU runs badly when
# another process competes for the cores. Effective only before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from backend.config.schema import NetworkSection  # noqa: E402
from backend.models import single_file  # noqa: E402
from backend.models.sdxl import SDXLFamily  # noqa: E402
from backend.paths import WorkspacePaths  # noqa: E402
from backend.training.networks import build_network  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_real_checkpoint(folder: Path, device: str) -> tuple[Path, dict]:
    """SDXL base with random weights from the shipped configs, saved in the original layout (fp16)."""
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    cfg = single_file.shipped_config("sdxl", folder / "configs")
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet")).half()
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae")).half()
        te1 = CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder")).half()
        te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(cfg / "text_encoder_2")).half()
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2,
                                     tokenizer=CLIPTokenizer.from_pretrained(cfg / "tokenizer"),
                                     tokenizer_2=CLIPTokenizer.from_pretrained(cfg / "tokenizer_2"),
                                     unet=unet, scheduler=_scheduler(cfg))
    ckpt = single_file.save_single_file(pipe, folder / "sdxl-random.safetensors", "sdxl")
    reference = {k: v.detach() for k, v in list(unet.state_dict().items())}
    info = {"build_save_s": round(time.perf_counter() - t0, 1), "file_gb": round(ckpt.stat().st_size / 1e9, 2),
            "unet_params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 2)}
    return ckpt, {"info": info, "reference": reference}


def _scheduler(cfg: Path):
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler.from_pretrained(cfg / "scheduler")


def run(tmp: Path, case: str, device: str, shapes: list[tuple[int, int]], rank: int, steps: int, warmup: int,
        precision: str, checkpointing: bool) -> dict:
    extra: dict = {}
    if case == "demo":
        from backend.models.sdxl_demo import build_sdxl_demo

        ckpt, _ = build_sdxl_demo(WorkspacePaths(tmp / "ws").ensure())
        reference = None
    else:
        ckpt, made = make_real_checkpoint(tmp, device)
        extra.update(made["info"])
        reference = made["reference"]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}[precision]
    fam = SDXLFamily(configs_root=tmp / "configs")
    t0 = time.perf_counter()
    src = fam.open(ckpt)
    te = fam.load_text_encoders(src, device=device, dtype=dtype)
    unet = fam.load_unet(src, device=device, dtype=dtype)
    sched = fam.load_noise_scheduler(src, v_prediction=False, zero_terminal_snr=False)
    load_s = time.perf_counter() - t0
    if reference is not None:
        got = unet.state_dict()
        # the file holds fp16; the loader casts to the compute dtype exactly as .to() does
        extra["single_file_roundtrip_exact"] = all(torch.equal(got[k], v.to(got[k].dtype)) for k, v in reference.items())
        del reference, got
        if device == "cuda":
            torch.cuda.empty_cache()
    t1 = time.perf_counter()
    max_batch = max(b for b, _ in shapes)
    with torch.no_grad():
        cond_all = fam.encode_prompts(te, ["a photo of a cat, masterpiece"] * max_batch)
    for enc in te.encoders:  # cached conditioning: the text encoders leave the device, as with caching on
        enc.to("cpu")
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train(checkpointing)
    net = build_network(NetworkSection(rank=rank, alpha=rank / 2, target="attn-mlp"), fam, unet, None)
    params = net.trainable_parameters()
    for p in params:
        p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=1e-4, foreach=True)
    gen = torch.Generator(device).manual_seed(0)
    setup_s = time.perf_counter() - t1
    results = []
    for batch, latent in shapes:
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        cond = {k: v[:batch] for k, v in cond_all.items()}
        px = latent * 8
        extra_cond = fam.extra_conditioning({"original_size": [(px, px)] * batch, "crop_top_left": [(0, 0)] * batch,
                                             "target_size": [(px, px)] * batch})
        latents = torch.randn(batch, 4, latent, latent, generator=gen, device=device)
        times, losses, first_step_s = [], [], None
        for i in range(warmup + steps):
            if device == "cuda":
                torch.cuda.synchronize()
            s0 = time.perf_counter()
            noise = torch.randn(latents.shape, generator=gen, device=device)
            t = torch.randint(0, 1000, (batch,), generator=gen, device=device)
            noisy = sched.add_noise(latents, noise, t)
            with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
                pred = fam.predict(unet, noisy.to(dtype), t, cond, extra_cond)
            loss = torch.nn.functional.mse_loss(pred.float(), noise)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            if first_step_s is None:
                first_step_s = time.perf_counter() - s0
            if i >= warmup:
                times.append(time.perf_counter() - s0)
                losses.append(loss.item())
        med = statistics.median(times)
        row = {"batch": batch, "latent": latent, "pixels": px, "steps_per_s": round(1 / med, 3),
               "samples_per_s": round(batch / med, 3), "median_step_s": round(med, 4),
               "first_step_s": round(first_step_s, 2), "final_loss": round(losses[-1], 4)}
        if device == "cuda":
            row["peak_vram_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        results.append(row)
    return {"case": case, "device": device, "lycoris_backend": os.environ.get("LYCORIS_KERNEL_BACKEND", "auto"), "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "precision": precision, "rank": rank, "target": "attn-mlp", "gradient_checkpointing": checkpointing,
            "bypass": net.bypass, "adapter_modules": len(net.unet_modules), "steps_timed": steps,
            "load_s": round(load_s, 2), "setup_s": round(setup_s, 2),
            "time_to_first_step_s": round(load_s + setup_s + results[0]["first_step_s"], 2),
            "peak_rss_mb": round(peak_rss_mb()), **extra, "shapes": results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=["demo", "real"], default="demo")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", default=None,
                    help="BATCHxLATENT,… (latent side = pixels / 8); default demo 4x16, real 4x32")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", choices=["no", "fp16", "bf16"], default=None,
                    help="default: bf16 on CUDA, no (fp32) on CPU")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--lycoris-backend", default=None, choices=["auto", "triton", "tilelang", "compile", "torch"],
                    help="LyCORIS kernel backend (LYCORIS_KERNEL_BACKEND); default: LyCORIS's choice")
    a = ap.parse_args(argv)
    if a.lycoris_backend:
        os.environ["LYCORIS_KERNEL_BACKEND"] = a.lycoris_backend  # read by LyCORIS at each dispatch
    precision = a.precision or ("bf16" if a.device == "cuda" else "no")
    spec = a.shapes or ("4x16" if a.case == "demo" else "4x32")
    shapes = [tuple(int(n) for n in part.split("x")) for part in spec.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="sdxl-bench-"))
    try:
        print(json.dumps(run(tmp, a.case, a.device, shapes, a.rank, a.steps, a.warmup, precision,
                             a.gradient_checkpointing)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the real case writes a 7 GB checkpoint
    return 0


if __name__ == "__main__":
    sys.exit(main())
