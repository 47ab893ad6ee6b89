"""`run_job(ctx)`: the "train" job kind, run by the worker (`python -m backend.worker JOB_DIR`)."""

from __future__ import annotations

import os
from typing import Any

from backend.errors import TrainingError


def run_job(ctx: Any) -> dict[str, Any]:
    """Train with the job's config.toml. Returns normally on completion or after a stop (state saved);
    raises a LoraDashError (ModelError, DatasetError, TrainingError, ConfigError) for what the user
    must fix."""
    # OpenMP threads that spin while waiting make CPU training 10× slower as soon as another process
    # competes for the cores (measured: 5 s vs 0.4 s per demo step); passive waiting costs little.
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
