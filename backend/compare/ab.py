"""A/B launches: 2–4 presets, or one preset with one option swept over a list, queued as one group.

Every run gets the same base model, dataset, seed and sample settings (prompts, seeds, cadence,
sampler), so the only differences are the presets' or the swept option's, and the sample grid lines up.
All runs are validated before any job folder is made: a bad sweep value names the value and the field.
"""

from __future__ import annotations

import re
import time
import tomllib
from dataclasses import dataclass
from typing import Any

from backend.config import apply_overrides, find_preset, load_config, to_dict
from backend.config.fields import field_map
from backend.config.io import read_toml
from backend.errors import ConfigError
from backend.jobs.registry import JobRecord, slugify
from backend.jobs.validation import validate_config
from backend.paths import WorkspacePaths

MIN_RUNS, MAX_RUNS = 2, 4
# Sample settings made equal across the runs (unless one of them is the swept option).
SHARED_SAMPLING = ("prompts", "sampler", "every_n_steps", "every_n_epochs", "sample_at_start")


@dataclass(frozen=True)
class Sweep:
    path: str             # dotted field path, e.g. "network.rank"
    values: tuple[Any, ...]


@dataclass(frozen=True)
class PlannedRun:
    label: str            # what differs: the preset's name or "network.rank=16"
    config: dict[str, Any]  # the validated, resolved config the job will run


def _toml_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def parse_sweep(text: str) -> Sweep:
    """`network.rank = [8, 16, 32]`, `optimizer.lr = 1e-4, 5e-4` or `network.algo = [lora, locon]`
    → Sweep. Values are read as TOML, an unquoted word as a string. ConfigError if malformed."""
    path, sep, raw = text.partition("=")
    path, raw = path.strip(), raw.strip()
    if not sep or not path or not raw:
        raise ConfigError([("sweep", f"write the sweep as option = [value, value, …], e.g. "
                                     f"network.rank = [8, 16, 32]; got {text!r}")])
    inner = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    value = _toml_value(f"[{inner}]")
    if not isinstance(value, list):
        value = [_toml_value(item.strip()) for item in inner.split(",") if item.strip()]
    return Sweep(path, tuple(value))


def _check_sweep(sweep: Sweep) -> None:
    fields = field_map()
    if sweep.path not in fields:
        close = [p for p in fields if p.endswith("." + sweep.path.rpartition(".")[2])]
        hint = f"; did you mean {', '.join(close)}?" if close else "; options look like section.name, e.g. network.rank"
        raise ConfigError([(sweep.path, f"no such option to sweep{hint}")])
    n = len(sweep.values)
    if not MIN_RUNS <= n <= MAX_RUNS:
        raise ConfigError([(sweep.path, f"a sweep takes {MIN_RUNS}–{MAX_RUNS} values (one run each); got {n}")])
    if len({repr(v) for v in sweep.values}) != n:
        raise ConfigError([(sweep.path, f"the sweep repeats a value: {list(sweep.values)!r}")])


def _preset_dict(name: str, paths: WorkspacePaths) -> dict[str, Any]:
    return read_toml(find_preset(name, paths))


