"""Flux.1 [dev] and [schnell] (Black Forest Labs): a rectified-flow transformer over 16-channel latents.

Text: T5-XXL hidden states (the sequence) and CLIP-L's pooled output (one vector). Image: VAE latents
packed 2 × 2 into 64-wide tokens, with (0, row, column) position ids for the rotary embedding; text
tokens have position ids 0. [dev] is guidance-distilled: it takes the guidance strength as an input
(`flow.guidance_scale` while training, the sample prompt's guidance when sampling); [schnell] does not.
Models load from a diffusers folder (FluxPipeline layout) or, as ComfyUI users keep them, from the BFL
transformer file with separate CLIP-L, T5 and AE files (backend.models.flux_files), offline.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from backend.errors import ModelError
from backend.models import config_checks, detect
from backend.models.base import LoraTargets, ModelFamily, TextEncoders

if TYPE_CHECKING:
    import torch

    from backend.models.components import ModelSource

PIPELINE_PARTS = MappingProxyType({"transformer": "weights", "vae": "weights", "text_encoder": "weights",
                                   "text_encoder_2": "weights", "tokenizer": "tokenizer",
                                   "tokenizer_2": "tokenizer", "scheduler": "config"})
T5_LENGTH = MappingProxyType({"dev": 512, "schnell": 256})  # sd-scripts' defaults, as the models were trained
TEXT_TARGETS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")
# network.target = all: the blocks plus the input embedders, the time/text/guidance MLPs and the output layer.
ALL_EXTRA_NAMES = (r"x_embedder$", r"context_embedder$", r"time_text_embed\.", r"norm_out\.linear$", r"proj_out$")
log = logging.getLogger(__name__)


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, H/2 · W/2, 4C): each 2 × 2 patch one token, channels then patch row and column
    (BFL flux `rearrange(img, "b c (h ph) (w pw) -> b (h w) (c ph pw)")`; diffusers `_pack_latents`)."""
    b, c, h, w = latents.shape
    x = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack_latents` for latents of `height` × `width`."""
    b, _, d = tokens.shape
    x = tokens.reshape(b, height // 2, width // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, height, width)


def image_ids(height: int, width: int, device: Any = None, dtype: Any = None) -> torch.Tensor:
    """Position ids (0, row, column) of the tokens of `height` × `width` latents (BFL flux `prepare`)."""
    import torch

    rows = torch.arange(height // 2, device=device).repeat_interleave(width // 2)
    cols = torch.arange(width // 2, device=device).repeat(height // 2)
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=1).to(dtype or torch.float32)


def joint_attention_mask(text_mask: torch.Tensor, image_tokens: int) -> torch.Tensor:
    """(B, 1, 1, text + image) boolean mask for attention over [text; image] tokens: T5's padding masked,
    every image token attended (sd-scripts `--apply_t5_attn_mask`)."""
    import torch

    keep = text_mask.bool()
    image = torch.ones((keep.shape[0], image_tokens), dtype=torch.bool, device=keep.device)
    return torch.cat([keep, image], dim=1)[:, None, None, :]


def _attr(model: Any, name: str, default: Any = None) -> Any:
    return default if isinstance(model, (str, Path)) else getattr(model, name, default)


CLIP_MEMORY, CLIP_FILE = "lora_te_", "lora_te1_"


def _te_name(key: str, old: str, new: str) -> str:
    return new + key[len(old):] if key.startswith(old) else key


class FluxFamily(ModelFamily):
    name = "flux"
    label = "Flux.1"
    default_resolution = 1024
    # LyCORIS names CLIP-L's adapters lora_te_… in memory (one text encoder); lora_keys_to_file writes
    # them as lora_te1_… and the transformer's under BFL names.
    text_encoder_prefixes = ("lora_te",)
    pipeline_parts = PIPELINE_PARTS
    pipeline_description = ("a Flux pipeline with transformer/, vae/, text_encoder/, text_encoder_2/, tokenizer/, "
                            "tokenizer_2/, scheduler/")
    caches_text_outputs = True  # T5-XXL (9 GB) is loaded once to encode the captions, then freed

    # -- loading ------------------------------------------------------------------------------
    def open(self, model: Any) -> ModelSource:
        """A Flux folder, or a BFL transformer file with `model.clip_l_path`, `model.t5_path` and
        `model.vae_path` (the AE); each file checked for kind before anything loads."""
        from backend.models import single_file
        from backend.models.components import ModelSource
        from backend.models.loading import check_diffusers_folder

        path = Path(_attr(model, "path", model))
        if path.is_dir():
            check_diffusers_folder(path, self.pipeline_parts, self.pipeline_description)
        det = detect.require_trainable(detect.detect(path), path, self.name)
        values = {f: str(_attr(model, f.split(".")[1], "") or "") for f, _, _ in config_checks.FLUX_FILES}
        problems = config_checks.flux_file_problems(det, values)
        if problems:
            raise ModelError("; ".join(f"{f}: {m}" for f, m in problems))
        files = {part: Path(values[f]) for part, f in (("text_encoder", "model.clip_l_path"),
                                                       ("text_encoder_2", "model.t5_path")) if values[f]}
        vae = Path(values["model.vae_path"]) if values["model.vae_path"] else None
        length = _attr(model, "t5_max_length") or T5_LENGTH.get(det.variant, 512)
        settings = {"t5_max_length": int(length), "apply_t5_attn_mask": bool(_attr(model, "apply_t5_attn_mask"))}
        if det.kind == "diffusers":
            return ModelSource(path, self.name, False, path, det, vae, files, settings)
        config_dir = single_file.resolve_config_dir(path, f"flux-{det.variant}", None, self.configs_root)
        return ModelSource(path, self.name, True, config_dir, det, vae, files, settings)

    def load_text_encoders(self, src: ModelSource, *, device: Any, dtype: Any,
                           frozen_dtype: Any = None) -> TextEncoders:
        """CLIP-L (`dtype`) and T5 (never trained: `frozen_dtype` when given) with their tokenizers;
        `options` carries the T5 length and mask setting."""
        from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, T5EncoderModel

        from backend.models import flux_files
        from backend.models.loading import freeze

        if "text_encoder" in src.files:
            clip = flux_files.load_clip_l(src.files["text_encoder"], src.config_dir, dtype)
        else:
            clip = CLIPTextModel.from_pretrained(src.path / "text_encoder", dtype=dtype, local_files_only=True)
        t5_dtype = frozen_dtype or dtype
        if "text_encoder_2" in src.files:
            t5 = flux_files.load_t5(src.files["text_encoder_2"], src.config_dir, t5_dtype)
        else:
            t5 = T5EncoderModel.from_pretrained(src.path / "text_encoder_2", dtype=t5_dtype, local_files_only=True)
        clip_tok = CLIPTokenizer.from_pretrained(src.folder("tokenizer"), local_files_only=True)
        t5_tok = AutoTokenizer.from_pretrained(self._t5_tokenizer_folder(src), local_files_only=True)
        return TextEncoders([clip_tok, t5_tok], [freeze(clip).to(device), freeze(t5).to(device)],
                            options=dict(src.settings))

    def _t5_tokenizer_folder(self, src: ModelSource) -> Path:
        """The folder's `tokenizer_2/` (a diffusers folder or a `<stem>.config/`), else the T5 tokenizer
        downloaded once into the config cache (backend.models.t5_tokenizer)."""
        from backend.models import single_file, t5_tokenizer

        own = src.folder("tokenizer_2")
        if (own / "tokenizer.json").is_file() or (own / "spiece.model").is_file():
            return own
        return t5_tokenizer.t5_tokenizer_folder(self.configs_root or single_file.default_configs_root())

    def load_unet(self, src: ModelSource, *, device: Any, dtype: Any) -> Any:
        """The FluxTransformer2DModel, frozen. Its linear weights may later be stored in float8 and
        upcast per layer (training.fp8_base): nothing here assumes their dtype."""
        from diffusers import FluxTransformer2DModel

        from backend.models import flux_files
        from backend.models.loading import freeze

        if src.single_file:
            model = flux_files.load_transformer(src.path, src.config_dir, dtype)
        else:
            model = FluxTransformer2DModel.from_pretrained(src.path, subfolder="transformer", torch_dtype=dtype,
                                                           local_files_only=True, low_cpu_mem_usage=True)
        return freeze(model).to(device)

    def load_noise_scheduler(self, src: ModelSource, *, v_prediction: bool, zero_terminal_snr: bool) -> Any:
        """The model's flow-matching scheduler. Training draws σ itself (training.objectives); the
        scheduler serves sampling, with the model's shift settings ([dev]: resolution-dependent)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_pretrained(src.folder("scheduler"), local_files_only=True)

    def vae_identity(self, src: ModelSource) -> str:
        from backend.models.loading import weights_fingerprint

        return weights_fingerprint(src.vae_path or src.path / "vae")

    def text_encoder_identity(self, src: ModelSource) -> str:
        """Encoders, tokenizers and the T5 settings (length, mask): each changes the cached outputs."""
        from backend.models.loading import weights_fingerprint

        parts = [src.files.get("text_encoder", src.path / "text_encoder"),
                 src.files.get("text_encoder_2", src.path / "text_encoder_2"),
                 src.folder("tokenizer"), src.folder("tokenizer_2")]
        h = hashlib.sha256(repr(sorted(src.settings.items())).encode())
        for p in parts:
            h.update(weights_fingerprint(p).encode() if Path(p).exists() else str(p).encode())
        return h.hexdigest()[:16]

    # -- encoding -----------------------------------------------------------------------------
    def encode_prompts(self, te: TextEncoders, prompts: list[str], *, clip_skip: int = 1) -> dict[str, Any]:
        """T5 hidden states (`prompt_embeds`, T5 length tokens) and CLIP-L's pooled output
        (`pooled_prompt_embeds`), as FluxPipeline.encode_prompt; with the mask setting, T5 encodes with
        its attention mask and `t5_mask` goes along for the transformer. T5 never trains: no graph."""
        import torch

        clip_tok, t5_tok = te.tokenizers
        clip, t5 = te.encoders
        prompts = list(prompts)
        ids = clip_tok(prompts, padding="max_length", max_length=clip_tok.model_max_length, truncation=True,
                       return_tensors="pt").input_ids.to(clip.device)
        pooled = clip(ids, output_hidden_states=False).pooler_output
        length = te.options.get("t5_max_length", 512)
        masked = te.options.get("apply_t5_attn_mask", False)
        tokens = t5_tok(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        with torch.no_grad():
            mask = tokens.attention_mask.to(t5.device)
            states = t5(tokens.input_ids.to(t5.device), attention_mask=mask if masked else None)[0]
        out = {"prompt_embeds": states, "pooled_prompt_embeds": pooled}
        if masked:
            out["t5_mask"] = mask
        return out

    def predict(self, unet: Any, noisy_latents: Any, timesteps: Any, cond: dict[str, Any],
                extra: dict[str, Any]) -> Any:
        """The velocity for latents (B, 16, H, W) at noise levels σ = `timesteps` ∈ [0, 1], unpacked to
        the latents' shape. `extra["guidance"]` feeds [dev]'s guidance input."""
        import torch

        _, _, h, w = noisy_latents.shape
        text = cond["prompt_embeds"]
        dtype = noisy_latents.dtype
        guidance = extra.get("guidance") if unet.config.guidance_embeds else None
        kwargs = {}
        if "t5_mask" in cond:
            kwargs["joint_attention_kwargs"] = {"attention_mask": joint_attention_mask(cond["t5_mask"],
                                                                                       (h // 2) * (w // 2))}
        out = unet(hidden_states=pack_latents(noisy_latents), encoder_hidden_states=text.to(dtype),
                   pooled_projections=cond["pooled_prompt_embeds"].to(dtype), timestep=timesteps.to(dtype),
                   img_ids=image_ids(h, w, noisy_latents.device, dtype),
                   txt_ids=torch.zeros((text.shape[1], 3), device=noisy_latents.device, dtype=dtype),
                   guidance=guidance.to(dtype) if guidance is not None else None, **kwargs).sample
        return unpack_latents(out, h, w)

    # -- training -----------------------------------------------------------------------------
    def training_objective(self, cfg: Any, scheduler: Any, src: ModelSource) -> Any:
        from backend.training.objectives import FlowObjective

        return FlowObjective(cfg, guidance=src.detected.variant == "dev")

    # -- LoRA naming and metadata -------------------------------------------------------------
    def lora_targets(self, target: str, conv: bool) -> LoraTargets:
        """attn: every attention projection (q, k, v, out of both streams, and the single blocks' q/k/v);
        attn-mlp: every linear layer of the double and single blocks (attention, MLP, modulation), the
        set sd-scripts' Flux LoRA trains by default; all: those and the input, time/text/guidance
        embedders and the output layer. Flux has no convolutions, so `conv` adds nothing."""
        if target == "attn":
            modules, names = ["FluxAttention"], []
        elif target == "attn-mlp":
            modules, names = ["FluxTransformerBlock", "FluxSingleTransformerBlock"], []
        elif target == "all":
            modules, names = ["FluxTransformerBlock", "FluxSingleTransformerBlock"], list(ALL_EXTRA_NAMES)
        else:
            raise ModelError(f"network.target: {target!r} is not one of attn, attn-mlp, all")
        return LoraTargets(unet_modules=modules, unet_names=names, text_encoder_modules=list(TEXT_TARGETS),
                           enable_conv=False)

    def network_text_encoders(self, te: TextEncoders) -> Any:
        """CLIP-L only: T5 is never trained (network.train_text_encoder trains CLIP-L)."""
        from backend.models.loading import kohya_text_model_view

        return kohya_text_model_view(te.encoders[0])

    def lora_keys_to_file(self, state: dict[str, Any], unet: Any) -> dict[str, Any]:
        """The kohya Flux layout (BFL module names, fused projections: flux_lora_format); CLIP-L's
        adapters as `lora_te1_…`, as sd-scripts' flux_train_network.py names them."""
        from backend.models.flux_lora_format import to_file

        return to_file({_te_name(k, CLIP_MEMORY, CLIP_FILE): v for k, v in state.items()}, unet.config)

    def lora_keys_from_file(self, state: dict[str, Any], unet: Any) -> dict[str, Any]:
        from backend.models.flux_lora_format import from_file

        return {_te_name(k, CLIP_FILE, CLIP_MEMORY): v for k, v in from_file(state, unet.config).items()}

    def base_model_version(self, v_prediction: bool, variant: str = "") -> str:
        return "flux1"  # sd-scripts flux_train_network.py

    def modelspec_architecture(self, v_prediction: bool, variant: str = "") -> str:
        return f"flux-1-{variant or 'dev'}/lora"

    def modelspec_implementation(self) -> str:
        return "https://github.com/black-forest-labs/flux"

    def modelspec_prediction(self, v_prediction: bool) -> str | None:
        return None  # the SAI model spec names ε and v prediction only

    def run_metadata(self, cfg: Any, src: ModelSource) -> dict[str, str]:
        """The flow settings sd-scripts' flux_train_network.py writes (ss_* strings)."""
        f = cfg.flow
        return {"ss_timestep_sampling": f.timestep_sampling, "ss_sigmoid_scale": str(f.sigmoid_scale),
                "ss_discrete_flow_shift": str(f.discrete_flow_shift),
                "ss_model_prediction_type": f.model_prediction_type, "ss_weighting_scheme": f.weighting_scheme,
                "ss_guidance_scale": str(f.guidance_scale),
                "ss_apply_t5_attn_mask": str(bool(src.settings.get("apply_t5_attn_mask"))),
                "ss_t5xxl_max_token_length": str(src.settings.get("t5_max_length"))}

    # -- sampling -----------------------------------------------------------------------------
    def build_pipeline(self, *, unet: Any, vae: Any, te: TextEncoders | None, scheduler: Any) -> Any:
        from diffusers import FluxPipeline

        pipe = FluxPipeline(scheduler=scheduler, vae=vae, transformer=unet,
                            text_encoder=te.encoders[0] if te else None, tokenizer=te.tokenizers[0] if te else None,
                            text_encoder_2=te.encoders[1] if te else None,
                            tokenizer_2=te.tokenizers[1] if te else None)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def pipeline_prompt_kwargs(self, cond: dict[str, Any], negative: dict[str, Any]) -> dict[str, Any]:
        """Flux is guidance-distilled ([dev]) or distilled to few steps ([schnell]): no negative prompt."""
        return {"prompt_embeds": cond["prompt_embeds"], "pooled_prompt_embeds": cond["pooled_prompt_embeds"]}

    def sample_kwargs(self, cond: dict[str, Any], negative: dict[str, Any], width: int, height: int) -> dict[str, Any]:
        kwargs = self.pipeline_prompt_kwargs(cond, negative)
        if "t5_mask" in cond:
            tokens = (height // 16) * (width // 16)  # one token per 16 × 16 pixels (8× VAE, 2 × 2 packing)
            kwargs["joint_attention_kwargs"] = {"attention_mask": joint_attention_mask(cond["t5_mask"], tokens)}
        return kwargs

    def sampling_scheduler(self, name: str, training: Any) -> Any:
        """Flux samples with its own flow-matching Euler scheduler whatever `sampling.sampler` says
        (the DDPM samplers do not apply to a flow)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(training.config)

    def initial_latents(self, pipe: Any, denoiser: Any, width: int, height: int, generator: Any) -> Any:
        """Noise for 16-channel latents of the sample's size, packed as FluxPipeline takes them."""
        import torch

        step = 2 * pipe.vae_scale_factor  # one token per 2 × 2 latents
        h, w = 2 * (height // step), 2 * (width // step)
        return pack_latents(torch.randn((1, denoiser.config.in_channels // 4, h, w), generator=generator))
