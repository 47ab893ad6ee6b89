"""The interface every model family implements (SD 1.5 here; SDXL plugs in as backend/models/sdxl.py).

The trainer talks to a family only through this class, so nothing in the loop assumes one
architecture. Components are loaded one at a time (text encoders, then the VAE, then the UNet) so a
trainer that caches can free each before loading the next and the three never sit in memory together.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from backend.errors import ModelError

if TYPE_CHECKING:  # components imports torch (through ldm_keys); families are imported without it
    from backend.models.components import ModelSource


@dataclass
class TextEncoders:
    """Tokenizers and text encoders of a family, in the family's order (SDXL: CLIP-L, then bigG; Flux:
    CLIP-L, then T5), and the encoding options of the model (Flux: T5 length and mask)."""

    tokenizers: list[Any]
    encoders: list[Any]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoraTargets:
    """What a LyCORIS preset needs: module classes and module paths to wrap, per model part."""

    unet_modules: list[str]
    unet_names: list[str] = field(default_factory=list)
    text_encoder_modules: list[str] = field(default_factory=list)
    text_encoder_names: list[str] = field(default_factory=list)
    enable_conv: bool = False


CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_TARGETS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")


def model_paths(model: Any) -> tuple[Path, Path | None]:
    """(model path, custom VAE or None) of a config's model section, or of a bare path."""
    if isinstance(model, (str, Path)):
        return Path(model), None
    return Path(model.path), (Path(model.vae_path) if model.vae_path else None)


def unet_lora_targets(target: str, conv: bool, extra_all_names: tuple[str, ...] = ()) -> LoraTargets:
    """The layers for `network.target` on a diffusers UNet: attn = every Attention; attn-mlp = the
    Transformer2D blocks (attention, feed-forward, proj_in/out: kohya networks.lora's set); all = those,
    the ResNet/down/upsample blocks and the stem/time-embedding linears. `conv` adds the 3×3 convs."""
    names: list[str] = []
    if target == "attn":
        modules = ["Attention"]
    elif target == "attn-mlp":
        modules = ["Transformer2DModel"]
    elif target == "all":
        modules = ["Transformer2DModel", *CONV_BLOCKS]
        names = ["conv_in", "conv_out", "time_embedding.linear_1", "time_embedding.linear_2", *extra_all_names]
    else:
        raise ModelError(f"network.target: {target!r} is not one of attn, attn-mlp, all")
    if conv:
        modules += [m for m in CONV_BLOCKS if m not in modules]
    return LoraTargets(unet_modules=modules, unet_names=names, text_encoder_modules=list(TEXT_TARGETS),
                       enable_conv=conv)


def lycoris_preset(target: str, conv: bool) -> str:
    """The LyCORIS built-in preset nearest to `network.target` (conv: 3×3 convs adapted): the name
    written as `preset` in ss_network_args and in an sd-scripts export, so LyCORIS's create_network can
    read it back (a name outside its presets is taken for a preset file path and fails). On a
    diffusers UNet LyCORIS 4.1.3's presets differ from our target lists (its attn-only names
    sd-scripts' CrossAttention class; its attn-mlp adds the time embedding), which is why the engine
    passes its own lists and the file also records `loradash_target`."""
    if target == "all":
        return "full" if conv else "full-lin"
    return {"attn-mlp": "attn-mlp", "attn": "attn-only"}[target]


