"""One GPU proof: the demo, SD 1.5 and SDXL (real architectures, random weights) trained through the
real worker (`python -m backend train`) with each speed and memory option; prints JSON and a table.

    python benchmarks/gpu_check.py                 # a CUDA machine: about 6-8 minutes on one H100
    python benchmarks/gpu_check.py --smoke         # the same code on the CPU: the demo and tiny SD 1.5 / SDXL
    python benchmarks/gpu_check.py --only sdxl-bf16,sd15-fp16 --out results/

For each case: seconds per step (between the loss reads at steps 10 and 30, after warm-up and
compilation: each read waits for the GPU, so the interval is real device time), the peak VRAM of
training as the worker reports it (torch.cuda.max_memory_allocated, reset after caching), the peak
of the caching phase, `python -m backend validate CONFIG --estimate --json` when that command exists,
the attention implementation, and whether the LoRA file loads in diffusers (`load_lora_weights`).
The models are built once per run from backend/models/configs with random weights, as diffusers
folders in a temporary workspace. `--out` also gets calibration.json: the measured peaks in the
estimator's calibration shape, to be kept as fixtures when a GPU session runs this.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BF16 = {"training.mixed_precision": "bf16"}


@dataclass
class Case:
    name: str
    model: str                     # "demo" or a family built here: "sd15", "sdxl"
    resolution: int
    batch_size: int
    options: dict[str, Any] = field(default_factory=dict)


# Compiling cases last: when the time budget runs out, they are the ones skipped.
GPU_CASES = [
    Case("demo-bf16", "demo", 128, 4, BF16),
    Case("sd15-fp32-tf32", "sd15", 512, 4, {}),
    Case("sd15-bf16", "sd15", 512, 4, BF16),                          # fused AdamW, SDPA
    Case("sd15-fp16", "sd15", 512, 4, {"training.mixed_precision": "fp16"}),  # grad scaler
    Case("sd15-bf16-adamw8bit", "sd15", 512, 4, {**BF16, "optimizer.name": "adamw8bit"}),
    Case("sd15-bf16-ckpt-fp8", "sd15", 512, 4, {**BF16, "training.gradient_checkpointing": True,
                                                "training.fp8_base": True}),
    Case("sdxl-bf16", "sdxl", 1024, 1, BF16),
    Case("sdxl-bf16-ckpt-fp8-adamw8bit", "sdxl", 1024, 1, {**BF16, "training.gradient_checkpointing": True,
                                                            "training.fp8_base": True,
                                                            "optimizer.name": "adamw8bit"}),
    Case("sd15-bf16-compile", "sd15", 512, 4, {**BF16, "training.compile": True}),
    Case("sdxl-bf16-compile", "sdxl", 1024, 1, {**BF16, "training.compile": True}),
]
SMOKE_CASES = [
    Case("demo-fp32", "demo", 64, 2, {}),
    Case("sd15-bf16-ckpt-fp8", "sd15", 64, 2, {**BF16, "training.gradient_checkpointing": True,
                                               "training.fp8_base": True}),
    Case("sdxl-bf16", "sdxl", 64, 2, BF16),
]
RANK, ALPHA = 16, 8.0

# --smoke builds the same folders with the demo models' widths (backend.models.demo / sdxl_demo).
WIDTH_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "projection_dim")


def tiny_overrides(family: str) -> dict[str, dict]:
    from backend.models import demo, sdxl_demo

    if family == "sd15":
        return {"unet": demo.UNET_CONFIG, "vae": demo.VAE_CONFIG,
                "text_encoder": {k: demo.TEXT_CONFIG[k] for k in WIDTH_KEYS}}
    return {"unet": sdxl_demo.UNET_CONFIG, "vae": sdxl_demo.VAE_CONFIG,
            "text_encoder": {k: sdxl_demo.TE1_CONFIG[k] for k in WIDTH_KEYS},
            "text_encoder_2": {k: sdxl_demo.TE2_CONFIG[k] for k in WIDTH_KEYS}}


def build_model(family: str, folder: Path, device: str, tiny: bool) -> Path:
    """A diffusers folder of `family` from the shipped configs (and tokenizers), random weights."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from backend.models.single_file import shipped_config

    shutil.copytree(shipped_config(family, folder.parent / "configs"), folder)
    overrides = tiny_overrides(family) if tiny else {}
    dtype = torch.float16 if device == "cuda" else torch.float32
    torch.manual_seed(15)
    parts = {"unet": None, "vae": None, "text_encoder": CLIPTextModel}
    if family == "sdxl":
        parts["text_encoder_2"] = CLIPTextModelWithProjection
    for part, text_cls in parts.items():
        config = {**json.loads((folder / part / "config.json").read_text()), **overrides.get(part, {})}
        with torch.device(device), torch.no_grad():
            if text_cls is None:
                cls = UNet2DConditionModel if part == "unet" else AutoencoderKL
                model = cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})
            else:
                model = text_cls(CLIPTextConfig(**config))
        model.to(dtype).save_pretrained(folder / part, safe_serialization=True)
        del model
    return folder


