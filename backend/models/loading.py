"""Loading pieces shared by the families: diffusers folder checks, fingerprints, kohya name views.

Everything loads offline (`local_files_only`), from safetensors where the folder has them (memory
mapped, no second copy), onto the meta device first (`low_cpu_mem_usage`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from backend.errors import ModelError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt")
_FINGERPRINT_CHUNK = 1 << 20


def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES) \
        if folder.is_dir() else []


def check_diffusers_folder(path: Path, components: dict[str, str], what: str) -> None:
    """Raise ModelError naming each missing piece of a diffusers pipeline folder.

    `components` maps a subfolder to what it must hold: "weights" (config.json + a weights file),
    "config" (a *config.json), or "tokenizer" (vocab/tokenizer files).
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model path {path} does not exist; pick a diffusers folder ({what})")
    missing: list[str] = []
    if not (path / "model_index.json").is_file():
        missing.append("model_index.json")
    for sub, kind in components.items():
        folder = path / sub
        if not folder.is_dir():
            missing.append(f"{sub}/")
            continue
        if kind == "weights":
            if not (folder / "config.json").is_file():
                missing.append(f"{sub}/config.json")
            if not weight_files(folder):
                missing.append(f"{sub}/ weights (*.safetensors or *.bin)")
        elif kind == "config" and not any(folder.glob("*config.json")):
            missing.append(f"{sub}/*config.json")
        elif kind == "tokenizer" and not ((folder / "vocab.json").is_file() or (folder / "tokenizer.json").is_file()):
            missing.append(f"{sub}/vocab.json or tokenizer.json")
    if missing:
        raise ModelError(f"{path} is not a complete diffusers pipeline ({what}): missing "
                         + ", ".join(missing))


def weights_fingerprint(path: Path) -> str:
    """Cheap identity of a weights file or folder: names, sizes, configs and the first/last MiB.

    Reading whole multi-GB files on every start would cost seconds; a change in training weights
    changes their bytes near both ends in practice (headers, first and last tensors) and the size.
    """
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name.endswith(".json")))
    if not files:
        raise ModelError(f"no weights found at {path}")
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with f.open("rb") as fh:
            h.update(fh.read(_FINGERPRINT_CHUNK))
            if size > 2 * _FINGERPRINT_CHUNK:
                fh.seek(size - _FINGERPRINT_CHUNK)
                h.update(fh.read(_FINGERPRINT_CHUNK))
    return h.hexdigest()[:16]


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"cannot read {path}: {err}") from err


def kohya_text_model_view(encoder: Any) -> Any:
    """A module whose `text_model` is `encoder`, so LyCORIS names adapters `lora_te_text_model_…`.

    transformers 5 flattened CLIPTextModel (no `.text_model`); ComfyUI, A1111 and diffusers still
    expect `lora_te_text_model_encoder_layers_…`. Encoders that still have `.text_model` pass through.
    """
    import torch

    if hasattr(encoder, "text_model"):
        return encoder

    class TextModelView(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.text_model = inner

    return TextModelView(encoder)


def freeze(module: Any) -> Any:
    module.requires_grad_(False)
    module.eval()
    return module


def load_vae_any(vae_path: str | Path, model_vae_dir: Path, *, dtype: Any) -> Any:
    """A custom VAE: a diffusers VAE folder, a pipeline folder with vae/, or a single file."""
    from diffusers import AutoencoderKL

    p = Path(vae_path)
    if not p.exists():
        raise ModelError(f"model.vae_path: {p} does not exist")
    if p.is_dir():
        folder = p / "vae" if (p / "vae" / "config.json").is_file() else p
        if not (folder / "config.json").is_file() or not weight_files(folder):
            raise ModelError(f"model.vae_path: {p} is not a diffusers VAE folder "
                             "(needs config.json and a weights file)")
        return AutoencoderKL.from_pretrained(folder, torch_dtype=dtype, local_files_only=True,
                                             low_cpu_mem_usage=True)
    if p.suffix not in (".safetensors", ".ckpt", ".pt"):
        raise ModelError(f"model.vae_path: {p} is neither a folder nor a .safetensors/.ckpt file")
    try:
        return AutoencoderKL.from_single_file(str(p), config=str(model_vae_dir), torch_dtype=dtype,
                                              local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelError(f"model.vae_path: cannot load {p} as a VAE ({err})") from err
