"""The CLIP BPE tokenizer files (vocab.json, merges.txt) derived offline from OpenAI's merges list.

SD 1.x uses OpenAI's CLIP ViT-L/14 tokenizer; SD 2.x and SDXL's second encoder (OpenCLIP) use the same
BPE vocabulary with `!` as the padding token. The merges ship in `configs/clip_bpe/` (from PyPI's
`clip-anytorch`, MIT licence, file `clip/bpe_simple_vocab_16e6.txt.gz`); the Hugging Face files are a
re-encoding of that list, so deriving them here gives the exact ids the real models were trained with.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

BPE_FILE = Path(__file__).resolve().parent / "configs" / "clip_bpe" / "bpe_simple_vocab_16e6.txt.gz"
# simple_tokenizer.py keeps merges[1 : 49152 - 256 - 2 + 1]: 48894 merges, vocabulary 49408.
N_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """Byte → printable unicode character table of GPT-2's byte-level BPE.

    Source: OpenAI GPT-2 `encoder.py` / CLIP `simple_tokenizer.py` (`bytes_to_unicode`): printable
    Latin-1 bytes map to themselves, the others to code points from 256 upwards, in byte order.
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, (chr(c) for c in chars), strict=True))


def derive(bpe_path: Path = BPE_FILE) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) of the CLIP tokenizer, built as CLIP's `SimpleTokenizer.__init__` builds them.

    Source: openai/CLIP `clip/simple_tokenizer.py`: the 256 byte symbols, the same with `</w>`, one
    token per merge in file order, then `<|startoftext|>`, `<|endoftext|>`.
    """
    lines = gzip.decompress(bpe_path.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1:N_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    vocab_list += ["".join(m.split()) for m in merges]
    vocab_list += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"{bpe_path}: expected {VOCAB_SIZE} tokens, derived {len(vocab)}")
    return vocab, merges


def tokenizer_config(pad_token: str) -> dict:
    """tokenizer_config.json of a CLIPTokenizer with 77-token context and the given pad token."""
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": pad_token,
    }


def write_tokenizer(dest: Path, pad_token: str, derived: tuple[dict[str, int], list[str]] | None = None) -> Path:
    """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json into `dest`.

    Each file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    vocab, merges = derived or derive()
    dest.mkdir(parents=True, exist_ok=True)
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
    files = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "tokenizer_config.json": json.dumps(tokenizer_config(pad_token), indent=2),
        "special_tokens_map.json": json.dumps(special, indent=2),
    }
    for name, text in files.items():
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, dest / name)
    return dest
