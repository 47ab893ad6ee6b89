"""The one mapping between kohya sd-scripts arguments and LoRA Dash's schema, as data.

Sources (facts, not code): sd-scripts train_network.py / sdxl_train_network.py argument parsers and
library/train_util.py add_*_arguments (names and defaults), docs/config_README-en.md (the
--dataset_config TOML: [general], [[datasets]], [[datasets.subsets]] and their precedence),
LyCORIS kohya.py (network_args names: algo, preset, conv_dim, dora_wd, factor, …).

Import and export both read these tables; tests/test_compat_mapping.py fails when a schema option
is neither here nor in OURS_ALONE, so a new option must be mapped before it ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backend.config.schema import NetworkSection

# Where a kohya value lives.
CONFIG = "config"              # the --config_file TOML (same names as the command-line flags)
DATASET = "dataset"            # the --dataset_config TOML ([general] / [[datasets]] / subsets)
REG_SUBSET = "reg subset"      # a [[datasets.subsets]] with is_reg = true
NETWORK_ARGS = "network_args"  # `key=value` strings in network_args
OPTIMIZER_ARGS = "optimizer_args"
PROMPTS = "sample_prompts file"
SCRIPT = "script"              # which training script runs (train_network.py, sdxl_, flux_train_network.py)
LAUNCHER = "accelerate launch"


class _Missing:
    def __repr__(self) -> str:
        return "<no default>"


NO_DEFAULT: Any = _Missing()


@dataclass(frozen=True)
class KohyaArg:
    """One kohya name ↔ one LoRA Dash option.

    `default` is what sd-scripts uses when the key is absent, kept where it differs in effect
    from our default (an import applies it and says so); NO_DEFAULT means "keep ours".
    """

    key: str
    path: str
    place: str = CONFIG
    default: Any = NO_DEFAULT
    how: str = ""


MAPPING: tuple[KohyaArg, ...] = (
    # model
    KohyaArg("sdxl_train_network.py", "model.family", SCRIPT,
             how="train_network.py → sd15, sdxl_train_network.py → sdxl, flux_train_network.py → flux"),
    KohyaArg("pretrained_model_name_or_path", "model.path"),
    KohyaArg("vae", "model.vae_path"),
    KohyaArg("ae", "model.vae_path", how="flux_train_network.py's name for the autoencoder file"),
    KohyaArg("clip_l", "model.clip_l_path", how="flux_train_network.py"),
    KohyaArg("t5xxl", "model.t5_path", how="flux_train_network.py"),
    KohyaArg("t5xxl_max_token_length", "model.t5_max_length", how="flux_train_network.py"),
    KohyaArg("apply_t5_attn_mask", "model.apply_t5_attn_mask", default=False),
    KohyaArg("v_parameterization", "model.v_prediction", default=False),
    KohyaArg("clip_skip", "model.clip_skip"),
    # dataset (the dataset TOML; the same names in the config file are its fallback)
    KohyaArg("image_dir", "dataset.path", DATASET,
             how="the training subset's folder, or the parent of several N_name subset folders"),
    KohyaArg("train_data_dir", "dataset.path", how="the folder of N_name subfolders"),
    KohyaArg("caption_extension", "dataset.caption_extension", DATASET, default=".caption"),
    KohyaArg("resolution", "dataset.resolution", DATASET, how="[w, h] with w ≠ h → the side of the same area"),
    KohyaArg("enable_bucket", "dataset.enable_bucket", DATASET, default=False),
    KohyaArg("min_bucket_reso", "dataset.min_bucket_reso", DATASET, default=256),
    KohyaArg("max_bucket_reso", "dataset.max_bucket_reso", DATASET, default=1024),
    KohyaArg("bucket_reso_steps", "dataset.bucket_reso_steps", DATASET, default=64),
    KohyaArg("bucket_no_upscale", "dataset.bucket_no_upscale", DATASET, default=False),
    KohyaArg("num_repeats", "dataset.default_repeats", DATASET, default=1,
             how="used when the folder is not named N_name"),
    KohyaArg("shuffle_caption", "dataset.shuffle_caption", DATASET, default=False),
    KohyaArg("keep_tokens", "dataset.keep_tokens", DATASET, default=0),
    KohyaArg("caption_prefix", "dataset.caption_prefix", DATASET),
    KohyaArg("caption_dropout_rate", "dataset.caption_dropout_rate", DATASET, default=0.0),
    KohyaArg("caption_tag_dropout_rate", "dataset.caption_tag_dropout_rate", DATASET, default=0.0),
    KohyaArg("flip_aug", "dataset.flip_aug", DATASET, default=False),
    KohyaArg("is_reg", "dataset.reg_path", REG_SUBSET, how="the image_dir of the is_reg subset(s)"),
    KohyaArg("reg_data_dir", "dataset.reg_path"),
    KohyaArg("num_repeats", "dataset.reg_repeats", REG_SUBSET, default=1),
    KohyaArg("prior_loss_weight", "dataset.prior_loss_weight", default=1.0),
    KohyaArg("max_data_loader_n_workers", "dataset.num_workers"),
    # network
    KohyaArg("network_module", "network.algo",
             how="networks.lora → lora (locon with conv_dim: target attn-mlp + ResNet convs), lycoris.kohya → "
                 "network_args algo, networks.dylora → dylora"),
    KohyaArg("algo", "network.algo", NETWORK_ARGS),
    KohyaArg("network_dim", "network.rank", default=4),
    KohyaArg("network_alpha", "network.alpha", default=1.0),
    KohyaArg("conv_dim", "network.conv_rank", NETWORK_ARGS,
             how="LyCORIS reads an absent or 0 conv_dim as network_dim"),
    KohyaArg("conv_alpha", "network.conv_alpha", NETWORK_ARGS),
    KohyaArg("preset", "network.target", NETWORK_ARGS,
             how="LyCORIS preset full/full-lin ↔ all, attn-mlp ↔ attn-mlp, attn-only ↔ attn; "
                 "networks.lora targets attn-mlp"),
    KohyaArg("dora_wd", "network.dora", NETWORK_ARGS),
    KohyaArg("network_dropout", "network.dropout", default=0.0, how="networks.lora"),
    KohyaArg("dropout", "network.dropout", NETWORK_ARGS, how="lycoris.kohya"),
    KohyaArg("rank_dropout", "network.rank_dropout", NETWORK_ARGS),
    KohyaArg("module_dropout", "network.module_dropout", NETWORK_ARGS),
    KohyaArg("factor", "network.factor", NETWORK_ARGS),
    KohyaArg("decompose_both", "network.decompose_both", NETWORK_ARGS),
    KohyaArg("block_size", "network.block_size", NETWORK_ARGS, how="networks.dylora calls it unit"),
    KohyaArg("use_tucker", "network.use_tucker", NETWORK_ARGS, how="older name: use_cp"),
    KohyaArg("use_scalar", "network.use_scalar", NETWORK_ARGS),
    KohyaArg("constraint", "network.constraint", NETWORK_ARGS, how="kohya_ss and LETS write constrain"),
    KohyaArg("rescaled", "network.rescaled", NETWORK_ARGS),
    KohyaArg("train_norm", "network.train_norm", NETWORK_ARGS),
    KohyaArg("network_train_unet_only", "network.train_text_encoder", default=False,
             how="inverted: absent means sd-scripts also trains the text encoder"),
    KohyaArg("unet_lr", "network.unet_lr"),
    KohyaArg("text_encoder_lr", "network.text_encoder_lr", how="a number, or the first of a list"),
    KohyaArg("text_encoder_lr", "network.text_encoder_2_lr", how="the second of a list [te1, te2] (SDXL)"),
    KohyaArg("network_weights", "network.network_weights"),
    # optimizer
    KohyaArg("optimizer_type", "optimizer.name", default="AdamW"),
    KohyaArg("learning_rate", "optimizer.lr", default=2e-6),
    KohyaArg("weight_decay", "optimizer.weight_decay", OPTIMIZER_ARGS, how="absent: the optimizer's own default"),
    KohyaArg("betas", "optimizer.beta1", OPTIMIZER_ARGS, how="betas=b1,b2"),
    KohyaArg("betas", "optimizer.beta2", OPTIMIZER_ARGS, how="betas=b1,b2"),
    KohyaArg("eps", "optimizer.eps", OPTIMIZER_ARGS),
    KohyaArg("momentum", "optimizer.momentum", OPTIMIZER_ARGS),
    KohyaArg("optimizer_args", "optimizer.extra_args", how="every other key=value"),
    # training
    KohyaArg("max_train_steps", "training.max_steps", default=1600,
             how="ignored by sd-scripts when max_train_epochs is set"),
    KohyaArg("max_train_epochs", "training.epochs"),
    KohyaArg("train_batch_size", "training.batch_size", default=1, how="the dataset TOML calls it batch_size"),
    KohyaArg("gradient_accumulation_steps", "training.gradient_accumulation_steps", default=1),
    KohyaArg("max_grad_norm", "training.max_grad_norm", default=1.0),
    KohyaArg("seed", "training.seed", how="absent: sd-scripts picks a random seed"),
    KohyaArg("mixed_precision", "training.mixed_precision", default="no"),
    KohyaArg("gradient_checkpointing", "training.gradient_checkpointing", default=False),
    KohyaArg("fp8_base", "training.fp8_base", default=False),
    KohyaArg("cache_latents", "training.cache_latents", default=False, how="with cache_latents_to_disk → disk"),
    KohyaArg("cache_latents_to_disk", "training.cache_latents"),
    KohyaArg("cache_text_encoder_outputs", "training.cache_text_encoder_outputs", default=False,
             how="sd-scripts reads it for SDXL only"),
    KohyaArg("num_processes", "training.num_processes", LAUNCHER),
    KohyaArg("num_machines", "training.num_machines", LAUNCHER),
    KohyaArg("machine_rank", "training.machine_rank", LAUNCHER),
    KohyaArg("main_process_ip", "training.main_process_ip", LAUNCHER),
    KohyaArg("main_process_port", "training.main_process_port", LAUNCHER),
    # schedule
    KohyaArg("lr_scheduler", "schedule.lr_scheduler", default="constant"),
    KohyaArg("lr_warmup_steps", "schedule.warmup_steps", default=0, how="an integer"),
    KohyaArg("lr_warmup_steps", "schedule.warmup_ratio", how="a float below 1 is a ratio of all steps"),
    KohyaArg("lr_scheduler_num_cycles", "schedule.num_cycles", default=1),
    KohyaArg("lr_scheduler_power", "schedule.power", default=1.0),
    # loss
    KohyaArg("min_snr_gamma", "loss.min_snr_gamma", default=0.0),
    KohyaArg("noise_offset", "loss.noise_offset", default=0.0),
    KohyaArg("multires_noise_iterations", "loss.multires_noise_iterations", default=0),
    KohyaArg("multires_noise_discount", "loss.multires_noise_discount", default=0.3),
    KohyaArg("zero_terminal_snr", "loss.zero_terminal_snr", default=False),
    # flow matching (flux_train_network.py; its defaults apply to Flux runs only)
    KohyaArg("timestep_sampling", "flow.timestep_sampling", default="sigma",
             how="sigma (uniform over the shifted schedule) has no equivalent: it becomes shift"),
    KohyaArg("sigmoid_scale", "flow.sigmoid_scale", default=1.0),
    KohyaArg("discrete_flow_shift", "flow.discrete_flow_shift", default=3.0),
    KohyaArg("model_prediction_type", "flow.model_prediction_type", default="sigma_scaled"),
    KohyaArg("weighting_scheme", "flow.weighting_scheme", default="none"),
    KohyaArg("guidance_scale", "flow.guidance_scale", default=3.5),
    # sampling
    KohyaArg("sample_prompts", "sampling.prompts", PROMPTS,
             how="one prompt a line: text --n negative --w W --h H --d seed --l cfg --s steps"),
    KohyaArg("sample_sampler", "sampling.sampler", default="ddim"),
    KohyaArg("sample_every_n_steps", "sampling.every_n_steps", default=0),
    KohyaArg("sample_every_n_epochs", "sampling.every_n_epochs", default=0),
    KohyaArg("sample_at_first", "sampling.sample_at_start", default=False),
    # saving
    KohyaArg("output_name", "saving.output_name", default="last"),
    KohyaArg("output_dir", "saving.output_dir",
             how="the final LoRA is also written there; the job folder's output/ keeps one too"),
    KohyaArg("save_every_n_steps", "saving.every_n_steps", default=0),
    KohyaArg("save_every_n_epochs", "saving.every_n_epochs", default=0),
    KohyaArg("save_last_n_epochs", "saving.keep_last_n", how="when saving every N epochs"),
    KohyaArg("save_last_n_steps", "saving.keep_last_n", how="a step window: keep_last_n × save_every_n_steps"),
    KohyaArg("save_state", "saving.save_state", default=False),
    KohyaArg("save_precision", "saving.save_dtype", default="float", how="float ↔ fp32"),
    KohyaArg("metadata_title", "saving.title"),
    KohyaArg("metadata_author", "saving.author"),
    KohyaArg("metadata_description", "saving.description", how="training_comment when it is absent"),
)

# Options only LoRA Dash has, with why sd-scripts cannot carry them. An export keeps them in
# loradash_extras.toml next to the kohya files, so importing that folder restores them.
OURS_ALONE: dict[str, str] = {
    "training.compile": "sd-scripts has no torch.compile option for LoRA training",
    "training.device": "sd-scripts trains where accelerate puts it (`accelerate config`, or --cpu)",
    "saving.trigger_words": "sd-scripts has no trigger-word option; LoRA Dash writes them into the "
                            "file's metadata itself",
}

# Marks an option whose every value behaves like LoRA Dash (speed or bookkeeping only).
ANY_VALUE = ("<any value>",)

# sd-scripts options LoRA Dash has no equivalent for: key → (why, values that behave like ours).
UNSUPPORTED: dict[str, tuple[str, tuple[Any, ...]]] = {
    "logging_dir": ("LoRA Dash logs every run to events.jsonl and charts it in the dashboard", ()),
    "log_with": ("LoRA Dash charts losses itself (no TensorBoard/W&B)", ("tensorboard",)),
    "log_prefix": ("LoRA Dash names runs by job id", ANY_VALUE),
    "log_tracker_name": ("LoRA Dash names runs by job id", ANY_VALUE),
    "wandb_run_name": ("W&B is not used", ANY_VALUE),
    "wandb_api_key": ("W&B is not used", ()),
    "save_model_as": ("LoRA Dash always saves .safetensors", ("safetensors",)),
    "xformers": ("attention: LoRA Dash uses PyTorch SDPA", ANY_VALUE),
    "sdpa": ("attention: LoRA Dash uses PyTorch SDPA", ANY_VALUE),
    "mem_eff_attn": ("attention: LoRA Dash uses PyTorch SDPA", ANY_VALUE),
    "persistent_data_loader_workers": ("loader workers are managed by LoRA Dash", ANY_VALUE),
    "max_token_length": ("LoRA Dash encodes captions in one 75-token window", (75, 77)),
    "lowram": ("memory placement is managed by LoRA Dash", ANY_VALUE),
    "highvram": ("memory placement is managed by LoRA Dash", ANY_VALUE),
    "vae_batch_size": ("latents are cached with LoRA Dash's own batch size", ANY_VALUE),
    "full_fp16": ("trainable weights stay fp32 in LoRA Dash", (False,)),
    "full_bf16": ("trainable weights stay fp32 in LoRA Dash", (False,)),
    "fp8_base_unet": ("fp8_base stores the whole denoiser in fp8; no separate text-encoder choice", (False,)),
    "no_half_vae": ("LoRA Dash keeps the VAE in fp32 where fp16 overflows", ANY_VALUE),
    "v2": ("SD 2.x models are not supported (families: sd15, sdxl)", (False,)),
    "color_aug": ("colour augmentation is not supported", (False,)),
    "random_crop": ("random crop is not supported (centre crop)", (False,)),
    "face_crop_aug_range": ("face-crop augmentation is not supported", ()),
    "caption_suffix": ("only a caption prefix is supported", ("",)),
    "caption_separator": ("tags are separated by commas", (",",)),
    "keep_tokens_separator": ("only keep_tokens (a count) is supported", ("",)),
    "secondary_separator": ("not supported", ("",)),
    "enable_wildcard": ("wildcard captions are not supported", (False,)),
    "class_tokens": ("LoRA Dash takes the class from the N_name folder name", ()),
    "cache_info": ("LoRA Dash caches image sizes itself", ANY_VALUE),
    "caption_dropout_every_n_epochs": ("not supported", (0,)),
    "token_warmup_min": ("not supported", (1,)),
    "token_warmup_step": ("not supported", (0, 0.0)),
    "resize_interpolation": ("LoRA Dash picks the resampling filter", ()),
    "alpha_mask": ("masked loss is not supported", (False,)),
    "masked_loss": ("masked loss is not supported", (False,)),
    "metadata_file": ("fine-tuning metadata JSON is not supported: use caption files", ()),
    "in_json": ("fine-tuning metadata JSON is not supported: use caption files", ()),
    "dataset_repeats": ("fine-tuning repeats: use N_name folders", (1,)),
    "skip_image_resolution": ("not supported", ()),
    "validation_split": ("validation splits are not supported", (0, 0.0)),
    "scale_weight_norms": ("max-norm regularization is not supported", (0, 0.0)),
    "network_train_text_encoder_only": ("LoRA Dash always trains the UNet", (False,)),
    "dim_from_weights": ("set network.rank to the file's rank", (False,)),
    "base_weights": ("merging LoRAs before training is not supported", ()),
    "base_weights_multiplier": ("merging LoRAs before training is not supported", ()),
    "ip_noise_gamma": ("input-perturbation noise is not supported", (0, 0.0)),
    "adaptive_noise_scale": ("adaptive noise scale is not supported", (0, 0.0)),
    "noise_offset_random_strength": ("not supported", (False,)),
    "ip_noise_gamma_random_strength": ("not supported", (False,)),
    "debiased_estimation_loss": ("debiased estimation is not supported (min-SNR γ is)", (False,)),
    "loss_type": ("only the L2 (MSE) loss is supported", ("l2",)),
    "huber_c": ("only the L2 loss is supported", ()),
    "huber_schedule": ("only the L2 loss is supported", ()),
    "min_timestep": ("timesteps are sampled over the full range", (0,)),
    "max_timestep": ("timesteps are sampled over the full range", (1000,)),
    "scale_v_pred_loss_like_noise_pred": ("not supported", (False,)),
    "v_pred_like_loss": ("not supported", (0, 0.0)),
    "weighted_captions": ("prompt weighting in captions is not supported", (False,)),
    "no_token_padding": ("not supported", (False,)),
    "training_comment": ("stored as the description when metadata_description is absent", ()),
    "metadata_license": ("not stored", ("",)),
    "metadata_tags": ("not stored", ("",)),
    "no_metadata": ("LoRA Dash always writes metadata", (False,)),
    "save_state_on_train_end": ("LoRA Dash saves state with every checkpoint when saving.save_state is on", (False,)),
    "save_last_n_epochs_state": ("resumable state follows saving.keep_last_n", ()),
    "save_last_n_steps_state": ("resumable state follows saving.keep_last_n", ()),
    "resume": ("resume a LoRA Dash run from its job page", ("",)),
    "initial_epoch": ("not supported", ()),
    "initial_step": ("not supported", ()),
    "lr_decay_steps": ("not supported", (0, 0.0)),
    "lr_scheduler_args": ("scheduler arguments are not supported", ()),
    "lr_scheduler_type": ("custom scheduler classes are not supported", ("",)),
    "lr_scheduler_min_lr_ratio": ("not supported", ()),
    "max_bucket_reso_steps": ("not supported", ()),
    "tokenizer_cache_dir": ("LoRA Dash works offline with the model's own tokenizer", ANY_VALUE),
    "ddp_timeout": ("multi-GPU runs are configured by LoRA Dash", ()),
    "ddp_gradient_as_bucket_view": ("multi-GPU runs are configured by LoRA Dash", ()),
    "ddp_static_graph": ("multi-GPU runs are configured by LoRA Dash", ()),
    "console_log_simple": ("console logging is LoRA Dash's", ANY_VALUE),
    "cache_text_encoder_outputs_to_disk": ("text-encoder outputs are cached in memory", (False,)),
    "cpu_offload_checkpointing": ("not supported", (False,)),
    "config_file": ("the file itself", ()),
    "dataset_config": ("read as the dataset TOML", ()),
    "sample_at_first_step": ("use sample_at_first", ()),
    # flux_train_network.py
    "logit_mean": ("logit_normal timestep density is not supported (sigmoid sampling is)", (0, 0.0)),
    "logit_std": ("logit_normal timestep density is not supported (sigmoid_scale is)", (1, 1.0)),
    "mode_scale": ("mode timestep density is not supported", (1.29,)),
    "blocks_to_swap": ("block swapping is not supported: use training.fp8_base and a smaller batch", (0,)),
    "split_mode": ("sd-scripts' deprecated split mode: memory placement is managed by LoRA Dash", (False,)),
    "text_encoder_batch_size": ("text-encoder outputs are cached with LoRA Dash's own batch size", ANY_VALUE),
    "disable_mmap_load_safetensors": ("model loading is LoRA Dash's", ANY_VALUE),
    "mem_eff_save": ("saving is LoRA Dash's", ANY_VALUE),
    "fused_backward_pass": ("not supported", (False,)),
    "blockwise_fused_optimizers": ("not supported", (False,)),
    "model_type": ("LoRA Dash trains Flux.1 (not Chroma)", ("flux",)),
    "bypass_flux_guidance": ("Chroma option: not supported", (False,)),
}
# flux_train_network.py's timestep_sampling and weighting_scheme → ours (with what changed, or "").
TIMESTEP_SAMPLING: dict[str, tuple[str, str]] = {
    "uniform": ("uniform", ""), "sigmoid": ("sigmoid", ""), "shift": ("shift", ""), "flux_shift": ("flux_shift", ""),
    "sigma": ("shift", "sigma (σ uniform over the schedule shifted by discrete_flow_shift) has no equivalent: "
                       "shift used (σ from the sigmoid of a normal, shifted by the same discrete_flow_shift)"),
}
WEIGHTING_SCHEMES: dict[str, tuple[str, str]] = {
    "none": ("none", ""), "sigma_sqrt": ("sigma_sqrt", ""), "cosmap": ("cosmap", ""),
    "logit_normal": ("none", "logit_normal only shapes sd-scripts' sigma sampling (its loss weight is 1): none"),
    "mode": ("none", "mode only shapes sd-scripts' sigma sampling (its loss weight is 1): none"),
}
# flux_train_network.py options, read for Flux runs only.
FLUX_KEYS = ("clip_l", "t5xxl", "ae", "t5xxl_max_token_length", "apply_t5_attn_mask", "timestep_sampling",
             "sigmoid_scale", "discrete_flow_shift", "model_prediction_type", "weighting_scheme", "guidance_scale")

# optimizer_type (lower case) → (ours, extra_args to add, what changed or "").
OPTIMIZERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "adamw": ("adamw", {}, ""),
    "torch.optim.adamw": ("adamw", {}, ""),
    "adamw8bit": ("adamw8bit", {}, ""),
    "bitsandbytes.optim.adamw8bit": ("adamw8bit", {}, ""),
    "pagedadamw8bit": ("adamw8bit", {}, "paged memory is not available: plain 8-bit AdamW"),
    "pagedadamw": ("adamw", {}, "paged memory is not available: plain AdamW"),
    "prodigy": ("prodigy", {}, ""),
    "prodigyopt.prodigy": ("prodigy", {}, ""),
    "adafactor": ("adafactor", {}, ""),
    "transformers.optimization.adafactor": ("adafactor", {}, ""),
    "lion": ("lion", {}, ""),
    "lion_pytorch.lion": ("lion", {}, ""),
    "lion8bit": ("lion", {}, "8-bit Lion is not available: Lion"),
    "pagedlion8bit": ("lion", {}, "8-bit Lion is not available: Lion"),
    "sgdnesterov": ("sgd", {"nesterov": True}, "SGD with nesterov = true"),
    "sgdnesterov8bit": ("sgd", {"nesterov": True}, "8-bit SGD is not available: SGD with nesterov = true"),
    "torch.optim.sgd": ("sgd", {}, ""),
    "dadaptation": ("prodigy", {}, "D-Adaptation is not available: Prodigy, its successor (lr ≈ 1 too)"),
    "dadaptadam": ("prodigy", {}, "D-Adaptation is not available: Prodigy, its successor (lr ≈ 1 too)"),
    "dadaptadagrad": ("prodigy", {}, "D-Adaptation is not available: Prodigy, its successor (lr ≈ 1 too)"),
    "dadaptadan": ("prodigy", {}, "D-Adaptation is not available: Prodigy, its successor (lr ≈ 1 too)"),
    "dadaptadanip": ("prodigy", {}, "D-Adaptation is not available: Prodigy, its successor (lr ≈ 1 too)"),
    "dadaptlion": ("prodigy", {}, "D-Adaptation is not available: Prodigy, its successor (lr ≈ 1 too)"),
    "dadaptsgd": ("prodigy", {}, "D-Adaptation is not available: Prodigy, its successor (lr ≈ 1 too)"),
}
OPTIMIZER_TO_KOHYA: dict[str, str] = {
    "adamw": "AdamW", "adamw8bit": "AdamW8bit", "prodigy": "Prodigy", "adafactor": "Adafactor",
    "lion": "Lion", "sgd": "torch.optim.SGD",
}
# What each optimizer class uses when optimizer_args does not say (its library's defaults), and so
# which of our optimizer fields it reads. Sources: torch.optim.AdamW/SGD, bitsandbytes AdamW8bit,
# prodigyopt.Prodigy, lion_pytorch.Lion, transformers Adafactor; sd-scripts sets SGDNesterov's momentum 0.9.
OPTIMIZER_DEFAULTS: dict[str, dict[str, float]] = {
    "adamw": {"weight_decay": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    "adamw8bit": {"weight_decay": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    "prodigy": {"weight_decay": 0.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    "lion": {"weight_decay": 0.0, "beta1": 0.9, "beta2": 0.99},
    "adafactor": {"weight_decay": 0.0},
    "sgd": {"weight_decay": 0.0, "momentum": 0.0},
}
SGD_NESTEROV_MOMENTUM = 0.9
# optimizer_args sd-scripts assumes when absent (train_util.get_optimizer: Adafactor runs with
# relative_step=True; transformers' scale_parameter defaults to True), and LoRA Dash's engine's own.
KOHYA_OPTIMIZER_EXTRAS: dict[str, dict[str, Any]] = {
    "adafactor": {"scale_parameter": True, "relative_step": True, "warmup_init": False}}
OUR_OPTIMIZER_EXTRAS: dict[str, dict[str, Any]] = {
    "adafactor": {"scale_parameter": False, "relative_step": False, "warmup_init": False}}

SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")

# sample_sampler → ours, and back.
SAMPLERS: dict[str, str] = {
    "euler_a": "euler_a", "k_euler_a": "euler_a", "euler": "euler", "k_euler": "euler", "ddim": "ddim",
    "dpmsolver++": "dpmpp_2m", "dpmsolver": "dpmpp_2m",
}
SAMPLER_TO_KOHYA: dict[str, str] = {"euler_a": "euler_a", "euler": "euler", "ddim": "ddim",
                                    "dpmpp_2m": "dpmsolver++"}

SAVE_PRECISION: dict[str, str] = {"float": "fp32", "fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}
SAVE_PRECISION_TO_KOHYA: dict[str, str] = {"fp32": "float", "fp16": "fp16", "bf16": "bf16"}

# network_module → ours: kohya's own modules. LyCORIS (lycoris.kohya) reads algo= from network_args.
LYCORIS_MODULE = "lycoris.kohya"
KOHYA_LORA_MODULE = "networks.lora"
KOHYA_FLUX_LORA_MODULE = "networks.lora_flux"
KOHYA_DYLORA_MODULE = "networks.dylora"
LYCORIS_ALGOS: dict[str, str] = {
    "lora": "locon", "locon": "locon", "loha": "loha", "lokr": "lokr", "dylora": "dylora", "ia3": "ia3",
    "glora": "glora", "diag-oft": "diag-oft", "boft": "boft", "full": "full",
}
ALGO_TO_LYCORIS: dict[str, str] = {"lora": "lora", "locon": "locon", "loha": "loha", "lokr": "lokr",
                                   "dylora": "dylora", "ia3": "ia3", "glora": "glora",
                                   "diag-oft": "diag-oft", "boft": "boft", "full": "full"}
# LyCORIS presets (lycoris/config.py): which layers, and whether 3×3 convs are adapted.
PRESET_TO_TARGET: dict[str, tuple[str, bool]] = {
    "full": ("all", True), "full-lin": ("all", False), "attn-mlp": ("attn-mlp", False),
    "attn-only": ("attn", False), "unet-only": ("all", True),
}
# network_args of lycoris.kohya that LoRA Dash reads, with LyCORIS's value when absent.
LYCORIS_ARGS: dict[str, tuple[str, Any]] = {
    "dropout": ("network.dropout", 0.0), "rank_dropout": ("network.rank_dropout", 0.0),
    "module_dropout": ("network.module_dropout", 0.0), "factor": ("network.factor", -1),
    "decompose_both": ("network.decompose_both", False), "block_size": ("network.block_size", 4),
    "use_tucker": ("network.use_tucker", False), "use_cp": ("network.use_tucker", False),
    "use_scalar": ("network.use_scalar", False), "constraint": ("network.constraint", 0.0),
    "constrain": ("network.constraint", 0.0), "rescaled": ("network.rescaled", False),
    "train_norm": ("network.train_norm", False), "dora_wd": ("network.dora", False),
}
# network_args of networks.lora that LoRA Dash reads.
KOHYA_LORA_ARGS: dict[str, tuple[str, Any]] = {
    "rank_dropout": ("network.rank_dropout", 0.0), "module_dropout": ("network.module_dropout", 0.0),
}
# The schema's defaults of the LyCORIS-only knobs, for deciding whether networks.lora can carry a config.
LYCORIS_NEUTRAL = {name: NetworkSection.model_fields[name].default for name in (
    "dora", "factor", "decompose_both", "use_tucker", "use_scalar", "constraint", "rescaled", "train_norm")}


# accelerate launch's flags that are training.<same name> options.
LAUNCH_KEYS: tuple[str, ...] = tuple(a.key for a in MAPPING if a.place == LAUNCHER)


def mapped_paths() -> set[str]:
    return {arg.path for arg in MAPPING}


def arg(key: str, path: str | None = None) -> KohyaArg:
    """The entry for kohya `key` (and `path` where one key maps to several options)."""
    for a in MAPPING:
        if a.key == key and (path is None or a.path == path):
            return a
    raise KeyError(key)