def build_dataset(folder: Path, resolution: int, count: int = 8) -> Path:
    """`count` images (gradients with a shape) at the training resolution, captioned; 5 repeats."""
    from PIL import Image, ImageDraw

    sub = folder / "5_check"
    sub.mkdir(parents=True)
    colours = [(220, 40, 40), (40, 180, 70), (40, 80, 220), (235, 200, 40)]
    for i in range(count):
        img = Image.new("RGB", (resolution, resolution), (240 - 20 * i, 230, 200 + 5 * i))
        r = resolution // 4
        ImageDraw.Draw(img).ellipse([r, r, 3 * r, 3 * r], fill=colours[i % len(colours)])
        img.save(sub / f"{i:02d}.png")
        (sub / f"{i:02d}.txt").write_text(f"gpucheck, shape {i}")
    return folder


def case_config(case: Case, model_path: Path, dataset: Path, steps: int, smoke: bool) -> dict:
    family = "sd15" if case.model == "demo" else case.model
    cfg: dict[str, dict] = {
        "model": {"family": family, "path": str(model_path)},
        "dataset": {"path": str(dataset), "resolution": case.resolution, "min_bucket_reso": 64,
                    "max_bucket_reso": max(256, case.resolution), "bucket_reso_steps": 32 if smoke else 64,
                    "num_workers": 0},
        "network": {"rank": RANK, "alpha": ALPHA},
        "optimizer": {"lr": 1e-4},
        # Disk caches: the later runs of a model reuse the latents and captions of the first.
        "training": {"max_steps": steps, "batch_size": case.batch_size, "cache_text_encoder_outputs": True,
                     "cache_latents": "disk", "device": "cpu" if smoke else "cuda"},
        "sampling": {"every_n_steps": 0, "prompts": []},
        "saving": {"every_n_steps": 0, "every_n_epochs": 0, "save_state": False, "output_name": case.name},
    }
    for dotted, value in case.options.items():
        section, key = dotted.split(".")
        cfg[section][key] = value
    return cfg


