"""The CPU paths of the frozen UNet (frozen_conv, lean_geglu) against plain PyTorch and diffusers."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from backend.training.frozen_conv import FrozenConv2d, unfolded_conv2d, use_frozen_conv_paths
from backend.training.lean_geglu import GatedGelu, use_lean_geglu

# (in, out, kernel, stride, padding, map size, bias): tiny maps take the unfolded path, larger ones
# and 1×1 kernels FrozenConv2d.
CONVS = [
    (16, 8, 3, 1, 1, 2, True),
    (16, 8, 3, 1, 1, 4, False),
    (16, 8, 3, 2, 1, 8, True),      # stride 2: 8×8 → 4×4, unfolded
    (6, 10, 3, 1, 0, 5, True),      # no padding: 5×5 → 3×3
    (16, 8, 1, 1, 0, 2, True),      # 1×1 kernel
    (8, 12, 3, 1, 1, 9, True),      # 9×9 map: FrozenConv2d
]


def _frozen_conv(c_in: int, c_out: int, k: int, stride: int, padding: int, bias: bool) -> torch.nn.Conv2d:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, bias=bias).double()
    conv.requires_grad_(False)
    return conv


@pytest.mark.parametrize("c_in,c_out,k,stride,padding,size,bias", CONVS)
def test_frozen_conv_paths_match_conv2d(c_in, c_out, k, stride, padding, size, bias):
    conv = _frozen_conv(c_in, c_out, k, stride, padding, bias)
    x = torch.randn(3, c_in, size, size + 1 if size > 4 else size, dtype=torch.float64, requires_grad=True)
    expected = conv(x)
    (grad_expected,) = torch.autograd.grad(expected, x, torch.ones_like(expected))
    assert use_frozen_conv_paths(conv) == 1
    got = conv(x)
    (grad_got,) = torch.autograd.grad(got, x, torch.ones_like(got))
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(grad_got, grad_expected)


def test_unfolded_and_frozen_conv_gradients_are_exact():
    conv = _frozen_conv(4, 5, 3, 1, 1, True)
    x2 = torch.randn(2, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: unfolded_conv2d(conv, t, conv.weight, conv.bias), (x2,))
    x6 = torch.randn(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: FrozenConv2d.apply(t, conv.weight, conv.bias, conv), (x6,))


def _saved_bytes(fn, x: torch.Tensor, weights: tuple[torch.Tensor, ...] = ()) -> int:
    """Bytes of the tensors autograd keeps for backward while computing fn(x), `weights` excluded."""
    kept: dict[int, int] = {}
    excluded = {w.untyped_storage().data_ptr() for w in weights}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in excluded:
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(kept.values())


def test_frozen_conv_keeps_no_input_for_backward():
    conv = _frozen_conv(32, 32, 3, 1, 1, True).float()
    x = torch.randn(2, 32, 16, 16, requires_grad=True)
    weights = tuple(conv.parameters())
    before = _saved_bytes(conv, x, weights)
    assert before >= x.numel() * 4            # autograd's convolution keeps its input
    use_frozen_conv_paths(conv)
    assert _saved_bytes(conv, x, weights) == 0
    small = torch.randn(2, 32, 2, 2, requires_grad=True)
    assert _saved_bytes(conv, small, weights) == 0  # nor does the unfolded path


def test_frozen_conv_under_bf16_autocast_matches_conv2d():
    conv = _frozen_conv(8, 8, 3, 1, 1, True).float()
    x = torch.randn(2, 8, 9, 9, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = conv(x)
    (grad_expected,) = torch.autograd.grad(expected.float().sum(), x)
    use_frozen_conv_paths(conv)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = conv(x)
    (grad_got,) = torch.autograd.grad(got.float().sum(), x)
    assert got.dtype == expected.dtype == torch.bfloat16 and grad_got.dtype == torch.float32
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(grad_got, grad_expected, rtol=2e-2, atol=2e-2)


def test_trainable_conv_keeps_the_usual_path():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    reference = torch.nn.Conv2d(4, 4, 3, padding=1)
    reference.load_state_dict(conv.state_dict())
    use_frozen_conv_paths(conv)
    x = torch.randn(2, 4, 2, 2)
    conv(x).square().sum().backward()
    reference(x).square().sum().backward()
    torch.testing.assert_close(conv.weight.grad, reference.weight.grad)


def test_gated_gelu_matches_diffusers_geglu():
    from diffusers.models.activations import GEGLU

    torch.manual_seed(0)
    reference = GEGLU(6, 5).double()
    lean = GEGLU(6, 5).double()
    lean.load_state_dict(reference.state_dict())
    assert use_lean_geglu(torch.nn.Sequential(lean)) == 1
    x = torch.randn(3, 7, 6, dtype=torch.float64, requires_grad=True)
    out_ref, out = reference(x), lean(x)
    torch.testing.assert_close(out, out_ref)
    g = torch.randn_like(out)
    grads_ref = torch.autograd.grad(out_ref, [x, *reference.parameters()], g)
    grads = torch.autograd.grad(out, [x, *lean.parameters()], g)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b)
    projected = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(GatedGelu.apply, (projected,))


def test_gated_gelu_keeps_one_tensor():
    projected = torch.randn(4, 64, 256, requires_grad=True)

    def plain(p: torch.Tensor) -> torch.Tensor:
        h, g = p.chunk(2, dim=-1)
        return h * F.gelu(g)

    assert _saved_bytes(GatedGelu.apply, projected) == projected.numel() * 4
    assert _saved_bytes(plain, projected) == projected.numel() * 4 * 3 // 2


def test_training_worker_leaves_unused_libraries_out():
    """The worker's start-up trims scipy and peft; diffusers and transformers still load without them."""
    code = (
        "from backend.training.run import skip_unused_libraries\n"
        "skip_unused_libraries()\n"
        "import diffusers.models, lycoris.kohya, transformers\n"
        "from diffusers import UNet2DConditionModel, AutoencoderKL\n"
        "from transformers import CLIPTextModel\n"
        "from diffusers.utils import is_peft_available\n"
        "import sys\n"
        "assert not is_peft_available()\n"
        "assert sys.modules['scipy'] is None and sys.modules['peft'] is None\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
