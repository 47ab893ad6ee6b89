"""The interface every model family implements (SD 1.5 here; SDXL plugs in as backend/models/sdxl.py).

The trainer talks to a family only through this class, so nothing in the loop assumes one
architecture. Components are loaded one at a time (text encoders, then the VAE, then the UNet) so a
trainer that caches can free each before loading the next and the three never sit in memory together.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.errors import ModelError


@dataclass
class TextEncoders:
    """Tokenizers and text encoders of a family, in the family's order (SDXL: CLIP-L, then bigG)."""

    tokenizers: list[Any]
    encoders: list[Any]


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
    """One model family: loading, prompt encoding, the denoiser call, LoRA naming and targets."""

    name: str = ""
    label: str = ""
    unet_prefix: str = "lora_unet"
    text_encoder_prefixes: tuple[str, ...] = ("lora_te",)
    default_resolution: int = 512

    # -- loading ------------------------------------------------------------------------------
    @abstractmethod
    def check_model(self, path: Path) -> None:
        """Raise ModelError naming what is missing when `path` is not a usable model of this family."""

    @abstractmethod
    def load_text_encoders(self, path: Path, *, device: Any, dtype: Any) -> TextEncoders:
        """Tokenizers and frozen text encoders (eval mode, requires_grad off)."""

    @abstractmethod
    def load_vae(self, path: Path, vae_path: str | Path | None, *, device: Any, dtype: Any) -> Any:
        """The VAE of the model, or the custom VAE at `vae_path` (a diffusers folder or a file)."""

    @abstractmethod
    def load_unet(self, path: Path, *, device: Any, dtype: Any) -> Any:
        """The denoiser, frozen (eval mode, requires_grad off)."""

    @abstractmethod
    def load_noise_scheduler(self, path: Path, *, v_prediction: bool, zero_terminal_snr: bool) -> Any:
        """The training noise scheduler (a DDPMScheduler over the model's beta schedule)."""

    def vae_identity(self, path: Path, vae_path: str | Path | None) -> str:
        """A short string that changes when the VAE's weights change (part of the latent-cache key)."""
        from backend.models.loading import weights_fingerprint

        if vae_path:
            return weights_fingerprint(Path(vae_path))
        path = Path(path)
        return weights_fingerprint(path if path.is_file() else path / "vae")

    def text_encoder_identity(self, path: Path) -> str:
        """A short string that changes when the text encoders or tokenizers change (text-cache key)."""
        import hashlib

        from backend.models.loading import weights_fingerprint

        path = Path(path)
        if path.is_file():
            return weights_fingerprint(path)
        parts = sorted(p for p in path.iterdir() if p.is_dir() and p.name.startswith(("text_encoder", "tokenizer")))
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
    def base_model_version(self, v_prediction: bool) -> str:
        """`ss_base_model_version` as sd-scripts writes it."""

    @abstractmethod
    def modelspec_architecture(self, v_prediction: bool) -> str:
        """`modelspec.architecture` (SAI model spec) of a LoRA for this family."""

    def modelspec_implementation(self) -> str:
        return "https://github.com/Stability-AI/generative-models"

    # -- sampling -----------------------------------------------------------------------------
    @abstractmethod
    def build_pipeline(self, *, unet: Any, vae: Any, te: TextEncoders | None, scheduler: Any) -> Any:
        """A diffusers inference pipeline around the already-loaded modules (no second copy)."""

    @abstractmethod
    def pipeline_prompt_kwargs(self, cond: dict[str, Any], negative: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments that give the pipeline pre-computed prompt embeddings."""
