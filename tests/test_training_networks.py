"""Every adapter algorithm through LyCORIS: kohya key names, bypass equivalence, file round trip."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors import safe_open

from backend.config.schema import NetworkSection
from backend.models.registry import get_family
from backend.training.networks import BYPASS_EXACT, build_network, load_network_file
from backend.training.saving import save_lora_file

ALGOS = ["lora", "locon", "loha", "lokr", "dylora", "ia3", "glora", "diag-oft", "boft", "full"]
# Parameter suffixes per algorithm as ComfyUI (comfy/lora.py, weight adapters) and A1111 read them.
SUFFIXES = {
    "lora": {"lora_up.weight", "lora_down.weight", "alpha"}, "locon": {"lora_up.weight", "lora_down.weight", "alpha"},
    "dylora": {"lora_up.weight", "lora_down.weight", "alpha"},
    "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"},
    "lokr": {"lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "alpha"},
    "ia3": {"weight", "on_input"}, "glora": {"a1.weight", "a2.weight", "b1.weight", "b2.weight", "alpha"},
    "diag-oft": {"oft_blocks", "alpha", "rescale"}, "boft": {"oft_blocks", "alpha", "rescale"},
    "full": {"diff", "diff_b"},
}


@pytest.fixture(scope="module")
def model(demo_workspace):
    fam = get_family("sd15")
    path = demo_workspace / "models" / "demo-sd15"
    src = fam.open(path)
    te = fam.load_text_encoders(src, device="cpu", dtype=torch.float32)
    unet = fam.load_unet(src, device="cpu", dtype=torch.float32)
    return fam, te, unet


def _inputs():
    g = torch.Generator().manual_seed(5)
    return torch.randn(2, 4, 16, 16, generator=g), torch.tensor([10, 500])


def _forward(fam, te, unet):
    x, t = _inputs()
    with torch.no_grad():
        cond = fam.encode_prompts(te, ["dashdemo, red circle", "a blue square"])
        return cond["encoder_hidden_states"], fam.predict(unet, x, t, cond, {})


def _forward_with_file(path, fam, te, unet):
    """(modules applied, outputs) with the file at `path` applied, then taken off again."""
    loaded = load_network_file(path, fam, unet, te)
    try:
        return len(loaded), _forward(fam, te, unet)
    finally:
        for m in loaded:
            m.restore()


def _cfg(algo: str, **kw) -> NetworkSection:
    base = {"algo": algo, "rank": 4, "alpha": 2.0, "conv_rank": 4, "conv_alpha": 1.0, "target": "all",
            "train_text_encoder": True, "block_size": 2}
    return NetworkSection(**{**base, **kw})


def _perturb(network, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _comfy_names(fam, te, unet) -> set[str]:
    """The module names ComfyUI's key map accepts for SD 1.x: `lora_unet_` + the diffusers path and
    `lora_te_text_model_` + the CLIP path (comfy/lora.py model_lora_keys_unet / model_lora_keys_clip)."""
    names = {"lora_unet_" + n.replace(".", "_") for n, _ in unet.named_modules() if n}
    names |= {"lora_te_text_model_" + n.replace(".", "_") for n, _ in te.encoders[0].named_modules() if n}
    return names


@pytest.mark.parametrize("algo", ALGOS)
def test_algorithm_keys_bypass_and_round_trip(model, algo, tmp_path):
    fam, te, unet = model
    c_base, y_base = _forward(fam, te, unet)
    net = build_network(_cfg(algo), fam, unet, te)
    try:
        net.net.eval()
        _perturb(net)
        c_trained, y_trained = _forward(fam, te, unet)
        assert not torch.allclose(y_trained, y_base)
        if algo in BYPASS_EXACT:
            assert net.bypass
            for m in net.net.loras:       # the rebuilt-weight path gives the same output
                m.bypass_mode = False
            c_slow, y_slow = _forward(fam, te, unet)
            for m in net.net.loras:
                m.bypass_mode = True
            assert torch.allclose(y_slow, y_trained, atol=1e-5) and torch.allclose(c_slow, c_trained, atol=1e-5)
        else:
            assert not net.bypass
        path = tmp_path / f"{algo}.safetensors"
        save_lora_file(path, net.kohya_state_dict(torch.float32), {"ss_network_module": "lycoris.kohya"})
    finally:
        net.restore()
    c0, y0 = _forward(fam, te, unet)
    assert torch.equal(y0, y_base) and torch.equal(c0, c_base)   # restore() leaves the model untouched

    with safe_open(str(path), "pt") as fh:
        keys = list(fh.keys())
        meta = fh.metadata()
    assert re.fullmatch(r"[0-9a-f]{64}", meta["sshs_model_hash"])
    comfy = _comfy_names(fam, te, unet)
    modules = {k.split(".", 1)[0] for k in keys}
    assert any(m.startswith("lora_te_text_model_encoder_layers_") for m in modules)
    assert any(m.startswith("lora_unet_down_blocks_0_attentions_0_") for m in modules)
    assert modules <= comfy, sorted(modules - comfy)[:3]
    assert {k.split(".", 1)[1] for k in keys} <= SUFFIXES[algo]

    count, (c2, y2) = _forward_with_file(path, fam, te, unet)
    assert count == len(modules)
    if algo == "dylora":
        return  # the trained DyLoRA picks a random rank per call; its full-rank file is checked below
    assert torch.allclose(c2, c_trained, atol=1e-5) and torch.allclose(y2, y_trained, atol=1e-4)


def test_dylora_file_is_a_plain_lora_with_conv_shapes_fixed(model, tmp_path):
    """One block (block_size = rank): the trained network is deterministic and the file reproduces it."""
    fam, te, unet = model
    net = build_network(_cfg("dylora", block_size=4), fam, unet, te)
    try:
        net.net.eval()
        _perturb(net)
        _, y_trained = _forward(fam, te, unet)
        sd = net.kohya_state_dict(torch.float32)
    finally:
        net.restore()
    ups = {k: v for k, v in sd.items() if k.endswith("conv1.lora_up.weight")}
    assert ups and all(v.ndim == 4 and v.shape[2:] == (1, 1) for v in ups.values())
    path = tmp_path / "dylora.safetensors"
    save_lora_file(path, sd, {})
    _, (_, y2) = _forward_with_file(path, fam, te, unet)
    assert torch.allclose(y2, y_trained, atol=1e-4)


def test_dora_and_conv_rank_and_targets(model):
    from lycoris.kohya import LycorisNetworkKohya

    fam, te, unet = model
    before = (LycorisNetworkKohya.ENABLE_CONV, list(LycorisNetworkKohya.UNET_TARGET_REPLACE_MODULE))
    counts = {}
    for target in ("attn", "attn-mlp", "all"):
        net = build_network(_cfg("lora", target=target, conv_rank=0, train_text_encoder=False), fam, unet, None)
        counts[target] = len(net.unet_modules)
        names = [m.lora_name for m in net.unet_modules]
        net.restore()
        if target == "attn":
            assert all(re.search(r"attn[12]_to_(q|k|v|out_0)$", n) for n in names)
        assert not net.text_encoder_modules
    assert counts["attn"] < counts["attn-mlp"] < counts["all"]
    # LyCORIS keeps presets in class attributes: our builds (one without convs here) must leave them as
    # they were for whatever builds a network next in this process.
    assert (LycorisNetworkKohya.ENABLE_CONV, list(LycorisNetworkKohya.UNET_TARGET_REPLACE_MODULE)) == before
    net = build_network(_cfg("lora", target="attn-mlp", conv_rank=4, dora=True), fam, unet, te)
    try:
        assert not net.bypass   # DoRA's rebuilt weight is normalised: bypass would differ
        keys = net.kohya_state_dict()
        assert any(k.endswith(".dora_scale") for k in keys)
        assert any("resnets_0_conv1" in k for k in keys)   # conv_rank > 0 adds the ResNet 3×3 convs
    finally:
        net.restore()


def test_lora_file_loads_in_diffusers_with_the_same_output(demo_workspace, tmp_path):
    """diffusers' load_lora_weights reads our lora file (UNet and text encoder) and computes what we do."""
    from diffusers import StableDiffusionPipeline

    from backend.models.base import TextEncoders

    fam = get_family("sd15")
    pipe = StableDiffusionPipeline.from_pretrained(demo_workspace / "models" / "demo-sd15", local_files_only=True)
    te = TextEncoders([pipe.tokenizer], [pipe.text_encoder])
    c_base, y_base = _forward(fam, te, pipe.unet)
    net = build_network(_cfg("lora", conv_rank=0), fam, pipe.unet, te)
    try:
        net.net.eval()
        _perturb(net)
        c_ours, y_ours = _forward(fam, te, pipe.unet)
        path = tmp_path / "lora.safetensors"
        save_lora_file(path, net.kohya_state_dict(torch.float32), {})
    finally:
        net.restore()
    pipe.load_lora_weights(str(path))
    c_diff, y_diff = _forward(fam, te, pipe.unet)
    assert not torch.allclose(y_diff, y_base, atol=1e-4) and not torch.allclose(c_diff, c_base, atol=1e-4)
    assert torch.allclose(c_diff, c_ours, atol=1e-5) and torch.allclose(y_diff, y_ours, atol=1e-4)


