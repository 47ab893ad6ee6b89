"""Models and datasets for the checks before a job starts: real architectures without their weights.

A checkpoint here is a real .safetensors file whose tensors are the few that model detection reads
(tiny placeholders), with the diffusers configs of the architecture in the `<stem>.config/` folder
beside it (as the SDXL demo is stored) or, without one, the configs LoRA Dash ships for the family.
Validation reads exactly these; a worker given such a file would fail to load weights, which is why
tests that train use the demo models instead.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from PIL import Image

from backend.models.layers import SHIPPED_CONFIGS

MARKERS = {
    "sd15": ("model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.encoder.conv_in.weight",
             "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"),
    "sdxl": ("model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.encoder.conv_in.weight",
             "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
             "conditioner.embedders.1.model.token_embedding.weight"),
}


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None) -> Path:
    """A valid .safetensors file of float32 zeros with these tensor names and shapes."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, shape in shapes.items():
        size = 4
        for d in shape:
            size *= d
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x00" * offset)
    return path


def stub_checkpoint(path: Path, family: str, configs: dict[str, dict] | None = None) -> Path:
    """A single-file `family` checkpoint that model detection accepts; `configs` ({part: config.json
    dict}) go into its `<stem>.config/` folder, else the shipped configs of the family apply."""
    write_safetensors(path, {name: (1, 4, 1, 1) for name in MARKERS[family]})
    if configs:
        side = path.with_name(path.stem + ".config")
        (side).mkdir(parents=True, exist_ok=True)
        (side / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
        for part, cfg in configs.items():
            (side / part).mkdir(exist_ok=True)
            (side / part / "config.json").write_text(json.dumps(cfg))
    return path


FLUX_SHIPPED = ("flux-dev", "flux-schnell")


def architecture_configs(name: str) -> tuple[str, dict[str, dict]]:
    """(family, {part: config}) of a named architecture: sd15, sdxl, flux-dev and flux-schnell as shipped, and
    the tiny demos (demo-flux: its transformer and CLIP-L, the parts whose layers LyCORIS may adapt)."""
    if name in ("sd15", "sdxl"):
        parts = ("unet", "text_encoder") + (("text_encoder_2",) if name == "sdxl" else ())
        return name, {p: json.loads((SHIPPED_CONFIGS / name / p / "config.json").read_text()) for p in parts}
    if name in FLUX_SHIPPED:
        return "flux", {p: json.loads((SHIPPED_CONFIGS / name / p / "config.json").read_text())
                        for p in ("transformer", "text_encoder")}
    if name == "demo-flux":
        from backend.models import flux_demo

        return "flux", {"transformer": {**flux_demo.TRANSFORMER_CONFIG, "guidance_embeds": True},
                        "text_encoder": dict(flux_demo.CLIP_CONFIG)}
    from backend.models import demo, sdxl_demo  # (sdxl_demo imports torch: only when asked for)

    if name == "demo-sd15":
        return "sd15", {"unet": dict(demo.UNET_CONFIG), "text_encoder": dict(demo.TEXT_CONFIG)}
    if name == "demo-sdxl":
        return "sdxl", {"unet": dict(sdxl_demo.UNET_CONFIG), "text_encoder": dict(sdxl_demo.TE1_CONFIG),
                        "text_encoder_2": dict(sdxl_demo.TE2_CONFIG)}
    raise ValueError(name)


def stub_model(folder: Path, name: str) -> tuple[str, Path]:
    """(family, checkpoint path) of architecture `name` as a stub single file with its configs beside it
    (Flux: see `flux_stub`, whose model section also names the component files)."""
    family, configs = architecture_configs(name)
    if family == "flux":
        return family, Path(flux_stub(folder, name)["path"])
    shipped = name in ("sd15", "sdxl")
    return family, stub_checkpoint(folder / f"{name}.safetensors", family, None if shipped else configs)


# What detection reads of each Flux file (backend.models.detect): a BFL transformer, CLIP-L, T5, the 16-channel AE.
FLUX_COMPONENTS = {
    "clip_l_path": {"text_model.embeddings.token_embedding.weight": (4, 768)},
    "t5_path": {"encoder.block.0.layer.0.SelfAttention.q.weight": (1, 1)},
    "vae_path": {"encoder.conv_in.weight": (1, 3, 1, 1), "decoder.conv_out.weight": (3, 1, 1, 1),
                 "encoder.conv_out.weight": (32, 1, 1, 1)},
}


def flux_stub(folder: Path, name: str) -> dict[str, str]:
    """The model section (family, path and component files) of Flux architecture `name` with stub files:
    flux-dev and flux-schnell as BFL transformer files read through the shipped configs (with the CLIP-L,
    T5 and AE files a BFL file needs), demo-flux as a diffusers folder with the demo's configs and weight
    files that hold no tensors. Validation reads exactly these; a worker would fail to load the weights."""
    if name in FLUX_SHIPPED:
        marks = {"double_blocks.0.img_attn.qkv.weight": (1, 1), "img_in.weight": (1, 64)}
        if name == "flux-dev":
            marks["guidance_in.in_layer.weight"] = (1, 1)
        section = {"family": "flux", "path": str(write_safetensors(folder / f"{name}.safetensors", marks))}
        for key, tensors in FLUX_COMPONENTS.items():
            section[key] = str(write_safetensors(folder / f"{name}-{key.removesuffix('_path')}.safetensors", tensors))
        return section
    _, configs = architecture_configs(name)
    root = folder / name
    shutil.copytree(SHIPPED_CONFIGS / "flux-dev", root, dirs_exist_ok=True)
    (root / "transformer" / "config.json").write_text(json.dumps(
        {"_class_name": "FluxTransformer2DModel", **configs["transformer"]}))
    (root / "text_encoder" / "config.json").write_text(json.dumps(configs["text_encoder"]))
    for part in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        write_safetensors(root / part / "model.safetensors", {})
    for part in ("tokenizer", "tokenizer_2"):
        (root / part).mkdir(exist_ok=True)
        (root / part / "tokenizer.json").write_text("{}")
    return {"family": "flux", "path": str(root)}


def sd15_folder(folder: Path) -> Path:
    """An SD 1.5 diffusers folder with the real configs and weight files that hold no tensors: complete
    for every check before a job starts (backend.preflight); a worker given it fails at load time."""
    shutil.copytree(SHIPPED_CONFIGS / "sd15", folder)
    for part in ("unet", "vae", "text_encoder"):
        write_safetensors(folder / part / "model.safetensors", {})
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "vocab.json").write_text("{}")
    return folder


def tiny_dataset(folder: Path, count: int = 2) -> Path:
    """A flat dataset folder of `count` small PNG images with captions."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (64, 64), (30 * i, 100, 200)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"trig, image {i}\n", encoding="utf-8")
    return folder
