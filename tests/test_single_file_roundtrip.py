"""Single-file checkpoints: tiny SD 1.5 and SDXL pipelines written in the original layout load back
offline (every socket blocked) with identical weights and images; the shipped configs describe the real
architectures; bad files fail with messages that say what the file is."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from backend.errors import ModelError
from backend.models import detect, ldm_keys, single_file
from backend.models.sdxl_demo import tiny_sdxl_pipeline
from tests._single_file_fixtures import block_network, same_state, tiny_sd15_pipeline


def _image(pipe):
    return pipe("a red circle", num_inference_steps=2, height=64, width=64, output_type="pt",
                generator=torch.Generator().manual_seed(0)).images


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_round_trip_offline(family, tmp_path, monkeypatch):
    pipe = tiny_sd15_pipeline(tmp_path / "tok") if family == "sd15" else tiny_sdxl_pipeline(tmp_path / "tok")
    ckpt = single_file.write_single_file_model(pipe, tmp_path / "model.safetensors", family)
    attempts = block_network(monkeypatch)
    det = detect.detect(ckpt)
    assert (det.kind, det.family) == ("checkpoint", family)
    assert ("cond_stage_model" if family == "sd15" else "conditioner.embedders.1") in det.evidence
    loaded = single_file.load_pipeline(ckpt, family=family)
    assert loaded.config_dir == single_file.sidecar_config(ckpt)
    parts = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if family == "sdxl" else [])
    for name in parts:
        assert same_state(getattr(pipe, name), getattr(loaded.pipe, name)) == [], name
    assert torch.equal(_image(pipe), _image(loaded.pipe))
    assert attempts == []
    if family == "sdxl":  # the second tokenizer pads with "!" (id 0), as OpenCLIP does
        assert loaded.pipe.tokenizer_2.pad_token == "!" and loaded.pipe.tokenizer_2.pad_token_id == 0
        assert loaded.pipe.tokenizer.pad_token_id == 49407


def test_v_prediction_marker_detected_and_applied(tmp_path):
    pipe = tiny_sd15_pipeline(tmp_path / "tok", prediction_type="v_prediction")
    single_file.set_prediction(pipe, "v_prediction", zero_terminal_snr=True)
    ckpt = single_file.write_single_file_model(pipe, tmp_path / "v.safetensors", "sd15")
    det = detect.detect(ckpt)
    assert det.prediction == "v_prediction" and det.zero_terminal_snr and det.prediction_known
    assert "v-prediction" in det.describe() and det.base_model_version == "sd_v1_v"
    loaded = single_file.load_pipeline(ckpt)
    assert loaded.pipe.scheduler.config.prediction_type == "v_prediction"
    assert loaded.pipe.scheduler.config.rescale_betas_zero_snr


def test_shipped_configs_are_the_real_architectures(tmp_path, monkeypatch):
    """Built on the meta device: parameter counts are SD 1.5's 859.52 M / 123.06 M and SDXL's
    2567.46 M / 694.66 M; our original-layout names convert back through diffusers' own converter."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    block_network(monkeypatch)
    expected = {"sd15": (859.52, {"text_encoder": 123.06}),
                "sdxl": (2567.46, {"text_encoder": 123.06, "text_encoder_2": 694.66})}
    for family, (unet_m, te_m) in expected.items():
        folder = single_file.shipped_config(family, tmp_path / "cfg")
        assert single_file.shipped_config(family, tmp_path / "cfg") == folder  # built once
        with init_empty_weights():
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
            for sub, millions in te_m.items():
                cls = CLIPTextModelWithProjection if sub == "text_encoder_2" else CLIPTextModel
                te = cls(CLIPTextConfig.from_pretrained(folder / sub))
                assert round(sum(p.numel() for p in te.parameters()) / 1e6, 2) == millions
        assert round(sum(p.numel() for p in unet.parameters()) / 1e6, 2) == unet_m
        state = unet.state_dict()
        ldm = ldm_keys.unet_to_ldm(state, unet.config)
        back = convert_ldm_unet_checkpoint(ldm, dict(unet.config))
        assert set(back) == set(state) and all(back[k].shape == state[k].shape for k in state)
        tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
        assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    sdxl = ldm_keys.unet_to_ldm(state, unet.config)
    assert sdxl["model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight"].shape == (1280, 2048)
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in sdxl  # upsampler after attention
    assert len(sdxl) == 1680
    tok2 = CLIPTokenizer.from_pretrained(folder / "tokenizer_2")
    assert tok2("cat", padding="max_length", max_length=5).input_ids == [49406, 2368, 49407, 0, 0]


def _write_safetensors(path, tensors: dict, meta: dict | None = None):
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=meta)
    return path


def test_bad_files_fail_clearly(tmp_path):
    pipe = tiny_sd15_pipeline(tmp_path / "tok")
    ckpt = single_file.write_single_file_model(pipe, tmp_path / "m.safetensors", "sd15")
    data = ckpt.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ModelError, match=r"truncated.*66\.\d %.*download it again"):
        single_file.load_pipeline(cut)
    (tmp_path / "tiny.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(ModelError, match="not a safetensors file"):
        detect.detect(tmp_path / "tiny.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(struct.pack("<Q", 5) + b"{nope")
    with pytest.raises(ModelError, match="damaged safetensors header"):
        detect.detect(garbage)
    unknown = _write_safetensors(tmp_path / "other.safetensors", {"foo.weight": torch.zeros(2)})
    with pytest.raises(ModelError, match="not a model LoRA Dash can train on"):
        single_file.load_pipeline(unknown)
    flux = _write_safetensors(tmp_path / "flux.safetensors", {"double_blocks.0.img_attn.qkv.weight": torch.zeros(2)})
    with pytest.raises(ModelError, match="a Flux model"):
        single_file.load_pipeline(flux)
    with pytest.raises(ModelError, match=r"model.family is 'sdxl'.*SD 1.x.*model.family = 'sd15'"):
        single_file.load_pipeline(ckpt, family="sdxl")
    lora = _write_safetensors(tmp_path / "l.safetensors", {"lora_unet_x.lora_down.weight": torch.zeros(1, 2)})
    with pytest.raises(ModelError, match="is a LoRA"):
        single_file.load_pipeline(lora)


def test_diffusers_folder_detected(tmp_path):
    pipe = tiny_sdxl_pipeline(tmp_path / "tok")
    pipe.save_pretrained(tmp_path / "xl")
    det = detect.detect(tmp_path / "xl")
    assert (det.kind, det.family) == ("diffusers", "sdxl")
    assert json.loads((tmp_path / "xl" / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
    loaded = single_file.load_pipeline(tmp_path / "xl", family="sdxl")
    assert same_state(pipe.unet, loaded.pipe.unet) == []
