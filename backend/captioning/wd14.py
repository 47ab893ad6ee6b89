"""WD14-style ONNX taggers (SmilingWolf's v2 and v3): `model.onnx` + `selected_tags.csv`.

Preprocessing follows SmilingWolf's reference space: alpha on white, centred white square padding,
bicubic resize to the model's size, float32 0–255, RGB→BGR, NHWC. The sigmoid is inside the graph.
Input/output names, size and batch come from the session, never from constants.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from backend.captioning.loader import Loaded, iter_batches
from backend.captioning.tagrules import Prediction, TagRules, prediction_tags, select
from backend.dataset.images import load_rgb
from backend.errors import ModelError

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
CSV_HEADER = ("tag_id", "name", "category", "count")
RATING, GENERAL, CHARACTER = 9, 0, 4
DEFAULT_SIZE = 448
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
HOW_TO_GET = ("a WD14 tagger folder holds model.onnx and selected_tags.csv, e.g. from the Hugging Face repo "
              "SmilingWolf/wd-vit-tagger-v3")


@dataclass(frozen=True)
class TagTable:
    """The rows of selected_tags.csv, in the order of the model's outputs."""
    names: tuple[str, ...]
    categories: np.ndarray

    def indices(self, category: int) -> np.ndarray:
        return np.flatnonzero(self.categories == category)


def read_tag_table(path: str | os.PathLike) -> TagTable:
    """Parse selected_tags.csv leniently (`9999999.0` ids occur) after checking its header names."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise ModelError(f"{path} is missing: {HOW_TO_GET}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(f"cannot read {path}: {err}") from err
    header = tuple(h.strip().lower() for h in rows[0]) if rows else ()
    if header[:4] != CSV_HEADER:
        raise ModelError(f"{path}: the header is {','.join(header) or '(empty)'!r}, expected "
                         f"{','.join(CSV_HEADER)!r}: is this a WD14 selected_tags.csv?")
    names, cats = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        try:
            names.append(row[1].strip())
            cats.append(int(float(row[2])))
        except (IndexError, ValueError):
            raise ModelError(f"{path}, line {line}: expected tag_id,name,category,count, got {row!r}") from None
    if not names:
        raise ModelError(f"{path} lists no tags")
    return TagTable(tuple(names), np.asarray(cats, dtype=np.int64))


def model_files(model_dir: str | os.PathLike) -> tuple[Path, Path]:
    """(model.onnx, selected_tags.csv) of a tagger folder, or ModelError naming what is missing."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ModelError(f"tagger folder {folder} does not exist: {HOW_TO_GET}")
    onnx_path = folder / MODEL_FILE
    if not onnx_path.is_file():
        others = sorted(folder.glob("*.onnx"))
        if len(others) != 1:
            raise ModelError(f"{onnx_path} is missing: {HOW_TO_GET}")
        onnx_path = others[0]
    csv_path = folder / TAGS_FILE
    if not csv_path.is_file():
        raise ModelError(f"{csv_path} is missing: {HOW_TO_GET}")
    return onnx_path, csv_path


def choose_providers(device: str, available: Iterable[str]) -> list[str]:
    available = list(available)
    if device == "cuda" and CUDA not in available:
        raise ModelError("model.device is cuda but onnxruntime has no CUDAExecutionProvider "
                         "(install onnxruntime-gpu) — choose auto or cpu")
    if device != "cpu" and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


