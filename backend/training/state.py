"""Resumable training state: network tensors, optimizer, LR schedule, scaler, RNGs and position."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.errors import TrainingError
from backend.training.saving import atomic_torch_save

STATE_VERSION = 1


@dataclass
class Position:
    """Where the run is: `step` optimizer steps done; the next batch is `batch` of epoch `epoch`."""

    step: int = 0
    epoch: int = 0
    batch: int = 0

    @property
    def epoch_number(self) -> int:
        """The 1-based epoch the last step belongs to: what sd-scripts writes as `ss_epoch` (its
        train_network.py: `epoch + 1` at each epoch end, the epoch count at the last save) and what
        the progress events report. Right after an epoch ends, `epoch` already points at the next
        one (batch 0), so the finished epoch is `epoch` itself."""
        return self.epoch if self.batch == 0 and self.step > 0 else self.epoch + 1


def rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def resume_from_main(ranks: Any, *, optimizer: Any, scheduler: Any, scaler: Any, pos: Position) -> Position:
    """Every rank continues from rank 0's position, optimizer moments, LR schedule and scaler. Only rank
    0 saves states, into its own machine's job folder: the ranks of other machines found none and would
    otherwise start at step 0 and fall out of step with it. (The network follows by broadcast.)"""
    if not ranks.several:
        return pos
    mine = None
    if ranks.rank == 0:
        mine = _on_host({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "scaler": scaler.state_dict() if scaler is not None else None,
                         "position": (pos.step, pos.epoch, pos.batch)})
    state = ranks.from_main(mine)
    if ranks.rank != 0:
        optimizer.load_state_dict(state["optimizer"])  # moved to each parameter's device by torch
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
    return Position(*state["position"])


def _on_host(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _on_host(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_on_host(v) for v in value)
    return value


def save_state(path: Path, *, network: Any, optimizer: Any, scheduler: Any, scaler: Any, pos: Position,
               config_digest: str) -> None:
    atomic_torch_save({
        "version": STATE_VERSION,
        "network": network.training_state(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_states(),
        "position": {"step": pos.step, "epoch": pos.epoch, "batch": pos.batch},
        "config_digest": config_digest,
    }, path)


def load_state(path: Path, *, network: Any, optimizer: Any, scheduler: Any, scaler: Any) -> tuple[Position, str]:
    """Restore everything saved by `save_state`; returns the position and the saved config digest."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as err:
        raise TrainingError(f"cannot read the saved state {path.name}: {err}") from err
    if state.get("version") != STATE_VERSION:
        raise TrainingError(f"{path.name} was saved by another version (state version {state.get('version')})")
    network.load_training_state(state["network"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_states(state["rng"])
    p = state["position"]
    return Position(p["step"], p["epoch"], p["batch"]), state.get("config_digest", "")
