"""The T5 tokenizer Flux needs when its text encoder comes as a single file (t5xxl_fp16.safetensors).

A diffusers Flux folder carries it (`tokenizer_2/`). A single T5 file does not, and unlike CLIP's BPE
merges (shipped, from PyPI `clip-anytorch`) no PyPI package we may depend on carries T5's SentencePiece
vocabulary, so it cannot ship with LoRA Dash: on first use it is downloaded (three small files, about
2.5 MB) from the Hugging Face Hub repository of FLUX.1 [schnell] (Apache-2.0, not gated; the same
tokenizer as [dev]) into the shared config cache, and every later run reads it from there offline.
Offline from the start, the error says which files to put in which folder by hand.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from backend.errors import ModelError

REPO_ID = "black-forest-labs/FLUX.1-schnell"
SUBFOLDER = "tokenizer_2"
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
FOLDER = "t5-tokenizer"


def cached_folder(configs_root: Path) -> Path:
    """Where the downloaded tokenizer lives: `<configs root>/t5-tokenizer/`."""
    return Path(configs_root) / FOLDER


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)


def t5_tokenizer_folder(configs_root: Path, endpoint: str | None = None) -> Path:
    """The T5 tokenizer folder, downloaded once into `configs_root` (huggingface_hub; `endpoint`
    overrides the hub address, else $HF_ENDPOINT as the library reads it). The folder appears whole
    (files land in a temporary sibling, then one rename)."""
    dest = cached_folder(configs_root)
    if is_complete(dest):
        return dest
    from huggingface_hub import hf_hub_download

    from backend.models.download import _explain, _hub_errors

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER}-", dir=dest.parent))
    try:
        for name in FILES:
            got = hf_hub_download(REPO_ID, f"{SUBFOLDER}/{name}", local_dir=tmp, endpoint=endpoint)
            os.replace(got, tmp / name)
        shutil.rmtree(tmp / SUBFOLDER, ignore_errors=True)
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's resume metadata
        try:
            os.replace(tmp, dest)
        except OSError:
            if not is_complete(dest):  # not a concurrent run that finished first
                raise
    except _hub_errors() as err:
        explained = _explain(err, REPO_ID, dest)
        raise ModelError(f"Flux needs the T5 tokenizer, which a single T5 file does not include: {explained}. "
                         f"By hand: put {', '.join(FILES)} from {REPO_ID} (folder {SUBFOLDER}/) into {dest}, "
                         "or use a diffusers Flux folder as model.path") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
