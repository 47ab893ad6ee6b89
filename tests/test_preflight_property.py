"""Validate and build agree: for generated network settings on real architectures, the checks before a
job starts (`validate_train` against a workspace) pass exactly when the real LyCORIS network builds (and,
on Flux, runs a forward and backward pass, with a trainable weight in every module it made: LyCORIS's
known Flux failure, train_norm, builds and then crashes in the forward pass or wraps norms it cannot train).

The networks are built by backend.training.networks.build_network with the real model family, on
real-architecture UNets, Flux transformers and text encoders created from the SD 1.5, SDXL and FLUX.1
[dev]/[schnell] configs LoRA Dash ships and from the tiny demo configs, on fake tensors (torch's FakeTensorMode: meta storage, so no weights, while
LyCORIS can still copy a weight to the CPU as DoRA and Full do at creation). Settings are drawn with a
fixed seed across algorithms, ranks, alphas, LoKr factors, DyLoRA block sizes, targets, conv ranks,
Tucker, DoRA, norms and text encoders; settings the schema refuses on its own (DoRA where it has no
meaning) are not drawn. When a network builds, the layers the checks expect it to adapt are exactly the
ones it adapted.
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Any, get_args

import pytest
import torch
from diffusers import FluxTransformer2DModel, UNet2DConditionModel
from pydantic import ValidationError
from torch._subclasses import fake_tensor
from torch._subclasses.fake_tensor import FakeTensorMode
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from backend.config import load_config
from backend.config.schema import Algo, NetworkSection, Target
from backend.errors import ConfigError
from backend.jobs.validation import validate_train
from backend.models.base import TextEncoders
from backend.models.registry import get_family
from backend.paths import WorkspacePaths
from backend.preflight.network import network_layers
from backend.training.networks import build_network
from tests._preflight_fixtures import architecture_configs, flux_stub, stub_model, tiny_dataset

# name → configs drawn (the Flux ones last, so the SD draws stay what they were); Flux also gets FLUX_GRID
ARCHITECTURES = {"demo-sd15": 30, "demo-sdxl": 22, "sd15": 10, "sdxl": 5, "demo-flux": 8, "flux-dev": 0,
                 "flux-schnell": 3}
RANKS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40)
DORA_ALGOS = ("lora", "locon", "loha", "lokr")
VARIANTS = [(algo, False) for algo in get_args(Algo)] + [(algo, True) for algo in DORA_ALGOS]
# Cases worth pinning down whatever the seed draws (issue 14: BOFT at rank 4 or 8 on SD 1.5).
PINNED = [
    ("sd15", {"algo": "boft", "rank": 4}), ("sd15", {"algo": "boft", "rank": 8}), ("sd15", {"algo": "boft", "rank": 10}),
    ("sd15", {"algo": "boft", "rank": 16, "target": "all", "conv_rank": 8}),
    ("sd15", {"algo": "boft", "rank": 16, "train_text_encoder": True}),
    ("sdxl", {"algo": "boft", "rank": 8}), ("sdxl", {"algo": "boft", "rank": 10, "train_text_encoder": True}),
    ("demo-sd15", {"algo": "dylora", "rank": 8, "block_size": 4, "conv_rank": 6, "target": "all"}),
    ("demo-sd15", {"algo": "dylora", "rank": 8, "block_size": 4, "conv_rank": 12, "target": "all"}),
    ("demo-sdxl", {"algo": "boft", "rank": 1}),
    ("demo-sd15", {"algo": "lokr", "rank": 10000, "factor": 8, "conv_rank": 10000, "use_tucker": True, "dora": True}),
    ("demo-sd15", {"algo": "full", "target": "all", "train_norm": True, "train_text_encoder": True}),
    # Flux: BOFT's rank against 3072-wide attention (3·2^10: 6), the 18432-wide modulation (9·2^11: 18);
    # train_norm (LyCORIS wraps the weightless LayerNorms: a crash in forward; the RMSNorms: nothing trained)
    ("flux-dev", {"algo": "boft", "rank": 8, "target": "attn"}), ("flux-dev", {"algo": "boft", "rank": 8}),
    ("flux-dev", {"algo": "boft", "rank": 18, "target": "all"}),
    ("flux-dev", {"algo": "lora", "rank": 16, "train_norm": True}),
    ("demo-flux", {"algo": "lora", "rank": 4, "target": "attn", "train_norm": True}),
    ("demo-flux", {"algo": "lokr", "rank": 8, "factor": 4, "dora": True, "train_text_encoder": True}),
    ("demo-flux", {"algo": "full", "target": "all", "train_text_encoder": True}),
    ("flux-schnell", {"algo": "dylora", "rank": 8, "block_size": 4, "target": "all", "conv_rank": 4}),
]


def draw(rng: random.Random, **fixed: Any) -> dict[str, Any]:
    """One schema-valid `network` section (with the `fixed` values)."""
    while True:
        algo = fixed.get("algo") or rng.choice(get_args(Algo))
        block = rng.choice((1, 2, 3, 4, 8))
        rank = rng.choice(RANKS)
        if algo == "dylora" and rng.random() < 0.8:
            rank = block * rng.choice((1, 2, 3, 4))
        net = {"algo": algo, "rank": rank, "alpha": rng.choice((0.0, 0.5, 1.0, rank / 2, 16.0)),
               "conv_rank": rng.choice((0, 0, 0, 1, 2, 3, 4, 6, 8, 10, 16)), "conv_alpha": rng.choice((0.5, 1.0, 4.0)),
               "target": rng.choice(get_args(Target)), "factor": rng.choice((-1, 0, 1, 2, 3, 4, 8, 16)),
               "block_size": block, "decompose_both": rng.random() < 0.3, "use_tucker": rng.random() < 0.3,
               "use_scalar": rng.random() < 0.2, "dora": algo in DORA_ALGOS and rng.random() < 0.3,
               "train_norm": rng.random() < 0.15, "rescaled": rng.random() < 0.3,
               "constraint": rng.choice((0.0, 0.0, 1e-3)), "train_text_encoder": rng.random() < 0.35, **fixed}
        try:
            NetworkSection(**net)
        except ValidationError:
            continue
        return net


def flux_grid(rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """Every algorithm (and DoRA on those that take it) on every target of the Flux demo, and each algorithm
    once on the real FLUX.1 [dev], the targets in turn, with DoRA once (its fake-tensor run takes ten seconds
    there); the other settings drawn (train_norm off: Flux refuses it)."""
    targets = get_args(Target)
    grid = [("demo-flux", draw(rng, algo=algo, dora=dora, target=target, train_norm=False))
            for algo, dora in VARIANTS for target in targets]
    real = [(algo, False) for algo in get_args(Algo)] + [("lokr", True)]
    return grid + [("flux-dev", draw(rng, algo=algo, dora=dora, target=targets[i % len(targets)], train_norm=False))
                   for i, (algo, dora) in enumerate(real)]


def cases() -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(1414)
    drawn = [(arch, draw(rng)) for arch, count in ARCHITECTURES.items() for _ in range(count)]
    return PINNED + drawn + flux_grid(random.Random(1515))


class Architecture:
    """An architecture without weights, twice: on the meta device (fast to build on) and on fake tensors
    (for DoRA and Full, which copy a layer's weight to the CPU when created); and its stub model files
    (`model`: the config's model section)."""

    def __init__(self, name: str, folder):
        self.family_name, self.configs = architecture_configs(name)
        self.family = get_family(self.family_name)
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)
        with torch.device("meta"):
            self.meta = self._models()
        self._fake: tuple | None = None
        if self.family_name == "flux":
            self.model = flux_stub(folder, name)
        else:
            self.model = {"family": self.family_name, "path": str(stub_model(folder, name)[1])}

    def _models(self) -> tuple[Any, TextEncoders]:
        if self.family_name == "flux":
            clip = {k: v for k, v in self.configs["text_encoder"].items() if not k.startswith("_")}
            return (FluxTransformer2DModel.from_config(self.configs["transformer"]).requires_grad_(False),
                    TextEncoders([], [CLIPTextModel(CLIPTextConfig(**clip)).requires_grad_(False)]))
        unet = UNet2DConditionModel.from_config(self.configs["unet"])
        encoders = []
        for part, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
            if part in self.configs:
                cfg = {k: v for k, v in self.configs[part].items() if not k.startswith("_")}
                encoders.append(cls(CLIPTextConfig(**cfg)))
        return unet, TextEncoders([], encoders)

    @property
    def fake(self) -> tuple[Any, TextEncoders]:
        if self._fake is None:
            with self.mode:
                self._fake = self._models()
        return self._fake

    def build(self, net: dict[str, Any]) -> set[str]:
        """Build the network (on Flux: and run it), take it off again; the names of the linear/conv layers it
        adapted."""
        copies = net.get("dora") or net["algo"] == "full"
        with self.mode if copies else contextlib.nullcontext():
            unet, te = self.fake if copies else self.meta
            trains_te = net.get("train_text_encoder")
            network = build_network(NetworkSection(**net), self.family, unet, te if trains_te else None)
            try:
                if self.family_name == "flux":
                    self._run(network, unet, te if trains_te else None, "cpu" if copies else "meta")
                return {m.lora_name for m in network.net.loras if m.module_type in ("linear", "conv2d")}
            finally:
                network.restore()

    def _run(self, network: Any, transformer: Any, te: TextEncoders | None, device: str) -> None:
        """One forward and backward pass through the family's own `predict` (4 image tokens, 3 text tokens)
        and CLIP-L when it trains; every module LyCORIS made must hold a trainable weight."""
        if device == "meta":  # adapters are made on the CPU; on fake tensors they already are fake
            network.net.to(device)
        cfg = transformer.config
        cond = {"prompt_embeds": torch.randn(1, 3, cfg.joint_attention_dim, device=device),
                "pooled_prompt_embeds": torch.randn(1, cfg.pooled_projection_dim, device=device)}
        latents = torch.randn(1, cfg.in_channels // 4, 4, 4, device=device)
        pred = self.family.predict(transformer, latents, torch.full((1,), 0.5, device=device), cond,
                                   {"guidance": torch.ones(1, device=device)})
        loss = pred.float().square().mean()
        if te is not None:
            ids = torch.zeros(1, 4, dtype=torch.long, device=device)
            loss = loss + te.encoders[0](ids).pooler_output.float().square().mean()
        loss.backward()
        untrained = [m.lora_name for m in network.net.loras if not any(p.requires_grad for p in m.parameters())]
        if untrained:
            raise RuntimeError(f"{len(untrained)} LyCORIS modules have nothing to train, e.g. {untrained[0]}")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight-property")
    paths = WorkspacePaths(root / "ws").ensure()
    dataset = tiny_dataset(root / "ws" / "datasets" / "tiny")
    models = {name: Architecture(name, root / "ws" / "models") for name in ARCHITECTURES}
    return paths, dataset, models


def test_validate_passes_exactly_when_the_network_builds(world, monkeypatch):
    # Fake tensors hold no data, so `.item()` fails on them unless torch tracks them as constants; LoKr
    # reads a conv kernel's size that way (torch.tensor(k_size).prod().item()). Tracking constants of up
    # to 16 elements (torch's default is 1) lets that read work as it does on real tensors.
    monkeypatch.setattr(fake_tensor, "CONSTANT_NUMEL_LIMIT", 16)
    lycoris_log = logging.getLogger("LyCORIS")  # a dozen INFO lines per build otherwise
    monkeypatch.setattr(lycoris_log, "level", logging.WARNING)
    torch.manual_seed(0)
    paths, dataset, models = world
    seen = {"passed": 0, "refused": 0}
    for arch, net in cases():
        model = models[arch]
        config = {"model": dict(model.model), "dataset": {"path": str(dataset)}, "network": net}
        try:
            validate_train(config, paths)
            problems: list = []
        except ConfigError as err:
            problems = err.problems
        assert all(p.startswith("network.") for p, _ in problems), (arch, net, problems)
        try:
            adapted = model.build(net)
            error = None
        except Exception as err:  # noqa: BLE001 - any failure of the real build counts against validate
            adapted, error = set(), err
        assert (not problems) == (error is None), (
            f"{arch} {net}: validate {'passed' if not problems else problems}, build "
            f"{'succeeded' if error is None else f'failed: {type(error).__name__}: {error}'}")
        if error is None:
            expected = {layer.name for layer in network_layers(load_config(
                {**config, "model": {**config["model"]}}))}
            assert expected == adapted, (arch, net, sorted(expected ^ adapted)[:5])
        seen["passed" if not problems else "refused"] += 1
    assert seen["passed"] >= 30 and seen["refused"] >= 12, seen  # both sides of ⇔ are exercised


def test_train_norm_on_flux_is_refused_before_the_start(tmp_path, monkeypatch):
    """LyCORIS 4.1.3 with train_norm wraps Flux's LayerNorms, which have no weights (elementwise_affine off):
    the network builds and the first forward pass crashes. Validate refuses it, naming the field."""
    monkeypatch.setattr(logging.getLogger("LyCORIS"), "level", logging.WARNING)
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    dataset = tiny_dataset(tmp_path / "ws" / "datasets" / "tiny")
    flux = Architecture("demo-flux", tmp_path / "ws" / "models")
    net = {"algo": "lora", "rank": 4, "target": "attn-mlp", "train_norm": True}
    with pytest.raises(AttributeError, match="NoneType"):   # why the rule exists
        flux.build(net)
    config = {"model": flux.model, "dataset": {"path": str(dataset)}, "network": net}
    with pytest.raises(ConfigError) as err:
        validate_train(config, paths)
    assert [p for p, _ in err.value.problems] == ["network.train_norm"]
    assert "false" in err.value.problems[0][1]
    validate_train({**config, "network": {**net, "train_norm": False}}, paths)   # the rest of it is fine


# network.network_weights: a file saved from network A, continued with network B (the review's escapes).
WEIGHTS_CASES = [
    ({"algo": "lora", "rank": 4, "train_text_encoder": True}, {"algo": "lora", "rank": 4}),
    ({"algo": "lora", "rank": 4, "target": "all"}, {"algo": "lora", "rank": 4}),
    ({"algo": "loha", "rank": 4}, {"algo": "loha", "rank": 8}),
    ({"algo": "locon", "rank": 4}, {"algo": "locon", "rank": 4, "conv_rank": 2}),
    ({"algo": "lora", "rank": 4, "dora": True}, {"algo": "lora", "rank": 4}),
]


@pytest.mark.parametrize("arch", ["demo-sd15", "demo-sdxl"])
def test_a_starting_file_passes_validate_exactly_when_the_worker_loads_it(tmp_path, monkeypatch, arch):
    from backend.training.networks import load_initial_weights
    from tests._preflight_fixtures import write_safetensors

    monkeypatch.setattr(fake_tensor, "CONSTANT_NUMEL_LIMIT", 16)
    monkeypatch.setattr(logging.getLogger("LyCORIS"), "level", logging.WARNING)
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    dataset = tiny_dataset(tmp_path / "ws" / "datasets" / "tiny")
    model = Architecture(arch, tmp_path / "ws" / "models")

    def network(net: dict[str, Any]) -> Any:
        with model.mode if net.get("dora") else contextlib.nullcontext():
            unet, te = model.fake if net.get("dora") else model.meta
            return build_network(NetworkSection(**net), model.family, unet,
                                 te if net.get("train_text_encoder") else None)

    def saved(net: dict[str, Any], name: str) -> str:
        built = network(net)
        try:
            state = model.family.lora_keys_to_file(built.net.state_dict(), built.unet)
            return str(write_safetensors(tmp_path / name, {k: tuple(v.shape) for k, v in state.items()}))
        finally:
            built.restore()

    for i, (first, then) in enumerate(WEIGHTS_CASES):
        file = saved(first, f"start{i}.safetensors")
        for net, fits in ((first, True), (then, False)):
            config = {"model": dict(model.model), "dataset": {"path": str(dataset)},
                      "network": {**net, "network_weights": file}}
            try:
                validate_train(config, paths)
                problems: list = []
            except ConfigError as err:
                problems = err.problems
            built = network(net)
            try:
                load_initial_weights(built, file)
                loaded = True
            except ConfigError:
                loaded = False
            finally:
                built.restore()
            assert loaded == fits, (arch, first, net)   # what the worker does with it
            assert [p for p, _ in problems] == ([] if fits else ["network.network_weights"]), (arch, net, problems)
