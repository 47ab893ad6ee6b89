"""The step counted on the meta device (backend.training.cost) and benchmarks/step_cost.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from torch.utils.flop_counter import FlopCounterMode

from backend.config import TrainConfig
from backend.paths import PROJECT_ROOT
from backend.training.cost.arch import architecture
from backend.training.cost.step import BACKWARD, FORWARD, StepSettings, measure_step

FB = (FORWARD, BACKWARD)


@pytest.fixture(scope="module")
def arch(demo_workspace):
    return architecture("sd15", demo_workspace / "models" / "demo-sd15")


def _cfg(precision="bf16", **net):
    return TrainConfig.model_validate({"model": {"family": "sd15"}, "network": {"rank": 4, "alpha": 4, **net},
                                       "training": {"mixed_precision": precision}})


def test_operators_flops_and_bytes_are_attributed(arch):
    with FlopCounterMode(display=False) as counter:
        cost = measure_step(arch, StepSettings(_cfg(), 2, 64, 64))
    assert cost.total("flops") == counter.get_total_flops() > 0      # the same formulas, every operator
    for owner in ("frozen", "adapter"):
        assert cost.total("ops", owner, (FORWARD,)) > 0 and cost.total("ops", owner, (BACKWARD,)) > 0
    assert cost.total("ops", None, ("optimizer",)) > 0
    assert cost.adapters == cost.fused_adapters > 0
    assert cost.grad_bytes == cost.adapter_bytes > 0                   # one fp32 gradient per trainable weight
    # AdamW: two fp32 moments per weight and a step counter per tensor
    assert cost.optimizer_state_bytes == 2 * cost.adapter_bytes + 4 * len(cost.trainable_shapes)
    assert cost.peak_bytes >= cost.saved_bytes > 0
    assert "_scaled_dot_product_flash_attention" in cost.op_counts         # the CUDA kernel for bf16, not the math path
    fp32 = measure_step(arch, StepSettings(_cfg("no"), 2, 64, 64))
    assert "_scaled_dot_product_efficient_attention" in fp32.op_counts    # fp32: memory-efficient attention
    assert fp32.saved_bytes > cost.saved_bytes                          # fp32 activations are larger


def test_views_and_in_place_results_of_tensors_made_before_the_step_are_not_new_memory():
    """A linear layer dispatches t(weight), a view of a weight that existed before the step: no byte of it
    is the step's (it counted every linear weight of Flux.1 [dev], 22 GiB, as step memory)."""
    import torch

    from backend.training.cost.probe import StepProbe

    weight, bias = torch.empty(1024, 512, device="meta"), torch.empty(1024, device="meta")
    state = torch.empty(1024, 512, device="meta")
    probe = StepProbe(count=False)
    with probe:
        x = torch.empty(8, 512, device="meta")
        y = torch.nn.functional.linear(x, weight, bias)
        state.mul_(0.9)                      # an optimizer's in-place update
    assert probe.peak == x.nbytes + y.nbytes


def test_fused_forwards_dispatch_fewer_operators_than_lycoris(arch):
    fused = measure_step(arch, StepSettings(_cfg(), 1, 64, 64))
    lycoris = measure_step(arch, StepSettings(_cfg(), 1, 64, 64, fused=False))
    assert lycoris.fused_adapters == 0
    assert fused.total("kernels", "adapter", FB) < lycoris.total("kernels", "adapter", FB)
    assert fused.total("kernels", "frozen", FB) == lycoris.total("kernels", "frozen", FB)
    assert fused.total("flops", None, FB) == lycoris.total("flops", None, FB)


def test_the_reference_is_the_frozen_model_with_gradients_from_the_adapted_layers(arch):
    ref = measure_step(arch, StepSettings(_cfg(), 1, 64, 64, optimizer=False, reference=True))
    run = measure_step(arch, StepSettings(_cfg(), 1, 64, 64, optimizer=False))
    assert ref.total("ops", "adapter") == 0 and ref.adapter_bytes == 0
    assert 0 < ref.total("flops", None, FB) < run.total("flops", None, FB)
    assert ref.total("flops", None, (BACKWARD,)) > 0.5 * ref.total("flops", None, (FORWARD,))


