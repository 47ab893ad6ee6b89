"""The `ss_*` metadata sd-scripts' train_network.py writes, plus SAI model-spec keys and user fields.

Values are strings (safetensors metadata is str → str); nested values are JSON, booleans "True"/"False"
and empty values "None", as sd-scripts writes them, so A1111's metadata viewer and tools that parse
kohya files read ours the same way.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.training.data import TrainData, dataset_dirs, tag_frequency
from backend.training.networks import AdapterNetwork, network_metadata


@dataclass
class RunInfo:
    """Facts of the run that are not in the config."""

    session_id: int
    started_at: float
    total_steps: int
    num_epochs: int
    batches_per_epoch: int
    optimizer: str
    warmup_steps: int
    num_processes: int = 1
    model_variant: str = ""  # what opening the model detected (Flux: dev or schnell)
    extra: dict[str, str] = field(default_factory=dict)


def _s(value: Any) -> str:
    return "None" if value is None else str(value)


def build_metadata(cfg: Any, family: Any, network: AdapterNetwork, data: TrainData, run: RunInfo, *,
                   step: int, epoch: int) -> dict[str, str]:
    """All metadata of a LoRA file saved at `step` (epoch `epoch`)."""
    m, ds, t, o, loss, s = cfg.model, cfg.dataset, cfg.training, cfg.optimizer, cfg.loss, cfg.saving
    lr_unet = cfg.network.unet_lr if cfg.network.unet_lr is not None else o.lr
    lr_te = cfg.network.text_encoder_lr if cfg.network.text_encoder_lr is not None else o.lr
    model_path = Path(m.path)
    meta: dict[str, Any] = {
        "ss_session_id": run.session_id,
        "ss_training_started_at": run.started_at,
        "ss_training_finished_at": time.time(),
        "ss_output_name": s.output_name,
        "ss_epoch": epoch,
        "ss_steps": step,
        "ss_sd_scripts_commit_hash": "loradash",
        "ss_training_comment": s.description or None,
        **network_metadata(network),
        "ss_network_dropout": cfg.network.dropout or None,
        "ss_base_model_version": family.base_model_version(m.v_prediction, run.model_variant),
        "ss_v2": False,
        "ss_sd_model_name": model_path.name,
        "ss_vae_name": Path(m.vae_path).name if m.vae_path else None,
        "ss_learning_rate": o.lr,
        "ss_unet_lr": lr_unet,
        "ss_text_encoder_lr": lr_te if cfg.network.train_text_encoder else None,
        "ss_optimizer": run.optimizer,
        "ss_lr_scheduler": cfg.schedule.lr_scheduler,
        "ss_lr_warmup_steps": run.warmup_steps,
        "ss_max_train_steps": run.total_steps,
        "ss_num_epochs": run.num_epochs,
        "ss_num_batches_per_epoch": run.batches_per_epoch,
        "ss_gradient_accumulation_steps": t.gradient_accumulation_steps,
        "ss_gradient_checkpointing": t.gradient_checkpointing,
        "ss_max_grad_norm": t.max_grad_norm,
        "ss_mixed_precision": t.mixed_precision,
        "ss_full_fp16": False,
        "ss_seed": t.seed,
        "ss_lowram": False,
        "ss_cache_latents": t.cache_latents != "off",
        "ss_clip_skip": m.clip_skip if m.clip_skip > 1 else None,
        "ss_max_token_length": None,
        "ss_noise_offset": loss.noise_offset or None,
        "ss_noise_offset_random_strength": False,
        "ss_adaptive_noise_scale": None,
        "ss_multires_noise_iterations": loss.multires_noise_iterations or None,
        "ss_multires_noise_discount": loss.multires_noise_discount,
        "ss_min_snr_gamma": loss.min_snr_gamma or None,
        "ss_debiased_estimation": False,
        "ss_zero_terminal_snr": loss.zero_terminal_snr,
        "ss_scale_weight_norms": None,
        "ss_ip_noise_gamma": None,
        "ss_loss_type": "l2",
        "ss_prior_loss_weight": ds.prior_loss_weight,
        "ss_v_parameterization": m.v_prediction,
        "ss_caption_dropout_rate": ds.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": 0,
        "ss_caption_tag_dropout_rate": ds.caption_tag_dropout_rate,
        "ss_face_crop_aug_range": None,
        "ss_num_train_images": data.num_train_images,
        "ss_num_reg_images": data.num_reg_images,
        "ss_batch_size_per_device": t.batch_size,
        "ss_total_batch_size": t.batch_size * t.gradient_accumulation_steps * run.num_processes,
        "ss_resolution": f"({ds.resolution}, {ds.resolution})",
        "ss_color_aug": False,
        "ss_flip_aug": ds.flip_aug,
        "ss_random_crop": False,
        "ss_shuffle_caption": ds.shuffle_caption,
        "ss_keep_tokens": ds.keep_tokens,
        "ss_enable_bucket": ds.enable_bucket,
        "ss_bucket_no_upscale": ds.bucket_no_upscale,
        "ss_min_bucket_reso": ds.min_bucket_reso if ds.enable_bucket else None,
        "ss_max_bucket_reso": ds.max_bucket_reso if ds.enable_bucket else None,
        "ss_bucket_info": json.dumps(data.bucket_info()),
        "ss_dataset_dirs": json.dumps(dataset_dirs(data)),
        "ss_reg_dataset_dirs": json.dumps(dataset_dirs(data, reg=True)),
        "ss_tag_frequency": json.dumps(tag_frequency(data)),
    }
    meta.update(run.extra)
    out = {k: _s(v) for k, v in meta.items()}
    out.update(modelspec(cfg, family, title=s.title or s.output_name, started_at=run.started_at,
                         variant=run.model_variant))
    return out


def modelspec(cfg: Any, family: Any, *, title: str, started_at: float, variant: str = "") -> dict[str, str]:
    """SAI model-spec 1.0.1 keys (sd-scripts library/sai_model_spec.py)."""
    s, m = cfg.saving, cfg.model
    spec = {
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": family.modelspec_architecture(m.v_prediction, variant),
        "modelspec.implementation": family.modelspec_implementation(),
        "modelspec.title": title,
        "modelspec.resolution": f"{cfg.dataset.resolution}x{cfg.dataset.resolution}",
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started_at)),
        "modelspec.timestep_range": "0,1000",
    }
    prediction = family.modelspec_prediction(m.v_prediction)
    if prediction:
        spec["modelspec.prediction_type"] = prediction
    if m.clip_skip > 1:
        spec["modelspec.encoder_layer"] = str(m.clip_skip)
    if s.author:
        spec["modelspec.author"] = s.author
    if s.description:
        spec["modelspec.description"] = s.description
    if s.trigger_words:
        spec["modelspec.trigger_phrase"] = ", ".join(s.trigger_words)
        spec["modelspec.tags"] = ", ".join(s.trigger_words)
    return spec
