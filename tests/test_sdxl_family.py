"""The SDXL family against diffusers' own SDXL pipeline: the same prompt embeddings, pooled embedding,
time ids and denoiser output, loaded from a single file and from a diffusers folder, offline."""

from __future__ import annotations

import pytest
import torch

from backend.errors import ModelError
from backend.models import registry, single_file
from backend.models.sdxl import SDXLFamily, time_ids
from backend.models.sdxl_demo import tiny_sdxl_pipeline
from tests._single_file_fixtures import block_network, same_state, tiny_sd15_pipeline

PROMPTS = ["dashdemo, a red circle", "a blue square on a dark background"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sdxl")
    pipe = tiny_sdxl_pipeline(tmp / "tok")
    ckpt = single_file.write_single_file_model(pipe, tmp / "xl.safetensors", "sdxl")
    pipe.save_pretrained(tmp / "xl-folder")
    return tmp, pipe, ckpt


@pytest.mark.parametrize("layout", ["single_file", "folder"])
def test_family_matches_the_diffusers_pipeline(model, layout, monkeypatch):
    tmp, pipe, ckpt = model
    path = ckpt if layout == "single_file" else tmp / "xl-folder"
    attempts = block_network(monkeypatch)
    fam = registry.get_family("sdxl")
    assert isinstance(fam, SDXLFamily)
    src = fam.open(path)
    te = fam.load_text_encoders(src, device="cpu", dtype=torch.float32)
    unet = fam.load_unet(src, device="cpu", dtype=torch.float32)
    vae = fam.load_vae(src, device="cpu", dtype=torch.float32)
    assert same_state(unet, pipe.unet) == [] and same_state(vae, pipe.vae) == []
    assert [t.pad_token for t in te.tokenizers] == ["<|endoftext|>", "!"]
    with torch.no_grad():
        cond = fam.encode_prompts(te, PROMPTS)
        ref, _, ref_pooled, _ = pipe.encode_prompt(PROMPTS, device="cpu", do_classifier_free_guidance=False)
    assert cond["encoder_hidden_states"].shape == (2, 77, 32 + 48) and cond["text_embeds"].shape == (2, 48)
    assert torch.equal(cond["encoder_hidden_states"], ref) and torch.equal(cond["text_embeds"], ref_pooled)
    batch = {"original_size": [(300, 200), (128, 192)], "crop_top_left": [(8, 0), (0, 16)],
             "target_size": [(128, 128), (128, 192)]}
    extra = fam.extra_conditioning(batch)
    expected = pipe._get_add_time_ids((300, 200), (8, 0), (128, 128), dtype=torch.float32,
                                      text_encoder_projection_dim=48)
    assert torch.equal(extra["time_ids"][0:1], expected)
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500])
    with torch.no_grad():
        out = fam.predict(unet, latents, t, cond, extra)
        direct = pipe.unet(latents, t, encoder_hidden_states=ref,
                           added_cond_kwargs={"text_embeds": ref_pooled, "time_ids": extra["time_ids"]}).sample
    assert torch.equal(out, direct)
    sched = fam.load_noise_scheduler(src, v_prediction=True, zero_terminal_snr=False)
    assert sched.config.prediction_type == "v_prediction" and sched.config.num_train_timesteps == 1000
    assert attempts == []


def test_sampling_pipeline_reuses_modules_and_matches(model):
    _, pipe, ckpt = model
    fam = SDXLFamily()
    te = fam.load_text_encoders(fam.open(ckpt), device="cpu", dtype=torch.float32)
    built = fam.build_pipeline(unet=pipe.unet, vae=pipe.vae, te=te, scheduler=pipe.scheduler)
    with torch.no_grad():
        cond, neg = fam.encode_prompts(te, PROMPTS[:1]), fam.encode_prompts(te, [""])
        kwargs = fam.pipeline_prompt_kwargs(cond, neg)
        ours = built(**kwargs, num_inference_steps=2, height=64, width=64, output_type="pt",
                     generator=torch.Generator().manual_seed(0)).images
        pipe.register_to_config(force_zeros_for_empty_prompt=False)
        theirs = pipe(PROMPTS[0], negative_prompt="", num_inference_steps=2, height=64, width=64,
                      output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert built.unet is pipe.unet and torch.equal(ours, theirs)


def test_metadata_and_targets():
    fam = SDXLFamily()
    assert fam.base_model_version(False) == fam.base_model_version(True) == "sdxl_base_v1-0"
    assert fam.modelspec_architecture(False) == "stable-diffusion-xl-v1-base/lora"
    assert fam.text_encoder_prefixes == ("lora_te1", "lora_te2")
    assert "add_embedding.linear_1" in fam.lora_targets("all", False).unet_names
    with pytest.raises(ModelError, match="network.target"):
        fam.lora_targets("everything", False)
    assert time_ids((1024, 768), (0, 32), (1024, 1024)) == [1024, 768, 0, 32, 1024, 1024]
    with pytest.raises(ModelError, match="original_size"):
        fam.extra_conditioning({"target_size": [(64, 64)]})


def test_wrong_models_refused_before_loading(model, tmp_path):
    fam = SDXLFamily()
    sd15 = single_file.write_single_file_model(tiny_sd15_pipeline(tmp_path / "tok"), tmp_path / "sd15.safetensors",
                                               "sd15")
    with pytest.raises(ModelError, match=r"model.family is 'sdxl' but .*SD 1.x.*model.family = 'sd15'"):
        fam.open(sd15)
    with pytest.raises(ModelError, match="missing .*text_encoder_2/"):
        fam.open(tmp_path)  # an empty folder
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(model[2].read_bytes()[:100_000])
    with pytest.raises(ModelError, match="truncated"):
        fam.open(cut)


def test_v_prediction_checkpoint_needs_v_prediction_setting(tmp_path):
    pipe = tiny_sdxl_pipeline(tmp_path / "tok", prediction_type="v_prediction")
    single_file.set_prediction(pipe, "v_prediction", zero_terminal_snr=True)
    ckpt = single_file.write_single_file_model(pipe, tmp_path / "noob-v.safetensors", "sdxl")
    fam = SDXLFamily()
    with pytest.raises(ModelError, match=r"v-prediction model .*model.v_prediction = true and "
                                         r"loss.zero_terminal_snr = true"):
        fam.load_noise_scheduler(fam.open(ckpt), v_prediction=False, zero_terminal_snr=False)
    sched = fam.load_noise_scheduler(fam.open(ckpt), v_prediction=True, zero_terminal_snr=True)
    assert sched.config.prediction_type == "v_prediction" and float(sched.alphas_cumprod[-1]) == 0.0
