"""Peak VRAM of a training config before Start, a verdict per common card, and what would make it fit.

peak = frozen weights in their storage dtype (bf16/fp16: 2 bytes, fp32: 4; training.fp8_base: 1 byte
for the denoiser's linear weights) + text encoders while resident (not cached, or trained: then the
trained ones in fp32, Flux's T5 in the compute dtype; Flux caches text outputs by default) +
the VAE while resident (latents not cached: all of it, fp32; sample prompts: its decoder) + trainable
adapter weights (fp32) + optimizer state (bytes per trainable element per optimizer, below) + the step's
own peak (activations kept for backward, gradients, temporaries: measured on the meta device, profile.py)
+ the caching allocator's overhead + the CUDA context.

Not calibrated yet: no CUDA peak has been measured against it (tests/fixtures/vram_calibration.json
holds such measurements when a GPU run adds them). Expected error ±15 %: the live-tensor peak is exact
for the program the meta run executes; the allowances for allocator fragmentation and for the CUDA
context and library workspaces are rough, and fp8_base assumes the upcast copies are not kept.
The estimate covers training steps; drawing samples (VAE decoding at full size) can peak higher.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 2**30
CARDS_GB = (8, 12, 16, 24, 48, 80)
CONTEXT_BYTES = int(0.6 * GIB)     # CUDA context + cuBLAS/cuDNN workspaces: outside PyTorch's allocator
ALLOCATOR_OVERHEAD = 0.08          # caching allocator: block rounding and fragmentation over live tensors
TIGHT = 0.92                       # above this share of a card the run may fail on fragmentation
EXPECTED_ERROR = 0.15
BYTES_BY_PRECISION = {"bf16": 2, "fp16": 2, "no": 4}


def optimizer_state_bytes(name: str, profile: dict, momentum: float = 0.9) -> int:
    """Optimizer state for the trainable tensors: AdamW exp_avg + exp_avg_sq (8 B per element);
    bitsandbytes AdamW8bit 2 B (+ block scales), 8 B for tensors under 4096 elements; Prodigy
    exp_avg, exp_avg_sq, s and p0 (16 B); Lion exp_avg (4 B); SGD a momentum buffer (4 B, none without
    momentum); Adafactor factored second moments (rows + columns of each matrix, 4 B each)."""
    n, small = profile["adapter_params"], profile["adapter_small_params"]
    if name == "adamw":
        return 8 * n
    if name == "adamw8bit":
        large = n - small
        return 8 * small + 2 * large + 4 * math.ceil(large / 256) * 2
    if name == "prodigy":
        return 16 * n
    if name == "lion":
        return 4 * n
    if name == "sgd":
        return 4 * n if momentum else 0
    if name == "adafactor":
        return 4 * profile["adafactor_elements"]
    raise ValueError(f"unknown optimizer {name!r}")


@dataclass
class Settings:
    """The settings an estimate depends on, from a TrainConfig (and changed by the fixes)."""
    batch: int
    resolution: int
    gradient_checkpointing: bool
    fp8_base: bool
    cache_text: bool            # text-encoder outputs cached (so the encoders are not resident)

    @classmethod
    def from_config(cls, cfg: Any) -> Settings:
        from backend.models.registry import get_family
        from backend.training.data import caption_rules

        tr = cfg.training
        # as training.checks.text_cache_allowed decides: asked for, or the family's default (Flux: T5-XXL)
        asked = tr.cache_text_encoder_outputs or get_family(cfg.model.family).caches_text_outputs
        cached = asked and not cfg.network.train_text_encoder and not caption_rules(cfg).varies
        return cls(tr.batch_size, cfg.dataset.resolution, tr.gradient_checkpointing, tr.fp8_base, cached)


def _scaled_step(profile: dict, batch: int, resolution: int) -> int:
    """The step peak of `profile` at another batch or resolution: gradients stay, the rest (activations)
    scales with the tokens per batch (flash attention is linear in the tokens): the image's, which scale
    with the latent cells, and the text tokens that run through the same blocks (Flux's T5), which do not."""
    key = profile["key"]
    grads = profile["grad_bytes"]
    image, text = profile["image_tokens"], profile["text_tokens"]
    scaled_image = image * resolution * resolution / (key["height"] * key["width"])
    ratio = batch * (scaled_image + text) / (key["batch"] * (image + text))
    return int(grads + max(profile["step_peak_bytes"] - grads, 0) * ratio)


def assemble(cfg: Any, profile: dict, s: Settings) -> dict[str, int]:
    """The parts of the peak, in bytes, for settings `s` (the profile measured at its own batch and
    resolution is scaled when `s` asks for others)."""
    tr, wbytes = cfg.training, BYTES_BY_PRECISION[cfg.training.mixed_precision]
    train_te = cfg.network.train_text_encoder
    linear = profile["denoiser_linear_params"]
    denoiser = (profile["denoiser_params"] - linear) * wbytes + linear * (1 if s.fp8_base else wbytes)
    te_params = profile["text_encoder_params"]
    if train_te:
        trained = profile.get("text_encoder_trained") or [True] * len(te_params)
        text = sum(n * (4 if t else wbytes) for n, t in zip(te_params, trained, strict=True))
    else:
        text = 0 if s.cache_text else sum(te_params) * wbytes
    vae = 0
    if tr.cache_latents == "off":
        vae = profile["vae_params"] * 4
    elif cfg.sampling.prompts:
        vae = profile["vae_decoder_params"] * 4
    step = _scaled_step(profile, s.batch, s.resolution)
    if tr.cache_latents == "off":
        k = profile["key"]
        vae_ratio = s.batch * s.resolution ** 2 / (k["batch"] * k["height"] * k["width"])
        step = max(step, int(profile["vae_encode_peak_bytes"] * vae_ratio))
    parts = {
        "denoiser weights": denoiser, "text encoders": text, "VAE": vae,
        "adapter weights": 4 * profile["adapter_params"],
        "optimizer state": optimizer_state_bytes(cfg.optimizer.name, profile, cfg.optimizer.momentum),
        "step peak (activations, gradients)": step,
    }
    live = sum(parts.values())
    parts["allocator overhead"] = int(live * ALLOCATOR_OVERHEAD)
    parts["CUDA context"] = CONTEXT_BYTES
    return parts


def verdict(total: int, gb: int) -> str:
    if total <= TIGHT * gb * GIB:
        return "fits"
    return "tight" if total <= gb * GIB else "does not fit"


class Estimator:
    """Profiles for one config (measured once, cached), and estimates for it and its variants."""

    def __init__(self, cfg: Any, cache_dir: Path | None = None, configs_root: Path | None = None,
                 model_path: str | Path | None = None):
        from backend.training.cost.arch import source_folder

        self.cfg = cfg
        self.cache_dir = cache_dir
        self.configs_root = configs_root
        self.model_path = model_path if model_path is not None else cfg.model.path
        self.folder = source_folder(cfg.model.family, self.model_path)   # no torch until a measurement
        self._arch: Any = None
        self.base = Settings.from_config(cfg)
        self.measured_s = 0.0
        self.cached = True
        self._profiles: dict[bool, dict] = {}

    def arch(self) -> Any:
        from backend.training.cost.arch import architecture

        if self._arch is None:
            self._arch = architecture(self.cfg.model.family, self.model_path, self.configs_root)
        return self._arch

    def profile(self, gradient_checkpointing: bool) -> dict:
        from backend.training.cost.profile import cached_profile

        if gradient_checkpointing not in self._profiles:
            b = self.base
            prof, hit = cached_profile(self.arch, self.folder, self.cfg, self.cache_dir, batch=b.batch,
                                       height=b.resolution,
                                       width=b.resolution, gradient_checkpointing=gradient_checkpointing,
                                       vae_encode=self.cfg.training.cache_latents == "off")
            self.cached = self.cached and hit
            self.measured_s += 0 if hit else prof["measured_s"]
            self._profiles[gradient_checkpointing] = prof
        return self._profiles[gradient_checkpointing]

    def parts(self, s: Settings) -> dict[str, int]:
        return assemble(self.cfg, self.profile(s.gradient_checkpointing), s)

    def total(self, s: Settings) -> int:
        return sum(self.parts(s).values())

    def fixes(self, gb: int) -> tuple[list[dict], bool]:
        """Changes, cheapest first, applied one after another until the peak fits `gb`: caching
        text-encoder outputs (no cost when captions are fixed), gradient checkpointing (≈20–30 % slower
        steps), fp8 base weights (slightly lower precision), a smaller batch (with gradient accumulation
        to keep the effective batch), a lower resolution (less detail). Each with its saving."""
        limit = TIGHT * gb * GIB
        s = Settings(**vars(self.base))
        current = self.total(s)
        fixes: list[dict] = []
        cfg, tr = self.cfg, self.cfg.training

        def take(setting: str, value: Any, new: Settings, note: str) -> None:
            nonlocal s, current
            after = self.total(new)
            if after < current:
                out = [f for f in fixes if f["setting"] != setting]  # a smaller batch replaces the last one
                saved = current - after + sum(f["saving_bytes"] for f in fixes if f["setting"] == setting)
                fixes[:] = [*out, {"setting": setting, "value": value, "saving_bytes": saved, "note": note}]
                current = after
            s = new

        steps = []
        if not s.cache_text and not cfg.network.train_text_encoder:
            note = "no cost" if not _captions_vary(cfg) else \
                "needs fixed captions: turn off shuffle_caption and caption/tag dropout"
            steps.append(("training.cache_text_encoder_outputs", True, {"cache_text": True}, note))
        if not s.gradient_checkpointing:
            steps.append(("training.gradient_checkpointing", True, {"gradient_checkpointing": True},
                          "about 20–30 % slower steps"))
        if not s.fp8_base and tr.mixed_precision != "no":
            steps.append(("training.fp8_base", True, {"fp8_base": True}, "base weights stored in float8"))
        for setting, value, change, note in steps:
            if current <= limit:
                break
            take(setting, value, Settings(**{**vars(s), **change}), note)
        while current > limit and s.batch > 1:
            batch = max(1, s.batch // 2)
            take("training.batch_size", batch, Settings(**{**vars(s), "batch": batch}),
                 f"set training.gradient_accumulation_steps to {math.ceil(self.base.batch / batch)} to keep "
                 "the effective batch")
        while current > limit and s.resolution > 256:
            res = max(256, s.resolution - 128)
            take("dataset.resolution", res, Settings(**{**vars(s), "resolution": res}), "less detail")
        return fixes, current <= limit

    def report(self, cards: tuple[int, ...] = CARDS_GB) -> dict:
        start = time.monotonic()
        parts = self.parts(self.base)
        total = sum(parts.values())
        rows = []
        for gb in cards:
            row: dict[str, Any] = {"gb": gb, "verdict": verdict(total, gb)}
            if row["verdict"] == "does not fit":
                row["fixes"], row["fits_with_fixes"] = self.fixes(gb)
            rows.append(row)
        return {
            "estimate_version": 1, "calibrated": False, "expected_error": EXPECTED_ERROR,
            "family": self.cfg.model.family, "architecture": str(self.folder),
            "batch_size": self.base.batch, "resolution": self.base.resolution,
            "peak_bytes": total, "peak_gib": round(total / GIB, 2),
            "tensor_peak_bytes": total - parts["CUDA context"] - parts["allocator overhead"],
            "parts": parts, "cards": rows,
            "notes": ["An estimate, not yet calibrated against measured GPU peaks (expected error ±15 %).",
                      "Training steps only: drawing samples can need more."],
            "measured_s": round(self.measured_s, 1), "cached": self.cached,
            "seconds": round(time.monotonic() - start, 1),
        }


def _captions_vary(cfg: Any) -> bool:
    from backend.training.data import caption_rules

    return caption_rules(cfg).varies


def format_report(r: dict) -> str:
    """The report as text (CLI)."""
    lines = [f"Estimated peak VRAM: {r['peak_gib']:.1f} GiB for {r['family']}, batch {r['batch_size']}, "
             f"{r['resolution']}² (an estimate, not yet calibrated: ±{int(r['expected_error'] * 100)} %)"]
    for name, b in r["parts"].items():
        if b:
            lines.append(f"  {name:<38} {b / GIB:7.2f} GiB")
    for row in r["cards"]:
        line = f"  {row['gb']:>3} GB card: {row['verdict']}"
        if row.get("fixes"):
            steps = "; ".join(f"{f['setting']} = {_value(f['value'])} (−{f['saving_bytes'] / GIB:.1f} GiB)"
                              for f in row["fixes"])
            line += f" → {steps}" + ("" if row["fits_with_fixes"] else " (still does not fit)")
        lines.append(line)
    lines.extend(f"  note: {n}" for n in r["notes"][1:])
    return "\n".join(lines)


def _value(v: Any) -> str:
    return "true" if v is True else str(v)


def estimate_config(cfg: Any, paths: Any) -> dict:
    """The report for a validated config, with the workspace's caches (CLI and Training tab)."""
    model = paths.resolve(cfg.model.path) if cfg.model.path else None
    # single_file.cache_root(paths), without importing it (it imports torch: a cached estimate needs none)
    est = Estimator(cfg, cache_dir=paths.root / "cache" / "vram", configs_root=paths.root / ".cache" / "model-configs",
                    model_path=model)
    return est.report()
