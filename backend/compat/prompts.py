"""sd-scripts sample-prompt files ↔ our sampling.prompts.

The text format (sd-scripts docs/train_README, "sample_prompts"): one prompt a line, `#` comments,
options after the prompt: --n negative, --w width, --h height, --d seed, --l CFG scale, --s steps.
sd-scripts also reads .toml/.json files holding a list of {prompt, negative_prompt, width, height,
seed, scale, sample_steps}. Options a line leaves out take sd-scripts' defaults, listed below.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

# sd-scripts' values for options a prompt line leaves out (train_util.sample_images_common).
KOHYA_PROMPT_DEFAULTS = {"width": 512, "height": 512, "steps": 30, "guidance": 7.5, "negative": ""}
_OPTION = re.compile(r"\s--([a-z]+)\s")
_LINE_KEYS = {"n": "negative", "w": "width", "h": "height", "d": "seed", "l": "guidance", "s": "steps"}
_TABLE_KEYS = {"prompt": "prompt", "negative_prompt": "negative", "width": "width", "height": "height",
               "seed": "seed", "scale": "guidance", "sample_steps": "steps"}
_INT = ("width", "height", "seed", "steps")


def parse_prompt_line(line: str) -> tuple[dict[str, Any], list[str]]:
    """`a cat --n ugly --w 512 --d 3` → ({"prompt": "a cat", "negative": "ugly", …}, unknown options)."""
    parts = _OPTION.split(" " + line.strip() + " ")
    out: dict[str, Any] = {"prompt": parts[0].strip()}
    unknown: list[str] = []
    for flag, value in zip(parts[1::2], parts[2::2], strict=False):
        name = _LINE_KEYS.get(flag)
        if name is None:
            unknown.append(f"--{flag} {value.strip()}".strip())
            continue
        out[name] = _number(name, value.strip())
    return out, unknown


def _number(name: str, text: str) -> Any:
    if name == "negative":
        return text
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if name in _INT and number.is_integer() else number


def read_prompt_file(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The prompts of an sd-scripts prompt file with sd-scripts' defaults filled in, and notes."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return [], [f"{path.name} is not UTF-8 text: no prompts read"]
    except OSError as err:
        return [], [f"cannot read {path.name}: {err.strerror or err}"]
    return read_prompts(text, path.suffix.lower())


def read_prompts(text: str, suffix: str = ".txt") -> tuple[list[dict[str, Any]], list[str]]:
    """Prompts from the text of a prompt file (`suffix` picks the format: .txt, .toml or .json)."""
    notes: list[str] = []
    raw: list[dict[str, Any]] = []
    if suffix in (".toml", ".json"):
        try:
            data = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
            return [], [f"not valid {suffix[1:].upper()}: {err}"]
        except (RecursionError, ValueError) as err:  # nested too deeply; an integer of 5000 digits
            return [], [f"not usable {suffix[1:].upper()}: {type(err).__name__}"]
        items = data.get("prompt", data) if isinstance(data, dict) else data
        if isinstance(items, dict):
            items = items.get("subset", [items])
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                raw.append({_TABLE_KEYS[k]: v for k, v in item.items() if k in _TABLE_KEYS})
                notes += [f"option {k!r} ignored" for k in item if k not in _TABLE_KEYS]
    else:
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            prompt, unknown = parse_prompt_line(line)
            raw.append(prompt)
            notes += [f"option {u!r} ignored" for u in unknown]
    prompts = []
    for item in raw:
        if not str(item.get("prompt", "")).strip():
            continue
        filled = {**KOHYA_PROMPT_DEFAULTS, **item}
        if "seed" not in item:
            notes.append(f"{item['prompt'][:40]!r}: no --d seed (sd-scripts draws a random one): seed 42 used")
            filled["seed"] = 42
        prompts.append(filled)
    return prompts, notes


def format_prompt_line(p: dict[str, Any]) -> str:
    """One prompt as a line with every option written, so it reads back exactly."""
    text = " ".join(str(p["prompt"]).split())
    negative = " ".join(str(p.get("negative", "")).split())
    out = f"{text} --w {p['width']} --h {p['height']} --d {p['seed']} --l {p['guidance']} --s {p['steps']}"
    return out + (f" --n {negative}" if negative else "")


def format_prompt_file(prompts: list[dict[str, Any]]) -> str:
    head = "# Sample prompts for sd-scripts (--sample_prompts), written by LoRA Dash\n"
    return head + "".join(format_prompt_line(p) + "\n" for p in prompts)
