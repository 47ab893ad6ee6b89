"""Natural-language captioners through transformers 5: `AutoModelForImageTextToText` + `AutoProcessor`
from a local folder. Covers BLIP, BLIP-2, GIT, Florence-2 (florence-community checkpoints), LLaVA
(JoyCaption) and Qwen2/2.5-VL; chat models get their processor's chat template."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from backend.dataset.images import load_rgb
from backend.errors import ModelError

# Prompts used when the config leaves the prompt empty, by config.model_type.
DEFAULT_PROMPTS = {
    "blip": "a picture of",
    "florence2": "<CAPTION>",
    "llava": "Write a descriptive caption for this image in a formal tone.",
    "qwen2_vl": "Describe this image in one detailed paragraph.",
    "qwen2_5_vl": "Describe this image in one detailed paragraph.",
}
CHAT_DEFAULT = "Describe this image in one detailed paragraph."
HOW_TO_GET = ("a captioner folder is a transformers model saved with its processor, e.g. a download of "
              "Salesforce/blip-image-captioning-large or florence-community/Florence-2-base")


def join_parts(*parts: str) -> str:
    """Prefix, caption and suffix joined with `, `, each stripped of stray separators at its ends."""
    return ", ".join(p for p in (s.strip().strip(",").strip() for s in parts) if p)


def strip_echo(text: str, prompt: str) -> str:
    """Remove a prompt the model repeated at the start of its answer (compared case- and space-blind)."""
    text = text.strip()
    words = prompt.split()
    if words:
        pattern = r"\s+".join(re.escape(w) for w in words)
        text = re.sub(rf"^\s*{pattern}[\s:,.]*", "", text, count=1, flags=re.IGNORECASE)
    return text.strip()


MAX_SIDE = 2048  # every processor here resizes below this; capping it bounds the memory of decoded images


def load_for_captioner(path: Path) -> Image.Image:
    """The image as RGB (alpha on white, EXIF applied), its longer side at most MAX_SIDE."""
    img = load_rgb(path)
    if max(img.size) > MAX_SIDE:
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.BICUBIC)
    return img


def pick_device_dtype(device: str, dtype: str) -> tuple[str, Any]:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.device is cuda but torch sees no CUDA GPU — choose auto or cpu")
    dev = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        if dev == "cpu":
            return dev, torch.float32
        return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return dev, getattr(torch, dtype)


@dataclass
class CaptionerInfo:
    model_type: str
    device: str
    dtype: str
    chat: bool


class Captioner:
    """A vision-language model and its processor, loaded with `local_files_only=True`."""

    def __init__(self, model_dir: str | os.PathLike, device: str = "auto", dtype: str = "auto"):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        folder = Path(model_dir)
        if not folder.is_dir():
            raise ModelError(f"captioner folder {folder} does not exist: {HOW_TO_GET}")
        if not (folder / "config.json").is_file():
            raise ModelError(f"{folder / 'config.json'} is missing: {HOW_TO_GET}")
        self.device, torch_dtype = pick_device_dtype(device, dtype)
        try:
            self.processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True,
                                                                     dtype=torch_dtype)
        except (OSError, ValueError, KeyError) as err:
            raise ModelError(f"transformers cannot load the captioner in {folder}: {err}. Remote-code "
                             f"checkpoints (original microsoft/Florence-2, moondream2) are not supported; "
                             f"use a natively supported one (florence-community/Florence-2-*)") from err
        self.model.to(self.device).eval()
        self.model_type = self.model.config.model_type
        self.chat = bool(getattr(self.processor, "chat_template", None))
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None and not self.model.config.is_encoder_decoder:
            tokenizer.padding_side = "left"  # batched generation continues from the right end
        self.info = CaptionerInfo(self.model_type, self.device, str(torch_dtype).removeprefix("torch."),
                                  self.chat)

    def default_prompt(self) -> str:
        return DEFAULT_PROMPTS.get(self.model_type, CHAT_DEFAULT if self.chat else "")

    def _inputs(self, images: list[Image.Image], prompt: str) -> Any:
        if self.chat:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
            return self.processor(images=images, text=[text] * len(images), return_tensors="pt", padding=True)
        if prompt:
            return self.processor(images=images, text=[prompt] * len(images), return_tensors="pt",
                                  padding=True)
        return self.processor(images=images, return_tensors="pt")

    def caption(self, images: list[Image.Image], prompt: str | None = None, max_new_tokens: int = 75,
                num_beams: int = 1) -> list[str]:
        """One caption per image: greedy (num_beams=1) or beam search, the echoed prompt removed."""
        import torch

        if not images:
            return []
        prompt = self.default_prompt() if not prompt else prompt
        inputs = self._inputs(images, prompt).to(self.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                      do_sample=False)
        ids = inputs.get("input_ids")
        if ids is not None and out.shape[1] > ids.shape[1] and torch.equal(out[:, :ids.shape[1]], ids):
            out = out[:, ids.shape[1]:]  # decoder-only models return the prompt tokens first
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [strip_echo(t, prompt) for t in texts]
