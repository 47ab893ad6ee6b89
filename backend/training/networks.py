"""Adapters through LyCORIS (`lycoris.kohya.create_network`), saved in the kohya layout.

Known LyCORIS 4.1.3 traps handled here:
- its built-in presets fail or match nothing on a diffusers UNet: we pass our own target lists (a TOML
  preset in memory) built by the model family from `network.target`;
- transformers 5 flattened CLIPTextModel: the family hands LyCORIS a `text_model` view so names are
  `lora_te_text_model_encoder_layers_…`, as ComfyUI, A1111 and diffusers expect;
- reloading an IA3 file raises TypeError, and DyLoRA saves conv `lora_up` as [out, r] instead of
  [out, r, 1, 1]: `load_network_file` and `kohya_state_dict` fix both.
Bypass mode (W·x + ΔW·x without rebuilding W) is used wherever it gives the same output as the
default path; tests/test_training_networks.py checks that equivalence for every algorithm listed.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from backend.config.schema import BYPASS_ALGOS
from backend.errors import ConfigError, TrainingError
from backend.models.base import lycoris_preset
from backend.training.fused_adapters import install_fused_forwards

log = logging.getLogger(__name__)

# Algorithms whose bypass forward equals the rebuilt-weight forward (measured, and tested).
BYPASS_EXACT = BYPASS_ALGOS
OFT_ALGOS = frozenset({"diag-oft", "boft"})
NETWORK_MODULE = "lycoris.kohya"


@dataclass
class AdapterNetwork:
    """The LyCORIS network applied to a UNet (and maybe text encoders), plus what saving needs."""

    net: Any                      # lycoris.kohya.LycorisNetworkKohya (a torch.nn.Module)
    algo: str
    rank: int
    alpha: float
    args: dict[str, Any]          # what ss_network_args records
    bypass: bool
    block_size: int = 4
    family: Any = None            # the ModelFamily: it names the modules in the file
    unet: Any = None
    group_names: list[str] = field(default_factory=list)

    @property
    def unet_modules(self) -> list[Any]:
        return list(self.net.unet_loras)

    @property
    def text_encoder_modules(self) -> list[Any]:
        return list(self.net.text_encoder_loras)

    def trainable_parameters(self) -> list[torch.Tensor]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def param_groups(self, lr: float, unet_lr: float | None, text_encoder_lr: float | None,
                     text_encoder_2_lr: float | None = None) -> list[dict]:
        """Optimizer groups (text encoder(s), then UNet), each with its learning rate and a name.

        SDXL's second text encoder (`lora_te2_…`) takes `text_encoder_2_lr` when set (0 freezes it).
        """
        te_lr = text_encoder_lr if text_encoder_lr is not None else lr
        te1 = [m for m in self.text_encoder_modules if not m.lora_name.startswith("lora_te2_")]
        te2 = [m for m in self.text_encoder_modules if m.lora_name.startswith("lora_te2_")]
        if text_encoder_2_lr is None:
            te1, te2 = te1 + te2, []
        plan = [("text_encoder", te1, te_lr), ("text_encoder_2", te2, text_encoder_2_lr),
                ("unet", self.unet_modules, unet_lr if unet_lr is not None else lr)]
        groups = []
        self.group_names = []
        for name, modules, group_lr in plan:
            params = [p for m in modules for p in m.parameters() if p.requires_grad]
            if not params:
                continue
            if not group_lr:  # a learning rate of 0 freezes that part
                for p in params:
                    p.requires_grad_(False)
                continue
            groups.append({"params": params, "lr": group_lr, "name": name})
            self.group_names.append(name)
        if not groups:
            raise TrainingError("the network has no trainable parameters: network.target matched no layer "
                                "of this model, or every learning rate is 0")
        return groups

    def kohya_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Tensors in the kohya file layout (what A1111, ComfyUI and diffusers read)."""
        out: dict[str, torch.Tensor] = {}
        for key, value in self.net.state_dict().items():
            t = value.detach()
            if self.algo == "dylora":
                t = _dylora_file_tensor(key, t, self.net, self.block_size)
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            out[key] = t.to("cpu").contiguous()
        return self.family.lora_keys_to_file(out, self.unet) if self.family is not None else out

    def training_state(self) -> dict[str, torch.Tensor]:
        """Every parameter and buffer under its module path: exact for resume, whatever the algorithm."""
        state = {f"p:{k}": v.detach().to("cpu", copy=True) for k, v in self.net.named_parameters()}
        state.update({f"b:{k}": v.detach().to("cpu", copy=True) for k, v in self.net.named_buffers()})
        return state

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        own = {f"p:{k}": v for k, v in self.net.named_parameters()}
        own.update({f"b:{k}": v for k, v in self.net.named_buffers()})
        missing = sorted(set(own) - set(state))
        if missing:
            raise TrainingError(f"saved state does not match this network ({len(missing)} tensors missing, "
                                f"e.g. {missing[0][2:]}); was network.* changed since it was saved?")
        with torch.no_grad():
            for k, v in own.items():
                if tuple(state[k].shape) != tuple(v.shape):
                    raise TrainingError(f"saved state tensor {k[2:]} has shape {tuple(state[k].shape)}, "
                                        f"the network expects {tuple(v.shape)}")
                v.copy_(state[k].to(v.device, v.dtype))

    def restore(self) -> None:
        """Take the adapters off the model (its forward methods are the original ones again)."""
        for m in self.net.loras:
            m.restore()


