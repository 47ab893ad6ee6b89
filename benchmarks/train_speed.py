"""Training speed and memory, printed as JSON.

    python benchmarks/train_speed.py [--only demo sd15 sd15_warm sd15_checkpointing] [--repeat N] [--steps N]

Two runs, each through the real command line (`python -m backend train …`, which starts the real
worker), timed from the moment the command is launched:
  demo: the shipped demo preset (tiny SD 1.5-architecture model);
  sd15: the real SD 1.5 UNet/VAE/CLIP-L architecture with random weights (built once into --cache and
        loaded from safetensors like a user's model), 16 images at 128 px (16×16 latents), batch 4,
        LoRA rank 8 on attention + feed-forward + projections, fp32, latents and text cached.
Reported per run: steps/s and samples/s (median over steady steps: the first two are excluded),
seconds per step, time from launch to the first step split into start-up (interpreter + imports) /
load / cache / setup, time to the end of the first step, peak RSS of the worker (and peak VRAM on CUDA).
Other processes on the machine change these figures: use --repeat and compare medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_CACHE = Path.home() / ".cache" / "loradash-bench"


def _sd15_config(model: Path, dataset: Path, steps: int, **training: object) -> dict:
    cfg = {
        "schema_version": 1,
        "model": {"family": "sd15", "path": str(model)},
        "dataset": {"path": str(dataset), "resolution": 128, "min_bucket_reso": 64, "max_bucket_reso": 256,
                    "bucket_reso_steps": 64, "num_workers": 0},
        "network": {"algo": "lora", "rank": 8, "alpha": 8.0, "target": "attn-mlp"},
        "optimizer": {"name": "adamw", "lr": 1e-4},
        "training": {"max_steps": steps, "batch_size": 4, "mixed_precision": "no", "cache_latents": "memory",
                     "cache_text_encoder_outputs": True, "seed": 1},
        "saving": {"output_name": "bench-sd15", "every_n_steps": 0, "every_n_epochs": 0},
    }
    cfg["training"].update(training)
    return cfg


def _bench_dataset(folder: Path) -> Path:
    """16 images of 128×128 with captions, in a kohya `1_bench` folder."""
    from PIL import Image, ImageDraw

    sub = folder / "1_bench"
    if len(list(sub.glob("*.png"))) == 16:
        return folder
    sub.mkdir(parents=True, exist_ok=True)
    for i in range(16):
        img = Image.new("RGB", (128, 128), (20 * i % 255, 90, 255 - 15 * i))
        ImageDraw.Draw(img).ellipse((10 + i, 20, 90 + i, 100), fill=(240, 200 - 10 * i, 40))
        img.save(sub / f"img_{i:02d}.png")
        (sub / f"img_{i:02d}.txt").write_text(f"benchtoken, circle {i}, gradient background\n")
    return folder


def _events(job_dir: Path) -> list[dict]:
    from backend.jobs.events import EventReader

    return EventReader(job_dir).read_all()


def _steady_seconds_per_step(progress: list[dict], skip: int = 2) -> list[float]:
    """Seconds per step between consecutive progress events after the first `skip` steps."""
    pts = [(e["step"], e["t"]) for e in progress if e.get("step", 0) >= skip]
    return [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(pts, pts[1:], strict=False) if s1 > s0]


def run_once(config: str, workspace: Path, overrides: list[str], batch_size: int) -> dict:
    """One `python -m backend train` run; its figures from events.jsonl and the child's rusage."""
    jobs = workspace / "jobs"
    before = set(jobs.iterdir()) if jobs.is_dir() else set()
    argv = [sys.executable, "-m", "backend", "train", config, "--workspace", str(workspace), "--quiet"]
    for o in overrides:
        argv += ["--set", o]
    launched = time.time()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    (job_dir,) = set(jobs.iterdir()) - before
    evs = _events(job_dir)
    ready = next(e for e in evs if e["type"] == "phase" and e.get("phase") == "ready")
    progress = [e for e in evs if e["type"] == "progress" and e.get("total")]
    first = next(e for e in progress if e["step"] >= 1)
    # the worker's first status: "running" (a job made by `train` is created as starting)
    started = next(e for e in evs if e["type"] == "status" and e["status"] in ("starting", "running"))
    per_step = _steady_seconds_per_step(progress)
    s_step = statistics.median(per_step) if per_step else None
    load = ready["load_text_encoder_s"] + ready["load_vae_s"] + ready["load_unet_s"]
    imports = ready.get("imports_s", 0.0)
    cache = ready["cache_text_s"] + ready["cache_latents_s"]
    to_ready = ready["t"] - launched
    out = {
        "steps": progress[-1]["step"],
        "seconds_per_step": round(s_step, 4) if s_step else None,
        "steps_per_s": round(1 / s_step, 4) if s_step else None,
        "samples_per_s": round(batch_size / s_step, 4) if s_step else None,
        "launch_to_first_step_s": round(to_ready, 2),
        "launch_to_first_step_done_s": round(first["t"] - launched, 2),
        "first_step_s": round(first["t"] - ready["t"], 2),
        "split_s": {"startup": round(to_ready - imports - load - cache - ready["setup_s"], 2),
                    "imports": round(imports, 2),
                    "launch_to_worker": round(started["t"] - launched, 2),
                    "load": round(load, 2), "cache": round(cache, 2), "setup": round(ready["setup_s"], 2),
                    **{k: round(v, 2) for k, v in ready.items() if k.endswith("_s")}},
        # the worker's own peak RSS (ru_maxrss) as it reports it with each step; RUSAGE_CHILDREN here
        # would be the largest of all runs so far
        "peak_rss_mib": max(e.get("peak_memory_mb") or 0 for e in progress),
        "total_wall_s": round(ended - launched, 2),
        "job_dir": str(job_dir),
    }
    return out