def _prompts(prompts: list[str | dict], template: dict[str, Any] | None) -> list[dict]:
    """Prompt lines → prompt tables. A bare line takes its size, steps, guidance, negative and seed from
    `template` (the first run's first sample prompt), so the preset's sample settings still apply."""
    base = {k: v for k, v in (template or {}).items() if k != "prompt"}
    return [{**base, "prompt": p} if isinstance(p, str) else dict(p) for p in prompts if p]


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plan_ab(paths: WorkspacePaths, *, presets: list[str] | None = None, sweep: Sweep | str | None = None,
            model_path: str = "", dataset_path: str = "", overrides: dict[str, Any] | list[str] | None = None,
            seed: int | None = None, prompts: list[str | dict] | None = None) -> list[PlannedRun]:
    """The runs of an A/B comparison, each validated. Either 2–4 `presets`, or one preset and a
    `sweep`. `overrides` ({"training.max_steps": 100} or ["training.max_steps=100"]) apply to every run.
    The seed and sample settings come from the arguments, else from the first run's config.
    ConfigError naming the field (and the sweep value, or the preset) on any problem."""
    presets = [p for p in (presets or []) if p]
    if isinstance(sweep, str):
        sweep = parse_sweep(sweep) if sweep.strip() else None
    if sweep is not None:
        _check_sweep(sweep)
        if len(presets) != 1:
            raise ConfigError([("presets", f"a sweep runs one preset; {len(presets)} chosen")])
    elif not MIN_RUNS <= len(presets) <= MAX_RUNS:
        raise ConfigError([("presets", f"choose {MIN_RUNS}–{MAX_RUNS} presets, or one preset and an option "
                                       f"to sweep; {len(presets)} chosen")])
    common: dict[str, Any] = {}
    if model_path:
        common["model.path"] = model_path
    if dataset_path:
        common["dataset.path"] = dataset_path

    bases: list[tuple[str, dict[str, Any]]] = []
    for name in presets:
        data = apply_overrides(apply_overrides(_preset_dict(name, paths), overrides), common)
        bases.append((name, data))
    if sweep is not None:
        bases = [(f"{sweep.path}={_fmt(v)}", apply_overrides(bases[0][1], {sweep.path: v})) for v in sweep.values]

    first = _validated(bases[0][1], bases[0][0], sweep, 0)
    shared = {"training.seed": first.training.seed if seed is None else seed}
    sampling = first.sampling.model_dump(mode="json")
    for key in SHARED_SAMPLING:
        shared[f"sampling.{key}"] = sampling[key]
    if prompts is not None:
        shared["sampling.prompts"] = _prompts(prompts, (sampling["prompts"] or [None])[0])
    if sweep is not None:
        shared.pop(sweep.path, None)

    runs, problems = [], []
    for i, (label, data) in enumerate(bases):
        try:
            cfg = _validated(apply_overrides(data, shared), label, sweep, i)
            runs.append(PlannedRun(label, validate_config("train", to_dict(cfg), paths)))
        except ConfigError as err:  # a problem every run shares (a missing model) is told once
            problems.extend(pr for pr in err.problems if pr not in problems)
    if problems:
        raise ConfigError(problems, source="A/B comparison")
    return _unique_labels(runs)


def _validated(data: dict[str, Any], label: str, sweep: Sweep | None, i: int):
    try:
        return load_config(data)
    except ConfigError as err:
        if sweep is None:
            raise ConfigError([(p, f"preset {label!r}: {m}") for p, m in err.problems]) from None
        value = sweep.values[i]
        raise ConfigError([(p, f"sweep value {value!r} for {sweep.path}: {m}") if p == sweep.path
                           else (p, f"with {sweep.path} = {value!r}: {m}") for p, m in err.problems]) from None


def _unique_labels(runs: list[PlannedRun]) -> list[PlannedRun]:
    seen: dict[str, int] = {}
    out = []
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
        label = run.label if seen[run.label] == 1 else f"{run.label} #{seen[run.label]}"
        out.append(PlannedRun(label, run.config))
    return out


def new_group_id(title: str, now: float | None = None) -> str:
    """`ab-20261127-153000-rank-sweep`: sortable, readable, unique enough per second and title."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    slug = slugify(title, 30)
    return f"ab-{stamp}-{slug}" if slug else f"ab-{stamp}"


def launch_ab(supervisor, runs: list[PlannedRun], title: str = "") -> tuple[str, list[JobRecord]]:
    """Queue every planned run in one group (JobRecord.group), in order, then let the supervisor start
    the first. Returns (group id, job records)."""
    if not runs:
        raise ConfigError([("presets", "nothing to launch")])
    title = title.strip()
    group = new_group_id(title or " vs ".join(r.label for r in runs))
    records = []
    for run in runs:
        name = f"{title[:40]} {run.label}" if title else run.label
        records.append(supervisor.submit("train", run.config, _job_name(name), group=group, start=False))
    supervisor.poll(force=True)
    return group, [supervisor.get(r.id) for r in records]


def _job_name(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip()[:80]
