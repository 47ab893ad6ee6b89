"""The adapter network against the chosen model: which layers LyCORIS 4.1.3 wraps, with which rank, and
the shape rules its algorithms enforce when the modules are created.

Selection (lycoris/kohya.py, LycorisNetworkKohya.__init__): a module whose class is a target wraps every
Linear and Conv2d under it, and a module whose path matches a target name (`re.match`) is wrapped
itself. A Linear or a 1×1 conv gets network_dim (our network.rank); a larger conv gets conv_lora_dim,
which is 0 (not wrapped) unless the preset enables convs. With train_norm, norm layers get NormModule
instead, which has no shape rule.

Rules (lycoris/modules): BOFT (ButterflyOFTModule, `butterfly_factor` over `power2factorization`) needs
each wrapped layer's output size to be m·2^k with m even and m ≤ its rank; DyLoRA needs the rank to be a
multiple of block_size. LoRA/LoCon, LoHa, LoKr (any factor: `factorization` always finds one),
Diag-OFT (same), IA3, GLoRA, Full and DoRA have none on shapes. tests/test_preflight_property.py builds
the real networks on real-architecture models to show this module and the build agree.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from backend.models.layers import Module
from backend.preflight.inputs import Problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layer:
    """A layer LyCORIS will wrap: its module name in the network, shape, and rank (and the option that set it)."""

    name: str
    module: Module
    dim: int
    option: str


def conv_settings(net: Any) -> tuple[bool, int, float]:
    """(3×3 convs adapted, their rank, their alpha) for config section `network`: `locon` with conv_rank 0
    gives convs the linear rank and alpha (backend.training.networks.network_kwargs uses this)."""
    rank, alpha = net.conv_rank, net.conv_alpha
    if net.algo == "locon" and rank == 0:
        rank, alpha = net.rank, net.alpha
    return rank > 0, rank, alpha


def _wrapped(m: Module, rank: int, conv_dim: int, conv_option: str, train_norm: bool) -> tuple[int, str] | None:
    if train_norm and "Norm" in m.cls:
        return None  # NormModule: no rank, no shape rule
    if m.cls == "Linear":
        return rank, "network.rank"
    if m.is_conv:
        if m.kernel == 1:
            return rank, "network.rank"
        if conv_dim > 0:
            return conv_dim, conv_option
    return None


def adapted_layers(modules: list[Module], target_classes: list[str], target_names: list[str], prefix: str,
                   net: Any) -> list[Layer]:
    """The layers of one model part that LyCORIS wraps for config section `network`."""
    conv, conv_rank, _ = conv_settings(net)
    conv_dim = conv_rank if conv else 0
    conv_option = "network.conv_rank" if net.conv_rank else "network.rank"
    out: dict[str, Layer] = {}

    def add(m: Module) -> None:
        got = _wrapped(m, net.rank, conv_dim, conv_option, net.train_norm)
        name = f"{prefix}_{m.path}".replace(".", "_")
        if got is not None and name not in out:
            out[name] = Layer(name, m, got[0], got[1])

    for box in modules:
        named = any(re.match(t, box.path) for t in target_names)
        if box.cls in target_classes and not named:
            inside = box.path + "."
            for m in modules:
                if m.path.startswith(inside):
                    add(m)
        elif named:
            add(box)
    return list(out.values())


def network_layers(cfg: Any) -> list[Layer] | None:
    """Every layer the network of `cfg` adapts on its model, or None when the model's shapes are unknown."""
    from backend.models.layers import ConfigMalformed, ShapesUnknown, family_modules

    net = cfg.network
    try:
        model = family_modules(cfg.model.path, cfg.model.family)
    except ConfigMalformed:
        raise  # the model cannot load: network_problems names model.path
    except ShapesUnknown as err:
        log.warning("adapter shapes not checked before the start: %s", err)
        return None
    if model is None:
        return None
    targets = model.targets(net.target, conv_settings(net)[0])
    layers = adapted_layers(model.unet, targets.unet_modules, targets.unet_names, "lora_unet", net)
    if net.train_text_encoder:
        single = len(model.text_encoders) == 1
        for i, te in enumerate(model.text_encoders):
            prefix = "lora_te" if single else f"lora_te{i + 1}"
            layers += adapted_layers(te, targets.text_encoder_modules, targets.text_encoder_names, prefix, net)
    return layers


def boft_block(out: int) -> int | None:
    """The smallest rank BOFT accepts for a layer with `out` outputs: out = m·2^k needs an even m ≤ rank,
    the least being twice out's odd part. None when out is odd (no rank fits)."""
    if out < 2 or out % 2:
        return None
    odd = out
    while odd % 2 == 0:
        odd //= 2
    return 2 * odd


def _by_option(layers: list[Layer]) -> dict[str, list[Layer]]:
    groups: dict[str, list[Layer]] = {}
    for layer in layers:
        groups.setdefault(layer.option, []).append(layer)
    return groups


def boft_problems(layers: list[Layer]) -> list[Problem]:
    out: list[Problem] = []
    for option, group in _by_option(layers).items():
        odd = next((x for x in group if boft_block(x.module.out) is None), None)
        if odd is not None:
            out.append((option, f"BOFT cannot adapt {odd.module.path} ({odd.module.out} outputs, an odd "
                                "number, has no butterfly factorisation); choose another network.algo or "
                                "network.target"))
            continue
        worst = max(group, key=lambda x: boft_block(x.module.out) or 0)
        need = boft_block(worst.module.out) or 0
        if worst.dim < need:
            out.append((option, f"{worst.dim} is too small for BOFT on this model: {worst.module.path} has "
                                f"{worst.module.out} outputs = {need}·2^k, so its butterfly blocks need a rank of "
                                f"at least {need}; set {option} to {need} or more"))
    return out


def dylora_problems(layers: list[Layer], block_size: int) -> list[Problem]:
    out: list[Problem] = []
    for option, group in _by_option(layers).items():
        dim = group[0].dim
        if dim % block_size:
            out.append((option, f"{dim} must be a multiple of network.block_size ({block_size}) for DyLoRA "
                                f"(it adapts {group[0].module.path} with it)"))
    return out


def network_problems(cfg: Any) -> list[Problem]:
    """Shape rules of the chosen algorithm on the layers of the chosen model."""
    from backend.models.layers import ConfigMalformed

    net = cfg.network
    try:
        layers = network_layers(cfg)
    except ConfigMalformed as err:
        return [("model.path", f"{err}; fix the file or pick another model")]
    if layers is None:
        return []  # shapes unknown: the worker's build names any problem
    if not layers:
        return [("network.target", f"{net.target!r} matches no layer of this model; choose another target")]
    if net.algo == "boft":
        return boft_problems(layers)
    if net.algo == "dylora":
        return dylora_problems(layers, net.block_size)
    return []


# Parameters whose first axis is the rank (lora_down: rank × in; LoHa/LoKr's *_b: rank × …).
_RANK_PARAMS = (".lora_down.weight", ".hada_w1_b", ".hada_w2_b", ".lokr_w1_b", ".lokr_w2_b")


def _file_names(layers: list[Layer], cfg: Any) -> dict[str, Layer]:
    """Each layer under the names a file may give it: LyCORIS's, and for SDXL's UNet also sd-scripts'
    SGM names (backend.models.sdxl.lora_keys_from_file reads both)."""
    out = {layer.name: layer for layer in layers}
    if cfg.model.family == "sdxl":
        from backend.models.layers import config_folder, read_json
        from backend.models.ldm_keys import module_to_ldm, unet_prefix_table

        table = unet_prefix_table(read_json(config_folder(cfg.model.path, "sdxl") / "unet" / "config.json"))
        for layer in layers:
            if layer.name.startswith("lora_unet_"):
                out["lora_unet_" + module_to_ldm(layer.module.path, table).replace(".", "_")] = layer
    return out


def weights_file_problems(cfg: Any, name: str, shapes: dict[str, tuple[int, ...]]) -> list[Problem]:
    """network.network_weights ({tensor: shape} of the file named `name`) against the network `cfg`
    builds: backend.training.networks.load_initial_weights refuses a key the network lacks or a shape
    it does not have."""
    from backend.models.layers import ShapesUnknown

    net = cfg.network

    def problem(text: str) -> list[Problem]:
        return [("network.network_weights", f"{name} {text}")]

    modules = {k.partition(".")[0] for k in shapes}
    if not net.train_text_encoder and any(m.startswith("lora_te") for m in modules):
        return problem("adapts the text encoder too; set network.train_text_encoder = true to continue from it")
    if not net.dora and any(k.endswith(".dora_scale") for k in shapes):
        return problem("is a DoRA network (dora_scale weights); set network.dora = true to continue from it")
    if cfg.model.family not in ("sd15", "sdxl") or net.train_norm:
        return []  # Flux files fuse projections (flux_lora_format); norm modules are not in network_layers
    try:
        layers = network_layers(cfg)
        by_name = _file_names(layers, cfg) if layers else None
    except ShapesUnknown as err:  # the worker reads the same configs and names them
        log.warning("network.network_weights not compared with the network: %s", err)
        return []
    if not by_name:
        return []
    unknown = sorted(m for m in modules if m not in by_name)
    if unknown:
        return problem(f"adapts {len(unknown)} layer(s) this network does not (e.g. {unknown[0]}): set "
                       f"network.target (now {net.target!r}) and network.train_text_encoder as the file was "
                       "trained, or pick another file")
    for key, shape in shapes.items():
        module, _, param = key.partition(".")
        if "." + param in _RANK_PARAMS and shape and shape[0] != by_name[module].dim:
            layer = by_name[module]
            return problem(f"has rank {shape[0]} on {module} where this network has {layer.dim}; set "
                           f"{layer.option} to {shape[0]} to continue from it")
    return []
