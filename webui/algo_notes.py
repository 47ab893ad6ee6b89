"""Short notes shown beside the adapter algorithm on the Training tab, where a choice has a catch
the user should know before training (kept out of the tab module: it is text, not wiring)."""

from __future__ import annotations

# Checked against the loaders: ComfyUI's weight adapters (comfy/weight_adapter: LoRA, LoHa, LoKr,
# GLoRA, OFT, BOFT) have no IA3; LyCORIS 4.1.3's make_module raises TypeError for an IA3 module; the
# A1111/Forge Lora extension has network_ia3; LoRA Dash loads its own IA3 files (training.networks).
ALGO_NOTES = {
    "ia3": "⚠ **IA3 files do not load in ComfyUI, nor with LyCORIS's own loader** "
           "(`create_network_from_weights`); A1111/Forge and LoRA Dash (samples, `network_weights`) "
           "read them. For a file that loads everywhere pick lora, locon, loha or lokr.",
}


def algo_note(algo: str | None) -> str:
    """The note for `algo` (network.algo), or "" when it has none."""
    return ALGO_NOTES.get(algo or "", "")