class ModelFamily(ABC):
    """One model family: loading, prompt encoding, the denoiser call, LoRA naming and targets.

    A run opens its model once (`open` → ModelSource: detection, completeness checks and the config
    folder resolved there) and hands that source to every `load_*`.
    """

    name: str = ""
    label: str = ""
    unet_prefix: str = "lora_unet"
    text_encoder_prefixes: tuple[str, ...] = ("lora_te",)
    default_resolution: int = 512
    # Subfolders of a diffusers pipeline folder and what each must hold (loading.check_diffusers_folder).
    pipeline_parts: MappingProxyType[str, str] = MappingProxyType({})
    pipeline_description: str = ""
    caches_text_outputs: bool = False  # cache text-encoder outputs even when the config does not ask

    def __init__(self, configs_root: Path | None = None):
        self.configs_root = configs_root  # where shipped configs are assembled (single_file.shipped_config)

    # -- loading ------------------------------------------------------------------------------
    def open(self, model: Any) -> ModelSource:
        """The model of `model` (the config's model section, or a path) checked and resolved once:
        ModelError naming what is wrong (missing parts, another family, a truncated file)."""
        from backend.models.components import open_source
        from backend.models.loading import check_diffusers_folder

        path, vae_path = model_paths(model)
        if path.is_dir():
            check_diffusers_folder(path, self.pipeline_parts, self.pipeline_description)
        return open_source(path, self.name, self.configs_root, vae_path=vae_path)

    @abstractmethod
    def load_text_encoders(self, src: ModelSource, *, device: Any, dtype: Any, frozen_dtype: Any = None) -> TextEncoders:
        """Tokenizers and frozen text encoders (eval mode, requires_grad off), in `dtype`; encoders that
        never train (Flux's T5) in `frozen_dtype` when given (the compute dtype while CLIP trains in fp32)."""

    def load_vae(self, src: ModelSource, *, device: Any, dtype: Any) -> Any:
        """The VAE of the model, or the custom VAE `src.vae_path` (a diffusers folder or a file)."""
        from backend.models import components
        from backend.models.loading import freeze, load_vae_any

        vae = load_vae_any(src.vae_path, src.folder("vae"), dtype=dtype) if src.vae_path \
            else components.load_vae(src, dtype)
        return freeze(vae).to(device)

    def load_unet(self, src: ModelSource, *, device: Any, dtype: Any) -> Any:
        """The denoiser, frozen (eval mode, requires_grad off)."""
        from backend.models import components
        from backend.models.loading import freeze

        return freeze(components.load_unet(src, dtype)).to(device)

    def load_noise_scheduler(self, src: ModelSource, *, v_prediction: bool, zero_terminal_snr: bool) -> Any:
        """The training noise scheduler (a DDPMScheduler over the model's beta schedule)."""
        from backend.models.schedulers import training_scheduler

        return training_scheduler(src.folder("scheduler"), v_prediction=v_prediction,
                                  zero_terminal_snr=zero_terminal_snr)

    def vae_identity(self, src: ModelSource) -> str:
        """A short string that changes when the VAE's weights change (part of the latent-cache key)."""
        from backend.models.loading import weights_fingerprint

        if src.vae_path:
            return weights_fingerprint(src.vae_path)
        return weights_fingerprint(src.path if src.single_file else src.path / "vae")

    def text_encoder_identity(self, src: ModelSource) -> str:
        """A short string that changes when the text encoders or tokenizers change (text-cache key)."""
        import hashlib

        from backend.models.loading import weights_fingerprint

        if src.single_file:
            return weights_fingerprint(src.path)
        parts = sorted(p for p in src.path.iterdir()
                       if p.is_dir() and p.name.startswith(("text_encoder", "tokenizer")))
        return hashlib.sha256("".join(weights_fingerprint(p) for p in parts).encode()).hexdigest()[:16]

    # -- encoding -----------------------------------------------------------------------------
    @abstractmethod
    def encode_prompts(self, te: TextEncoders, prompts: list[str], *, clip_skip: int = 1) -> dict[str, Any]:
        """Conditioning tensors for `prompts` (batch first), e.g. {"encoder_hidden_states": …}."""

    def encode_images(self, vae: Any, pixels: Any) -> Any:
        """Latents (scaled) of pixels in [-1, 1]. The posterior mean, so caching on and off agree."""
        latents = vae.encode(pixels).latent_dist.mean
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * vae.config.scaling_factor

    def extra_conditioning(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Conditioning that comes from the batch rather than the prompt (SDXL: size/crop time ids)."""
        return {}

    @abstractmethod
    def predict(self, unet: Any, noisy_latents: Any, timesteps: Any, cond: dict[str, Any],
                extra: dict[str, Any]) -> Any:
        """The denoiser's output (noise or v, as the model was trained)."""

    # -- LoRA naming and metadata -------------------------------------------------------------
    @abstractmethod
    def lora_targets(self, target: str, conv: bool) -> LoraTargets:
        """Module classes/names for `network.target` (attn | attn-mlp | all); `conv`: 3×3 convs too."""

    def network_text_encoders(self, te: TextEncoders) -> Any:
        """What to hand LyCORIS so text-encoder adapters get the names ComfyUI and A1111 expect."""
        from backend.models.loading import kohya_text_model_view

        views = [kohya_text_model_view(enc) for enc in te.encoders]
        return views[0] if len(views) == 1 else views

    def lora_keys_to_file(self, state: dict[str, Any], unet: Any) -> dict[str, Any]:
        """LyCORIS module names → the names written to the file (SDXL renames UNet modules)."""
        return dict(state)

    def lora_keys_from_file(self, state: dict[str, Any], unet: Any) -> dict[str, Any]:
        """The inverse of `lora_keys_to_file`."""
        return dict(state)

    @abstractmethod
    def base_model_version(self, v_prediction: bool, variant: str = "") -> str:
        """`ss_base_model_version` as sd-scripts writes it (`variant`: what detection found, e.g. dev)."""

    @abstractmethod
    def modelspec_architecture(self, v_prediction: bool, variant: str = "") -> str:
        """`modelspec.architecture` (SAI model spec) of a LoRA for this family."""

    def modelspec_implementation(self) -> str:
        return "https://github.com/Stability-AI/generative-models"

    def modelspec_prediction(self, v_prediction: bool) -> str | None:
        """`modelspec.prediction_type`, or None where the spec has no word for it."""
        return "v" if v_prediction else "epsilon"

    def run_metadata(self, cfg: Any, src: ModelSource) -> dict[str, str]:
        """Family-specific `ss_*` keys of the LoRA file (sd-scripts writes some per architecture)."""
        return {}

    # -- training -----------------------------------------------------------------------------
    def training_objective(self, cfg: Any, scheduler: Any, src: ModelSource) -> Any:
        """How a step noises latents and what the loss compares (backend.training.objectives)."""
        from backend.training.objectives import DDPMObjective

        return DDPMObjective(cfg, scheduler)

    # -- sampling -----------------------------------------------------------------------------
    @abstractmethod
    def build_pipeline(self, *, unet: Any, vae: Any, te: TextEncoders | None, scheduler: Any) -> Any:
        """A diffusers inference pipeline around the already-loaded modules (no second copy)."""

    @abstractmethod
    def pipeline_prompt_kwargs(self, cond: dict[str, Any], negative: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments that give the pipeline pre-computed prompt embeddings."""

    def sampling_scheduler(self, name: str, training: Any) -> Any:
        """The sampler `name` (sampling.sampler) over the training schedule."""
        from backend.models.schedulers import sampling_scheduler

        return sampling_scheduler(name, training)

    def initial_latents(self, pipe: Any, denoiser: Any, width: int, height: int, generator: Any) -> Any:
        """The starting noise of one sample, in the shape the pipeline takes as `latents`."""
        import torch

        return torch.randn((1, denoiser.config.in_channels, height // pipe.vae_scale_factor,
                            width // pipe.vae_scale_factor), generator=generator)

    def sample_kwargs(self, cond: dict[str, Any], negative: dict[str, Any], width: int, height: int) -> dict[str, Any]:
        """The pipeline's prompt arguments for a sample of `width` × `height` pixels."""
        return self.pipeline_prompt_kwargs(cond, negative)
