"""The measured part of a VRAM estimate: one forward and backward pass on the meta device, cached.

A profile holds what depends on the architecture and the settings that shape the step (network,
precision, gradient checkpointing, batch, resolution): parameter counts per model part and the bytes a
step adds at its peak. What only changes whole tensors (optimizer, which models stay resident, fp8
weights) is counted from the profile without measuring again (estimate.py). Profiles are cached as
JSON under the workspace (`cache/vram/`), keyed by everything that went into them, so a second
estimate of the same settings answers at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROFILE_VERSION = 2  # 2: the trainer's objectives, Flux (T5 settings in the key, which encoders train)
SMALL_8BIT = 4096   # bitsandbytes keeps 32-bit state for tensors with fewer elements (min_8bit_size)
log = logging.getLogger(__name__)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "diffusers", "transformers", "lycoris-lora"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out


def _folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.glob("*/config.json")):
        h.update(path.parent.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def profile_key(cfg: Any, folder: Path, batch: int, height: int, width: int, gradient_checkpointing: bool,
                vae_encode: bool) -> dict:
    """Everything a profile depends on (its cache key)."""
    net = cfg.network.model_dump(mode="json")
    for unused in ("network_weights", "unet_lr", "text_encoder_lr", "text_encoder_2_lr", "dropout",
                   "rank_dropout", "module_dropout", "alpha", "conv_alpha"):
        net.pop(unused, None)
    # The step's text tokens (Flux: T5's length and mask) and the objective's settings shape it too.
    text = {"t5_max_length": cfg.model.t5_max_length, "apply_t5_attn_mask": cfg.model.apply_t5_attn_mask}
    return {"version": PROFILE_VERSION, "family": cfg.model.family, "configs": _folder_digest(folder),
            "network": net, "precision": cfg.training.mixed_precision, "gradient_checkpointing": gradient_checkpointing,
            "batch": batch, "height": height, "width": width, "vae_encode": vae_encode, "text": text,
            "loss": cfg.loss.model_dump(mode="json"), "flow": cfg.flow.model_dump(mode="json"),
            "libraries": _versions()}


def _count(module: Any, linear_only: bool = False) -> int:
    import torch

    if linear_only:
        return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))
    return sum(p.numel() for p in module.parameters())


def _adafactor_elements(shapes: list[tuple[int, ...]]) -> int:
    """transformers' Adafactor state without beta1: row and column second moments for tensors of 2+
    dimensions, a full second moment otherwise."""
    total = 0
    for shape in shapes:
        if len(shape) >= 2:
            lead = 1
            for d in shape[:-2]:
                lead *= d
            total += lead * shape[-2] + lead * shape[-1]
        else:
            total += shape[0] if shape else 1
    return total


def _vae_encode_peak(arch: Any, batch: int, height: int, width: int) -> int:
    """Bytes the VAE encoder adds while encoding one batch (no gradients), for cache_latents = off."""
    import torch

    from backend.training.cost.emulate import CudaEmulation
    from backend.training.cost.probe import StepProbe

    with CudaEmulation(None):
        vae = arch.vae(torch.float32)
        probe = StepProbe(count=False)
        with probe, torch.no_grad():
            pixels = torch.empty(batch, 3, height, width, device="meta")
            arch.family.encode_images(vae, pixels)
    return probe.peak


def measure_profile(arch: Any, cfg: Any, key: dict) -> dict:
    """Measure what `key` describes (see the module docstring)."""
    import lycoris.logging  # noqa: F401 - sets its logger's level on import: import first, then quieten

    start = time.monotonic()
    lycoris_log = logging.getLogger("LyCORIS")  # it logs to stdout, where `validate --json` prints
    level = lycoris_log.level
    lycoris_log.setLevel(logging.WARNING)
    try:
        return _measure(arch, cfg, key, start)
    finally:
        lycoris_log.setLevel(level)


def _measure(arch: Any, cfg: Any, key: dict, start: float) -> dict:
    import torch

    from backend.training.cost.step import DTYPES, StepSettings, measure_step

    run_cfg = cfg.model_copy(deep=True)
    run_cfg.training.gradient_checkpointing = key["gradient_checkpointing"]
    cost = measure_step(arch, StepSettings(run_cfg, key["batch"], key["height"], key["width"], count=False,
                                           optimizer=False))
    wdt = DTYPES[cfg.training.mixed_precision]
    unet = arch.denoiser(wdt)
    te = arch.text_encoders(wdt)
    vae = arch.vae(torch.float32)
    shapes = [tuple(shape) for shape in cost.trainable_shapes]
    trained = arch.trained_text_encoders
    profile = {
        "key": key,
        "denoiser_params": _count(unet), "denoiser_linear_params": _count(unet, linear_only=True),
        "text_encoder_params": [_count(e) for e in te.encoders],
        # which encoders network.train_text_encoder trains (in fp32); the others stay in the compute dtype
        "text_encoder_trained": [trained is None or i in trained for i in range(len(te.encoders))],
        "vae_params": _count(vae), "vae_decoder_params": _count(vae) - _count(vae.encoder),
        "adapter_params": sum(_numel(s) for s in shapes),
        "adapter_small_params": sum(_numel(s) for s in shapes if _numel(s) < SMALL_8BIT),
        "adafactor_elements": _adafactor_elements(shapes),
        # the tokens per sample the step ran (image, and text in the same blocks): activations scale with them
        "image_tokens": (key["height"] // arch.downscale // arch.patch) * (key["width"] // arch.downscale // arch.patch),
        "text_tokens": arch.text_tokens(cfg),
        "step_peak_bytes": cost.peak_bytes, "saved_bytes": cost.saved_bytes, "grad_bytes": cost.grad_bytes,
        "peak_phase": cost.peak_phase,
        "vae_encode_peak_bytes": _vae_encode_peak(arch, key["batch"], key["height"], key["width"])
        if key["vae_encode"] else 0,
    }
    profile["measured_s"] = round(time.monotonic() - start, 2)
    return profile


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def cached_profile(arch: Callable[[], Any], folder: Path, cfg: Any, cache_dir: Path | None, *, batch: int,
                   height: int, width: int, gradient_checkpointing: bool, vae_encode: bool) -> tuple[dict, bool]:
    """(profile, whether it came from the cache). `folder`: where the architecture's configs are (the
    key); `arch()` builds the architecture, only when the profile must be measured."""
    from backend.files import atomic_write_bytes

    key = profile_key(cfg, folder, batch, height, width, gradient_checkpointing, vae_encode)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_dir / f"{cfg.model.family}-{digest}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("key") == key:
                return data, True
        except (OSError, json.JSONDecodeError) as err:
            log.warning("ignoring unreadable VRAM profile %s: %s", path, err)
    profile = measure_profile(arch(), cfg, key)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(profile, indent=1).encode(), durable=False)
    return profile, False
