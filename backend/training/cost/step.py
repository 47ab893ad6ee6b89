"""One training step on the meta device, built from the trainer's own parts, with a probe on it.

The parts are those of a CUDA run (backend.training.trainer): the family's denoiser in the weight
dtype (no CPU-only replacements: frozen_conv and lean_geglu are installed on the CPU only), gradient
checkpointing when asked, `build_network` (with the fused forwards), the adapters in fp32,
`build_optimizer`, the trainer's objective (backend.training.objectives: noising, the model's extra
inputs, the loss) around the family's `predict` under (emulated) autocast, gradient clipping, the
optimizer step. Latents and prompt embeddings come
from the caches (what the trainer does when caching is on); with `network.train_text_encoder` the
captions go through the text encoders with their adapters every step.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from backend.training.cost.arch import Architecture
from backend.training.cost.emulate import CudaEmulation
from backend.training.cost.probe import ADAPTER, FROZEN, STEP, OwnerTracker, StepProbe, mark_adapters

FORWARD, BACKWARD, OPTIMIZER = "forward", "backward", "optimizer"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "no": torch.float32}


@dataclass
class StepSettings:
    config: Any                # TrainConfig: network, optimizer, training sections are read
    batch: int
    height: int                # pixels
    width: int
    count: bool = True         # operators and FLOPs (memory is always followed)
    fused: bool = True         # False: LyCORIS's own forwards (the figures before the fused ones)
    optimizer: bool = True     # clip + optimizer step (False: forward and backward only)
    reference: bool = False    # the frozen model alone: adapters off, backward as far as with them


@dataclass
class StepCost:
    ops: dict = field(default_factory=dict)          # phase → owner → ATen operators
    kernels: dict = field(default_factory=dict)      # the same without view-only operators
    flops: dict = field(default_factory=dict)
    op_counts: dict = field(default_factory=dict)    # operator name → count, most frequent first
    adapters: int = 0
    fused_adapters: int = 0
    frozen_bytes: int = 0          # denoiser (+ text encoders when trained) weights
    adapter_bytes: int = 0         # trainable weights (fp32)
    optimizer_state_bytes: int = 0
    grad_bytes: int = 0
    saved_bytes: int = 0           # alive at the end of the forward pass: what backward needs
    peak_bytes: int = 0            # highest live total the step adds to the above (activations, grads…)
    peak_phase: str = ""
    phase_peaks: dict = field(default_factory=dict)
    trainable_shapes: list = field(default_factory=list)
    layers: list = field(default_factory=list)       # adapted layers: [kind, in, out, kernel cells, positions]

    def total(self, table: str, owner: str | None = None, phases: tuple[str, ...] | None = None) -> int:
        data = getattr(self, table)
        return sum(n for ph, owners in data.items() if phases is None or ph in phases
                   for o, n in owners.items() if owner is None or o == owner)

    def to_json(self) -> dict:
        return asdict(self)


def tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _lycoris_forwards(network: Any) -> None:
    """Put LyCORIS's own forward back on every module (the state before the fused forwards)."""
    for m in network.net.loras:
        if "forward" in m.__dict__:
            del m.__dict__["forward"]
            m.org_module[0].forward = m.forward


def _checkpointing(autocast: torch.dtype | None, tracker: OwnerTracker | None) -> Any:
    @contextmanager
    def recompute_modes() -> Iterator[None]:
        with CudaEmulation(autocast), (tracker if tracker is not None else nullcontext()):
            yield

    def checkpointed(module: Any, *args: Any) -> Any:
        from torch.utils.checkpoint import checkpoint

        return checkpoint(module.__call__, *args, use_reentrant=False,
                          context_fn=lambda: (nullcontext(), recompute_modes()))
    return checkpointed