def start_estimate(config_file: Path, ws: Path) -> subprocess.Popen:
    """c1-cost's `validate --estimate --json`, run on the CPU while the GPU trains."""
    return subprocess.Popen([sys.executable, "-m", "backend", "validate", str(config_file), "--workspace", str(ws),
                             "--estimate", "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def estimate(proc: subprocess.Popen, timeout: float = 300) -> tuple[float | None, str]:
    """The estimator's peak in MiB, or None and why not."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, f"no estimate within {timeout:.0f} s"
    if proc.returncode != 0:
        return None, "no --estimate in this checkout" if "--estimate" in err else err.strip()[-200:]
    try:
        return peak_mib(json.loads(out)), "ok"
    except ValueError as error:
        return None, f"unreadable estimate: {error}"


def peak_mib(data: Any) -> float:
    """The first number under a key naming a peak, in MiB (units read from the key: _bytes, _mb, _gb)."""
    units = (("bytes", 2**-20), ("gib", 1024), ("gb", 1000**3 / 2**20), ("mib", 1), ("mb", 1))
    stack = [data]
    while stack:
        item = stack.pop(0)
        if isinstance(item, dict):
            for key, value in item.items():
                if "peak" in key.lower() and isinstance(value, int | float) and not isinstance(value, bool):
                    scale = next((s for unit, s in units if key.lower().endswith(unit)), 2**-20)
                    return float(value) * scale
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    raise ValueError("no peak in the estimate")


def read_run(job_dir: Path) -> dict[str, Any]:
    """s/step, peaks and what the worker reported, from the job folder."""
    from backend.jobs.events import EventReader
    from backend.jobs.registry import load_job

    rec = load_job(job_dir)
    events = EventReader(job_dir).read_all()
    ready = next((e for e in events if e.get("type") == "phase" and e.get("phase") == "ready"), {})
    metrics = [e for e in events if e.get("type") == "metric"]
    progress = [e for e in events if e.get("type") == "progress" and e.get("peak_memory_mb") is not None]
    # Loss reads wait for the device: the interval between two reads is device time. Skip warm-up
    # (compilation, first kernels): from the first read at or after step 10 (else step 2) to the last.
    start = next((m for m in metrics if m["step"] >= 10), None) or next((m for m in metrics if m["step"] >= 2), None)
    last = metrics[-1] if metrics else None
    s_per_step = None
    if start and last and last["step"] > start["step"]:
        s_per_step = (last["t"] - start["t"]) / (last["step"] - start["step"])
    result = rec.extra.get("result", {}) if isinstance(rec.extra, dict) else {}
    return {
        "status": rec.status, "error": rec.error, "steps": len(metrics),
        "s_per_step": round(s_per_step, 4) if s_per_step else None,
        "peak_mib": max((e["peak_memory_mb"] for e in progress), default=None),
        "setup_peak_mib": ready.get("setup_peak_memory_mb"),
        "attention": ready.get("attention"), "tf32": ready.get("tf32"), "device_name": ready.get("device_name"),
        "fp8_layers": (ready.get("fp8_base") or {}).get("layers"), "compiled_graphs": result.get("compiled_graphs"),
        "final_loss": result.get("final_loss"), "lora": str(job_dir / rec.extra["output"]) if rec.extra.get("output")
        else None,
    }


def train(config_file: Path, ws: Path, name: str, timeout: float) -> tuple[Path | None, str]:
    argv = [sys.executable, "-m", "backend", "train", str(config_file), "--workspace", str(ws), "--quiet",
            "--name", name]
    try:
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    found = re.search(r"^job folder: (.+)$", proc.stdout, re.M)
    return (Path(found.group(1)) if found else None), (proc.stderr.strip()[-300:] if proc.returncode else "")


def reload_checks(results: list[dict], models: dict[str, Path], device: str) -> None:
    """Load each LoRA file into a diffusers pipeline of its model (load_lora_weights), one pipeline per
    model; True, or the error."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    dtype = torch.float16 if device == "cuda" else torch.float32
    for model, folder in models.items():
        mine = [r for r in results if r["model"] == model and r.get("lora")]
        if not mine:
            continue
        cls = StableDiffusionXLPipeline if model == "sdxl" else StableDiffusionPipeline
        pipe = cls.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
        for r in mine:
            name = re.sub(r"\W", "_", r["case"])
            try:
                pipe.load_lora_weights(r["lora"], adapter_name=name)
                loaded = any(name in names for names in pipe.get_list_adapters().values())
                r["lora_reloads"] = loaded or "loaded, but no adapter was attached"
                pipe.delete_adapters(name)
            except Exception as err:  # noqa: BLE001 - reported per case, the others still run
                r["lora_reloads"] = f"{type(err).__name__}: {err}"[:300]
        del pipe


def calibration(results: list[dict], smoke: bool) -> list[dict]:
    """Measured peaks in the estimator's calibration shape (real architectures on a GPU; all in --smoke)."""
    out = []
    for r in results:
        if r["status"] != "completed" or not r.get("peak_mib") or (not smoke and r["model"] == "demo"):
            continue
        o = r["options"]
        out.append({"family": r["family"], "resolution": r["resolution"], "batch_size": r["batch_size"],
                    "mixed_precision": o.get("training.mixed_precision", "no"),
                    "gradient_checkpointing": bool(o.get("training.gradient_checkpointing", False)),
                    "fp8_base": bool(o.get("training.fp8_base", False)),
                    "optimizer": o.get("optimizer.name", "adamw"), "rank": RANK, "algo": "lora",
                    "peak_bytes": int(r["peak_mib"] * 2**20), "device_name": r.get("device_name") or "cpu"})
    return out


def table(results: list[dict]) -> str:
    head = f"{'case':30} {'status':10} {'s/step':>8} {'peak GiB':>9} {'est GiB':>8} {'setup GiB':>9}  reload  attention"
    lines = [head, "-" * len(head)]

    def gib(v: float | None) -> str:
        return f"{v / 1024:.2f}" if v else "-"

    for r in results:
        reload = r.get("lora_reloads")
        lines.append(f"{r['case']:30} {r['status']:10} {r['s_per_step'] or '-':>8} {gib(r.get('peak_mib')):>9} "
                     f"{gib(r.get('estimate_mib')):>8} {gib(r.get('setup_peak_mib')):>9}  "
                     f"{'yes' if reload is True else 'NO' if reload else '-':6}  {','.join(r.get('attention') or [])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="the CPU with tiny models (the same code, minutes)")
    p.add_argument("--only", default="", help="comma-separated case names")
    p.add_argument("--steps", type=int, default=None, help="steps per case (30 on a GPU, 4 with --smoke)")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip the cases left after this long")
    p.add_argument("--out", default=None, help="folder for gpu_check.json, calibration.json, table.txt")
    p.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: run with --smoke for the CPU check", file=sys.stderr)
        return 2
    cases = SMOKE_CASES if args.smoke else GPU_CASES
    if args.only:
        wanted = set(args.only.split(","))
        cases = [c for c in cases if c.name in wanted]
    steps = args.steps or (4 if args.smoke else 30)
    t0 = time.monotonic()
    ws = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    results: list[dict] = []
    try:
        from backend.models.demo import build_demo
        from backend.paths import open_workspace

        paths = open_workspace(str(ws))
        models: dict[str, Path] = {}
        datasets: dict[int, Path] = {}
        for case in cases:
            r: dict[str, Any] = {"case": case.name, "model": case.model,
                                 "family": "sd15" if case.model == "demo" else case.model,
                                 "resolution": case.resolution, "batch_size": case.batch_size,
                                 "options": case.options}
            results.append(r)
            if time.monotonic() - t0 > args.budget_s:
                r["status"] = "skipped: time budget"
                continue
            t_case = time.monotonic()
            if case.model not in models:
                if case.model == "demo":
                    models["demo"], _ = build_demo(paths)
                else:
                    models[case.model] = build_model(case.model, paths.models / f"check-{case.model}", device,
                                                     tiny=args.smoke)
                    if device == "cuda":
                        torch.cuda.empty_cache()  # the workers need the card's memory, not this process
            if case.resolution not in datasets:
                datasets[case.resolution] = build_dataset(paths.datasets / f"check-{case.resolution}",
                                                          case.resolution)
            config_file = ws / f"{case.name}.toml"
            import tomli_w

            config_file.write_bytes(tomli_w.dumps(case_config(case, models[case.model], datasets[case.resolution],
                                                              steps, args.smoke)).encode())
            estimating = start_estimate(config_file, ws)
            job_dir, err = train(config_file, ws, case.name, 240.0 if args.smoke else 420.0)
            r["estimate_mib"], r["estimate"] = estimate(estimating)
            r.update(read_run(job_dir) if job_dir else {"status": "failed", "error": err})
            if r["status"] != "completed" and err and not r.get("error"):
                r["error"] = err
            r["wall_s"] = round(time.monotonic() - t_case, 1)
            print(f"{case.name}: {r['status']} {r.get('s_per_step')} s/step, peak {r.get('peak_mib')} MiB "
                  f"({r['wall_s']} s)", file=sys.stderr, flush=True)
        reload_checks(results, models, device)
    finally:
        if not args.keep:
            shutil.rmtree(ws, ignore_errors=True)
    report = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "smoke": args.smoke,
              "steps": steps, "total_s": round(time.monotonic() - t0, 1), "cases": results}
    text = table(results)
    print(json.dumps(report, indent=1, default=str))
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
        (out / "calibration.json").write_text(json.dumps(calibration(results, args.smoke), indent=1))
        (out / "table.txt").write_text(text + "\n")
    ok = all(r["status"] == "completed" and r.get("lora_reloads") is True for r in results
             if not str(r["status"]).startswith("skipped"))
    return 0 if ok and not any(math.isnan(r.get("final_loss") or 0.0) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
