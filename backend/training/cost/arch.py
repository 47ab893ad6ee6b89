"""Each model family's architecture on the meta device: the modules the trainer loads, without weights.

`ARCHITECTURES` maps a family name to a function (family, config folder) → `Architecture`: the UNet
families here, Flux.1 in flux_arch.py; everything else (the step, the estimator) only calls the
`Architecture`. The config folder is the user's diffusers folder when model.path is one, else the
family's shipped configs (backend/models/configs, with tokenizers derived once; Flux's by the variant of
its transformer file, [dev] when there is none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.errors import ModelError

if TYPE_CHECKING:  # torch is imported where a model is built: a cached estimate needs none of it
    import torch


@dataclass
class Architecture:
    family: Any                                          # the ModelFamily (its predict, targets, encode_prompts)
    folder: Path                                         # diffusers-style config folder
    denoiser: Callable[[torch.dtype], torch.nn.Module]   # frozen, on the meta device, in that dtype
    # (dtype, frozen_dtype=None, cfg=None) → TextEncoders (real tokenizers, meta encoders): as the family's
    # load_text_encoders, encoders that never train in `frozen_dtype`; `cfg` sets the encoding options
    text_encoders: Callable[..., Any]
    vae: Callable[[torch.dtype], torch.nn.Module]
    # (batch, height px, width px, dtype, cfg=None) → what the text cache hands the step, and the family's
    # per-batch conditioning
    conditioning: Callable[..., tuple[dict, dict]]
    objective: Callable[[Any], Any]                      # cfg → the trainer's objective (noising, target, loss)
    latent_channels: int = 4
    downscale: int = 8                                   # pixels per latent cell
    patch: int = 1                                       # latent cells per token side (Flux packs 2 × 2)
    # cfg → text tokens that run through the denoiser's blocks with the image's (Flux: T5's); a UNet's
    # text only enters its cross-attention
    text_tokens: Callable[[Any], int] = lambda cfg: 0
    trained_text_encoders: tuple[int, ...] | None = None  # the encoders train_text_encoder trains (None: all)


def _frozen(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    import torch

    from backend.models.loading import freeze

    # nn.Module.to: diffusers' own .to() warns about fp32 modules this family does not have.
    return torch.nn.Module.to(freeze(module), dtype=dtype)


def unet_architecture(family: Any, folder: Path) -> Architecture:
    """SD 1.x/2.x and SDXL: UNet2DConditionModel, CLIP text encoder(s), AutoencoderKL."""
    from backend.models.loading import read_json

    unet_cfg = read_json(folder / "unet" / "config.json")
    parts = [p for p in ("text_encoder", "text_encoder_2") if (folder / p / "config.json").is_file()]
    pooled = unet_cfg.get("addition_embed_type") == "text_time"
    time_dim = unet_cfg.get("addition_time_embed_dim") or 0
    pooled_dim = (unet_cfg.get("projection_class_embeddings_input_dim") or 0) - 6 * time_dim

    def denoiser(dtype: torch.dtype) -> torch.nn.Module:
        import torch
        from diffusers import UNet2DConditionModel

        with torch.device("meta"):
            return _frozen(UNet2DConditionModel.from_config(unet_cfg), dtype)

    def text_encoders(dtype: torch.dtype, frozen_dtype: torch.dtype | None = None, cfg: Any = None) -> Any:
        import torch
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        from backend.models.base import TextEncoders

        encoders, tokenizers = [], []
        for part in parts:
            cls = CLIPTextModelWithProjection if part == "text_encoder_2" else CLIPTextModel
            with torch.device("meta"):
                encoders.append(_frozen(cls(CLIPTextConfig.from_pretrained(folder / part)), dtype))
            tok = folder / part.replace("text_encoder", "tokenizer")
            tokenizers.append(CLIPTokenizer.from_pretrained(tok, local_files_only=True))
        return TextEncoders(tokenizers, encoders)

    def vae(dtype: torch.dtype) -> torch.nn.Module:
        import torch
        from diffusers import AutoencoderKL

        with torch.device("meta"):
            return _frozen(AutoencoderKL.from_config(read_json(folder / "vae" / "config.json")), dtype)

    def conditioning(batch: int, height: int, width: int, dtype: torch.dtype, cfg: Any = None) -> tuple[dict, dict]:
        """What the text cache hands the step (prompt embeddings in the weight dtype) and the
        family's per-batch conditioning (SDXL's size/crop time ids)."""
        import torch

        cond = {"encoder_hidden_states": torch.empty(batch, 77, unet_cfg["cross_attention_dim"], dtype=dtype,
                                                     device="meta")}
        extra: dict = {}
        if pooled:
            cond["text_embeds"] = torch.empty(batch, pooled_dim, dtype=dtype, device="meta")
            sizes = {"original_size": [(height, width)] * batch, "crop_top_left": [(0, 0)] * batch,
                     "target_size": [(height, width)] * batch}
            extra = {k: v.to("meta") for k, v in family.extra_conditioning(sizes).items()}
        return cond, extra

    return Architecture(family=family, folder=folder, denoiser=denoiser, text_encoders=text_encoders, vae=vae,
                        conditioning=conditioning, objective=ddpm_objective(folder),
                        latent_channels=unet_cfg.get("in_channels", 4))


def ddpm_objective(folder: Path) -> Callable[[Any], Any]:
    """The trainer's DDPMObjective (ε or v, noise offset, pyramid noise, Min-SNR-γ) for config `cfg`, its
    schedule on the meta device."""
    def make(cfg: Any) -> Any:
        from backend.models.schedulers import training_scheduler
        from backend.training.objectives import DDPMObjective

        sched = training_scheduler(folder / "scheduler", v_prediction=cfg.model.v_prediction,
                                   zero_terminal_snr=cfg.loss.zero_terminal_snr)
        sched.alphas_cumprod = sched.alphas_cumprod.to("meta")
        return DDPMObjective(cfg, sched)
    return make


def flux_architecture(family: Any, folder: Path) -> Architecture:
    """Flux.1: backend.training.cost.flux_arch (imported when asked for)."""
    from backend.training.cost.flux_arch import flux_architecture as build

    return build(family, folder)


ARCHITECTURES: dict[str, Callable[[Any, Path], Architecture]] = {
    "sd15": unet_architecture,
    "sdxl": unet_architecture,
    "flux": flux_architecture,
}


SHIPPED_CONFIGS = Path(__file__).resolve().parents[2] / "models" / "configs"


def _check_family(family: str) -> None:
    if family not in ARCHITECTURES:
        raise ModelError(f"model.family {family!r}: no architecture for the cost estimate yet "
                         f"(known: {', '.join(ARCHITECTURES)})")


def user_folder(model_path: str | Path | None) -> Path | None:
    """model.path when it is a diffusers folder with every component its model_index.json names (any
    family), else None."""
    import json

    if not model_path or not (Path(model_path) / "model_index.json").is_file():
        return None
    path = Path(model_path)
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    parts = [k for k, v in index.items() if isinstance(v, list) and len(v) == 2 and v[1]]
    if parts and all(any((path / part).glob("*.json")) for part in parts):
        return path
    return None


def shipped_set(family: str, model_path: str | Path | None = None) -> str:
    """The name of the family's shipped config set: the family's own, or for Flux flux-dev / flux-schnell
    by the variant of the transformer file at `model_path` (flux-dev without one)."""
    if family != "flux":
        return family
    from backend.errors import ModelError
    from backend.models import detect

    if model_path and Path(model_path).is_file():
        try:
            if detect.detect(Path(model_path)).variant == "schnell":
                return "flux-schnell"
        except ModelError:
            pass  # validation names an unreadable model.path; the estimate takes [dev]'s shapes
    return "flux-dev"


def source_folder(family: str, model_path: str | Path | None = None) -> Path:
    """Where the architecture's configs come from (no model is built, nothing heavy imported): the
    user's diffusers folder, else the family's shipped configs."""
    _check_family(family)
    return user_folder(model_path) or SHIPPED_CONFIGS / shipped_set(family, model_path)


def architecture(family: str, model_path: str | Path | None = None, cache_root: Path | None = None) -> Architecture:
    """The family's architecture, from the user's diffusers folder when model.path is one, else from its
    shipped configs (assembled once with their tokenizers under `cache_root`)."""
    from backend.models.registry import get_family
    from backend.models.single_file import default_configs_root, shipped_config

    _check_family(family)
    folder = user_folder(model_path) or shipped_config(shipped_set(family, model_path),
                                                       cache_root or default_configs_root())
    return ARCHITECTURES[family](get_family(family), folder)