def test_checkpointing_lowers_the_saved_activations(arch):
    plain = measure_step(arch, StepSettings(_cfg(), 2, 128, 128, count=False, optimizer=False))
    cfg = _cfg()
    cfg.training.gradient_checkpointing = True
    ckpt = measure_step(arch, StepSettings(cfg, 2, 128, 128, count=False, optimizer=False))
    assert ckpt.saved_bytes < plain.saved_bytes and ckpt.peak_bytes < plain.peak_bytes


def test_the_benchmark_prints_json_and_the_table():
    out = subprocess.run([sys.executable, "benchmarks/step_cost.py", "--family", "sd15", "--batch", "1",
                          "--algo", "lora", "dylora"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    start = out.stdout.index("{")
    data, end = json.JSONDecoder().raw_decode(out.stdout[start:])
    rows = {r["algo"]: r for r in data["rows"]}
    assert rows["lora"]["meets_flops_target"] and rows["lora"]["adapters"] == 192    # the real SD 1.5 UNet
    assert not rows["dylora"]["meets_flops_target"] and rows["dylora"]["gaps"]       # the gap is explained
    table = out.stdout[start + end:]
    assert "kern fr" in table and "targets:" in table and "dylora" in table


def test_the_benchmark_prints_flux_dev_rows():
    """FLUX.1 [dev] at 1024² from the shipped configs: every linear layer of its 19 double blocks (14 each) and
    38 single blocks (6 each) adapted on the default target, its 11.9 B weights in bf16."""
    out = subprocess.run([sys.executable, "benchmarks/step_cost.py", "--family", "flux", "--algo", "lora"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    start = out.stdout.index("{")
    data, end = json.JSONDecoder().raw_decode(out.stdout[start:])
    (row,) = data["rows"]
    assert (row["family"], row["resolution"], row["batch"], row["algo"]) == ("flux", 1024, 1, "lora")
    assert row["adapters"] == row["fused_adapters"] == 19 * 14 + 38 * 6
    assert row["frozen_weight_bytes"] == 11_901_408_320 * 2
    assert row["meets_flops_target"] and row["meets_ops_target"]
    assert 1e14 < row["flops"] < 1e15                        # ≈ 6 × 12 B parameters × 4608 tokens, and attention
    assert "flux   1024  1 lora" in out.stdout[start + end:]


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_both_families_attend_through_sdpa(family):
    """diffusers' default processor (AttnProcessor2_0: F.scaled_dot_product_attention, the fused CUDA
    kernels) in every UNet attention, and transformers' "sdpa" in the text encoders."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from backend.models.registry import get_family
    from backend.models.single_file import SHIPPED
    from backend.training.cost.arch import unet_architecture

    unet = unet_architecture(get_family(family), SHIPPED / family).denoiser(torch.bfloat16)
    assert {type(p).__name__ for p in unet.attn_processors.values()} == {"AttnProcessor2_0"}
    for part in ["text_encoder", "text_encoder_2"] if family == "sdxl" else ["text_encoder"]:
        with torch.device("meta"):
            enc = CLIPTextModel(CLIPTextConfig.from_pretrained(SHIPPED / family / part))
        assert enc.config._attn_implementation == "sdpa"


def test_flux_text_encoders_from_the_shipped_configs_encode_on_the_meta_device(tmp_path):
    """With network.train_text_encoder the step encodes its captions: FLUX.1 [dev]'s shipped configs carry no
    T5 tokenizer (it is downloaded on a model's first real use), so the cost tools use a stand-in T5-style
    tokenizer, offline; padded to the T5 length, the step gets the real shapes (512 tokens, or
    model.t5_max_length), CLIP-L in the trained dtype, T5 in the compute dtype."""
    import torch

    from backend.config import TrainConfig

    arch = architecture("flux", None, tmp_path / "configs")
    assert not (arch.folder / "tokenizer_2").exists()
    for length, expected in ((None, 512), (77, 77)):
        cfg = TrainConfig.model_validate({"model": {"family": "flux", "t5_max_length": length}})
        te = arch.text_encoders(torch.float32, torch.bfloat16, cfg)
        assert [e.dtype for e in te.encoders] == [torch.float32, torch.bfloat16]
        with torch.no_grad():
            cond = arch.family.encode_prompts(te, ["a photo of dashdemo", "a much longer caption " * 80])
        assert cond["prompt_embeds"].shape == (2, expected, 4096) and cond["pooled_prompt_embeds"].shape == (2, 768)
        assert arch.text_tokens(cfg) == expected
