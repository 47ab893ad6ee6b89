"""The model manager's scan of workspace/models: every kind of file and folder a user keeps there is
listed with its family, size, precision and (for LoRAs) sd-scripts metadata; broken files are listed
with the reason, not hidden and not fatal."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from backend.models import inspect, single_file
from backend.models.sdxl_demo import tiny_sdxl_pipeline
from backend.paths import WorkspacePaths
from tests._single_file_fixtures import tiny_sd15_pipeline


def test_scan_lists_everything_with_details(tmp_path):
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    models = paths.models
    sd15 = tiny_sd15_pipeline(tmp_path / "t1")
    single_file.write_single_file_model(sd15, models / "Stable-diffusion" / "tiny15.safetensors", "sd15")
    xl = tiny_sdxl_pipeline(tmp_path / "t2")
    single_file.save_single_file(xl, models / "Stable-diffusion" / "tinyxl-fp16.safetensors", "sdxl",
                                 dtype=torch.float16)
    xl.save_pretrained(models / "xl-diffusers")
    torch.save({"state_dict": single_file.to_single_file(sd15, "sd15")}, models / "old.ckpt")
    meta = {"ss_network_module": "lycoris.kohya", "ss_network_dim": "8", "ss_network_alpha": "4.0",
            "ss_network_args": json.dumps({"algo": "lokr", "factor": 8}), "ss_base_model_version": "sdxl_base_v1-0",
            "ss_sd_model_name": "illustrious.safetensors", "ss_output_name": "mychar", "ss_steps": "1200",
            "ss_tag_frequency": json.dumps({"10_mychar": {"mychar": 20, "smile": 7}, "2_extra": {"smile": 3}}),
            "modelspec.trigger_phrase": "mychar", "modelspec.title": "My character"}
    (models / "Lora").mkdir()
    save_file({"lora_unet_input_blocks_4_1_proj_in.lokr_w1": torch.zeros(8, 8, dtype=torch.float16),
               "lora_te1_text_model_encoder_layers_0_mlp_fc1.lokr_w1": torch.zeros(8, 8, dtype=torch.float16)},
              str(models / "Lora" / "mychar.safetensors"), metadata=meta)
    (models / "big.safetensors.partial").write_bytes(b"x" * 1000)
    data = (models / "Stable-diffusion" / "tiny15.safetensors").read_bytes()
    (models / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (models / "wd-tagger").mkdir()
    (models / "wd-tagger" / "model.onnx").write_bytes(b"onnx")
    (models / ".cache").mkdir()
    (models / ".cache" / "hidden.safetensors").write_bytes(b"")

    found = {m.name: m for m in inspect.scan_models(models)}
    assert set(found) == {"tiny15.safetensors", "tinyxl-fp16.safetensors", "xl-diffusers", "old.ckpt",
                          "mychar.safetensors", "big.safetensors", "cut.safetensors", "wd-tagger"}
    t15 = found["tiny15.safetensors"]
    assert (t15.kind, t15.family, t15.precision) == ("checkpoint", "sd15", "fp32") and t15.size_bytes == len(data)
    txl = found["tinyxl-fp16.safetensors"]
    assert (txl.kind, txl.family, txl.precision, txl.label) == ("checkpoint", "sdxl", "fp16", "SDXL base")
    assert (found["xl-diffusers"].kind, found["xl-diffusers"].family) == ("diffusers", "sdxl")
    assert found["xl-diffusers"].size_bytes > 0 and found["xl-diffusers"].precision == "fp32"
    assert (found["old.ckpt"].kind, found["old.ckpt"].family) == ("checkpoint", "sd15")
    lora = found["mychar.safetensors"]
    assert (lora.kind, lora.family) == ("lora", "sdxl")
    assert (lora.lora.algo, lora.lora.rank, lora.lora.alpha, lora.lora.network_module) == ("lokr", 8, 4.0,
                                                                                           "lycoris.kohya")
    assert lora.lora.trigger_words == ["mychar"] and lora.lora.top_tags[:2] == [("mychar", 20), ("smile", 10)]
    assert lora.lora.base_model == "sdxl_base_v1-0" and lora.lora.steps == 1200 and lora.lora.trains_text_encoder
    assert found["big.safetensors"].kind == "partial" and found["big.safetensors"].size_bytes == 1000
    assert found["cut.safetensors"].kind == "error" and "truncated" in found["cut.safetensors"].error
    assert found["wd-tagger"].kind == "other"
    json.dumps([m.to_dict() for m in found.values()])  # the UI can ship it as JSON
