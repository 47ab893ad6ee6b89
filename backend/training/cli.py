"""`python -m backend train CONFIG_OR_PRESET [--set section.key=value …]`: one training run in the foreground.

Creates a job folder (like the UI does), runs the worker in a child process with its output in the
job's job.log, shows a progress bar read from events.jsonl, and prints the job folder and the LoRA
file (the last line, `lora: PATH`, is the final file: the copy in saving.output_dir when one is set). Ctrl-C asks the worker to stop cleanly (it saves its state); the exit code follows the job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def add_parsers(sub) -> None:
    parents = [sub.common] if getattr(sub, "common", None) is not None else []
    p = sub.add_parser("train", parents=parents, help="train a LoRA from a config file or preset")
    p.add_argument("config", metavar="CONFIG_OR_PRESET",
                   help="a config .toml or a preset name (e.g. demo); relative paths inside it are taken from "
                        "the workspace. A kohya sd-scripts config: turn it into a preset with import-config first")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override an option, e.g. --set network.rank=16 (repeatable)")
    p.add_argument("--name", default=None, help="job name (default: saving.output_name)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def prepare_job(config: str, overrides: list[str], workspace: str | None, name: str | None = None) -> Path:
    """Validate the config, build the demo model/dataset if the config uses them, make the job folder."""
    from backend.config import find_preset, load_config, resolve_paths, to_dict
    from backend.jobs.registry import create_job
    from backend.jobs.validation import validate_train
    from backend.models import demos
    from backend.paths import open_workspace

    paths = open_workspace(workspace)
    cfg = resolve_paths(load_config(find_preset(config, paths), overrides), paths)
    model = Path(cfg.model.path)
    demo = demos.is_demo_model(model, paths)
    if demo is not None and not model.exists():
        demos.build(demo.family, paths)
    if Path(cfg.dataset.path) == paths.resolve(demos.DATASET) and not Path(cfg.dataset.path).exists():
        build_demo_for(cfg.model.family, paths)
    resolved = validate_train(to_dict(cfg), paths)  # the same gate as the dashboard's Start
    # "starting", not "queued": this command runs the worker itself, a running UI must not start it too.
    return create_job(paths, "train", resolved, name or cfg.saving.output_name, status="starting",
                      num_processes=cfg.training.num_processes)


def build_demo_for(family: str, paths) -> None:
    """The demo model (and dataset) of `family` (SD 1.5's when the family has none), as
    `python -m backend demo --family` builds them."""
    from backend.models import demos

    demos.build(family if family in demos.families() else "sd15", paths)


def _bar(step: int, total: int, width: int = 30) -> str:
    filled = int(width * step / total) if total else 0
    return "[" + "#" * filled + "." * (width - filled) + "]"


def follow(job_dir: Path, child: subprocess.Popen, quiet: bool = False) -> dict:
    """Print progress from events.jsonl until the child exits; returns the last event of each type."""
    from backend.compare.runs import EMA
    from backend.jobs import events as e
    from backend.jobs.events import EventReader

    reader = EventReader(job_dir)
    offset, last = 0, {}
    smoothed, ema = None, EMA()  # the loss as the Runs chart smooths it
    tty = sys.stderr.isatty()
    while True:
        running = child.poll() is None
        events, offset = reader.read(offset)
        for ev in events:
            last[ev.get("type")] = ev
            kind = ev.get("type")
            if kind == e.METRIC and isinstance(ev.get("loss"), int | float):
                smoothed = ema.add(float(ev["loss"]))
            if quiet:
                continue
            if kind == e.PROGRESS and ev.get("total"):
                eta = ev.get("eta_s")
                line = (f"{_bar(ev['step'], ev['total'])} step {ev['step']}/{ev['total']}"
                        + (f"  {ev['it_s']:.2f} it/s" if ev.get("it_s") else "")
                        + (f"  eta {eta:.0f}s" if eta is not None else "")
                        + (f"  loss {smoothed:.4f}" if smoothed is not None else ""))
                print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
            elif kind == e.PHASE and ev.get("phase") == "cache_latents" and ev.get("total"):
                print(f"caching latents {ev['done']}/{ev['total']}", file=sys.stderr)
            elif kind in (e.CHECKPOINT, e.SAMPLE):
                print(("\n" if tty else "") + f"{kind}: {ev.get('path')}", file=sys.stderr)
            elif kind == e.ERROR:
                print(("\n" if tty else "") + f"error: {ev.get('message')}", file=sys.stderr)
        if not running:
            break
        time.sleep(0.2)
    if tty and not quiet:
        print(file=sys.stderr)
    return last


def cmd_train(args) -> int:
    from backend.compat.hint import import_hint
    from backend.errors import ConfigError
    from backend.jobs.events import LOG_FILE
    from backend.jobs.registry import load_job
    from backend.jobs.supervisor import worker_argv

    try:
        job_dir = prepare_job(args.config, args.overrides, args.workspace, args.name)
    except ConfigError as err:
        hint = import_hint(args.config)
        if hint is None:
            raise
        raise ConfigError([*err.problems, ("", hint)], err.source) from None
    rec = load_job(job_dir)
    print(f"job folder: {job_dir}", flush=True)
    project_root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(job_dir / LOG_FILE, "ab") as log:
        child = subprocess.Popen(worker_argv(job_dir, rec.num_processes), cwd=project_root, stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    # Ctrl-C reaches the worker too (same process group): it stops cleanly; we keep following it.
    previous = signal.signal(signal.SIGINT, lambda *_: print("\nstopping: the worker saves its state…",
                                                             file=sys.stderr))
    try:
        last = follow(job_dir, child, args.quiet)
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    rec = load_job(job_dir)
    output = rec.extra.get("output")
    print(f"status: {rec.status}", flush=True)
    if output:
        print(f"output: {job_dir / output}", flush=True)
        # The final LoRA, for scripts: the copy in saving.output_dir when one is set.
        print(f"lora: {rec.extra.get('output_copy') or job_dir / output}", flush=True)
    if rec.status == "failed":
        # follow() printed the error event already (unless quiet): say it once, then where the log is.
        shown = not args.quiet and (last.get("error") or {}).get("message") == rec.error
        print(("" if shown else f"error: {rec.error}\n") + f"log: {job_dir / LOG_FILE}", file=sys.stderr)
        return code or 1
    return code
