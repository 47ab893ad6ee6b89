"""The Flux family against diffusers' own FluxPipeline: the same prompt embeddings, the same transformer
output, the same sample, loaded from a diffusers folder and from ComfyUI-style files (BFL transformer +
CLIP-L + T5 + AE written by the test from the tiny model), offline; the BFL names checked against
diffusers' converter on the real architecture (meta device, no weights)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from backend.errors import ModelError
from backend.models import flux_files, registry, single_file
from backend.models.flux import FluxFamily, image_ids, joint_attention_mask, pack_latents, unpack_latents
from backend.models.flux_demo import tiny_flux_pipeline
from tests._single_file_fixtures import block_network, same_state

PROMPTS = ["dashdemo, red circle, white gradient background", "a blue square on a dark background"]
CONFIGS = Path(__file__).resolve().parent.parent / "backend" / "models" / "configs"


def model_section(path, **kw):
    """The config's model section as FluxFamily.open reads it."""
    fields = {"path": str(path), "vae_path": "", "clip_l_path": "", "t5_path": "", "t5_max_length": 64,
              "apply_t5_attn_mask": False}
    return SimpleNamespace(**{**fields, **kw})


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flux")
    pipe = tiny_flux_pipeline(tmp / "tok")
    for module in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        module.eval()  # as loaded for training: no dropout in the reference
    pipe.save_pretrained(tmp / "folder")
    files = flux_files.write_component_files(pipe, tmp / "comfy", "tiny-flux")
    return tmp, pipe, files


def single_file_section(files, **kw):
    parts = {"clip_l_path": str(files["clip_l"]), "t5_path": str(files["t5"]), "vae_path": str(files["ae"])}
    return model_section(files["transformer"], **{**parts, **kw})


@pytest.mark.parametrize("layout", ["folder", "single_file"])
def test_family_matches_the_diffusers_pipeline(model, layout, monkeypatch):
    tmp, pipe, files = model
    attempts = block_network(monkeypatch)
    fam = registry.get_family("flux")
    assert isinstance(fam, FluxFamily)
    src = fam.open(model_section(tmp / "folder") if layout == "folder" else single_file_section(files))
    assert src.detected.variant == "dev" and src.single_file == (layout == "single_file")
    te = fam.load_text_encoders(src, device="cpu", dtype=torch.float32)
    unet = fam.load_unet(src, device="cpu", dtype=torch.float32)
    vae = fam.load_vae(src, device="cpu", dtype=torch.float32)
    assert same_state(unet, pipe.transformer) == [] and same_state(vae, pipe.vae) == []
    assert same_state(te.encoders[0], pipe.text_encoder) == [] and same_state(te.encoders[1], pipe.text_encoder_2) == []
    with torch.no_grad():
        cond = fam.encode_prompts(te, PROMPTS)
        ref, ref_pooled, _ = pipe.encode_prompt(PROMPTS, PROMPTS, device="cpu", max_sequence_length=64)
    assert cond["prompt_embeds"].shape == (2, 64, 32) and torch.equal(cond["prompt_embeds"], ref)
    assert torch.equal(cond["pooled_prompt_embeds"], ref_pooled) and "t5_mask" not in cond
    latents = torch.randn(2, 16, 8, 12, generator=torch.Generator().manual_seed(0))
    sigmas = torch.tensor([0.3, 0.9])
    guidance = torch.tensor([3.5, 3.5])
    with torch.no_grad():
        out = fam.predict(unet, latents, sigmas, cond, {"guidance": guidance})
        direct = pipe.transformer(hidden_states=pipe._pack_latents(latents, 2, 16, 8, 12), timestep=sigmas,
                                  guidance=guidance, pooled_projections=ref_pooled, encoder_hidden_states=ref,
                                  txt_ids=torch.zeros(64, 3), img_ids=pipe._prepare_latent_image_ids(2, 4, 6, "cpu",
                                                                                                   torch.float32)
                                  ).sample
    assert torch.equal(out, pipe._unpack_latents(direct, 64, 96, 8))
    sched = fam.load_noise_scheduler(src, v_prediction=False, zero_terminal_snr=False)
    assert sched.config.use_dynamic_shifting and sched.config.shift == 3.0
    assert attempts == []


