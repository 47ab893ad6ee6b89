"""What a training step costs on a GPU, measured on the meta device (no weights, no memory, no GPU).

- `emulate`: the CUDA choices a CPU run does not make (fused SDPA kernels, autocast's cast policy).
- `probe`: counts ATen operators and FLOPs per owner (frozen model or adapter) and phase, and follows
  the bytes of every live tensor to the step's peak.
- `arch`: each model family's architecture built on the meta device from its configs.
- `step`: one training step (forward, backward, optimizer) through the trainer's own building blocks.
- `estimate`: the peak VRAM of a config, with a verdict per card and what would make it fit.
"""
