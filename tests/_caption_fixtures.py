"""Tiny real models for the captioning tests: a WD14-style ONNX tagger and a BLIP captioner.

The tagger computes each channel's mean of its NHWC input (in the channel order it is fed), then a
sigmoid of a linear function of those means. A red image fed in BGR order (as WD14 expects) lights
`red_theme`; fed RGB it would light `blue_theme`. `white_background` needs a bright mean (white padding,
alpha composited on white), `dark` a dark one (black padding, alpha turned black).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

SIZE = 32
INPUT_NAME = "input_1:0"
OUTPUT_NAME = "predictions_sigmoid"


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# (name, category, weights on the [B, G, R] means in 0..1, bias). Category 9 rating, 0 general, 4 character.
THIRD = 20.0 / 3.0
TAGS: list[tuple[str, int, tuple[float, float, float], float]] = [
    ("general", 9, (0, 0, 0), logit(0.7)),
    ("sensitive", 9, (0, 0, 0), logit(0.2)),
    ("questionable", 9, (0, 0, 0), logit(0.05)),
    ("explicit", 9, (0, 0, 0), logit(0.01)),
    ("red_theme", 0, (-12, -12, 12), -3.0),
    ("blue_theme", 0, (12, -12, -12), -3.0),
    ("green_theme", 0, (-12, 12, -12), -3.0),
    ("white_background", 0, (THIRD, THIRD, THIRD), -12.0),  # mean brightness above 0.6
    ("dark", 0, (-THIRD, -THIRD, -THIRD), 4.0),  # mean brightness below 0.2
    ("long_hair", 0, (0, 0, 0), logit(0.5)),
    ("^_^", 0, (0, 0, 0), logit(0.6)),
    ("star_(symbol)", 0, (0, 0, 0), logit(0.4)),
    ("solo", 0, (0, 0, 0), logit(0.36)),
    ("1girl", 0, (0, 0, 0), logit(0.34)),
    ("hatsune_miku", 4, (-12, 12, -12), -3.0),
    ("kirisame_marisa_(touhou)", 4, (0, 0, 0), logit(0.9)),
    ("hakurei_reimu", 4, (0, 0, 0), logit(0.5)),
]
# A red image, default thresholds (0.35 / 0.85), underscores replaced, in probability order:
RED_DEFAULT = ["red theme", "^_^", "long hair", "star (symbol)", "solo", "kirisame marisa (touhou)"]


def build_tagger_onnx(path: Path, fixed_batch: int | None = None, tags=TAGS, size: int = SIZE) -> Path:
    """A WD14-shaped graph: [B, size, size, 3] float32 → ReduceMean(H, W)/255 → MatMul+Add → Sigmoid."""
    w = np.array([t[2] for t in tags], dtype=np.float32).T  # [3, n]
    b = np.array([t[3] for t in tags], dtype=np.float32)
    batch = fixed_batch if fixed_batch else "batch"
    inp = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch, size, size, 3])
    out = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [batch, len(tags)])
    nodes = [
        helper.make_node("ReduceMean", [INPUT_NAME], ["means"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["means", "scale"], ["unit"]),
        helper.make_node("MatMul", ["unit", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], [OUTPUT_NAME]),
    ]
    inits = [numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
             numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    graph = helper.make_graph(nodes, "tiny_wd14", [inp], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_tags_csv(path: Path, tags=TAGS, variant: str = "plain") -> Path:
    """selected_tags.csv; variant "float_ids" writes ids/counts as `9999999.0`, "bad_header" a wrong header."""
    header = "id,tag,cat,count" if variant == "bad_header" else "tag_id,name,category,count"
    lines = [header]
    for i, (name, cat, _, _) in enumerate(tags):
        tag_id = 9999999 - i if cat == 9 else 1000 + i
        count = 5000 - i
        if variant == "float_ids":
            lines.append(f"{float(tag_id)},{name},{float(cat)},{float(count)}")
        else:
            lines.append(f"{tag_id},{name},{cat},{count}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_tagger(folder: Path, fixed_batch: int | None = None, csv_variant: str = "plain",
                mixed_order: bool = False) -> Path:
    """A tagger folder. mixed_order interleaves categories (model outputs and CSV rows alike), which a
    positional reading (ratings = first 4 rows) would get wrong."""
    tags = list(TAGS)
    if mixed_order:
        tags = [tags[15], *tags[4:8], tags[0], tags[14], *tags[8:14], *tags[1:4], tags[16]]
    build_tagger_onnx(folder / "model.onnx", fixed_batch, tags)
    write_tags_csv(folder / "selected_tags.csv", tags, csv_variant)
    return folder


def solid(path: Path, color, size=(40, 40), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


BLIP_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "picture", "of", "cat", "dog",
              "red", "on", "the", "table", "photo"]


def make_tiny_blip(folder: Path, favour: str = "cat") -> Path:
    """A BLIP captioner with random weights whose decoder is biased to say `favour` every token.

    BertTokenizer gets `vocab=` (transformers 5 ignores `vocab_file=` passed directly)."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    vocab = {w: i for i, w in enumerate(BLIP_WORDS)}
    tok = BertTokenizer(vocab=vocab, do_lower_case=True, bos_token="[DEC]", model_max_length=64)
    proc = BlipProcessor(image_processor=BlipImageProcessor(size={"height": SIZE, "width": SIZE}),
                         tokenizer=tok)
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    cfg = BlipConfig(
        text_config=dict(vocab_size=len(BLIP_WORDS), max_position_embeddings=64, bos_token_id=vocab["[DEC]"],
                         sep_token_id=vocab["[SEP]"], pad_token_id=0, eos_token_id=vocab["[SEP]"],
                         encoder_hidden_size=32, **small),
        vision_config=dict(image_size=SIZE, patch_size=8, projection_dim=32, **small),
        projection_dim=32, image_text_hidden_size=32)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[vocab[favour]] += 50.0
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder
