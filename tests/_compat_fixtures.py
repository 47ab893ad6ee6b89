"""Fixture configs for the compat tests: tests/fixtures/kohya/* with {DATA} and {MODEL} filled in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from backend.paths import WorkspacePaths
from tests._preflight_fixtures import stub_checkpoint

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kohya"
FLUX_FILES = ("clip_l.safetensors", "t5xxl_fp16.safetensors", "ae.safetensors")
FOLDERS = ("10_char", "5_style", "train/10_alice", "train/3_bob", "reg/1_person")


@dataclass
class Env:
    root: Path
    data: Path
    model: Path
    paths: WorkspacePaths

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
    for name in FLUX_FILES:  # Flux's separate text encoders and autoencoder, as ComfyUI users keep them
        (tmp_path / name).write_bytes(b"not a real file: only its existence is checked")
    (tmp_path / "prompts.txt").write_text((FIXTURES / "prompts.txt").read_text(encoding="utf-8"), encoding="utf-8")
    return Env(tmp_path, data, model, WorkspacePaths(tmp_path / "ws").ensure())
