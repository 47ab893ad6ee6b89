"""What a model file or folder is, from its tensor names and shapes: SD 1.x, SD 2.x, SDXL base, a LoRA,
a VAE, or something we cannot train on; whether it predicts v; and whether the file is whole.

Safetensors headers are read directly (8-byte length + JSON), so a 7 GB checkpoint is classified in
milliseconds without torch and a truncated download is caught before any loader sees it; pickle
checkpoints (.ckpt) are described from their pickle, also without torch (backend.models.ckpt).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import ModelError

MAX_HEADER = 100 * 1024 * 1024
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
WEIGHT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
LABELS = {"sd15": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL base", "flux": "Flux.1"}
TRAINABLE = ("sd15", "sdxl", "flux")
BASE_VERSION = {("sd15", "epsilon"): "sd_v1", ("sd15", "v_prediction"): "sd_v1_v",
                ("sd2", "epsilon"): "sd_v2", ("sd2", "v_prediction"): "sd_v2_v",
                ("sdxl", "epsilon"): "sdxl_base_v1-0", ("sdxl", "v_prediction"): "sdxl_base_v1-0",
                ("flux", "epsilon"): "flux1"}
# A Flux transformer file (BFL layout), bare or under ComfyUI's all-in-one prefix; guidance_in = [dev].
FLUX_PREFIXES = ("", "model.diffusion_model.")
T5_MARK = "encoder.block.0.layer.0.SelfAttention.q.weight"
CLIP_MARKS = ("text_model.embeddings.token_embedding.weight", "embeddings.token_embedding.weight")


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Header:
    """A safetensors header: tensors by name, the `__metadata__` strings, and the byte sizes."""
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_bytes: int
    file_bytes: int


@dataclass(frozen=True)
class Detected:
    """kind: checkpoint | lora | vae | unet | text_encoder | unknown. family: sd15 | sd2 | sdxl | flux | None.
    variant: Flux "dev" or "schnell"; a text encoder's "t5" or "clip-<width>"; a VAE's "<n>ch" latents."""
    kind: str
    family: str | None
    prediction: str = "epsilon"
    prediction_known: bool = False
    zero_terminal_snr: bool = False
    evidence: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    variant: str = ""

    @property
    def label(self) -> str:
        base = LABELS.get(self.family or "", "unknown family")
        if self.family == "flux" and self.variant:
            return f"{base} [{self.variant}]"
        return base + (" v-prediction" if self.prediction == "v_prediction" else "")

    def describe(self) -> str:
        """One line for logs and the UI, e.g. "SDXL base checkpoint (v-prediction, zero terminal SNR)"."""
        bits = []
        if self.prediction == "v_prediction":
            bits.append("v-prediction")
        if self.zero_terminal_snr:
            bits.append("zero terminal SNR")
        extra = f" ({', '.join(bits)})" if bits else ""
        return f"{LABELS.get(self.family or '', 'unknown')} {self.kind}{extra}; found {self.evidence}".strip()

    @property
    def base_model_version(self) -> str | None:
        """`ss_base_model_version` as sd-scripts writes it for this family."""
        return BASE_VERSION.get((self.family or "", self.prediction))


def read_header(path: Path) -> Header:
    """Parse a .safetensors header and check that the file holds every byte it promises."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ModelError(f"{path}: not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise ModelError(f"{path}: not a safetensors file, or truncated inside its header "
                                 f"({size} bytes on disk). Download it again.")
            raw = fh.read(n)
    except OSError as err:
        raise ModelError(f"{path}: cannot read: {err.strerror or err}") from err
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: damaged safetensors header ({err}). Download it again.") from err
    if not isinstance(header, dict):
        raise ModelError(f"{path}: damaged safetensors header (not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    tensors, end = {}, 0
    for name, info in header.items():
        try:
            tensors[name] = TensorInfo(str(info["dtype"]), tuple(int(d) for d in info["shape"]))
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise ModelError(f"{path}: damaged safetensors header entry {name!r}") from err
    expected = 8 + n + end
    if size < expected:
        raise ModelError(f"{path} is truncated: its header promises {expected:,} bytes, the file has "
                         f"{size:,} ({100 * size / expected:.1f} %). The download was probably cut off; "
                         "download it again.")
    if size > expected:
        raise ModelError(f"{path}: {size - expected:,} unexpected bytes after the tensors; the file is "
                         "damaged. Download it again.")
    return Header(tensors, {str(k): str(v) for k, v in meta.items()}, end, size)


def read_pickle_shapes(path: Path) -> dict[str, TensorInfo]:
    """Names, dtypes and shapes of a .ckpt/.pt state dict, read from its pickle without torch and
    without running any code (backend.models.ckpt)."""
    from backend.models.ckpt import state_dict_tensors

    return {name: TensorInfo(t.dtype, t.shape) for name, t in state_dict_tensors(path).items()}


def _prediction(names: set[str], meta: Mapping[str, str]) -> tuple[str, bool, bool]:
    """(prediction, known, zero_terminal_snr) from marker keys (`v_pred`, `ztsnr`, as NoobAI-v and
    sd-scripts' v-pred SDXL checkpoints carry them) or ModelSpec / sd-scripts metadata."""
    ztsnr = "ztsnr" in names or meta.get("ss_zero_terminal_snr", "").lower() == "true"
    spec = meta.get("modelspec.prediction_type", "").lower()
    if "v_pred" in names or spec in ("v", "v_prediction") or meta.get("ss_v_parameterization") == "True":
        return "v_prediction", True, ztsnr
    if spec in ("epsilon", "eps"):
        return "epsilon", True, ztsnr
    return "epsilon", False, ztsnr


def classify(tensors: Mapping[str, TensorInfo], meta: Mapping[str, str] | None = None,
             source: str = "") -> Detected:
    """Classify a state dict by its names and shapes. Never raises: unknown things are kind "unknown"."""
    meta = meta or {}
    names = set(tensors)
    where = f"{source}: " if source else ""
    pred, known, ztsnr = _prediction(names, meta)
    if any(k.startswith(("lora_unet_", "lora_te", "lycoris_")) for k in names):
        return _classify_lora(names, meta, pred, known)
    if any(".lora_A." in k or ".lora_down." in k or "_lora.down." in k for k in names):
        fam = "sdxl" if any(k.startswith("text_encoder_2.") for k in names) else None
        return Detected("lora", fam, evidence="diffusers/PEFT LoRA keys (lora_A/lora_B)")
    unet_in = tensors.get("model.diffusion_model.input_blocks.0.0.weight")
    if unet_in is not None:
        notes: list[str] = []
        if len(unet_in.shape) == 4 and unet_in.shape[1] != 4:
            notes.append(f"the UNet takes {unet_in.shape[1]} input channels (an inpainting or instruct "
                         "model), not 4")
        if not any(k.startswith("first_stage_model.") for k in names):
            notes.append("no VAE weights (first_stage_model.*)")
        if any(k.startswith("conditioner.embedders.1.model.") for k in names):
            fam, ev = "sdxl", "conditioner.embedders.1 (OpenCLIP bigG) + label_emb"
            if not any(k.startswith("conditioner.embedders.0.transformer.") for k in names):
                notes.append("no CLIP-L text encoder (conditioner.embedders.0)")
        elif any(k.startswith("conditioner.embedders.0.model.") for k in names):
            return Detected("checkpoint", None, pred, known, ztsnr, "conditioner.embedders.0.model only",
                            (f"{where}an SDXL refiner (one OpenCLIP encoder): LoRA training needs an SDXL "
                             "base model",))
        elif any(k.startswith("cond_stage_model.model.") for k in names):
            fam, ev = "sd2", "cond_stage_model.model (OpenCLIP ViT-H)"
        elif any(k.startswith("cond_stage_model.transformer.") for k in names):
            fam, ev = "sd15", "cond_stage_model.transformer (CLIP ViT-L)"
        elif "model.diffusion_model.label_emb.0.0.weight" in names:
            fam, ev = "sdxl", "label_emb (SDXL UNet)"
            notes.append("no text encoders (conditioner.*)")
        else:
            fam, ev = "sd15", "model.diffusion_model (LDM UNet)"
            notes.append("no text encoder (cond_stage_model.*)")
        return Detected("checkpoint", fam, pred, known, ztsnr, ev, tuple(notes))
    flux = _classify_flux(tensors, names)
    if flux is not None:
        return flux
    if "conv_in.weight" in names and any(k.startswith("down_blocks.") for k in names):
        fam = "sdxl" if "add_embedding.linear_1.weight" in names else None
        return Detected("unet", fam, pred, known, ztsnr, "diffusers UNet weights (conv_in, down_blocks)")
    if "encoder.conv_in.weight" in names and "decoder.conv_out.weight" in names:
        out = tensors.get("encoder.conv_out.weight")  # 2 × latent channels (mean and log-variance)
        channels = out.shape[0] // 2 if out is not None and out.shape else 0
        what = f"a VAE with {channels} latent channels" if channels else "a VAE"
        return Detected("vae", None, evidence=f"encoder/decoder weights ({what})",
                        variant=f"{channels}ch" if channels else "")
    if T5_MARK in names:
        return Detected("text_encoder", None, evidence="encoder.block.* (a T5 text encoder)", variant="t5")
    clip = next((tensors[k] for k in CLIP_MARKS if k in tensors), None)
    if clip is not None and len(clip.shape) == 2:
        return Detected("text_encoder", None, evidence=f"a CLIP text encoder ({clip.shape[1]} wide)",
                        variant=f"clip-{clip.shape[1]}")
    for marker, name in (("joint_blocks.", "SD3"), ("model.diffusion_model.joint_blocks.", "SD3")):
        if any(k.startswith(marker) for k in names):
            return Detected("unknown", None, evidence=f"{marker}* ({name})",
                            notes=(f"{where}a {name} model; LoRA Dash trains SD 1.x, SDXL and Flux.1",))
    return Detected("unknown", None, evidence=f"{len(names)} tensors, none of the SD/SDXL/Flux layouts")


def _classify_flux(tensors: Mapping[str, TensorInfo], names: set[str]) -> Detected | None:
    """A Flux.1 transformer in the BFL layout (flux1-dev.safetensors), [dev] when it has the guidance
    input (`guidance_in`), as diffusers' single-file loader tells them apart."""
    for prefix in FLUX_PREFIXES:
        if f"{prefix}double_blocks.0.img_attn.qkv.weight" not in names:
            continue
        variant = "dev" if f"{prefix}guidance_in.in_layer.weight" in names else "schnell"
        notes: list[str] = []
        img_in = tensors.get(f"{prefix}img_in.weight")
        if img_in is not None and len(img_in.shape) == 2 and img_in.shape[1] != 64:
            notes.append(f"the transformer takes {img_in.shape[1]} input channels (a Fill, Depth or other "
                         "tool model), not 64")
        return Detected("checkpoint", "flux", "epsilon", False, False,
                        f"{prefix}double_blocks.* (Flux transformer, BFL layout)", tuple(notes), variant)
    return None


def _classify_lora(names: set[str], meta: Mapping[str, str], pred: str, known: bool) -> Detected:
    base = meta.get("ss_base_model_version", "")
    if base.startswith("flux") or meta.get("modelspec.architecture", "").startswith("flux-1"):
        fam, ev = "flux", f"ss_base_model_version={base or '?'}"
    elif any(k.startswith(("lora_unet_double_blocks_", "lora_unet_single_blocks_",
                           "lora_unet_single_transformer_blocks_")) for k in names):
        fam, ev = "flux", "Flux transformer block keys"
    elif base.startswith("sdxl"):
        fam, ev = "sdxl", f"ss_base_model_version={base}"
    elif base.startswith("sd_v2") or meta.get("ss_v2") == "True":
        fam, ev = "sd2", f"ss_base_model_version={base or '?'} / ss_v2"
    elif base.startswith("sd_v1"):
        fam, ev = "sd15", f"ss_base_model_version={base}"
    elif any(k.startswith(("lora_te1_", "lora_te2_")) for k in names):
        fam, ev = "sdxl", "lora_te1_/lora_te2_ keys"
    elif any(k.startswith(("lora_unet_input_blocks_", "lora_unet_output_blocks_")) for k in names):
        fam, ev = "sdxl", "SGM-named UNet keys (input_blocks_…)"
    elif any(k.startswith("lora_te_") for k in names):
        fam, ev = "sd15", "lora_te_ keys"
    elif any(k.startswith("lora_unet_down_blocks_0_attentions") for k in names):
        fam, ev = "sd15", "attention in down_blocks_0 (SD 1.x UNet)"
    elif any("_transformer_blocks_1_" in k for k in names):
        fam, ev = "sdxl", "several transformer blocks per attention (SDXL UNet)"
    else:
        fam, ev = None, "UNet keys only"
    if base.endswith("_v"):
        pred, known = "v_prediction", True
    return Detected("lora", fam, pred, known, evidence=ev)


def detect_folder(path: Path) -> Detected:
    """A diffusers pipeline folder (model_index.json), from its configs."""
    index = path / "model_index.json"
    try:
        info = json.loads(index.read_text(encoding="utf-8"))
        if str(info.get("_class_name", "")).startswith("Flux"):
            return _flux_folder(path, info)
        unet = json.loads((path / "unet" / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelError(f"{path}: not a diffusers pipeline folder (missing {Path(err.filename).name}); "
                         "pick the folder that holds model_index.json, or a single .safetensors file") from err
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: cannot read its configs ({err})") from err
    cls = str(info.get("_class_name", ""))
    try:
        sched = json.loads((path / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        sched = {}
    pred = sched.get("prediction_type", "epsilon")
    ztsnr = bool(sched.get("rescale_betas_zero_snr", False))
    if "XL" in cls or unet.get("addition_embed_type") == "text_time":
        fam = "sdxl"
    elif unet.get("cross_attention_dim") == 1024:
        fam = "sd2"
    elif cls.startswith("StableDiffusion"):
        fam = "sd15"
    else:
        return Detected("unknown", None, evidence=f"pipeline class {cls or '?'}",
                        notes=(f"{path}: a {cls or 'non-SD'} pipeline; LoRA Dash trains SD 1.x and SDXL",))
    notes = ()
    if unet.get("in_channels", 4) != 4:
        notes = (f"the UNet takes {unet.get('in_channels')} input channels (inpainting), not 4",)
    return Detected("diffusers", fam, pred, "prediction_type" in sched, ztsnr, f"{cls} configs", notes)


def _flux_folder(path: Path, info: Mapping) -> Detected:
    """A FluxPipeline folder: [dev] when its transformer has the guidance input."""
    cls = str(info.get("_class_name"))
    transformer = json.loads((path / "transformer" / "config.json").read_text(encoding="utf-8"))
    if cls != "FluxPipeline":
        return Detected("unknown", None, evidence=f"pipeline class {cls}",
                        notes=(f"{path}: a {cls} (a tool or editing pipeline); LoRA Dash trains the FluxPipeline "
                               "models, FLUX.1 [dev] and [schnell]",))
    variant = "dev" if transformer.get("guidance_embeds") else "schnell"
    notes = ()
    if transformer.get("in_channels", 64) != 64:
        notes = (f"the transformer takes {transformer.get('in_channels')} input channels, not 64",)
    return Detected("diffusers", "flux", "epsilon", False, False, f"{cls} configs", notes, variant)


def detect(path: Path) -> Detected:
    """Classify a file or a diffusers folder; ModelError if it cannot be read or is truncated."""
    path = Path(path)
    if path.is_dir():
        return detect_folder(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".safetensors":
        header = read_header(path)
        return classify(header.tensors, header.metadata, str(path))
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return classify(read_pickle_shapes(path), {}, str(path))
    raise ModelError(f"{path}: unsupported model file type {path.suffix!r}; use .safetensors "
                     "(or .ckpt), or a diffusers folder")


def require_trainable(det: Detected, path: Path, family: str | None = None) -> Detected:
    """`det` if it is a full SD 1.x/SDXL model or a Flux.1 transformer (of `family` when given); a
    ModelError that says what the file is and what to do otherwise."""
    if det.kind == "lora":
        raise ModelError(f"{path} is a LoRA ({det.label}), not a base model. Pick a full checkpoint as "
                         "model.path; a LoRA to continue from goes in network.network_weights.")
    if det.kind in ("vae", "unet"):
        raise ModelError(f"{path} holds only {'a VAE' if det.kind == 'vae' else 'UNet weights'}; pick a full "
                         "checkpoint (UNet + VAE + text encoders) or a diffusers folder"
                         + (" (a VAE goes in model.vae_path)" if det.kind == "vae" else ""))
    if det.kind == "text_encoder":
        field_name = "model.t5_path" if det.variant == "t5" else "model.clip_l_path"
        raise ModelError(f"{path} holds only a text encoder ({det.evidence}); for Flux it goes in {field_name}, "
                         "and model.path is the transformer file (flux1-dev.safetensors) or a diffusers folder")
    if det.family not in TRAINABLE or det.kind == "unknown":
        why = "; ".join(det.notes) or f"found {det.evidence}"
        raise ModelError(f"{path}: not a model LoRA Dash can train on ({why}). Supported: SD 1.x and SDXL "
                         "base checkpoints (.safetensors/.ckpt), Flux.1 [dev]/[schnell] transformer files, "
                         "and diffusers folders of these.")
    if det.notes:
        raise ModelError(f"{path}: {det.label} checkpoint, but " + "; ".join(det.notes))
    if family and det.family != family:
        article = "a" if det.family == "flux" else "an"
        raise ModelError(f"model.family is {family!r} but {path} is {article} {det.label} model; set "
                         f"model.family = {det.family!r} (or pick a {LABELS.get(family, family)} model)")
    return det


def check_prediction(det: Detected, path: Path, v_prediction: bool) -> None:
    """Refuse training a model marked v-prediction (a `v_pred` key, ModelSpec metadata, a diffusers
    scheduler config) as epsilon: the loss target would be wrong for every step. The other way round
    is allowed (epsilon marks are often just defaults of a converter)."""
    if det.prediction_known and det.prediction == "v_prediction" and not v_prediction:
        extra = " and loss.zero_terminal_snr = true" if det.zero_terminal_snr else ""
        raise ModelError(f"{path} is a v-prediction model (marked in the file or its scheduler config); set "
                         f"model.v_prediction = true{extra}")
