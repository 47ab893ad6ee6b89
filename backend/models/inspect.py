"""The model manager's view of `workspace/models`: what each file or folder is, how big, what precision,
and for LoRA files what their `ss_*` metadata says (network, rank, base model, trigger words, tags).

Only headers and configs are read, never the weights, so a folder of 7 GB checkpoints scans in
milliseconds. A file that cannot be read is listed with its error instead of hiding the rest.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backend.errors import ModelError
from backend.models import detect
from backend.models.download import PARTIAL_SUFFIX

MAX_DEPTH = 3
DTYPE_NAMES = {"F16": "fp16", "BF16": "bf16", "F32": "fp32", "F64": "fp64", "F8_E4M3": "fp8_e4m3",
               "F8_E5M2": "fp8_e5m2", "float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}


@dataclass
class LoraInfo:
    network_module: str = ""
    algo: str = ""
    rank: int | None = None
    alpha: float | None = None
    base_model: str = ""
    base_model_name: str = ""
    output_name: str = ""
    title: str = ""
    trigger_words: list[str] = field(default_factory=list)
    top_tags: list[tuple[str, int]] = field(default_factory=list)
    num_train_images: int | None = None
    steps: int | None = None
    epochs: int | None = None
    resolution: str = ""
    trains_text_encoder: bool = False
    modules: int = 0


@dataclass
class ModelInfo:
    path: str
    name: str
    kind: str  # checkpoint | diffusers | lora | vae | unet | partial | other | unknown | error
    family: str | None = None
    label: str = ""
    size_bytes: int = 0
    precision: str = ""
    prediction: str = ""
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    lora: LoraInfo | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def precision_of(dtypes: Counter) -> str:
    """The dominant floating dtype by element count ("fp16"), or "fp16+fp32" when two are large."""
    floats = {DTYPE_NAMES.get(k, k): v for k, v in dtypes.items() if DTYPE_NAMES.get(k, "").startswith(("fp", "bf"))}
    if not floats:
        return ""
    total = sum(floats.values())
    main = sorted((n for n, c in floats.items() if c >= 0.1 * total), key=lambda n: -floats[n])
    return "+".join(main)


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "", "None") else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "None") else None
    except ValueError:
        return None


def _json(value: str | None) -> object:
    if not value:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return None


def lora_info(header: detect.Header, top_n: int = 20) -> LoraInfo:
    """What a LoRA file says about itself: sd-scripts `ss_*` metadata, ModelSpec, else its shapes."""
    meta, tensors = header.metadata, header.tensors
    args = _json(meta.get("ss_network_args"))
    args = args if isinstance(args, dict) else {}
    module = meta.get("ss_network_module", "")
    algo = str(args.get("algo", "")) or ("lora" if module == "networks.lora" else "")
    if not algo:
        if any(".lokr_w1" in k for k in tensors):
            algo = "lokr"
        elif any(".hada_w1_a" in k for k in tensors):
            algo = "loha"
        elif any(".lora_down." in k for k in tensors):
            algo = "lora"
    rank = _int(meta.get("ss_network_dim"))
    if rank is None:
        downs = [t.shape[0] for k, t in tensors.items() if k.endswith(".lora_down.weight")]
        rank = max(downs) if downs else None
    modules = {k.split(".", 1)[0] for k in tensors}
    triggers: list[str] = []
    for key in ("modelspec.trigger_phrase", "ss_trigger_words", "loradash.trigger_words"):
        raw = meta.get(key, "")
        parsed = _json(raw)
        words = parsed if isinstance(parsed, list) else [w.strip() for w in raw.split(",")]
        triggers += [str(w) for w in words if str(w).strip() and str(w) not in triggers]
    tags: Counter = Counter()
    freq = _json(meta.get("ss_tag_frequency"))
    if isinstance(freq, dict):
        for per_dir in freq.values():
            if isinstance(per_dir, dict):
                tags.update({str(t): int(c) for t, c in per_dir.items() if isinstance(c, int | float)})
    return LoraInfo(
        network_module=module, algo=algo, rank=rank, alpha=_float(meta.get("ss_network_alpha")),
        base_model=meta.get("ss_base_model_version", ""), base_model_name=meta.get("ss_sd_model_name", ""),
        output_name=meta.get("ss_output_name", ""), title=meta.get("modelspec.title", ""),
        trigger_words=triggers, top_tags=tags.most_common(top_n),
        num_train_images=_int(meta.get("ss_num_train_images")), steps=_int(meta.get("ss_steps")),
        epochs=_int(meta.get("ss_epoch")), resolution=meta.get("ss_resolution", ""),
        trains_text_encoder=any(m.startswith("lora_te") for m in modules), modules=len(modules))


def _from_detected(info: ModelInfo, det: detect.Detected) -> ModelInfo:
    info.kind, info.family = det.kind, det.family
    info.label = det.label if det.family else ""
    info.prediction = det.prediction if det.prediction_known or det.prediction != "epsilon" else ""
    info.notes = list(det.notes)
    return info


def inspect_file(path: Path) -> ModelInfo:
    """One weights file: kind, family, size, precision, LoRA metadata. Errors become `info.error`."""
    path = Path(path)
    info = ModelInfo(str(path), path.name, "unknown")
    try:
        info.size_bytes = path.stat().st_size
        if path.suffix.lower() == ".safetensors":
            header = detect.read_header(path)
            tensors = header.tensors
            _from_detected(info, detect.classify(tensors, header.metadata, str(path)))
            if info.kind == "lora":
                info.lora = lora_info(header)
        else:
            tensors = detect.read_pickle_shapes(path)  # from the pickle, without torch
            _from_detected(info, detect.classify(tensors, {}, str(path)))
            info.notes.append("pickle checkpoint: prefer .safetensors (loads faster, runs no code)")
        counts: Counter = Counter()
        for t in tensors.values():
            n = 1
            for d in t.shape:
                n *= d
            counts[t.dtype] += n
        info.precision = precision_of(counts)
    except ModelError as err:
        info.kind, info.error = "error", str(err)
    return info


def inspect_folder(path: Path) -> ModelInfo:
    """A diffusers pipeline folder (model_index.json): family from its configs, size of its weights."""
    path = Path(path)
    info = ModelInfo(str(path), path.name, "diffusers")
    try:
        _from_detected(info, detect.detect_folder(path))
    except ModelError as err:
        info.kind, info.error = "error", str(err)
    weights = [p for p in path.rglob("*") if p.is_file() and p.suffix in detect.WEIGHT_SUFFIXES]
    info.size_bytes = sum(p.stat().st_size for p in weights)
    counts: Counter = Counter()
    for p in weights:
        if p.suffix == ".safetensors" and p.parent.name == "unet":
            try:
                for t in detect.read_header(p).tensors.values():
                    counts[t.dtype] += 1
            except ModelError as err:
                info.notes.append(str(err))
    info.precision = precision_of(counts)
    return info


def _other_folder(path: Path) -> ModelInfo | None:
    """A Hugging Face model folder that is not a diffusers pipeline (config.json or *.onnx inside)."""
    files = [p for p in path.iterdir() if p.is_file()]
    if not any(p.suffix == ".onnx" or p.name == "config.json" for p in files):
        return None
    return ModelInfo(str(path), path.name, "other", size_bytes=sum(p.stat().st_size for p in files),
                     notes=["not a Stable Diffusion model (a tagger, captioner or other helper model)"])


def scan_models(models_dir: Path) -> list[ModelInfo]:
    """Every model under `models_dir` (sub-folders up to three deep), sorted by path. Hidden entries,
    `<stem>.config/` folders beside checkpoints and `*.partial` download folders are skipped;
    unfinished file downloads (`*.partial`) are listed as kind "partial"."""
    models_dir = Path(models_dir)
    found: list[ModelInfo] = []

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError as err:
            found.append(ModelInfo(str(folder), folder.name, "error", error=f"cannot list: {err}"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if entry.name.endswith((".config", PARTIAL_SUFFIX)):
                    continue
                if (entry / "model_index.json").is_file():
                    found.append(inspect_folder(entry))
                elif (other := _other_folder(entry)) is not None:
                    found.append(other)
                elif depth < MAX_DEPTH:
                    walk(entry, depth + 1)
            elif entry.name.endswith(PARTIAL_SUFFIX):
                found.append(ModelInfo(str(entry), entry.name[:-len(PARTIAL_SUFFIX)], "partial",
                                       size_bytes=entry.stat().st_size,
                                       notes=["unfinished download; downloading the same URL again resumes it"]))
            elif entry.suffix.lower() in detect.WEIGHT_SUFFIXES:
                found.append(inspect_file(entry))

    if models_dir.is_dir():
        walk(models_dir, 1)
    return sorted(found, key=lambda m: m.path)


def check_lora_for_model(lora_path: Path, family: str) -> detect.Detected:
    """Refuse a LoRA (network.network_weights) made for another family than the model being trained."""
    lora_path = Path(lora_path)
    if not lora_path.is_file():
        raise ModelError(f"network.network_weights: {lora_path} does not exist; pick a .safetensors LoRA file "
                         "to start from, or leave it empty")
    det = detect.detect(lora_path)
    if det.kind != "lora":
        raise ModelError(f"network.network_weights: {lora_path} is not a LoRA file ({det.describe()})")
    if det.family and det.family != family:
        raise ModelError(f"network.network_weights: {lora_path} is an {det.label} LoRA ({det.evidence}) but the "
                         f"model is {detect.LABELS.get(family, family)}; its layers do not exist in this model. "
                         "Pick a LoRA trained on the same family, or leave network_weights empty.")
    return det
