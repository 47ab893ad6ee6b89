"""Fixture configs for the compat tests: tests/fixtures/kohya/* with {DATA} and {MODEL} filled in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from backend.paths import WorkspacePaths
from tests._preflight_fixtures import FLUX_COMPONENTS, stub_checkpoint, write_safetensors

# What detection reads of a FLUX.1 [dev] transformer file (BFL names; guidance_in: dev, not schnell).
FLUX_DEV_MARKS = {"double_blocks.0.img_attn.qkv.weight": (1, 1), "img_in.weight": (1, 64),
                  "guidance_in.in_layer.weight": (1, 1)}

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kohya"
FLUX_FILES = {"clip_l.safetensors": "clip_l_path", "t5xxl_fp16.safetensors": "t5_path", "ae.safetensors": "vae_path"}
FOLDERS = ("10_char", "5_style", "train/10_alice", "train/3_bob", "reg/1_person")


@dataclass
class Env:
    root: Path
    data: Path
    model: Path
    paths: WorkspacePaths
    flux_model: Path

    def file(self, name: str) -> Path:
        """The fixture `name` copied into root with the placeholders replaced."""
        out = self.root / name
        out.write_text(self.sub((FIXTURES / name).read_text(encoding="utf-8")), encoding="utf-8")
        return out

    def sub(self, value):
        """Expected values with {DATA}/{MODEL}/{ROOT} placeholders filled in."""
        if isinstance(value, dict):
            return {k: self.sub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.sub(v) for v in value]
        if isinstance(value, str):
            return (value.replace("{DATA}", self.data.as_posix()).replace("{MODEL}", self.model.as_posix())
                    .replace("{ROOT}", self.root.as_posix()))
        return value


def make_env(tmp_path: Path) -> Env:
    data = tmp_path / "data"
    for i, folder in enumerate(FOLDERS):
        d = data / folder
        d.mkdir(parents=True)
        Image.new("RGB", (64, 64), (40 * i, 90, 160)).save(d / "img0.png")
        (d / "img0.txt").write_text("trig, red, square\n", encoding="utf-8")
    # An SD 1.5 checkpoint as model detection reads it (tensor names, no weights): imports check that it
    # exists; a train job made from it passes the checks before the start (it never runs here).
    model = stub_checkpoint(tmp_path / "model.safetensors", "sd15")
    # Flux's transformer, separate text encoders and autoencoder as ComfyUI users keep them (what detection
    # reads of each); the Flux tests use `flux_model`.
    flux_model = write_safetensors(tmp_path / "flux1-dev.safetensors", FLUX_DEV_MARKS)
    for name, option in FLUX_FILES.items():
        write_safetensors(tmp_path / name, FLUX_COMPONENTS[option])
    (tmp_path / "prompts.txt").write_text((FIXTURES / "prompts.txt").read_text(encoding="utf-8"), encoding="utf-8")
    return Env(tmp_path, data, model, WorkspacePaths(tmp_path / "ws").ensure(), flux_model)
