"""A pasted sd-scripts command line → (script, accelerate options, training flags).

    accelerate launch --num_processes 2 sdxl_train_network.py --config_file a.toml --network_dim 16 ...
    accelerate launch flux_train_network.py --config_file a.toml --timestep_sampling shift ...

Flags follow argparse's shapes: `--flag` alone is true, `--flag value` one value, `--flag a b` a list
(network_args, optimizer_args, text_encoder_lr take lists). Line continuations (\\ and ^) are joined.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from backend.compat.values import as_bool
from backend.errors import ConfigError

LIST_FLAGS = frozenset({"network_args", "optimizer_args", "lr_scheduler_args", "text_encoder_lr", "base_weights",
                        "base_weights_multiplier"})
SUPPORTED_SCRIPTS = {"train_network.py": "sd15", "sdxl_train_network.py": "sdxl", "flux_train_network.py": "flux"}


@dataclass
class Command:
    script: str
    family: str
    launcher: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)


def looks_like_command(text: str) -> bool:
    return bool(re.search(r"(^|[\s/\\\"'])(sdxl_|flux_)?train_network\.py\b", text)) or text.lstrip().startswith(
        ("accelerate ", "python "))


def parse_command(text: str) -> Command:
    joined = re.sub(r"[\\^`]\s*\r?\n", " ", text)
    lines = [ln for ln in joined.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", "REM ", "rem "))]
    try:
        tokens = shlex.split(" ".join(lines), posix=True)
    except ValueError as err:
        raise ConfigError([("command", f"cannot split the command line: {err}")]) from None
    index = next((i for i, t in enumerate(tokens) if t.endswith(".py")), None)
    if index is None:
        raise ConfigError([("command", "no training script (train_network.py, sdxl_train_network.py or "
                                       "flux_train_network.py) in the command line")])
    script = tokens[index].replace("\\", "/").rsplit("/", 1)[-1]
    if script not in SUPPORTED_SCRIPTS:
        raise ConfigError([("command", f"{script} is not supported: LoRA Dash imports train_network.py, "
                                       "sdxl_train_network.py and flux_train_network.py runs")])
    launcher = _flags(t for t in tokens[:index] if t not in ("accelerate", "launch", "python", "python3")
                      and not t.endswith(("python", "python.exe", "accelerate", "accelerate.exe")))
    return Command(script, SUPPORTED_SCRIPTS[script], launcher, _flags(tokens[index + 1:]))


def _flags(tokens) -> dict[str, Any]:
    out: dict[str, Any] = {}
    key: str | None = None
    values: list[str] = []

    def close() -> None:
        if key is None:
            return
        if not values:
            out[key] = True
        elif key in LIST_FLAGS:
            out[key] = [_scalar(v) for v in values] if key == "text_encoder_lr" else list(values)
        else:
            out[key] = _scalar(" ".join(values))

    for token in tokens:
        if token.startswith("--"):
            close()
            name, sep, value = token[2:].partition("=")
            key, values = name.replace("-", "_"), ([value] if sep else [])
        elif key is not None:
            values.append(token)
    close()
    return out


def _scalar(text: str) -> Any:
    if text.lower() in ("true", "false"):  # the words only: "1" stays a number
        return as_bool(text)
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
