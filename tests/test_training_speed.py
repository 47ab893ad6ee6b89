"""The GPU step's choices, checked where the CPU can: optimizer kernels, SDPA attention in the real
architectures, a step that never reads a value back from the device, training.compile in a worker."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from backend.config import load_config
from backend.training.optim import build_optimizer
from tests._training_fixtures import PROJECT_ROOT, context, events, new_job, run_in_process, wait_worker


def test_adamw_is_fused_on_cuda_and_foreach_elsewhere_unless_extra_args_choose():
    params = [torch.nn.Parameter(torch.zeros(4))]
    cpu, _ = build_optimizer(load_config({}), [{"params": params}], "cpu")
    assert cpu.defaults["foreach"] is True and not cpu.defaults["fused"]
    # Built here with CPU tensors (PyTorch has a fused CPU kernel too): the choice is what is checked.
    gpu, _ = build_optimizer(load_config({}), [{"params": params}], "cuda")
    assert gpu.defaults["fused"] is True and not gpu.defaults["foreach"]
    chosen, _ = build_optimizer(load_config({"optimizer": {"extra_args": {"foreach": False}}}),
                                [{"params": params}], "cuda")
    assert not chosen.defaults["fused"] and chosen.defaults["foreach"] is False


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_the_real_architectures_attend_through_sdpa(family):
    """diffusers picks AttnProcessor2_0 (torch SDPA) for every attention of the UNet and the VAE, and
    transformers' CLIP runs attn_implementation "sdpa" (built on the meta device: no weights)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from backend.models.single_file import SHIPPED
    from backend.training.cuda import attention_kinds

    cfg = SHIPPED / family  # the configs shipped with LoRA Dash
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder"))
    assert attention_kinds(unet) == attention_kinds(vae) == ["AttnProcessor2_0"]
    assert attention_kinds(text) == ["CLIPTextModel:sdpa"]
    assert len(unet.attn_processors) >= (32 if family == "sd15" else 140)


class HostReads(TorchDispatchMode):
    """Records every operator whose result the host must wait for on a GPU: a tensor read into Python
    (`.item()`, `bool()`, `float()`, `.tolist()` all dispatch `_local_scalar_dense`) or an output whose
    size depends on the values (nonzero, masked_select, unique)."""

    WAITS = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "is_nonzero")

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(name in str(func) for name in self.WAITS):
            self.seen[str(func)] += 1
        return func(*args, **(kwargs or {}))


def test_a_training_step_never_waits_for_a_value_from_the_device(demo_copy):
    """Forward, loss (min-SNR, multi-resolution noise), backward, clipping and the optimizer: nothing in
    the step reads a device value on the host. AdamW is made fused as on CUDA (its CPU foreach path
    reads its host-side step counters, which on a GPU are host tensors anyway)."""
    from backend.config import resolve_paths
    from backend.training.trainer import Trainer

    job = new_job(demo_copy, ["loss.min_snr_gamma=5.0", "loss.multires_noise_iterations=3", "loss.noise_offset=0.05",
                              "training.max_grad_norm=1.0", "training.gradient_accumulation_steps=2",
                              "optimizer.extra_args={fused = true}"])
    ctx = context(job)
    trainer = Trainer(resolve_paths(load_config(ctx.config), ctx.paths), ctx)
    trainer.prepare()
    trainer._step()  # first step: optimizer state is created
    with HostReads() as reads:
        loss = trainer._step()
    assert not reads.seen, reads.seen
    assert math.isfinite(loss.item())


def test_compile_true_trains_the_demo_in_a_worker_with_the_same_loss(demo_copy):
    """training.compile through the real worker. Inductor's C++ code generation takes minutes on two
    cores, so torch's own override runs the compiled blocks through AOTAutograd without it: Dynamo
    captures each block (adapters included), AOTAutograd builds its forward and backward graphs, and
    only the final code generation is left out."""
    job = new_job(demo_copy, ["training.compile=true", "training.max_steps=2"])
    env = {**os.environ, "TORCH_COMPILE_OVERRIDE_BACKENDS": ">=0:aot_eager"}
    with open(job / "job.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "backend.worker", str(job)], cwd=PROJECT_ROOT, stdout=log,
                                stderr=subprocess.STDOUT, env=env)
    assert wait_worker(proc, job) == 0, (job / "job.log").read_text()[-3000:]
    ready = next(e for e in events(job, "phase") if e.get("phase") == "ready")
    assert ready["compiled_blocks"] == 4  # the demo UNet's BasicTransformerBlocks
    from backend.jobs.registry import load_job

    result = load_job(job).extra["result"]
    assert result["compiled_graphs"] >= 1
    compiled = [e["loss"] for e in events(job, "metric")]

    eager_job = new_job(demo_copy, ["training.max_steps=2"], name="eager")
    run_in_process(eager_job)
    eager = [e["loss"] for e in events(eager_job, "metric")]
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-6)


def test_tf32_uses_fp32_precision_where_torch_has_it_else_allow_tf32():
    from types import SimpleNamespace

    from backend.training.cuda import enable_tf32

    matmul, cudnn = SimpleNamespace(fp32_precision="ieee"), SimpleNamespace(conv=SimpleNamespace(fp32_precision="ieee"))
    enable_tf32(matmul, cudnn)
    assert matmul.fp32_precision == cudnn.conv.fp32_precision == "tf32"
    assert not hasattr(matmul, "allow_tf32") and not hasattr(cudnn, "allow_tf32")   # 2.9 refuses a mix
    old_matmul, old_cudnn = SimpleNamespace(allow_tf32=False), SimpleNamespace(allow_tf32=False)   # torch < 2.9
    enable_tf32(old_matmul, old_cudnn)
    assert old_matmul.allow_tf32 and old_cudnn.allow_tf32
