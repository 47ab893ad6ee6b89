"""A tiny diffusers Flux transformer with a LyCORIS network on it, for the Flux LoRA file tests.

The network is built the way the trainer builds one (LyCORIS create_network with an in-memory preset
from backend.training.networks), for three target sets: "attn" (FluxAttention: q/k/v/out, so the
single blocks' fused linear1 is only partly adapted), "attn-mlp" (every linear layer of the double
and single blocks, as kohya's networks.lora_flux) and "all" (those + the embedders and final layer).
"""

from __future__ import annotations

import torch

from backend.models.base import LoraTargets
from backend.training.networks import _preset_file, _restored_class_settings

TOP_LEVEL = ["x_embedder", "context_embedder", "time_text_embed.timestep_embedder.linear_1",
             "time_text_embed.timestep_embedder.linear_2", "time_text_embed.guidance_embedder.linear_1",
             "time_text_embed.guidance_embedder.linear_2", "time_text_embed.text_embedder.linear_1",
             "time_text_embed.text_embedder.linear_2", "norm_out.linear", "proj_out"]
TARGETS = {
    "attn": LoraTargets(unet_modules=["FluxAttention"]),
    "attn-mlp": LoraTargets(unet_modules=["FluxTransformerBlock", "FluxSingleTransformerBlock"]),
    "all": LoraTargets(unet_modules=["FluxTransformerBlock", "FluxSingleTransformerBlock"], unet_names=TOP_LEVEL),
}
# Flux.1 [dev]'s transformer config (black-forest-labs/FLUX.1-dev transformer/config.json).
FLUX1_DEV = dict(patch_size=1, in_channels=64, out_channels=None, num_layers=19, num_single_layers=38,
                 attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                 pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))


def tiny_flux(*, heads: int = 2, head_dim: int = 8, layers: int = 1, single: int = 2, guidance: bool = True,
              seed: int = 0, weights: dict | None = None):
    """A small FluxTransformer2DModel with random weights, the same for the same arguments (or `weights`).
    Built on the meta device and filled with one normal draw per tensor (PyTorch's own init of a
    3072-wide block takes many seconds on two cores)."""
    from diffusers import FluxTransformer2DModel

    rope = (head_dim // 4, head_dim // 4, head_dim - 2 * (head_dim // 4))
    with torch.device("meta"):
        model = FluxTransformer2DModel(patch_size=1, in_channels=8, num_layers=layers, num_single_layers=single,
                                       attention_head_dim=head_dim, num_attention_heads=heads,
                                       joint_attention_dim=16, pooled_projection_dim=12, guidance_embeds=guidance,
                                       axes_dims_rope=rope)
    if weights is not None:
        model.load_state_dict(weights, assign=True)
        return model.eval()
    model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, p.shape[1] ** -0.5, generator=g)
            else:
                p.normal_(0.0, 0.02, generator=g)
                if ".norm" in name:  # RMSNorm scales around 1
                    p.add_(1.0)
    return model.eval()


def lycoris_network(model, algo: str, target: str, rank: int = 4, alpha: float = 2.0, **kwargs):
    """A LyCORIS network applied to `model` (call `remove` on it to take it off)."""
    from lycoris.kohya import create_network

    with _restored_class_settings():
        net = create_network(1.0, rank, alpha, None, None, model, preset=_preset_file(TARGETS[target]), algo=algo,
                             **kwargs)
    net.apply_to(None, model, apply_text_encoder=False, apply_unet=True)
    assert net.unet_loras, f"{target} matched nothing"
    return net


def remove(net) -> None:
    for module in net.loras:
        module.restore()


def randomize(net, seed: int = 1, scale: float = 0.2) -> None:
    """Random non-zero values in every trained tensor (a fresh network's up/diff are zero); DoRA
    magnitudes move 20 % off the weight norms so they change the output too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype)
            if name.endswith("dora_scale"):
                p.mul_(1 + 0.2 * noise)
            else:
                p.copy_(noise * scale)


def inputs(model, seed: int = 3, batch: int = 2, image_tokens: int = 6, text_tokens: int = 5) -> dict:
    """Fixed inputs for one forward of `model` (packed latents, text states, ids, timestep, guidance)."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    img_ids = torch.zeros(image_tokens, 3)
    img_ids[:, 1] = torch.arange(image_tokens) // 3
    img_ids[:, 2] = torch.arange(image_tokens) % 3
    kw = dict(hidden_states=torch.randn(batch, image_tokens, cfg.in_channels, generator=g),
              encoder_hidden_states=torch.randn(batch, text_tokens, cfg.joint_attention_dim, generator=g),
              pooled_projections=torch.randn(batch, cfg.pooled_projection_dim, generator=g),
              timestep=torch.tensor([0.3, 0.8][:batch]), img_ids=img_ids, txt_ids=torch.zeros(text_tokens, 3),
              return_dict=False)
    if cfg.guidance_embeds:
        kw["guidance"] = torch.tensor([3.5] * batch)
    return kw


@torch.no_grad()
def output(model, kw: dict) -> torch.Tensor:
    return model(**kw)[0]