def bench_demo(workspace: Path, steps: int | None) -> dict:
    from backend.models.demo import build_demo
    from backend.paths import WorkspacePaths

    build_demo(WorkspacePaths(workspace).ensure())
    overrides = [f"training.max_steps={steps}"] if steps else []
    return run_once(str(ROOT / "presets" / "demo.toml"), workspace, overrides, batch_size=4)


# name → extra `training` options of the SD 1.5 run and whether to time a second (warm) launch
VARIANTS = {
    "sd15": ({}, False),                                            # the bar: memory caching, cold start
    "sd15_warm": ({"cache_latents": "disk"}, True),                 # disk caches reused: no VAE, no text encoder
    "sd15_checkpointing": ({"gradient_checkpointing": True}, False),  # the memory / speed trade
}


def bench_sd15(workspace: Path, cache: Path, steps: int, variant: str = "sd15") -> dict:
    import tomli_w

    from benchmarks.sd15_arch import build

    t = time.monotonic()
    model = build(cache / "sd15-arch")
    built_s = time.monotonic() - t
    dataset = _bench_dataset(cache / "dataset")
    extra, warm = VARIANTS[variant]
    cfg = workspace / f"bench-{variant}.toml"
    cfg.write_text(tomli_w.dumps(_sd15_config(model, dataset, steps, **extra)))
    if warm:
        run_once(str(cfg), workspace, [], batch_size=4)   # fills workspace/cache
    out = run_once(str(cfg), workspace, [], batch_size=4)
    out["model_build_s"] = round(built_s, 2)
    return out


def _summary(runs: list[dict]) -> dict:
    keys = ("seconds_per_step", "steps_per_s", "samples_per_s", "launch_to_first_step_s",
            "launch_to_first_step_done_s", "peak_rss_mib")
    return {k: statistics.median([r[k] for r in runs if r.get(k) is not None]) for k in keys}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=("demo", *VARIANTS), default=["demo", "sd15"],
                    help="runs (default: demo sd15); also sd15_warm, sd15_checkpointing")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8, help="steps of the sd15 run (default 8)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the random SD 1.5 model is kept")
    ap.add_argument("--workspace", type=Path, default=None, help="workspace for the runs (default: a temp dir)")
    args = ap.parse_args()
    import torch

    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="loradash-bench-"))
    report: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "torch": torch.__version__, "cuda": torch.cuda.is_available(),
                                "load_avg_before": os.getloadavg()}, "runs": {}}
    for name in args.only:
        runs = []
        for _ in range(args.repeat):
            runs.append(bench_demo(workspace, None) if name == "demo"
                        else bench_sd15(workspace, args.cache, args.steps, name))
        report["runs"][name] = {"median": _summary(runs), "each": runs}
    report["machine"]["load_avg_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