def _dylora_file_tensor(key: str, t: torch.Tensor, net: Any, block_size: int) -> torch.Tensor:
    """DyLoRA → a plain LoRA/LoCon entry: conv `lora_up` as [out, r, 1, 1]; alpha that reproduces
    the full-rank update LyCORIS trains (its scale is alpha / block_count, not alpha / rank)."""
    name, _, suffix = key.partition(".")
    module = getattr(net, name, None)
    if module is None:
        return t
    if suffix == "lora_up.weight" and module.module_type.startswith("conv") and t.ndim == 2:
        return t.reshape(*t.shape, *([1] * (len(module.shape) - 2)))
    if suffix == "alpha":
        return t * block_size
    return t


# LyCORIS keeps a preset in class attributes of LycorisNetworkKohya (and GLoRA rewrites two of them):
# put them back after each build, so nothing else in the process inherits ours.
_PRESET_ATTRIBUTES = ("ENABLE_CONV", "UNET_TARGET_REPLACE_MODULE", "UNET_TARGET_REPLACE_NAME",
                      "TEXT_ENCODER_TARGET_REPLACE_MODULE", "TEXT_ENCODER_TARGET_REPLACE_NAME",
                      "MODULE_ALGO_MAP", "NAME_ALGO_MAP", "USE_FNMATCH", "TARGET_EXCLUDE_NAME")


@contextmanager
def _restored_class_settings() -> Iterator[None]:
    from lycoris.kohya import LycorisNetworkKohya

    saved = {name: getattr(LycorisNetworkKohya, name) for name in _PRESET_ATTRIBUTES}
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(LycorisNetworkKohya, name, value)


def _preset_file(targets: Any) -> io.StringIO:
    """Our target lists as a LyCORIS preset (it reads TOML; a file-like object is accepted)."""
    import tomli_w

    preset = {
        "enable_conv": targets.enable_conv,
        "unet_target_module": targets.unet_modules,
        "unet_target_name": targets.unet_names,
        "text_encoder_target_module": targets.text_encoder_modules,
        "text_encoder_target_name": targets.text_encoder_names,
        "module_algo_map": {},
        "name_algo_map": {},
        "use_fnmatch": False,
        "exclude_name": [],
    }
    return io.StringIO(tomli_w.dumps(preset))


def network_kwargs(cfg: Any) -> tuple[dict[str, Any], bool, int, float]:
    """LyCORIS keyword arguments for config section `network`, whether 3×3 convs are adapted, and
    their rank and alpha. `locon` with conv_rank 0 uses the linear rank and alpha for convs."""
    from backend.preflight.network import conv_settings  # shared with the checks before the start

    algo = cfg.algo
    _, conv_rank, conv_alpha = conv_settings(cfg)
    bypass = algo in BYPASS_EXACT and not cfg.dora
    kwargs = {
        "algo": "locon" if algo == "lora" else algo,
        "conv_dim": conv_rank or cfg.rank, "conv_alpha": conv_alpha if conv_rank else cfg.alpha,
        "dropout": cfg.dropout, "rank_dropout": cfg.rank_dropout, "module_dropout": cfg.module_dropout,
        "use_tucker": cfg.use_tucker, "use_scalar": cfg.use_scalar, "train_norm": cfg.train_norm,
        "factor": cfg.factor, "decompose_both": cfg.decompose_both, "block_size": cfg.block_size,
        "constraint": cfg.constraint, "rescaled": cfg.rescaled, "dora_wd": cfg.dora, "bypass_mode": bypass,
    }
    return kwargs, conv_rank > 0, conv_rank, conv_alpha