def preprocess(img: Image.Image, height: int, width: int) -> np.ndarray:
    """An RGB image (alpha already on white) → float32 [H, W, 3] BGR in 0..255, as the model expects."""
    w, h = img.size
    side = max(w, h)
    if (w, h) != (side, side):
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(img, ((side - w) // 2, (side - h) // 2))
        img = square
    if img.size != (width, height):
        img = img.resize((width, height), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    return np.ascontiguousarray(arr[:, :, ::-1])  # RGB → BGR; copy, since ::-1 is a negative-stride view


@dataclass
class Tagged:
    path: Path
    tags: list[str]
    prediction: Prediction


class WD14Tagger:
    """An onnxruntime session over a tagger folder. `provider` says where it actually runs."""

    def __init__(self, model_dir: str | os.PathLike, device: str = "auto", cpu_threads: int = 0):
        """cpu_threads: onnxruntime's intra-op threads on the CPU (0: one per core)."""
        import onnxruntime as ort  # the worker's dependency; importing it here keeps the UI light
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        self.model_path, self.csv_path = model_files(model_dir)
        self.tags = read_tag_table(self.csv_path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = max(0, cpu_threads)
        try:
            self.session = ort.InferenceSession(str(self.model_path), sess_options=opts,
                                                providers=choose_providers(device, ort.get_available_providers()))
        except (ort_errors.Fail, ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.NoSuchFile,
                ort_errors.NotImplemented, ort_errors.InvalidArgument, ort_errors.RuntimeException,
                RuntimeError, OSError) as err:  # onnxruntime's own errors derive from Exception only
            raise ModelError(f"onnxruntime cannot load {self.model_path}: {err} (v3 taggers need "
                             f"onnxruntime >= 1.17)") from err
        self.provider = self.session.get_providers()[0]
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        shape = list(inp.shape)
        if len(shape) != 4 or shape[3] != 3 or inp.type != "tensor(float)":
            raise ModelError(f"{self.model_path}: expected a float NHWC input [batch, H, W, 3], got "
                             f"{inp.type} {shape}")
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.height = shape[1] if isinstance(shape[1], int) else DEFAULT_SIZE
        self.width = shape[2] if isinstance(shape[2], int) else DEFAULT_SIZE
        n_out = out.shape[-1] if out.shape else None
        if isinstance(n_out, int) and n_out != len(self.tags.names):
            raise ModelError(f"{self.model_path} has {n_out} outputs but {self.csv_path} lists "
                             f"{len(self.tags.names)} tags: the two files are from different models")

    def batch_size(self, requested: int) -> int:
        """A fixed-batch model (v2) runs exactly its batch; a dynamic one (v3) the requested size."""
        return self.fixed_batch or max(1, requested)

    def load(self, path: Path) -> np.ndarray:
        return preprocess(load_rgb(path), self.height, self.width)

    def predict(self, arrays: list[np.ndarray]) -> np.ndarray:
        """Probabilities [n, n_tags] for preprocessed images (no second sigmoid: it is in the graph)."""
        if not arrays:
            return np.zeros((0, len(self.tags.names)), dtype=np.float32)
        step = self.fixed_batch or len(arrays)
        outs = []
        for start in range(0, len(arrays), step):
            chunk = arrays[start:start + step]
            pad = step - len(chunk)
            batch = np.stack(chunk + [chunk[-1]] * pad).astype(np.float32, copy=False)
            probs = self.session.run([self.output_name], {self.input_name: batch})[0]
            outs.append(probs[:len(chunk)])
        return np.concatenate(outs)

    def tag_arrays(self, arrays: list[np.ndarray], rules: TagRules) -> list[tuple[list[str], Prediction]]:
        t = self.tags
        ri, gi, ci = t.indices(RATING), t.indices(GENERAL), t.indices(CHARACTER)
        results = []
        for probs in self.predict(arrays):
            pred = select(probs, t.names, ri, gi, ci, rules)
            results.append((prediction_tags(pred, rules), pred))
        return results

    def tag_images(self, paths: Iterable[Path], rules: TagRules, batch_size: int = 8,
                   workers: int = 2) -> Iterator[tuple[list[Tagged], list[Loaded]]]:
        """(tagged, unreadable) per model batch; decoding of the next batches overlaps inference."""
        for loaded, failed in iter_batches(paths, self.load, self.batch_size(batch_size), workers):
            results = self.tag_arrays([item.value for item in loaded], rules) if loaded else []
            yield [Tagged(item.path, tags, pred) for item, (tags, pred) in zip(loaded, results, strict=True)], failed
