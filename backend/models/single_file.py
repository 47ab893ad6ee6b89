"""Single-file checkpoints (the original LDM/SGM layout Civitai and A1111 use), loaded and written offline.

`from_single_file(path)` alone asks the Hugging Face hub for the architecture configs and tokenizers.
We ship those configs in `configs/<family>/` and derive the CLIP tokenizer files from the shipped BPE
merges; the two are assembled once into a cache folder (no weights), and every load passes it as
`config=` with `local_files_only=True`, so loading never touches the network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.errors import ModelError
from backend.models import clip_vocab, detect, ldm_keys
from backend.paths import WorkspacePaths

SHIPPED = Path(__file__).resolve().parent / "configs"
# Tokenizer folders per family and their pad token: CLIP-L pads with <|endoftext|>, OpenCLIP with "!".
TOKENIZERS = {"sd15": {"tokenizer": clip_vocab.EOS}, "sd2": {"tokenizer": "!"},
              "flux-dev": {"tokenizer": clip_vocab.EOS}, "flux-schnell": {"tokenizer": clip_vocab.EOS},
              "sdxl": {"tokenizer": clip_vocab.EOS, "tokenizer_2": "!"}}


def cache_root(paths: WorkspacePaths) -> Path:
    """Where the assembled config folders live: `<workspace>/.cache/model-configs`."""
    return paths.root / ".cache" / "model-configs"


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode())
        h.update(f.read_bytes())
    h.update(clip_vocab.BPE_FILE.read_bytes())
    return h.hexdigest()[:12]


def shipped_config(family: str, root: Path) -> Path:
    """The diffusers config folder of `family` (sd15, sd2, sdxl): model_index.json, component configs
    and tokenizer files, no weights. Built under `root` on first use; later calls reuse it."""
    if family not in TOKENIZERS:
        raise ModelError(f"no shipped configs for model family {family!r}; known: {', '.join(TOKENIZERS)}")
    src = SHIPPED / family
    dest = root / f"{family}-{_digest(src)}"
    if (dest / "model_index.json").is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{family}-"))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        derived = clip_vocab.derive()
        for sub, pad in TOKENIZERS[family].items():
            clip_vocab.write_tokenizer(tmp / sub, pad, derived)
        _make_readable(tmp)
        try:
            os.replace(tmp, dest)  # whole folder appears at once; readers never see half of it
        except OSError:
            if not (dest / "model_index.json").is_file():  # not a concurrent builder winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def write_config_folder(pipe: Any, dest: Path) -> Path:
    """Save `pipe`'s configs and tokenizers (no weights) into `dest`: a `config=` folder for its own
    architecture, e.g. for a tiny test model whose shapes differ from the shipped ones."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    pipe.save_config(dest)
    for name, module in pipe.components.items():
        if module is None:
            continue
        sub = dest / name
        if hasattr(module, "save_config"):  # diffusers models and schedulers
            module.save_config(sub)
        elif hasattr(module, "config") and hasattr(module.config, "save_pretrained"):
            module.config.save_pretrained(sub)  # transformers models: config.json only
        elif hasattr(module, "save_pretrained"):
            module.save_pretrained(sub)  # tokenizers
    return dest


