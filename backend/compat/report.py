"""What an import did, line by line: mapped, changed (and how), no equivalent (and why), problems.

Nothing is dropped silently: every key read from a kohya, LETS or kohya_ss file ends up in one of
these lists, and so does every sd-scripts default that differs from LoRA Dash's.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from backend.config.io import dumps_toml
from backend.config.schema import TrainConfig


@dataclass(frozen=True)
class Entry:
    key: str          # the source's name, e.g. "network_dim" or "subset #2 num_repeats"
    path: str         # our dotted path ("" when none)
    value: Any        # the value read (for an absent key: the default sd-scripts would use)
    note: str = ""    # how it changed, or why it has no equivalent
    result: Any = None  # the value our option got, where it differs from `value`


@dataclass
class ImportReport:
    source: str = ""
    mapped: list[Entry] = field(default_factory=list)
    changed: list[Entry] = field(default_factory=list)
    unmapped: list[Entry] = field(default_factory=list)
    problems: list[Entry] = field(default_factory=list)   # things to fix before training
    aliases: dict[str, str] = field(default_factory=dict)  # sd-scripts name → the source file's own name

    def alias(self, kohya_name: str, source_name: str) -> None:
        """Report `kohya_name` under the source's own name too (kohya_ss calls resolution max_resolution)."""
        self.aliases[kohya_name] = source_name

    def _label(self, key: str) -> str:
        if not self.aliases:
            return key
        return " ".join(f"{self.aliases[w]} (as {w})" if w in self.aliases else w for w in key.split(" "))

    def map(self, key: str, path: str, value: Any, note: str = "", result: Any = None) -> None:
        self.mapped.append(Entry(self._label(key), path, _plain(value), note, _plain(result)))

    def change(self, key: str, path: str, value: Any, how: str, result: Any = None) -> None:
        self.changed.append(Entry(self._label(key), path, _plain(value), how, _plain(result)))

    def no_equivalent(self, key: str, value: Any, why: str) -> None:
        self.unmapped.append(Entry(self._label(key), "", _plain(value), why))

    def problem(self, key: str, value: Any, why: str) -> None:
        self.problems.append(Entry(self._label(key), "", _plain(value), why))

    def keys(self) -> set[str]:
        """Every source key mentioned (for "nothing silently dropped" checks)."""
        return {e.key for group in (self.mapped, self.changed, self.unmapped, self.problems) for e in group}

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source,
                **{name: [_json_safe(asdict(e)) for e in getattr(self, name)]
                   for name in ("mapped", "changed", "unmapped", "problems")}}

    def to_text(self) -> str:
        lines = [f"Imported from {self.source}" if self.source else "Import report"]
        sections = (("Mapped", self.mapped), ("Changed", self.changed),
                    ("No equivalent in LoRA Dash", self.unmapped), ("Check before training", self.problems))
        for title, entries in sections:
            if not entries:
                continue
            lines.append(f"{title} ({len(entries)}):")
            for e in entries:
                target = f" → {e.path}" if e.path else ""
                if e.path and e.result is not None:
                    target += f" = {_short(e.result)}"
                note = f"  ({e.note})" if e.note else ""
                lines.append(f"  {e.key} = {_short(e.value)}{target}{note}")
        return "\n".join(lines)


@dataclass
class ImportResult:
    preset: dict[str, Any]      # sparse: what differs from LoRA Dash's defaults (a preset file's content)
    config: TrainConfig
    report: ImportReport

    def to_toml(self) -> str:
        return dumps_toml(self.preset)

    def header(self) -> str:
        """A comment block for the preset file: where it came from and what to check."""
        r = self.report
        lines = [f"Imported from {r.source}" if r.source else "Imported config",
                 f"{len(r.mapped)} mapped, {len(r.changed)} changed, {len(r.unmapped)} without equivalent, "
                 f"{len(r.problems)} to check"]
        lines += [f"changed: {e.key} → {e.path or '-'}: {e.note}" for e in r.changed]
        lines += [f"no equivalent: {e.key}: {e.note}" for e in r.unmapped]
        lines += [f"check: {e.key}: {e.note}" for e in r.problems]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"preset": self.preset, "report": self.report.to_dict()}, indent=1, default=str)


def _json_safe(value: Any) -> Any:
    """`value` with inf and NaN as text: strict JSON (the LETS API's answers) has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"