@pytest.mark.parametrize(("algo", "constraint"), [("diag-oft", 0.0), ("boft", 0.0), ("diag-oft", 1e-3)])
def test_oft_files_say_the_alpha_their_tensors_hold(model, algo, constraint):
    """Issue 17: ss_network_alpha of diag-oft/boft named network.alpha while every `.alpha` tensor held
    the constraint (LyCORIS stores it there; sd-scripts' own OFT calls its constraint alpha too)."""
    import json

    from backend.training.networks import network_metadata

    fam, te, unet = model
    net = build_network(_cfg(algo, alpha=2.0, constraint=constraint), fam, unet, te)
    try:
        alphas = {float(v) for k, v in net.kohya_state_dict(torch.float32).items() if k.endswith(".alpha")}
        meta = network_metadata(net)
    finally:
        net.restore()
    assert len(alphas) == 1 and alphas.pop() == pytest.approx(float(meta["ss_network_alpha"]))
    assert float(meta["ss_network_alpha"]) == constraint
    assert float(json.loads(meta["ss_network_args"]).get("constraint", 0)) == constraint


@pytest.mark.parametrize(("target", "conv_rank", "preset"),
                         [("attn-mlp", 0, "attn-mlp"), ("attn", 0, "attn-only"), ("all", 0, "full-lin"),
                          ("all", 4, "full")])