def to_single_file(pipe: Any, family: str) -> dict[str, Any]:
    """`pipe`'s weights in the original single-file layout (`model.diffusion_model.…`,
    `first_stage_model.…`, `cond_stage_model.…` or `conditioner.embedders.N.…`)."""
    state = {}
    state.update(ldm_keys.unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    state.update(ldm_keys.vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    te = pipe.text_encoder.state_dict()
    if family == "sd15":
        state.update(ldm_keys.clip_to_ldm(te, ldm_keys.CLIP_PREFIX["sd15"]))
    elif family == "sd2":
        state.update(ldm_keys.open_clip_to_ldm(te, ldm_keys.OPEN_CLIP_PREFIX["sd2"]))
    elif family == "sdxl":
        state.update(ldm_keys.clip_to_ldm(te, ldm_keys.CLIP_PREFIX["sdxl"]))
        state.update(ldm_keys.open_clip_to_ldm(pipe.text_encoder_2.state_dict(),
                                                ldm_keys.OPEN_CLIP_PREFIX["sdxl"]))
    else:
        raise ModelError(f"cannot write a single file for family {family!r}")
    return state


def save_single_file(pipe: Any, path: Path, family: str, dtype: Any = None,
                     metadata: dict[str, str] | None = None) -> Path:
    """Write `pipe` as one .safetensors in the original layout (temp file + rename). A v-prediction
    scheduler adds the `v_pred` marker key (and `ztsnr` with zero-terminal SNR), as NoobAI-v does."""
    import torch
    from safetensors.torch import save_file

    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
             for k, v in to_single_file(pipe, family).items()}
    sched = pipe.scheduler.config
    if sched.get("prediction_type") == "v_prediction":
        state["v_pred"] = torch.zeros(0)
        if sched.get("rescale_betas_zero_snr"):
            state["ztsnr"] = torch.zeros(0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt", **(metadata or {})})
        _make_readable(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _make_readable(path: Path) -> None:
    """mkdtemp/mkstemp create private entries (0700/0600): give them the modes the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def sidecar_config(checkpoint: Path) -> Path:
    """`<stem>.config/` beside a checkpoint: the architecture configs of a model whose shapes differ
    from the shipped ones (the tiny demo, an unusual fine-tune). Used instead of the shipped configs."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".config")


def write_single_file_model(pipe: Any, checkpoint: Path, family: str,
                            metadata: dict[str, str] | None = None) -> Path:
    """Write `pipe` as `checkpoint` (original layout) plus its `<stem>.config/` folder, each appearing
    whole (built under temporary names, then renamed)."""
    checkpoint = Path(checkpoint)
    cfg = sidecar_config(checkpoint)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    tmp_cfg = Path(tempfile.mkdtemp(prefix=f".{cfg.name}.", dir=checkpoint.parent))
    try:
        write_config_folder(pipe, tmp_cfg)
        _make_readable(tmp_cfg)
        if cfg.exists():
            shutil.rmtree(cfg)
        os.replace(tmp_cfg, cfg)
    finally:
        shutil.rmtree(tmp_cfg, ignore_errors=True)
    return save_single_file(pipe, checkpoint, family, metadata=metadata)


@dataclass
class Loaded:
    pipe: Any
    detected: detect.Detected
    config_dir: Path | None

    @property
    def message(self) -> str:
        return f"loaded {self.detected.describe()}"


def default_configs_root() -> Path:
    """Where config folders are assembled when no workspace is given: ~/.cache/lora-dash/model-configs."""
    return Path.home() / ".cache" / "lora-dash" / "model-configs"


def resolve_config_dir(checkpoint: Path, family: str, config_dir: Path | None = None,
                       configs_root: Path | None = None) -> Path:
    """The `config=` folder for a single file: `config_dir` if given, else the `<stem>.config/` beside
    the file, else the shipped configs of `family` (assembled under `configs_root`)."""
    if config_dir is not None:
        return Path(config_dir)
    side = sidecar_config(checkpoint)
    if (side / "model_index.json").is_file():
        return side
    return shipped_config(family, configs_root or default_configs_root())


def _pipeline_class(family: str) -> Any:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline


def set_prediction(pipe: Any, prediction_type: str, zero_terminal_snr: bool = False) -> None:
    """Give `pipe` a scheduler of the same kind that predicts `prediction_type` (epsilon, v_prediction)."""
    # Overrides as keyword arguments: a config dict's `_use_default_values` would reset them.
    import inspect

    from diffusers import EulerDiscreteScheduler

    extra: dict[str, Any] = {"prediction_type": prediction_type}
    cls = pipe.scheduler.__class__
    if zero_terminal_snr:
        extra.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")  # sample from the last step
        if "rescale_betas_zero_snr" not in inspect.signature(cls.__init__).parameters:
            cls = EulerDiscreteScheduler  # e.g. PNDM cannot rescale its betas
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)


def load_pipeline(path: Path, *, family: str | None = None, config_dir: Path | None = None,
                  configs_root: Path | None = None, torch_dtype: Any = None,
                  prediction_type: str | None = None, zero_terminal_snr: bool | None = None) -> Loaded:
    """Load a single-file checkpoint or a diffusers folder offline, after checking what it is.

    `family` (sd15/sdxl) must match the file when given. `config_dir` overrides the shipped configs
    (a model of another architecture); otherwise the shipped ones are assembled under `configs_root`.
    `prediction_type`/`zero_terminal_snr` override what the file says (e.g. model.v_prediction)."""
    path = Path(path)
    det = detect.require_trainable(detect.detect(path), path, family)
    if det.family == "flux":
        raise ModelError(f"{path}: a Flux model ({det.evidence}); this loader reads SD 1.x and SDXL pipelines. "
                         "Flux loads through its family (backend.models.flux) with its CLIP-L, T5 and AE files")
    cls = _pipeline_class(det.family)
    cfg_dir = None
    try:
        if det.kind == "diffusers":
            pipe = cls.from_pretrained(str(path), local_files_only=True, torch_dtype=torch_dtype,
                                       safety_checker=None) if det.family != "sdxl" else \
                cls.from_pretrained(str(path), local_files_only=True, torch_dtype=torch_dtype)
        else:
            cfg_dir = resolve_config_dir(path, det.family, config_dir, configs_root)
            pipe = cls.from_single_file(str(path), config=str(cfg_dir), local_files_only=True,
                                        torch_dtype=torch_dtype)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise ModelError(f"{path}: could not load it as an {det.label} model: {err}") from err
    pred = prediction_type or det.prediction
    ztsnr = det.zero_terminal_snr if zero_terminal_snr is None else zero_terminal_snr
    if pred != pipe.scheduler.config.get("prediction_type") or ztsnr:
        set_prediction(pipe, pred, ztsnr)
    if pred != det.prediction or ztsnr != det.zero_terminal_snr:
        det = detect.Detected(det.kind, det.family, pred, True, ztsnr, det.evidence, det.notes)
    return Loaded(pipe, det, cfg_dir)