def _record_layer(out: list) -> Any:
    def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if isinstance(module, torch.nn.Linear):
            out.append(["linear", module.in_features, module.out_features, 1, output.numel() // output.shape[-1]])
        elif isinstance(module, torch.nn.Conv2d):
            cells = module.kernel_size[0] * module.kernel_size[1]
            out.append(["conv", module.in_channels, module.out_channels, cells, output.numel() // output.shape[1]])
    return hook


def _input_requires_grad(module: torch.nn.Module, args: tuple) -> tuple | None:
    """The reference run's stand-in for an adapter: gradient flows back from this layer's input."""
    x = args[0]
    if torch.is_grad_enabled() and not x.requires_grad:
        return (x.detach().requires_grad_(True), *args[1:])
    return None


def _optimizer(cfg: Any, network: Any) -> torch.optim.Optimizer:
    """The trainer's optimizer with its state made, as after the first step (steady state)."""
    from backend.training.optim import build_optimizer

    groups = network.param_groups(cfg.optimizer.lr, cfg.network.unet_lr, cfg.network.text_encoder_lr,
                                  cfg.network.text_encoder_2_lr)
    opt, _ = build_optimizer(cfg, groups, "cuda")
    for group in opt.param_groups:  # fused AdamW (CUDA) has no meta kernel: its foreach form, same maths
        if group.get("fused"):
            group["fused"], group["foreach"] = False, True
    params = [p for g in groups for p in g["params"]]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return opt


def measure_step(arch: Architecture, s: StepSettings) -> StepCost:
    from backend.training.networks import build_network

    cfg = s.config
    tr, fam = cfg.training, arch.family
    wdt = DTYPES[tr.mixed_precision]
    train_te = cfg.network.train_text_encoder
    emu = CudaEmulation(None)
    tracker = OwnerTracker()
    cost = StepCost()
    with emu:
        unet = arch.denoiser(wdt)
        autocast = wdt if tr.mixed_precision != "no" else None
        if tr.gradient_checkpointing:
            # diffusers' own checkpointing (torch.utils.checkpoint, non-reentrant), with the emulation
            # (and the owner tracker) re-entered for the recomputation: backward runs on the engine's
            # device thread, where the torch-function modes of this thread are not active.
            unet.enable_gradient_checkpointing(_checkpointing(autocast, tracker if s.count else None))
            unet.train()
        te = arch.text_encoders(torch.float32, wdt, cfg) if train_te else None  # as the trainer loads them
        network = build_network(cfg.network, fam, unet, te)  # adapters made on the CPU (small), then moved
        if not s.fused:
            _lycoris_forwards(network)
        layers = [m.org_module[0] for m in network.net.loras]
        if s.count:
            for layer in layers:
                layer.register_forward_hook(_record_layer(cost.layers))
        if s.reference:
            network.restore()
            for layer in layers:
                layer.register_forward_pre_hook(_input_requires_grad)
        cost.adapters = len(network.net.loras)
        cost.fused_adapters = sum("forward" in m.__dict__ for m in network.net.loras)
        network.net.to("meta", dtype=torch.float32)
        if s.count and not s.reference:
            mark_adapters(network.net.loras, tracker)
        trainable = [] if s.reference else network.trainable_parameters()
        opt = _optimizer(cfg, network) if s.optimizer and not s.reference else None
        cost.adapter_bytes = tensor_bytes(trainable)
        cost.trainable_shapes = [list(p.shape) for p in trainable]
        cost.frozen_bytes = tensor_bytes(p for p in unet.parameters() if not p.requires_grad)
        if te is not None:
            cost.frozen_bytes += tensor_bytes(p for e in te.encoders for p in e.parameters() if not p.requires_grad)
        if opt is not None:
            cost.optimizer_state_bytes = tensor_bytes(v for st in opt.state.values() for v in st.values()
                                                      if isinstance(v, torch.Tensor))
        objective = arch.objective(cfg)
        probe = StepProbe(tracker, count=s.count)
        tracker.default = STEP
        with probe, (tracker if s.count else nullcontext()):
            b, lh, lw = s.batch, s.height // arch.downscale, s.width // arch.downscale
            latents = torch.empty(b, arch.latent_channels, lh, lw, device="meta")
            noised = objective.noise(latents, None, random.Random(0))   # Trainer._loss, from here on
            probe.phase, tracker.default = FORWARD, FROZEN
            if train_te:
                cond = fam.encode_prompts(te, ["a photo"] * b, clip_skip=cfg.model.clip_skip)
                _, extra = arch.conditioning(b, s.height, s.width, wdt, cfg)
            else:
                cond, extra = arch.conditioning(b, s.height, s.width, wdt, cfg)
            emu.autocast = autocast
            pred = fam.predict(unet, noised.noisy.to(wdt), noised.timesteps, cond, {**extra, **noised.model_inputs})
            emu.autocast = None
            probe.phase = tracker.default = STEP
            loss = objective.per_sample_loss(pred, latents, noised).mean()
            del pred, cond, extra, noised, latents
            cost.saved_bytes = probe.live_bytes
            probe.phase = BACKWARD
            loss.backward()
            tracker.backward_owner = None
            cost.grad_bytes = tensor_bytes(p.grad for p in trainable if p.grad is not None)
            if opt is not None:
                probe.phase = OPTIMIZER
                torch.nn.utils.clip_grad_norm_(trainable, tr.max_grad_norm or 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
            del loss
    cost.ops, cost.kernels, cost.flops = probe.totals(probe.ops), probe.totals(probe.kernels), \
        probe.totals(probe.flops)
    cost.op_counts = dict(sorted(probe.by_name.items(), key=lambda kv: -kv[1]))
    cost.peak_bytes, cost.peak_phase, cost.phase_peaks = probe.peak, probe.peak_at, dict(probe.phase_peaks)
    return cost


__all__ = ["ADAPTER", "BACKWARD", "FORWARD", "FROZEN", "OPTIMIZER", "STEP", "StepCost", "StepSettings",
           "measure_step", "tensor_bytes"]
