"""The model part of a training config against the files it names, read from headers and configs only
(no torch, milliseconds): another family's model, a Flux transformer without its text encoders or AE,
files of the wrong kind, settings that do not apply to the model. Each problem is (dotted field, what to
pick). `validate` runs these before a job is made; `FluxFamily.open` raises the same in the worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.errors import ModelError
from backend.models import detect

# Flux component options: (field, what it must hold, an example of the file users have).
FLUX_FILES = (
    ("model.clip_l_path", "clip", "the CLIP-L text encoder file (clip_l.safetensors)"),
    ("model.t5_path", "t5", "the T5-XXL text encoder file (t5xxl_fp16.safetensors)"),
    ("model.vae_path", "vae", "the Flux AE file (ae.safetensors)"),
)
FLUX_ONLY = ("model.clip_l_path", "model.t5_path")
SCHNELL_T5_LENGTH = 256


def _get(cfg: Any, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def flux_problems(cfg: Any) -> list[tuple[str, str]]:
    """The Flux part of `model_problems`: everything when model.family is flux; otherwise Flux options
    set for another family and a Flux model picked as SD/SDXL. A config of another family whose model
    is not Flux passes (its own checks are the generic path and model checks' to make)."""
    if cfg.model.family == "flux":
        return model_problems(cfg)
    problems = model_problems(cfg)
    path = Path(cfg.model.path) if cfg.model.path else None
    picked_flux = False
    if path is not None and path.exists():
        try:
            picked_flux = detect.detect(path).family == "flux"
        except ModelError:
            picked_flux = False
    return problems if picked_flux else [(f, m) for f, m in problems if f in FLUX_ONLY or f.startswith("model.t5")
                                         or f == "model.apply_t5_attn_mask" or f.startswith("flow.")]


def model_problems(cfg: Any) -> list[tuple[str, str]]:
    """Every problem of the config's model section (and the options that depend on the model)."""
    m = cfg.model
    if m.family != "flux":
        problems = [(f, "only Flux uses this file; leave it empty (or set model.family = 'flux')")
                    for f in FLUX_ONLY if _get(cfg, f)]
        if m.t5_max_length is not None or m.apply_t5_attn_mask:
            field = "model.t5_max_length" if m.t5_max_length is not None else "model.apply_t5_attn_mask"
            problems.append((field, "a Flux option (T5 text encoder); leave it at its default for "
                                    f"{detect.LABELS.get(m.family, m.family)}"))
        problems += _flow_options_set(cfg)
    else:
        problems = flux_setting_problems(cfg)
    path = Path(m.path) if m.path else None
    if path is None or not path.exists():
        return problems  # an empty or missing model.path is the generic path checks' to report
    try:
        det = detect.require_trainable(detect.detect(path), path, m.family)
    except ModelError as err:
        msg = str(err)
        return [*problems, ("model.family" if "set model.family" in msg else "model.path", msg)]
    if m.family == "flux":
        problems += flux_file_problems(det, {f: _get(cfg, f) for f, _, _ in FLUX_FILES})
        problems += flux_variant_problems(cfg, det.variant)
    return problems


def _flow_options_set(cfg: Any) -> list[tuple[str, str]]:
    """[flow] options changed on an SD family, which trains on its noise schedule and would ignore them."""
    flow = cfg.flow
    label = detect.LABELS.get(cfg.model.family, cfg.model.family)
    return [(f"flow.{name}", f"a Flux flow-matching option: {label} trains on its noise schedule and would "
                             f"ignore it; leave it at its default ({spec.default!r})")
            for name, spec in type(flow).model_fields.items() if getattr(flow, name) != spec.default]


def flux_setting_problems(cfg: Any) -> list[tuple[str, str]]:
    """Settings of the SD noise schedule that a flow-matching model has no use for, and sizes that do
    not pack into Flux's 2 × 2 latent tokens (16 px)."""
    out = []
    if cfg.model.v_prediction:
        out.append(("model.v_prediction", "Flux is trained by flow matching, not ε or v prediction; leave it off"))
    if cfg.model.clip_skip != 1:
        out.append(("model.clip_skip", "Flux uses CLIP-L's pooled output, which clip skip does not change; "
                                       "leave it at 1"))
    for key, what in (("min_snr_gamma", "flow.weighting_scheme weighs Flux's losses"),
                      ("noise_offset", "Flux's flow matching draws plain Gaussian noise"),
                      ("multires_noise_iterations", "Flux's flow matching draws plain Gaussian noise"),
                      ("zero_terminal_snr", "Flux's flow reaches pure noise at σ = 1 already")):
        if getattr(cfg.loss, key):
            out.append((f"loss.{key}", f"applies to SD/SDXL noise schedules; {what}: set it to 0 / off"))
    if cfg.network.train_norm:
        # LyCORIS 4.1.3 wraps every *Norm* module: the weightless LayerNorms crash its forward, the rest
        # (RMSNorm, AdaLayerNorm*) it cannot train. tests/test_preflight_property.py builds and runs it.
        out.append(("network.train_norm", "Flux's norms have nothing LyCORIS can train (its LayerNorms have no "
                                          "weights and crash the first step; its RMSNorms are not supported); "
                                          "set it to false (the norm modulation linears are adapted anyway with "
                                          "network.target attn-mlp or all)"))
    ds = cfg.dataset
    if ds.enable_bucket and ds.bucket_reso_steps % 16:
        out.append(("dataset.bucket_reso_steps", f"{ds.bucket_reso_steps} px: Flux packs 2 × 2 latents (16 px) "
                                                 "into a token; pick a multiple of 16 (64 is usual)"))
    if not ds.enable_bucket and ds.resolution % 16:
        out.append(("dataset.resolution", f"{ds.resolution} px: Flux needs a multiple of 16"))
    for i, p in enumerate(cfg.sampling.prompts):
        for key in ("width", "height"):
            if getattr(p, key) % 16:
                out.append((f"sampling.prompts.{i}.{key}", f"{getattr(p, key)} px: Flux needs a multiple of 16"))
    return out


def flux_file_problems(det: detect.Detected, values: dict[str, str]) -> list[tuple[str, str]]:
    """The CLIP-L, T5 and AE files: required with a transformer file, optional overrides of a diffusers
    folder's own; each must exist and be what its option says."""
    out = []
    single = det.kind == "checkpoint"
    for field, want, example in FLUX_FILES:
        value = str(values.get(field) or "").strip()
        if not value:
            if single:
                out.append((field, f"a Flux transformer file does not hold its text encoders and AE: pick {example}"))
            continue
        path = Path(value)
        if not path.exists():
            out.append((field, f"{path} does not exist; pick {example}"))
        elif path.is_dir():
            if want != "vae":
                out.append((field, f"{path} is a folder; pick {example}"))
        else:
            problem = _component_problem(path, want, example)
            if problem:
                out.append((field, problem))
    return out


def _component_problem(path: Path, want: str, example: str) -> str | None:
    try:
        det = detect.detect(path)
    except ModelError as err:
        return str(err)
    if want == "vae":
        if det.kind != "vae":
            return f"{path} is not a VAE ({det.describe()}); pick {example}"
        if det.variant and det.variant != "16ch":
            return (f"{path} is a VAE with {det.variant.removesuffix('ch')} latent channels (SD/SDXL); Flux needs "
                    f"its 16-channel AE: pick {example}")
        return None
    if det.kind != "text_encoder":
        return f"{path} is not a text encoder ({det.describe()}); pick {example}"
    if want == "t5" and det.variant != "t5":
        return f"{path} is a CLIP text encoder, not T5 (it goes in model.clip_l_path); pick {example}"
    if want == "clip" and det.variant == "t5":
        return f"{path} is a T5 text encoder (it goes in model.t5_path); pick {example}"
    return None


def flux_variant_problems(cfg: Any, variant: str) -> list[tuple[str, str]]:
    """FLUX.1 [schnell] has no guidance input and was trained with 256 T5 tokens."""
    if variant != "schnell":
        return []
    out = []
    if cfg.flow.guidance_scale != 1.0:
        out.append(("flow.guidance_scale", "FLUX.1 [schnell] has no guidance input (only [dev] is "
                                           "guidance-distilled); leave it at 1.0, or pick a [dev] model"))
    if cfg.model.t5_max_length is not None and cfg.model.t5_max_length > SCHNELL_T5_LENGTH:
        out.append(("model.t5_max_length", f"FLUX.1 [schnell] was trained with {SCHNELL_T5_LENGTH} T5 tokens; "
                                           f"pick {SCHNELL_T5_LENGTH} or fewer, or leave it empty"))
    return out