def test_network_args_name_a_preset_lycoris_reads(model, target, conv_rank, preset):
    """Issue 17: ss_network_args.preset held our target name ("attn", "all"), which LyCORIS's
    create_network reads as a preset file path and fails on; now a LyCORIS preset, ours under its key."""
    import json

    from lycoris.config import PRESET

    from backend.training.networks import network_metadata

    fam, te, unet = model
    net = build_network(_cfg("lora", target=target, conv_rank=conv_rank), fam, unet, te)
    try:
        args = json.loads(network_metadata(net)["ss_network_args"])
    finally:
        net.restore()
    assert args["preset"] == preset and preset in PRESET
    assert args["loradash_target"] == target


def test_default_network_replays_in_lycoris_create_network(model):
    """A file's ss_network_* given back to lycoris.kohya.create_network (as sd-scripts does with
    network_args) builds a network that holds every module of the file, so its weights load."""
    import json

    from lycoris.kohya import LycorisNetworkKohya, create_network

    from backend.training.networks import _PRESET_ATTRIBUTES, network_metadata

    fam, te, unet = model
    net = build_network(_cfg("lora", target="attn-mlp", conv_rank=0), fam, unet, te)
    try:
        saved = {k.split(".", 1)[0] for k in net.kohya_state_dict()}
        meta = network_metadata(net)
    finally:
        net.restore()
    before = {a: getattr(LycorisNetworkKohya, a) for a in _PRESET_ATTRIBUTES}
    try:
        replay = create_network(1.0, int(meta["ss_network_dim"]), float(meta["ss_network_alpha"]), None,
                                fam.network_text_encoders(te), unet, **json.loads(meta["ss_network_args"]))
    finally:
        for a, v in before.items():
            setattr(LycorisNetworkKohya, a, v)
    assert saved <= {m.lora_name for m in replay.loras}