def build_network(cfg: Any, family: Any, unet: Any, text_encoders: Any | None) -> AdapterNetwork:
    """Create and apply the adapters for config section `network` (text encoders only when given)."""
    from lycoris.kohya import create_network

    kwargs, conv, conv_rank, conv_alpha = network_kwargs(cfg)
    targets = family.lora_targets(cfg.target, conv)
    te_views = family.network_text_encoders(text_encoders) if text_encoders is not None else None
    with _restored_class_settings():
        net = create_network(1.0, cfg.rank, cfg.alpha, None, te_views, unet, warn_on_unmatched=False,
                             preset=_preset_file(targets), **kwargs)
    fused = install_fused_forwards(net.loras)
    net.apply_to(te_views, unet, apply_text_encoder=te_views is not None, apply_unet=True)
    if not net.loras:
        raise TrainingError(f"network.target {cfg.target!r} matched no layer of this model")
    net.requires_grad_(True)
    # `preset` as LyCORIS names its presets (create_network reads it back); our own target under its key.
    preset = lycoris_preset(cfg.target, conv and cfg.algo not in ("ia3", "full"))
    args = {"algo": cfg.algo, "preset": preset, "loradash_target": cfg.target, "conv_dim": str(conv_rank),
            "conv_alpha": str(conv_alpha)}
    for key in ("dropout", "rank_dropout", "module_dropout"):
        if getattr(cfg, key):
            args[key] = str(getattr(cfg, key))
    extras = {"dora_wd": cfg.dora, "use_tucker": cfg.use_tucker, "use_scalar": cfg.use_scalar,
              "train_norm": cfg.train_norm, "rescaled": cfg.rescaled, "decompose_both": cfg.decompose_both}
    args.update({k: "True" for k, v in extras.items() if v})
    if cfg.algo == "lokr":
        args["factor"] = str(cfg.factor)
    if cfg.algo == "dylora":
        args["block_size"] = str(cfg.block_size)
    if cfg.algo in ("diag-oft", "boft") and cfg.constraint:
        args["constraint"] = str(cfg.constraint)
    log.info("network %s: %d UNet and %d text-encoder modules, bypass %s, fused forwards %s",
             cfg.algo, len(net.unet_loras), len(net.text_encoder_loras), kwargs["bypass_mode"], fused or "none")
    # OFT and BOFT keep their constraint in the `.alpha` tensors: ss_network_alpha says the same.
    alpha = cfg.constraint if cfg.algo in OFT_ALGOS else cfg.alpha
    return AdapterNetwork(net=net, algo=cfg.algo, rank=cfg.rank, alpha=alpha, args=args,
                          bypass=kwargs["bypass_mode"], block_size=cfg.block_size, family=family, unet=unet)


def load_initial_weights(network: AdapterNetwork, path: str | Path) -> None:
    """Start from an existing file of the same algorithm and shape (network.network_weights)."""
    from safetensors.torch import load_file

    path = Path(path)  # its existence and family were checked before caching (checks.py)
    sd = load_file(path)
    if network.family is not None:
        sd = network.family.lora_keys_from_file(sd, network.unet)
    own = network.net.state_dict()
    bad = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    unknown = [k for k in sd if k not in own]
    if bad or unknown or not any(k in sd for k in own):
        example = (bad or unknown or ["(no matching keys)"])[0]
        raise ConfigError([("network.network_weights", f"{path.name} does not match this network "
                                                       f"(algorithm, rank, target): e.g. {example}")])
    network.net.load_state_dict(sd, strict=False)


def load_network_file(path: str | Path, family: Any, unet: Any, text_encoders: Any | None,
                      multiplier: float = 1.0) -> torch.nn.ModuleList:
    """Apply a saved kohya/LyCORIS file to `unet` (and text encoders); returns the applied modules
    (call `.restore()` on each to take them off again).

    lycoris.kohya.create_network_from_weights, with the IA3 reload (TypeError) fixed.
    """
    from lycoris.modules import get_module, make_module
    from lycoris.modules.ia3 import IA3Module
    from safetensors.torch import load_file

    sd = family.lora_keys_from_file(load_file(str(path)), unet)
    te_views = family.network_text_encoders(text_encoders) if text_encoders is not None else None
    roots: list[tuple[str, Any]] = [(family.unet_prefix, unet)]
    if te_views is not None:
        views = te_views if isinstance(te_views, list) else [te_views]
        roots += list(zip(family.text_encoder_prefixes, views, strict=False))
    names = {k.split(".", 1)[0] for k in sd if "." in k}
    modules: dict[str, Any] = {}
    for prefix, root in roots:
        for name, mod in root.named_modules():
            lora_name = f"{prefix}_{name}".replace(".", "_")
            if lora_name in names:
                modules[lora_name] = mod
    loras = []
    for lora_name, mod in modules.items():
        kind, params = get_module(sd, lora_name)
        if kind is IA3Module:
            weight, on_input = params
            lora = IA3Module(lora_name, mod, 1, train_on_input=bool(on_input is not None and int(on_input)))
            with torch.no_grad():
                lora.weight.copy_(weight)
        elif kind is None:
            continue
        else:
            lora = make_module(kind, params, lora_name, mod)
        if lora is not None:
            lora.multiplier = multiplier
            lora.apply_to()
            loras.append(lora)
    unused = names - set(modules)
    if unused:
        raise TrainingError(f"{Path(path).name}: {len(unused)} adapter names match no layer of this model, "
                            f"e.g. {sorted(unused)[0]}")
    return torch.nn.ModuleList(loras)


def network_metadata(network: AdapterNetwork) -> dict[str, str]:
    """The ss_network_* keys sd-scripts writes."""
    return {
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": str(network.rank),
        "ss_network_alpha": str(network.alpha),
        "ss_network_args": json.dumps(network.args),
    }
