"""What one training step costs a GPU, counted on the CPU: operators, FLOPs and bytes, as JSON and a table.

    python benchmarks/step_cost.py [--family sd15 sdxl flux] [--batch 1 4] [--algo lora loha …] [--before]
                                   [--rank 16] [--json FILE]

For the real SD 1.5 (512², latents 64²), SDXL (1024², latents 128²) and FLUX.1 [dev] (1024², latents
16 × 128², 4096 tokens; T5 length 512) architectures (the shipped configs in backend/models/configs),
LoRA rank 16 (alpha 16) on network.target "attn-mlp" (the default), bf16 mixed precision, AdamW,
latents and prompt embeddings cached, each algorithm is built on the meta device with the trainer's own
parts (backend.training.cost.step: Flux's flow-matching objective and packed-token `predict` included)
and one step is run: forward, backward, gradient clipping, optimizer step. By default SD 1.5 and SDXL
run every algorithm at batch 1 and 4, Flux.1 [dev] LoRA, LoKr and LoRA+DoRA at batch 1 (--batch and
--algo replace both). Counted per step:
  ops / kernels: ATen operators dispatched (kernels: without view-only operators, i.e. GPU launches),
      split between the frozen model's own work and the adapters' (module hooks mark adapter code,
      autograd nodes carry the owner into backward); the optimizer is listed apart (on CUDA it is the
      fused AdamW kernel and foreach clipping, a few launches per parameter group; on the meta device
      both fall back to one operator per tensor);
  FLOPs (torch.utils.flop_counter formulas) against the floor: the frozen model's forward and its
      input-gradient backward as far as the first adapted layer (a reference run with no adapter),
      plus 3× the adapter's forward in its cheapest (bypass) form: measured for the algorithms with a
      fused forward, from the layer shapes for the others;
  bytes: frozen weights, adapter weights + gradients + optimizer state, activations kept for backward
      at the end of the forward pass, and the step's peak.
Targets: adapter operators ≤ 1.25 × the frozen model's own; FLOPs ≤ 1.05 × the floor. Rows that miss
say why. --before adds each fused algorithm with LyCORIS's own forwards (the figures before them).
Counting takes 5–40 s per row on a busy 2-core machine (the meta device's time does not depend on
tensor sizes), a few minutes per Flux.1 [dev] row (57 blocks, every operator dispatched in Python).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESOLUTION = {"sd15": 512, "sdxl": 1024, "flux": 1024}
VARIANTS = {
    "lora": {"algo": "lora"}, "locon": {"algo": "locon"}, "loha": {"algo": "loha"}, "lokr": {"algo": "lokr"},
    "lora+dora": {"algo": "lora", "dora": True}, "dylora": {"algo": "dylora"}, "ia3": {"algo": "ia3"},
    "glora": {"algo": "glora"}, "diag-oft": {"algo": "diag-oft"}, "boft": {"algo": "boft"},
}
FUSED = ("lora", "locon", "loha", "lokr", "lora+dora", "ia3")
# family → (batches, variants) when --batch / --algo are not given
DEFAULTS = {"sd15": ([1, 4], list(VARIANTS)), "sdxl": ([1, 4], list(VARIANTS)),
            "flux": ([1], ["lora", "lokr", "lora+dora"])}
OPS_TARGET, FLOPS_TARGET = 1.25, 1.05
GIB = 2**30


def _config(family: str, variant: str, rank: int) -> object:
    from backend.config import TrainConfig

    net = {"rank": rank, "alpha": rank, "target": "attn-mlp", **VARIANTS[variant]}
    return TrainConfig.model_validate({"model": {"family": family}, "network": net,
                                       "training": {"mixed_precision": "bf16", "max_grad_norm": 1.0},
                                       "optimizer": {"name": "adamw"}})


def _analytic_adapter_forward(variant: str, layers: list, rank: int) -> float:
    """The adapter's forward FLOPs in its bypass form, from the adapted layers' shapes, for the
    algorithms that run on LyCORIS's rebuild path: DyLoRA (a LoRA at full rank), IA3 (a scale per
    output: no products), GLoRA (W·a1 once per step, then low-rank products), Diag-OFT (a block-
    diagonal rotation of the output, blocks of `rank`), BOFT (log₂(out/rank)+1 such butterfly stages)."""
    total = 0.0
    for _kind, n_in, n_out, cells, positions in layers:
        fan_in = n_in * cells
        if variant == "dylora":
            total += 2 * positions * rank * (fan_in + n_out)
        elif variant == "glora":
            total += 2 * n_out * fan_in * rank + 2 * positions * rank * (fan_in + n_out) * 2
        elif variant == "diag-oft":
            total += 2 * positions * n_out * rank
        elif variant == "boft":
            total += 2 * positions * n_out * rank * (math.ceil(math.log2(max(n_out // rank, 1))) + 1)
    return total


WHY_OPS = {
    "lora": "two fp32→bf16 casts, a product and an accumulating product forward; four products, two casts "
            "back and the gradient sum at the layer's input backward (≈11 at least in eager autograd; SDXL's "
            "frozen model has only ≈9 per adapted layer because nearly all of its work is in the adapted "
            "linears: the rest needs one cast per step for all adapter weights, or compiled/graph-captured "
            "steps)",
    "locon": "as LoRA, but most adapted layers here are ResNet 3×3 convolutions, whose frozen work is only two "
             "kernels (convolution forward, input gradient backward)",
    "loha": "ΔW = (w1a·w1b) ⊙ (w2a·w2b) is rebuilt forward and again backward (two products and a product of "
            "elements each time), four factors cast and their four gradients",
    "lokr": "the factored half of the Kronecker product rebuilt, two products on the activations (within and "
            "across the groups) forward, their gradients and the factors' backward",
    "lora+dora": "the weight norm ‖W + ΔW‖ per step (small products and per-row steps, forward and backward) and "
                 "the magnitude's gradient (a reduction over the tokens) on top of LoRA's work",
}
WHY_FLOPS = {
    "loha": "LoHa's ΔW is full rank: op(x, ΔW) costs as much as the frozen layer, forward and backward (the floor "
            "counts it too)",
}


def _explain(row: dict, per_layer_frozen: float) -> list[str]:
    out = []
    variant = row["algo"]
    if row["kernel_ratio"] > OPS_TARGET:
        why = WHY_OPS.get(variant) if row["fused"] else \
            "LyCORIS's own forward: its generic dispatch, per-call casts and (rebuild path) the whole ΔW or R each call"
        out.append(f"operators: {row['adapter_kernels'] / row['adapters']:.1f} kernels per adapted layer against "
                   f"{per_layer_frozen:.1f} of the frozen model's per adapted layer: {why}")
    if row["flops_ratio"] > FLOPS_TARGET:
        if variant in WHY_FLOPS:
            out.append("FLOPs: " + WHY_FLOPS[variant])
        elif variant in FUSED and not row["fused"]:
            out.append("FLOPs: LyCORIS's rebuild path multiplies x by the whole rebuilt ΔW and takes its full-size "
                       "weight gradient (the fused forward does neither)")
        else:
            out.append("FLOPs: LyCORIS runs this algorithm on its rebuild path (op(x, ΔW) over the whole weight, "
                       "forward and backward, plus a full-size weight gradient): no fused forward for it yet")
    return out


def measure(family: str, batch: int, variants: list[str], before: bool, rank: int) -> list[dict]:
    from backend.training.cost.arch import architecture
    from backend.training.cost.step import BACKWARD, FORWARD, StepSettings, measure_step

    arch = architecture(family)
    res = RESOLUTION[family]
    references: dict[bool, object] = {}
    rows = []
    fused_adapter_forward: dict[str, int] = {}
    runs = [(v, True) for v in variants] + [(v, False) for v in variants if before and v in FUSED]
    for variant, fused in runs:
        cfg = _config(family, variant, rank)
        start = time.monotonic()
        cost = measure_step(arch, StepSettings(cfg, batch, res, res, fused=fused))
        convs = any(kind == "conv" and cells > 1 for kind, _, _, cells, _ in cost.layers)
        if convs not in references:  # the frozen model alone, backward from the same kind of layers
            references[convs] = measure_step(arch, StepSettings(cfg, batch, res, res, optimizer=False,
                                                                reference=True))
        ref = references[convs]
        fb = (FORWARD, BACKWARD)
        adapter_fwd = cost.total("flops", "adapter", (FORWARD,))
        if fused and cost.fused_adapters == cost.adapters:
            fused_adapter_forward[variant] = adapter_fwd
        floor_adapter = fused_adapter_forward.get(variant)
        if floor_adapter is None:
            floor_adapter = _analytic_adapter_forward(variant, cost.layers, rank)
        floor = ref.total("flops", None, fb) + 3 * floor_adapter
        flops = cost.total("flops", None, fb)
        frozen_k, adapter_k = cost.total("kernels", "frozen", fb), cost.total("kernels", "adapter", fb)
        row = {
            "family": family, "resolution": res, "batch": batch, "algo": variant,
            "fused": fused and cost.fused_adapters > 0, "adapters": cost.adapters,
            "fused_adapters": cost.fused_adapters,
            "frozen_ops": cost.total("ops", "frozen", fb), "adapter_ops": cost.total("ops", "adapter", fb),
            "frozen_kernels": frozen_k, "adapter_kernels": adapter_k,
            "kernel_ratio": round(adapter_k / frozen_k, 3),
            "optimizer_ops": cost.total("ops", None, ("optimizer",)),
            "step_ops": cost.total("ops", "step"),
            "flops": flops, "flops_floor": int(floor), "flops_ratio": round(flops / floor, 3),
            "frozen_weight_bytes": cost.frozen_bytes, "adapter_bytes": cost.adapter_bytes,
            "grad_bytes": cost.grad_bytes, "optimizer_state_bytes": cost.optimizer_state_bytes,
            "saved_activation_bytes": cost.saved_bytes, "step_peak_bytes": cost.peak_bytes,
            "peak_bytes": cost.frozen_bytes + cost.adapter_bytes + cost.optimizer_state_bytes + cost.peak_bytes,
            "top_ops": dict(list(cost.op_counts.items())[:25]), "seconds": round(time.monotonic() - start, 1),
        }
        row["meets_ops_target"] = row["kernel_ratio"] <= OPS_TARGET
        row["meets_flops_target"] = row["flops_ratio"] <= FLOPS_TARGET
        row["gaps"] = _explain(row, frozen_k / max(cost.adapters, 1))
        rows.append(row)
        print(f"# {family} b{batch} {variant} {'fused' if row['fused'] else 'lycoris'}: {row['seconds']} s",
              file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    head = (f"{'model':<6}{'res':>5}{'b':>3} {'algo':<10}{'fwd':<8}{'mods':>5} {'kern fr':>8}{'kern ad':>8}"
            f"{'ratio':>7} {'TFLOP':>7}{'floor':>7}{'ratio':>7} {'weights':>8}{'ad+g+opt':>9}{'saved':>7}"
            f"{'peak':>7}  GiB")
    lines = [head, "-" * len(head)]
    for r in rows:
        train = (r["adapter_bytes"] + r["grad_bytes"] + r["optimizer_state_bytes"]) / GIB
        lines.append(
            f"{r['family']:<6}{r['resolution']:>5}{r['batch']:>3} {r['algo']:<10}"
            f"{'fused' if r['fused'] else 'lycoris':<8}{r['adapters']:>5} {r['frozen_kernels']:>8}"
            f"{r['adapter_kernels']:>8}{r['kernel_ratio']:>6.2f}{'' if r['meets_ops_target'] else '!'}"
            f"{' ' if r['meets_ops_target'] else ''}{r['flops'] / 1e12:>7.2f}{r['flops_floor'] / 1e12:>7.2f}"
            f"{r['flops_ratio']:>6.2f}{'' if r['meets_flops_target'] else '!'}"
            f"{' ' if r['meets_flops_target'] else ''}{r['frozen_weight_bytes'] / GIB:>8.2f}{train:>9.2f}"
            f"{r['saved_activation_bytes'] / GIB:>7.2f}{r['peak_bytes'] / GIB:>7.2f}")
    lines.append(f"targets: adapter kernels ≤ {OPS_TARGET} × frozen, FLOPs ≤ {FLOPS_TARGET} × floor ('!' = missed)")
    for r in rows:
        for gap in r["gaps"]:
            lines.append(f"  {r['family']} b{r['batch']} {r['algo']} ({'fused' if r['fused'] else 'lycoris'}): {gap}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", nargs="+", default=list(DEFAULTS), choices=sorted(RESOLUTION))
    ap.add_argument("--batch", nargs="+", type=int, help="default: 1 4 (Flux: 1)")
    ap.add_argument("--algo", nargs="+", choices=list(VARIANTS),
                    help="default: every one (Flux: lora lokr lora+dora)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--before", action="store_true", help="also LyCORIS's own forwards for the fused algorithms")
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    args = ap.parse_args()
    import logging

    import lycoris.logging  # noqa: F401 - sets its logger's level on import: import first, then quieten

    logging.getLogger("LyCORIS").setLevel(logging.WARNING)  # it logs to stdout
    rows = [r for fam in args.family for b in (args.batch or DEFAULTS[fam][0])
            for r in measure(fam, b, args.algo or DEFAULTS[fam][1], args.before, args.rank)]
    print(json.dumps({"rows": rows}, indent=1))
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
