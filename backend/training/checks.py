"""Checks before the first step: each failure names the setting or file to fix."""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from backend.errors import ModelError, TrainingError
from backend.training.data import CaptionRules, TrainData
from backend.training.optim import check_optimizer

OOM_MESSAGE = ("out of GPU memory. Settings that lower memory: training.batch_size (1–2), "
               "dataset.resolution, network.rank, training.gradient_checkpointing = true, "
               "training.mixed_precision = bf16 (or fp16), training.cache_latents = memory or disk, "
               "training.cache_text_encoder_outputs = true, optimizer.name = adafactor or adamw8bit, "
               "network.train_text_encoder = false")


def pick_device(cfg: Any) -> torch.device:
    want = cfg.training.device
    if want == "cuda" and not torch.cuda.is_available():
        raise TrainingError("training.device = cuda, but no CUDA GPU is available to this process; "
                            "set training.device = auto or cpu")
    if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def before_start(cfg: Any, data: TrainData, device_type: str, source: Any) -> None:
    """Everything that can be known wrong before loading a model (`source`: the opened ModelSource)."""
    t = cfg.training
    if cfg.model.vae_path and not Path(cfg.model.vae_path).exists():
        raise ModelError(f"model.vae_path: {cfg.model.vae_path} does not exist; pick a VAE folder or "
                         ".safetensors file, or leave it empty to use the model's own VAE")
    if not data.train:
        raise TrainingError(f"dataset.path {cfg.dataset.path}: no training images (only regularization images)")
    n = data.num_train_images
    if t.batch_size > n:
        raise TrainingError(f"training.batch_size ({t.batch_size}) is larger than the dataset: {len(data.train)} "
                            f"images × repeats = {n} per epoch. Lower the batch size or add images/repeats.")
    if t.mixed_precision == "fp16" and device_type != "cuda":
        raise TrainingError("training.mixed_precision = fp16 needs a CUDA GPU; on the CPU use bf16 or no")
    if t.mixed_precision == "bf16" and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TrainingError("training.mixed_precision = bf16 needs an Ampere (RTX 30xx) or newer GPU; use fp16")
    if t.num_processes > 1 and device_type == "cuda":
        per_machine, here = t.num_processes // t.num_machines, torch.cuda.device_count()
        if per_machine > here:
            raise TrainingError(f"training.num_processes = {t.num_processes} over {t.num_machines} machine(s) is "
                                f"{per_machine} GPUs per machine; this machine has {here}. Lower it, or set "
                                "training.device = cpu to run the ranks on the CPU.")
    check_speed_options(cfg, device_type)
    check_optimizer(cfg, device_type)
    check_model_files(cfg, source)
    check_output_dir(cfg)


def check_speed_options(cfg: Any, device_type: str) -> None:
    """training.compile needs a compiler for the device the run got (Triton on CUDA, a C++ compiler on
    the CPU); validate checks the same for the device it expects. (fp8_base's algorithms: the schema.)"""
    if cfg.training.compile:
        if device_type == "cuda" and importlib.util.find_spec("triton") is None:
            raise TrainingError("training.compile on a GPU needs the triton package (pip install triton); "
                                "or turn training.compile off")
        if device_type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
            raise TrainingError("training.compile on the CPU needs a C++ compiler (g++ or clang++); "
                                "install one or turn training.compile off")


def check_output_dir(cfg: Any) -> None:
    """saving.output_dir is made now and must take files: a problem found after training would leave the
    LoRA only in the job folder."""
    folder = cfg.saving.output_dir
    if not folder:
        return
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe = Path(folder) / ".loradash-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise TrainingError(f"saving.output_dir {folder} cannot take the LoRA file ({err.strerror or err}); "
                            "choose a folder you can write to, or clear it") from err


def check_model_files(cfg: Any, source: Any) -> None:
    """From what opening the model detected, and file headers: a v-prediction model set up as epsilon,
    or a starting LoRA of another family, is refused before anything is cached."""
    from backend.models import detect
    from backend.models.inspect import check_lora_for_model

    detect.check_prediction(source.detected, source.path, cfg.model.v_prediction)
    if cfg.network.network_weights:
        check_lora_for_model(Path(cfg.network.network_weights), cfg.model.family)


def text_cache_allowed(cfg: Any, rules: CaptionRules, log: logging.Logger, family_default: bool = False) -> bool:
    """Whether text-encoder outputs can be cached: asked for (or the family caches by default, as Flux
    does: T5-XXL is 9 GB), encoders frozen, captions fixed."""
    if not (cfg.training.cache_text_encoder_outputs or family_default):
        return False
    reasons = []
    if cfg.network.train_text_encoder:
        reasons.append("network.train_text_encoder is on")
    if rules.varies:
        reasons.append("captions change every step (shuffle_caption, caption or tag dropout)")
    if reasons:
        log.warning("training.cache_text_encoder_outputs ignored: %s", "; ".join(reasons))
        return False
    return True
