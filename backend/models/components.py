"""One component at a time (UNet, VAE, a text encoder, a tokenizer) from a diffusers folder or from a
single-file checkpoint, offline.

From a single file only the tensors of the asked-for component are read (safetensors is memory
mapped), converted with diffusers' own converters and built from the `config=` folder that
`single_file.resolve_config_dir` picks, so a trainer can load the text encoders, cache, free them,
then load the UNet without the whole checkpoint ever sitting in memory twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.errors import ModelError
from backend.models import detect, single_file

# Original-layout prefixes of each component, per family.
PREFIXES = {
    "unet": ("model.diffusion_model.",),
    "vae": ("first_stage_model.",),
    "text_encoder": {"sd15": ("cond_stage_model.",), "sd2": ("cond_stage_model.",),
                     "sdxl": ("conditioner.embedders.0.",)},
    "text_encoder_2": {"sdxl": ("conditioner.embedders.1.",)},
}


@dataclass
class ModelSource:
    """A base model on disk, opened once per run: a diffusers folder or a single file with the config
    folder to read it by, what detection found, and the model options that change what is loaded.

    `vae_path` is a VAE to use instead of the model's own (model.vae_path); `files` names components
    kept in files of their own (Flux: "text_encoder" CLIP-L, "text_encoder_2" T5, "vae" AE);
    `settings` holds family options read from the config's model section (Flux: T5 length, mask)."""
    path: Path
    family: str
    single_file: bool
    config_dir: Path
    detected: detect.Detected
    vae_path: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def folder(self, part: str) -> Path:
        """The config (or, for a diffusers folder, config + weights) folder of `part` (unet, scheduler…)."""
        return self.config_dir / part


def open_source(path: Path, family: str, configs_root: Path | None = None, *,
                vae_path: str | Path | None = None) -> ModelSource:
    """Check `path` is a usable `family` model and say where its configs are. ModelError otherwise."""
    path = Path(path)
    det = detect.require_trainable(detect.detect(path), path, family)
    vae = Path(vae_path) if vae_path else None
    if det.kind == "diffusers":
        return ModelSource(path, family, False, path, det, vae)
    cfg = single_file.resolve_config_dir(path, family, None, configs_root)
    return ModelSource(path, family, True, cfg, det, vae)


def _read_prefixed(path: Path, prefixes: tuple[str, ...]) -> dict[str, Any]:
    """Only the tensors whose names start with `prefixes` (memory-mapped for .safetensors)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys() if k.startswith(prefixes)}
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    return {k: v for k, v in obj.items() if k.startswith(prefixes)}


def _prefixes(part: str, family: str) -> tuple[str, ...]:
    spec = PREFIXES[part]
    if isinstance(spec, dict):
        if family not in spec:
            raise ModelError(f"a {family} model has no {part}")
        return spec[family]
    return spec


def _state(src: ModelSource, part: str) -> dict[str, Any]:
    state = _read_prefixed(src.path, _prefixes(part, src.family))
    if not state:
        raise ModelError(f"{src.path}: no {part} weights ({' / '.join(_prefixes(part, src.family))}*) in this "
                         "checkpoint; it is not a complete model")
    return state


def _load_diffusers_model(cls: Any, src: ModelSource, part: str, dtype: Any) -> Any:
    """A diffusers model class (UNet, VAE) from a pipeline folder or converted from a single file."""
    if not src.single_file:
        return cls.from_pretrained(src.path, subfolder=part, torch_dtype=dtype, local_files_only=True,
                                   low_cpu_mem_usage=True)
    return _convert(src, part, lambda state: cls.from_single_file(
        state, config=str(src.config_dir), subfolder=part, local_files_only=True, torch_dtype=dtype))


def load_unet(src: ModelSource, dtype: Any = None) -> Any:
    from diffusers import UNet2DConditionModel

    return _load_diffusers_model(UNet2DConditionModel, src, "unet", dtype)


def load_vae(src: ModelSource, dtype: Any = None) -> Any:
    from diffusers import AutoencoderKL

    return _load_diffusers_model(AutoencoderKL, src, "vae", dtype)


def load_text_encoder(src: ModelSource, part: str = "text_encoder", dtype: Any = None) -> Any:
    """`text_encoder` (CLIPTextModel) or, for SDXL, `text_encoder_2` (CLIPTextModelWithProjection)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if part == "text_encoder_2" else CLIPTextModel
    if not src.single_file:
        return cls.from_pretrained(src.path / part, dtype=dtype, local_files_only=True)
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm

    return _convert(src, part, lambda state: create_diffusers_clip_model_from_ldm(
        cls, checkpoint=state, subfolder=part, config=str(src.config_dir), torch_dtype=dtype,
        local_files_only=True))


def load_tokenizer(src: ModelSource, part: str = "tokenizer") -> Any:
    from transformers import CLIPTokenizer

    folder = src.folder(part)
    if not folder.is_dir():
        raise ModelError(f"{src.path}: no {part}/ folder in {src.config_dir}")
    return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


def _convert(src: ModelSource, part: str, build) -> Any:
    state = _state(src, part)
    try:
        return build(state)
    except (ValueError, RuntimeError, KeyError, OSError) as err:
        raise ModelError(f"{src.path}: cannot build the {part} from this checkpoint with the configs in "
                         f"{src.config_dir} ({type(err).__name__}: {err}). If the model's shapes differ from "
                         f"standard {detect.LABELS.get(src.family, src.family)}, put its diffusers configs in "
                         f"{single_file.sidecar_config(src.path)}/") from err
