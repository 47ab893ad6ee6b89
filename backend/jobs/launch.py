"""The worker's command line: alone, or under `accelerate launch` for several processes or machines.

Explicit flags, so no accelerate config file is needed. One machine: `--main_process_port 0` lets
accelerate pick a free port, so two multi-process jobs (or two users) on one box never collide.
Several machines: the same job is started on each, with its own `training.machine_rank`; the ranks
meet at `main_process_ip:main_process_port` on machine 0.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backend.errors import ConfigError, JobError
from backend.jobs.registry import load_config


def _training(job_dir: Path) -> Mapping[str, Any]:
    """The job's `training` section ({} when the job has no config yet, or another kind of config)."""
    try:
        section = load_config(job_dir).get("training")
    except (JobError, ConfigError):
        return {}
    return section if isinstance(section, dict) else {}


def accelerate_flags(num_processes: int, training: Mapping[str, Any]) -> list[str]:
    machines = int(training.get("num_machines", 1) or 1)
    flags = ["--multi_gpu", "--num_processes", str(num_processes), "--num_machines", str(machines),
             "--dynamo_backend", "no"]
    if machines > 1:
        return flags + ["--machine_rank", str(training.get("machine_rank", 0)),
                        "--main_process_ip", str(training.get("main_process_ip", "")),
                        "--main_process_port", str(training.get("main_process_port", 29500))]
    return flags + ["--main_process_port", "0"]


def worker_argv(job_dir: Path, num_processes: int = 1) -> list[str]:
    """The worker's command line; through `accelerate launch` for several processes (GPUs)."""
    worker = ["-m", "backend.worker", str(job_dir)]
    if num_processes > 1:  # several machines imply several processes (the schema checks it)
        return [sys.executable, "-m", "accelerate.commands.launch",
                *accelerate_flags(num_processes, _training(job_dir)), *worker]
    return [sys.executable, *worker]
