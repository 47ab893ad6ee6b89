"""Tagging speed: images/s of the WD14 pipeline on a ViT-B/16-at-448 sized random ONNX model.

The model is built here with onnx.helper (patch-embed conv, `--depth` pre-LN transformer blocks of
width 768 / MLP 3072 / 12 heads over 28×28 = 784 tokens, mean pool, 10861 sigmoid outputs), which is the
shape and FLOP count of wd-vit-tagger-v3 (~150 GFLOP per image at depth 12). Images are 1024×768 JPEGs.
It measures batch 1 and 8 with the overlapped loader on (decoding on threads) and off (decoding between
model calls), with onnxruntime using every core and with it leaving `--workers` cores to the loader,
plus decode-only and model-only rates, through the real WD14Tagger code path.

    python benchmarks/tagging_speed.py [--depth 12] [--images 16] [--workers 2]   → JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.captioning.loader import iter_loaded  # noqa: E402
from backend.captioning.tagrules import TagRules  # noqa: E402
from backend.captioning.wd14 import WD14Tagger  # noqa: E402

WIDTH, HEADS, MLP, PATCH, N_TAGS = 768, 12, 3072, 16, 10861


def vit_flops(size: int, depth: int) -> float:
    """Multiply-adds ×2 of a ViT forward pass (Dosovitskiy et al. 2021): per block 4·N·D² (q, k, v, out)
    + 2·N²·D (scores, weighted sum) + 2·N·D·M (MLP); plus the patch embedding and head."""
    n = (size // PATCH) ** 2
    block = 4 * n * WIDTH**2 + 2 * n * n * WIDTH + 2 * n * WIDTH * MLP
    embed = n * WIDTH * PATCH * PATCH * 3
    return 2.0 * (depth * block + embed + WIDTH * N_TAGS)


def build_vit(path: Path, depth: int, size: int = 448, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def weight(name: str, *shape: int, scale: float = 0.02) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal(shape, dtype=np.float32) * scale), name))
        return name

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def layer_norm(x: str, name: str) -> str:
        return node("LayerNormalization", [x, const(f"{name}.g", np.ones(WIDTH, np.float32)),
                                           const(f"{name}.b", np.zeros(WIDTH, np.float32))], f"{name}.out", axis=-1)

    n_tok = (size // PATCH) ** 2
    x = node("Transpose", ["input"], "nchw", perm=[0, 3, 1, 2])
    x = node("Conv", [x, weight("patch.w", WIDTH, 3, PATCH, PATCH, scale=0.001), weight("patch.b", WIDTH)],
             "patches", strides=[PATCH, PATCH], kernel_shape=[PATCH, PATCH])
    x = node("Reshape", [x, const("shape_tokens", np.array([0, WIDTH, -1], np.int64))], "tokens_cn")
    x = node("Transpose", [x], "tokens", perm=[0, 2, 1])
    x = node("Add", [x, weight("pos", 1, n_tok, WIDTH)], "h0")
    heads_shape = const("heads_shape", np.array([0, 0, HEADS, WIDTH // HEADS], np.int64))
    flat_shape = const("flat_shape", np.array([0, 0, WIDTH], np.int64))
    scale = const("attn_scale", np.array((WIDTH // HEADS) ** -0.5, np.float32))
    half, root2 = const("half", np.array(0.5, np.float32)), const("root2", np.array(2**0.5, np.float32))
    one = const("one", np.array(1.0, np.float32))
    for i in range(depth):
        p = f"b{i}"
        h = layer_norm(x, f"{p}.ln1")
        qkv = []
        for k in "qkv":
            t = node("MatMul", [h, weight(f"{p}.{k}", WIDTH, WIDTH)], f"{p}.{k}.mm")
            t = node("Reshape", [t, heads_shape], f"{p}.{k}.heads")
            qkv.append(node("Transpose", [t], f"{p}.{k}.t", perm=[0, 2, 3, 1] if k == "k" else [0, 2, 1, 3]))
        s = node("Mul", [node("MatMul", [qkv[0], qkv[1]], f"{p}.scores"), scale], f"{p}.scaled")
        a = node("MatMul", [node("Softmax", [s], f"{p}.attn", axis=-1), qkv[2]], f"{p}.ctx")
        a = node("Reshape", [node("Transpose", [a], f"{p}.ctx.t", perm=[0, 2, 1, 3]), flat_shape], f"{p}.ctx.flat")
        x = node("Add", [x, node("MatMul", [a, weight(f"{p}.o", WIDTH, WIDTH)], f"{p}.o.mm")], f"{p}.res1")
        h = layer_norm(x, f"{p}.ln2")
        h = node("MatMul", [h, weight(f"{p}.fc1", WIDTH, MLP)], f"{p}.fc1.mm")
        erf = node("Erf", [node("Div", [h, root2], f"{p}.gelu.div")], f"{p}.gelu.erf")
        g = node("Mul", [node("Mul", [h, half], f"{p}.gelu.half"), node("Add", [erf, one], f"{p}.gelu.add")],
                 f"{p}.gelu")
        x = node("Add", [x, node("MatMul", [g, weight(f"{p}.fc2", MLP, WIDTH)], f"{p}.fc2.mm")], f"{p}.res2")
    x = node("ReduceMean", [layer_norm(x, "final_ln")], "pooled", axes=[1], keepdims=0)
    x = node("MatMul", [x, weight("head", WIDTH, N_TAGS)], "logits")
    node("Sigmoid", [x], "output")
    graph = helper.make_graph(
        nodes, "vit_b16_448", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", N_TAGS])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    rows = ["tag_id,name,category,count"]
    for i in range(N_TAGS):
        cat = 9 if i < 4 else 0 if i < 9000 else 4
        rows.append(f"{i},tag_{i},{cat},{N_TAGS - i}")
    (path.parent / "selected_tags.csv").write_text("\n".join(rows) + "\n")


def make_images(folder: Path, n: int, size: tuple[int, int] = (1024, 768)) -> list[Path]:
    """Photo-like JPEGs (smooth gradients plus noise) so decoding costs what real photos cost."""
    rng = np.random.default_rng(1)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    paths = []
    for i in range(n):
        base = np.stack([(xx / w) * 255, (yy / h) * 255, ((xx + yy + i * 40) % 255)], axis=-1)
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        p = folder / f"img_{i:03d}.jpg"
        Image.fromarray(img).save(p, quality=90)
        paths.append(p)
    return paths


def timed_rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def measure(taggers: dict[str, WD14Tagger], images: list[Path], arrays: list[np.ndarray], bs: int,
            workers: int) -> dict:
    rules = TagRules()

    def run(tagger: WD14Tagger, loader_workers: int) -> None:
        for _tagged, failed in tagger.tag_images(images, rules, bs, loader_workers):
            assert not failed

    def model_only(tagger: WD14Tagger) -> None:
        for i in range(0, len(arrays), bs):
            tagger.predict(arrays[i:i + bs])

    out: dict = {"batch_size": bs}
    for label, tagger in taggers.items():
        tagger.predict(arrays[:bs])  # warm-up: ORT allocates its buffers for this batch shape
        out[label] = {
            "model_only_img_s": round(timed_rate(lambda t=tagger: model_only(t), len(arrays)), 3),
            "loader_off_img_s": round(timed_rate(lambda t=tagger: run(t, 0), len(images)), 3),
            "loader_on_img_s": round(timed_rate(lambda t=tagger: run(t, workers), len(images)), 3)}
        out[label]["on_over_off"] = round(out[label]["loader_on_img_s"] / out[label]["loader_off_img_s"], 3)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=12, help="transformer blocks (12 = ViT-B)")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="loader threads when the loader is on")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--out", help="also write the JSON to this file")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        (tmp_path / "model").mkdir()
        build_vit(tmp_path / "model" / "model.onnx", args.depth)
        build_s = time.perf_counter() - t0
        images = make_images(tmp_path, args.images)
        # ORT's default (a thread per core) against leaving the loader threads cores of their own.
        spare = max(1, (os.cpu_count() or 1) - args.workers)
        taggers = {"ort_threads_all": WD14Tagger(tmp_path / "model", device="auto"),
                   f"ort_threads_{spare}": WD14Tagger(tmp_path / "model", device="auto", cpu_threads=spare)}
        tagger = taggers["ort_threads_all"]
        decoded = timed_rate(lambda: [x for x in iter_loaded(images, tagger.load, 0)], len(images))
        arrays = [tagger.load(p) for p in images]
        results = [measure(taggers, images, arrays, bs, args.workers) for bs in args.batch_sizes]
        report = {
            "model": f"ViT-B/16 448 random, depth {args.depth}" + ("" if args.depth == 12 else " (reduced)"),
            "gflop_per_image": round(vit_flops(448, args.depth) / 1e9, 1),
            "model_mb": round((tmp_path / "model" / "model.onnx").stat().st_size / 2**20, 1),
            "build_s": round(build_s, 1), "provider": tagger.provider, "cpu_count": os.cpu_count(),
            "images": len(images), "image_size": "1024x768 JPEG q90", "loader_workers": args.workers,
            "decode_preprocess_img_s": round(decoded, 2), "results": results,
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