def test_packing_and_positions_match_diffusers():
    from diffusers import FluxPipeline

    x = torch.randn(3, 16, 6, 10)
    packed = pack_latents(x)
    assert torch.equal(packed, FluxPipeline._pack_latents(x, 3, 16, 6, 10))
    assert torch.equal(unpack_latents(packed, 6, 10), x)
    assert torch.equal(image_ids(6, 10), FluxPipeline._prepare_latent_image_ids(3, 3, 5, "cpu", torch.float32))
    mask = joint_attention_mask(torch.tensor([[1, 1, 0]]), 2)
    assert mask.shape == (1, 1, 1, 5) and mask.flatten().tolist() == [True, True, False, True, True]


def test_t5_mask_hides_padding(model):
    """With model.apply_t5_attn_mask the padded T5 tokens change nothing; without it they do."""
    tmp, pipe, _ = model
    fam = FluxFamily()
    src = fam.open(model_section(tmp / "folder", apply_t5_attn_mask=True))
    te = fam.load_text_encoders(src, device="cpu", dtype=torch.float32)
    unet = fam.load_unet(src, device="cpu", dtype=torch.float32)
    with torch.no_grad():
        cond = fam.encode_prompts(te, PROMPTS[:1])
    assert cond["t5_mask"].sum() < 64  # the prompt is shorter than 64 tokens
    latents = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(1))
    extra = {"guidance": torch.tensor([1.0])}
    changed = {**cond, "prompt_embeds": cond["prompt_embeds"].clone()}
    changed["prompt_embeds"][:, cond["t5_mask"][0] == 0] += 5.0  # only the padding moves
    unmasked = {k: v for k, v in changed.items() if k != "t5_mask"}
    with torch.no_grad():
        a = fam.predict(unet, latents, torch.tensor([0.5]), cond, extra)
        b = fam.predict(unet, latents, torch.tensor([0.5]), changed, extra)
        c = fam.predict(unet, latents, torch.tensor([0.5]), unmasked, extra)
    assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, c, atol=1e-3)


