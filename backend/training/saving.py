"""LoRA files in the kohya layout with sd-scripts' metadata, and resumable training state.

Every file is written to a temporary name in the same folder and renamed, so a crash never leaves a
broken file under the final name, and a reader (the UI, ComfyUI) sees the old file or the new one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from backend.files import replacing, temp_path

STATE_SUFFIX = ".state.pt"
_STEP_RE = re.compile(r"-step(\d+)$")


def addnet_hash_safetensors(path: Path) -> str:
    """sha256 of everything after the safetensors header (sd-scripts `addnet_hash_safetensors`).

    The bytes after the header are the tensor data only, so metadata edits do not change the hash.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        fh.seek(8 + n)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def addnet_hash_legacy(path: Path) -> str:
    """8 hex digits: sha256 of 64 KiB at offset 1 MiB (sd-scripts `addnet_hash_legacy`)."""
    with open(path, "rb") as fh:
        fh.seek(0x100000)
        return hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]


def save_lora_file(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, str]:
    """Write `tensors` with `metadata` plus sshs_model_hash/sshs_legacy_hash; returns the metadata written.

    As sd-scripts `precalculate_safetensors_hashes`, the hashes are taken over a file holding only the
    `ss_*` metadata, so user fields (title, author, …) can change without changing the hash.
    """
    from safetensors.torch import save_file

    final = Path(path)
    meta = {k: str(v) for k, v in metadata.items()}
    with replacing(final) as tmp:
        probe = temp_path(final, "hash")  # only hashed, then removed
        try:
            save_file(tensors, str(probe), {k: v for k, v in meta.items() if k.startswith("ss_")})
            meta["sshs_model_hash"] = addnet_hash_safetensors(probe)
            meta["sshs_legacy_hash"] = addnet_hash_legacy(probe)
        finally:
            probe.unlink(missing_ok=True)
        meta["modelspec.hash_sha256"] = "0x" + meta["sshs_model_hash"]
        save_file(tensors, str(tmp), meta)
    return meta


def copy_into(src: Path, folder: str | Path) -> Path:
    """`src` copied into `folder` under its own name, appearing whole or not at all (a temporary file in
    the folder, flushed to disk, then renamed): a script watching the folder never reads half a file."""
    final = Path(folder) / src.name
    with replacing(final, "copy") as tmp, open(src, "rb") as inp, open(tmp, "wb") as out:
        shutil.copyfileobj(inp, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    return final


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    with replacing(path) as tmp:
        torch.save(obj, tmp)


def checkpoint_name(output_name: str, step: int) -> str:
    return f"{output_name}-step{step:08d}"


def checkpoint_step(path: Path) -> int | None:
    m = _STEP_RE.search(path.name.removesuffix(STATE_SUFFIX).removesuffix(".safetensors"))
    return int(m.group(1)) if m else None


def list_checkpoints(folder: Path, output_name: str) -> list[tuple[int, Path]]:
    """(step, LoRA file) of the checkpoints in `folder`, oldest first."""
    out = []
    for p in folder.glob(f"{glob_escape(output_name)}-step*.safetensors"):
        step = checkpoint_step(p)
        if step is not None:
            out.append((step, p))
    return sorted(out)


def latest_state(folder: Path) -> Path | None:
    """The resumable state with the highest step in `folder`, or None."""
    states = [(checkpoint_step(p), p) for p in folder.glob(f"*{STATE_SUFFIX}")]
    states = [(s, p) for s, p in states if s is not None]
    return max(states)[1] if states else None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def prune_checkpoints(folder: Path, output_name: str, keep_last_n: int) -> list[Path]:
    """Delete all but the newest `keep_last_n` checkpoints (LoRA file and its state); 0 keeps all."""
    if keep_last_n <= 0:
        return []
    removed = []
    for _step, lora in list_checkpoints(folder, output_name)[:-keep_last_n]:
        state = lora.with_name(lora.name.removesuffix(".safetensors") + STATE_SUFFIX)
        for p in (lora, state):
            if p.exists():
                p.unlink()
                removed.append(p)
    return removed


def save_dtype(name: str) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]
