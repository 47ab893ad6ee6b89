"""`run_job(ctx)`: the "train" job kind, run by the worker (`python -m backend.worker JOB_DIR`)."""

from __future__ import annotations

import os
import sys
from typing import Any

from backend.errors import TrainingError

# Imported by diffusers and transformers whenever installed, never used by training: scipy (through
# transformers' object-detection losses) and peft (through diffusers' layer-casting hooks). Left out,
# the worker starts ≈0.45 s sooner and holds ≈55 MiB less for the whole run (SD 1.5 benchmark).
UNUSED_LIBRARIES = ("scipy", "peft")


def skip_unused_libraries() -> None:
    """Make UNUSED_LIBRARIES look absent to this process (a None entry in sys.modules: importing it
    raises ImportError and `importlib.util.find_spec` answers None, which is how both libraries check
    for optional packages). Process-wide and only effective before diffusers and transformers are
    imported: the worker's process entry calls it for training jobs."""
    for name in UNUSED_LIBRARIES:
        sys.modules.setdefault(name, None)


def run_job(ctx: Any) -> dict[str, Any]:
    """Train with the job's config.toml. Returns normally on completion or after a stop (state saved);
    raises a LoraDashError (ModelError, DatasetError, TrainingError, ConfigError) for what the user
    must fix."""
    # OpenMP threads that spin while waiting make CPU training far slower as soon as another process
    # competes for the cores (SD 1.5 benchmark beside two busy processes: 12–15 s per step, passive
    # 7.4 s; demo: 5 s vs 0.4 s). Alone, passive waiting costs ≈10 % (2.7 vs 2.45 s per step).
    # Only effective before torch is first imported, which in the worker is here.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from backend.config import load_config, resolve_paths
    from backend.training.checks import OOM_MESSAGE
    from backend.training.trainer import Trainer

    cfg = resolve_paths(load_config(ctx.config), ctx.paths)
    trainer = Trainer(cfg, ctx)
    try:
        trainer.prepare()
        return trainer.train()
    except torch.OutOfMemoryError as err:
        raise TrainingError(OOM_MESSAGE) from err