def test_sampling_pipeline_reuses_modules_and_matches(model):
    tmp, pipe, _ = model
    fam = FluxFamily()
    te = fam.load_text_encoders(fam.open(model_section(tmp / "folder")), device="cpu", dtype=torch.float32)
    built = fam.build_pipeline(unet=pipe.transformer, vae=pipe.vae, te=None, scheduler=pipe.scheduler)
    with torch.no_grad():
        cond = fam.encode_prompts(te, PROMPTS[:1])
        latents = fam.initial_latents(built, pipe.transformer, 64, 48, torch.Generator().manual_seed(0))
        ours = built(**fam.sample_kwargs(cond, {}, 64, 48), latents=latents, num_inference_steps=3, height=48,
                     width=64, guidance_scale=3.5, output_type="pt").images
        theirs = pipe(PROMPTS[0], num_inference_steps=3, height=48, width=64, guidance_scale=3.5,
                      max_sequence_length=64, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert built.transformer is pipe.transformer and torch.equal(ours, theirs)


def test_bfl_names_match_diffusers_converter_on_the_real_architecture():
    """Every tensor name and shape of the real FLUX.1 [dev] and [schnell] transformers, BFL → diffusers,
    as diffusers' own converter produces them (meta tensors: no memory)."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    for variant in ("dev", "schnell"):
        config = json.loads((CONFIGS / f"flux-{variant}" / "transformer" / "config.json").read_text())
        with init_empty_weights():
            real = FluxTransformer2DModel.from_config(config)
        state = real.state_dict()
        bfl = flux_files.diffusers_to_bfl(state, real.config)
        assert ("guidance_in.in_layer.weight" in bfl) == (variant == "dev")
        assert "double_blocks.18.img_attn.qkv.weight" in bfl and "single_blocks.37.linear1.weight" in bfl
        theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
        ours = flux_files.bfl_to_diffusers({f"model.diffusion_model.{k}": v for k, v in bfl.items()}, real.config)
        assert set(ours) == set(theirs) == set(state)
        assert all(ours[k].shape == theirs[k].shape == state[k].shape for k in ours)


def test_shipped_flux_configs_are_the_real_architectures():
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    def count(module):
        return sum(p.numel() for p in module.parameters())

    counts = {}
    for variant in ("dev", "schnell"):
        with init_empty_weights():
            counts[variant] = count(FluxTransformer2DModel.from_config(
                json.loads((CONFIGS / f"flux-{variant}" / "transformer" / "config.json").read_text())))
    with init_empty_weights():
        t5 = T5EncoderModel(T5Config.from_pretrained(CONFIGS / "flux-dev" / "text_encoder_2"))
        clip = CLIPTextModel(CLIPTextConfig.from_pretrained(CONFIGS / "flux-dev" / "text_encoder"))
        vae = AutoencoderKL.from_config(json.loads((CONFIGS / "flux-dev" / "vae" / "config.json").read_text()))
    # FLUX.1 [dev] 11.90 B (the guidance MLP is [schnell]'s difference), T5-XXL encoder 4.76 B with its
    # shared embedding counted once, CLIP-L 123.06 M, the AE 83.82 M.
    assert counts["dev"] == 11_901_408_320 and counts["dev"] - counts["schnell"] == 10_229_760
    assert count(t5) - t5.shared.weight.numel() == 4_762_310_656
    assert count(clip) == 123_060_480 and count(vae) == 83_819_683
    assert vae.config.latent_channels == 16 and vae.config.scaling_factor == 0.3611


def test_single_file_needs_its_components(model, tmp_path):
    _, _, files = model
    fam = FluxFamily()
    with pytest.raises(ModelError, match=r"model.t5_path: a Flux transformer file does not hold .*t5xxl_fp16"):
        fam.open(single_file_section(files, t5_path=""))
    with pytest.raises(ModelError, match=r"model.clip_l_path: .* is a T5 text encoder \(it goes in model.t5_path\)"):
        fam.open(single_file_section(files, clip_l_path=str(files["t5"])))
    with pytest.raises(ModelError, match="model.family is 'flux' but .* SDXL"):
        from backend.models.sdxl_demo import tiny_sdxl_pipeline

        xl = single_file.write_single_file_model(tiny_sdxl_pipeline(tmp_path / "tok"), tmp_path / "xl.safetensors",
                                                 "sdxl")
        fam.open(model_section(xl))


def test_shipped_configs_load_a_file_without_a_sidecar(model, tmp_path, monkeypatch):
    """Without `<stem>.config/` the shipped FLUX.1 configs are used: a tiny file then fails to build with a
    message naming the sidecar folder, not a traceback, and the config folder is the shipped [dev] one."""
    _, _, files = model
    lone = tmp_path / "lone.safetensors"
    lone.symlink_to(files["transformer"])
    fam = FluxFamily(configs_root=tmp_path / "configs")
    src = fam.open(single_file_section({**files, "transformer": lone}))
    assert src.config_dir.name.startswith("flux-dev-") and (src.config_dir / "tokenizer" / "vocab.json").is_file()
    with pytest.raises(ModelError, match="lacks|has no|size mismatch|shape"):
        fam.load_unet(src, device="cpu", dtype=torch.float32)


def test_lora_targets_cover_the_blocks(model):
    from backend.config import load_config
    from backend.training.networks import build_network

    tmp, pipe, _ = model
    fam = FluxFamily()
    counts = {}
    for target in ("attn", "attn-mlp", "all"):
        unet = fam.load_unet(fam.open(model_section(tmp / "folder")), device="cpu", dtype=torch.float32)
        cfg = load_config({"network": {"target": target}})
        net = build_network(cfg.network, fam, unet, None)
        names = [m.lora_name for m in net.unet_modules]
        counts[target] = len(names)
        net.restore()
    # attn: 8 projections in the double block, q/k/v in each single block; attn-mlp: every linear of the
    # blocks (attention, MLP, modulation); all: plus embedders (x, context, 3 × 2 time/text/guidance) and output.
    assert counts == {"attn": 8 + 2 * 3, "attn-mlp": 14 + 2 * 6, "all": 26 + 2 + 6 + 2}
    for algo, extra in (("lokr", {}), ("lora", {"dora": True}), ("loha", {})):
        unet = fam.load_unet(fam.open(model_section(tmp / "folder")), device="cpu", dtype=torch.float32)
        net = build_network(load_config({"network": {"algo": algo, **extra}}).network, fam, unet, None)
        latents = torch.randn(1, 16, 4, 4)
        cond = {"prompt_embeds": torch.randn(1, 8, 32), "pooled_prompt_embeds": torch.randn(1, 32)}
        loss = fam.predict(unet, latents, torch.tensor([0.5]), cond, {"guidance": torch.tensor([1.0])}).square().mean()
        loss.backward()
        assert all(p.grad is not None for p in net.trainable_parameters()), algo
        net.restore()


def test_metadata_names():
    fam = FluxFamily()
    assert fam.base_model_version(False, "dev") == "flux1"
    assert fam.modelspec_architecture(False, "dev") == "flux-1-dev/lora"
    assert fam.modelspec_architecture(False, "schnell") == "flux-1-schnell/lora"
    with pytest.raises(ModelError, match="network.target"):
        fam.lora_targets("everything", False)
