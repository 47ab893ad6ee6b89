"""Optimizers and learning-rate schedules for config sections `optimizer` and `schedule`."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from backend.errors import ConfigError, TrainingError


class Lion(torch.optim.Optimizer):
    """Lion: sign of an interpolated momentum, decoupled weight decay.

    Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023, Algorithm 2:
    c = β₁m + (1−β₁)g; θ ← θ − lr·(sign(c) + λθ); m ← β₂m + (1−β₂)g.
    """

    def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                update = m.mul(beta1).add_(p.grad, alpha=1 - beta1).sign_()
                p.add_(update, alpha=-group["lr"])
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss


def check_optimizer(cfg: Any, device_type: str) -> None:
    """Refuse before the run what cannot work on this machine (8-bit AdamW without CUDA/bitsandbytes), and
    extra arguments the optimizer rejects."""
    if cfg.optimizer.name == "adamw8bit":
        if device_type != "cuda":
            raise TrainingError("optimizer.name = adamw8bit needs a CUDA GPU (bitsandbytes); this run is on "
                                f"{device_type}. Choose adamw, adafactor or prodigy.")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise TrainingError("optimizer.name = adamw8bit needs the bitsandbytes package: "
                                "pip install bitsandbytes, or choose adamw or adafactor")
    # The optimizer's own range checks of optimizer.extra_args (backend.preflight checks their names and
    # types without torch): on a one-element probe now, not after the model is loaded and latents cached.
    build_optimizer(cfg, [{"params": [torch.nn.Parameter(torch.zeros(1))]}], device_type)


def _adamw(groups: list[dict], kw: dict, device_type: str) -> torch.optim.Optimizer:
    """AdamW with one kernel for all parameters on CUDA (fused: no per-tensor launches, and under
    fp16 the grad scaler hands it the inf check instead of reading it on the host); elsewhere the
    foreach path (on 2 CPU cores it was as fast as fused, or faster)."""
    if "fused" in kw or "foreach" in kw:  # optimizer.extra_args chose
        return torch.optim.AdamW(groups, **kw)
    return torch.optim.AdamW(groups, **kw, **({"fused": True} if device_type == "cuda" else {"foreach": True}))


def build_optimizer(cfg: Any, groups: list[dict], device_type: str) -> tuple[torch.optim.Optimizer, str]:
    """The optimizer over `groups` and its description as sd-scripts writes it in ss_optimizer."""
    o = cfg.optimizer
    extra = dict(o.extra_args)
    betas = (o.beta1, o.beta2)
    name = o.name
    try:
        if name == "adamw":
            kw = {"lr": o.lr, "betas": betas, "eps": o.eps, "weight_decay": o.weight_decay, **extra}
            opt = _adamw(groups, kw, device_type)
        elif name == "adamw8bit":
            import bitsandbytes as bnb

            kw = {"lr": o.lr, "betas": betas, "eps": o.eps, "weight_decay": o.weight_decay, **extra}
            opt = bnb.optim.AdamW8bit(groups, **kw)
        elif name == "prodigy":
            from prodigyopt import Prodigy

            kw = {"lr": o.lr, "betas": betas, "weight_decay": o.weight_decay, **extra}
            opt = Prodigy(groups, **kw)
        elif name == "adafactor":
            from transformers.optimization import Adafactor

            kw = {"lr": o.lr, "weight_decay": o.weight_decay, "scale_parameter": False, "relative_step": False,
                  "warmup_init": False, **extra}
            if kw.get("relative_step"):
                kw["lr"] = None
            opt = Adafactor(groups, **kw)
        elif name == "lion":
            kw = {"lr": o.lr, "betas": betas, "weight_decay": o.weight_decay, **extra}
            opt = Lion(groups, **kw)
        elif name == "sgd":
            kw = {"lr": o.lr, "momentum": o.momentum, "weight_decay": o.weight_decay, **extra}
            opt = torch.optim.SGD(groups, **kw)
        else:
            raise ConfigError([("optimizer.name", f"unknown optimizer {name!r}")])
    except (TypeError, ValueError) as err:  # an unknown argument; a value out of the optimizer's range
        raise ConfigError([("optimizer.extra_args", f"not accepted by {name}: {err}")]) from err
    cls = type(opt)
    args = ",".join(f"{k}={v}" for k, v in kw.items() if k != "lr")
    return opt, f"{cls.__module__}.{cls.__name__}" + (f"({args})" if args else "")


def warmup_steps(cfg: Any, total_steps: int) -> int:
    s = cfg.schedule
    return int(round(s.warmup_ratio * total_steps)) if s.warmup_ratio is not None else s.warmup_steps


def build_scheduler(cfg: Any, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """diffusers `get_scheduler` with warm-up, cycles and power; stepped once per optimizer step."""
    from diffusers.optimization import get_scheduler

    s = cfg.schedule
    return get_scheduler(s.lr_scheduler, optimizer, num_warmup_steps=warmup_steps(cfg, total_steps),
                         num_training_steps=total_steps, num_cycles=s.num_cycles, power=s.power)
