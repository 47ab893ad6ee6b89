"""Choices for the pickers: base models, datasets and presets found in the workspace."""

from __future__ import annotations

from pathlib import Path

from backend.config import list_presets
from backend.dataset.repeats import list_datasets
from backend.models.download import PARTIAL_SUFFIX
from backend.paths import WorkspacePaths

MODEL_FILE_SUFFIXES = (".safetensors", ".ckpt")


def _rel(paths: WorkspacePaths, p: Path) -> str:
    """Workspace-relative where possible: the config stays valid if the workspace moves."""
    try:
        return p.relative_to(paths.root).as_posix()
    except ValueError:
        return str(p)


def _size(p: Path) -> str:
    mb = p.stat().st_size / 1e6
    return f"{mb / 1000:.1f} GB" if mb >= 1000 else f"{mb:.0f} MB"


def model_choices(paths: WorkspacePaths, depth: int = 2) -> list[tuple[str, str]]:
    """(label, value) for diffusers folders (with model_index.json) and single model files under
    workspace/models, looking `depth` folders deep."""
    found: list[tuple[str, str]] = []

    def visit(folder: Path, level: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith(".") or entry.name.endswith(PARTIAL_SUFFIX):
                continue  # hidden, or a download still in progress
            if entry.is_dir() and (entry / "model_index.json").is_file():
                found.append((f"{_rel(paths, entry)} (diffusers)", _rel(paths, entry)))
            elif entry.is_file() and entry.suffix.lower() in MODEL_FILE_SUFFIXES:
                found.append((f"{_rel(paths, entry)} ({_size(entry)})", _rel(paths, entry)))
            elif entry.is_dir() and level < depth:
                visit(entry, level + 1)

    visit(paths.models, 1)
    return found


def dataset_choices(paths: WorkspacePaths) -> list[tuple[str, str]]:
    return [(f"{d.name} ({d.n_images} images)", _rel(paths, d.path)) for d in list_datasets(paths)]


def preset_choices(paths: WorkspacePaths) -> list[tuple[str, str]]:
    return [(p.name if p.shipped else f"{p.name} (yours)", p.name) for p in list_presets(paths)]


def preset_summaries(paths: WorkspacePaths) -> dict[str, str]:
    return {p.name: p.summary for p in list_presets(paths)}
