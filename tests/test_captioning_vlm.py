"""Vision-language captioning with a tiny BLIP built by the test (real transformers code paths)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.captioning.job import caption_foreground
from backend.captioning.vlm import Captioner, join_parts, strip_echo
from backend.errors import ModelError
from backend.paths import WorkspacePaths
from tests._caption_fixtures import make_tiny_blip, solid


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    return make_tiny_blip(tmp_path_factory.mktemp("blip") / "tiny-blip")


@pytest.fixture(scope="module")
def captioner(blip_dir):
    return Captioner(blip_dir, device="cpu")


def test_loads_through_the_auto_classes(captioner):
    assert type(captioner.model).__name__ == "BlipForConditionalGeneration"
    assert (captioner.info.model_type, captioner.info.device, captioner.info.dtype) == ("blip", "cpu", "float32")
    assert not captioner.chat and captioner.default_prompt() == "a picture of"


def test_captions_strip_the_echoed_prompt(captioner, tmp_path):
    from PIL import Image
    imgs = [Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (30, 40), (0, 0, 255))]
    # BLIP returns the prompt tokens before its answer; the decoder is biased to say "cat".
    raw = captioner.processor.batch_decode(captioner.model.generate(
        **captioner.processor(images=imgs[:1], text=["a picture of"], return_tensors="pt"), max_new_tokens=2),
        skip_special_tokens=True)
    assert raw == ["a picture of cat cat"]
    assert captioner.caption(imgs, "a picture of", max_new_tokens=3) == ["cat cat cat"] * 2
    assert captioner.caption(imgs[:1], "", max_new_tokens=2) == ["cat cat"]  # default prompt, stripped
    assert captioner.caption(imgs[:1], "a photo", max_new_tokens=2, num_beams=2) == ["cat cat"]


def test_caption_job_with_prefix_suffix_and_a_bad_image(blip_dir, tmp_path):
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    ds = tmp_path / "ds"
    solid(ds / "a.png", (255, 0, 0))
    solid(ds / "b.jpg", (0, 255, 0))
    (ds / "c.png").write_bytes(b"\x89PNG broken")
    cfg = {"dataset": {"path": str(ds)}, "model": {"mode": "captioner", "path": str(blip_dir), "batch_size": 2},
           "captioner": {"prefix": "sks,", "suffix": "by me", "max_new_tokens": 2}}
    result = caption_foreground(paths, cfg)
    assert result.written == 2 and result.provider == "torch cpu float32"
    assert [Path(f.path).name for f in result.failed] == ["c.png"]
    assert (ds / "a.txt").read_text() == "sks, cat cat, by me\n"
    assert (ds / "b.txt").read_text() == "sks, cat cat, by me\n"


def test_missing_files_are_named(tmp_path, blip_dir):
    with pytest.raises(ModelError, match=r"config\.json is missing"):
        Captioner(tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        Captioner(tmp_path / "nowhere")


def test_text_helpers():
    assert strip_echo("A  picture of: a cat", "a picture of") == "a cat"
    assert strip_echo("a cat", "a picture of") == "a cat"
    assert strip_echo("a cat", "") == "a cat"
    assert join_parts("sks, ", "a cat.", "") == "sks, a cat."
