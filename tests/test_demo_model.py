"""The built-in demo model and dataset: built offline, loadable by diffusers with the network blocked."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from backend.config import load_config
from backend.dataset.buckets import assign_bucket, make_buckets
from backend.dataset.scan import scan_dataset
from backend.models.demo import TRIGGER, build_demo
from backend.paths import SHIPPED_PRESETS, WorkspacePaths


def _block_network(monkeypatch) -> list:
    attempts: list = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network blocked in this test: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return attempts


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    attempts = _block_network(mp)
    paths = WorkspacePaths(tmp_path_factory.mktemp("demo")).ensure()
    try:
        model_dir, dataset_dir = build_demo(paths)
    finally:
        mp.undo()
    assert attempts == []
    return paths, model_dir, dataset_dir


def _draw(model_dir: Path) -> torch.Tensor:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(f"{TRIGGER}, red circle", num_inference_steps=2, height=64, width=64, output_type="pt",
               generator=torch.Generator().manual_seed(0)).images
    return out


def test_demo_model_loads_offline_and_draws(built, monkeypatch):
    _, model_dir, _ = built
    attempts = _block_network(monkeypatch)
    a, b = _draw(model_dir), _draw(model_dir)
    assert attempts == []
    assert a.shape == (1, 3, 64, 64) and torch.isfinite(a).all()
    assert torch.equal(a, b)  # fixed weights, fixed seed: the same image


def test_demo_tokenizer_is_byte_level_with_77_tokens(built):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(built[1] / "tokenizer", local_files_only=True)
    assert len(tok) == 514 and tok.model_max_length == 77
    ids = tok("dashdemo, red", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tok.bos_token_id and tok.decode(ids[1:9]) == "dashdemo"


def test_demo_dataset_is_a_kohya_folder_with_trigger_captions(built):
    _, _, dataset_dir = built
    scan = scan_dataset(dataset_dir)
    assert [s.name for s in scan.subsets] == ["5_demo"] and scan.subsets[0].repeats == 5
    assert scan.num_images >= 16
    sizes = {Image.open(i.path).size for i in scan.images}
    assert len(sizes) == 2
    assert all(i.caption and i.caption.split(",")[0] == TRIGGER for i in scan.images)
    # At the demo preset's bucket settings the wide images get a wide bucket of their own.
    ds = load_config(SHIPPED_PRESETS / "demo.toml").dataset
    buckets = make_buckets(ds.resolution, ds.min_bucket_reso, ds.max_bucket_reso, ds.bucket_reso_steps)
    chosen = {assign_bucket(w, h, resolution=ds.resolution, buckets=buckets, step=ds.bucket_reso_steps).bucket
              for w, h in sizes}
    assert len(chosen) == 2 and any(b[0] > b[1] for b in chosen)


def test_demo_build_is_idempotent(built):
    paths, model_dir, _ = built
    weights = model_dir / "unet" / "diffusion_pytorch_model.safetensors"
    before = weights.stat().st_mtime_ns
    t = time.monotonic()
    assert build_demo(paths) == (model_dir, paths.datasets / "demo")
    assert time.monotonic() - t < 1.0
    assert weights.stat().st_mtime_ns == before
