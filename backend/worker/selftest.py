"""The `selftest` job kind: a small real job for checking the jobs machinery without torch.

It counts `steps` steps of `step_s` seconds, emits progress and metric events, keeps its step in
checkpoints/state.json (saved every `save_every` steps, on save_now and on stop) so a resume
continues from the saved step, answers sample_now with a file in samples/, and writes
output/result.json when it completes. Config keys (all optional):
steps (int, 10), step_s (float, 0.05), save_every (int, 5), fail_at_start (str: raise with this
message), fail_at_step (int), import_module (str: import it at start, to test missing packages),
progress_interval_s (float, 0: a progress event every step), training.num_processes (int: run
under `accelerate launch` with that many ranks, as a training job would), stuck (bool: act like a worker stuck
inside a long native call: SIGINT/SIGTERM blocked, stop requests ignored; only SIGKILL ends it).
"""

from __future__ import annotations

import importlib
import signal
import time

from backend.errors import ConfigError, TrainingError
from backend.files import atomic_write_json, atomic_write_text, read_json
from backend.worker.context import WorkerContext

STATE_FILE = "state.json"
OPTIONS = {"steps": int, "step_s": float, "save_every": int, "fail_at_start": str, "fail_at_step": int,
           "import_module": str, "progress_interval_s": float, "stuck": bool,
           "training": dict}


def validate(config: dict, paths: object = None) -> dict:
    """Check the selftest config: known keys, right types; ConfigError naming each bad key."""
    problems = [(key, f"unknown option; accepted: {', '.join(OPTIONS)}") for key in config
                if key not in OPTIONS]
    for key, kind in OPTIONS.items():
        value = config.get(key)
        ok = value is None or isinstance(value, kind) or (kind is float and isinstance(value, int))
        if not ok or (isinstance(value, bool) and kind is not bool):
            problems.append((key, f"must be {kind.__name__}, got {value!r}"))
    if isinstance(config.get("steps"), int) and config["steps"] < 0:
        problems.append(("steps", "must be >= 0"))
    if problems:
        raise ConfigError(problems, source="selftest config")
    return dict(config)


def _option(config: dict, key: str, kind: type, default):
    value = config.get(key, default)
    if value is None or isinstance(value, kind) or (kind is float and isinstance(value, int)):
        return value
    raise ConfigError([(key, f"must be {kind.__name__}, got {value!r}")], source="selftest config")


def _save(ctx: WorkerContext, step: int) -> None:
    if not ctx.is_main_process:
        return
    path = ctx.checkpoints_dir / STATE_FILE
    atomic_write_json(path, {"step": step})
    ctx.emit("checkpoint", path=str(path), step=step)


def run_job(ctx: WorkerContext) -> dict:
    cfg = ctx.config
    steps = _option(cfg, "steps", int, 10)
    step_s = float(_option(cfg, "step_s", float, 0.05))
    save_every = _option(cfg, "save_every", int, 5)
    fail_at_step = _option(cfg, "fail_at_step", int, None)
    ctx.progress_interval_s = float(_option(cfg, "progress_interval_s", float, 0.0))
    if cfg.get("import_module"):
        importlib.import_module(str(cfg["import_module"]))
    stuck = bool(cfg.get("stuck", False))
    if stuck:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    if cfg.get("fail_at_start"):
        raise TrainingError(str(cfg["fail_at_start"]))

    step = 0
    if ctx.resume:
        state = read_json(ctx.checkpoints_dir / STATE_FILE, default={}) or {}
        step = int(state.get("step", 0))
        ctx.log.info("resuming from step %d", step)
    ctx.progress(step, steps, force=True)
    while step < steps:
        for action in sorted(ctx.poll_control()):
            if action == "save_now":
                _save(ctx, step)
            elif action == "sample_now" and ctx.is_main_process:
                path = ctx.samples_dir / f"sample-{step:06d}.txt"
                atomic_write_text(path, f"sample at step {step}\n")
                ctx.emit("sample", path=str(path), prompt="selftest", seed=0, step=step)
        if ctx.stop_requested and not stuck:
            _save(ctx, step)
            ctx.log.info("stopped at step %d", step)
            return {"step": step}
        time.sleep(step_s)
        step += 1
        if fail_at_step is not None and step >= fail_at_step:
            raise TrainingError(f"selftest failure at step {step}")
        ctx.emit("metric", step=step, loss=1.0 / step)
        ctx.progress(step, steps, epoch=0)
        ctx.log.info("step %d/%d", step, steps)
        if save_every and step % save_every == 0:
            _save(ctx, step)
    _save(ctx, step)
    if ctx.is_main_process:
        atomic_write_json(ctx.output_dir / "result.json", {"steps": step})
    return {"step": step}
