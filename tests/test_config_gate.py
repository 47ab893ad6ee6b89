"""`python -m backend validate` as the whole gate: what used to pass it and fail later, or crash it with
a traceback, now answers with one line per problem ("dotted.path: message") and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backend.config import load_config
from backend.errors import ConfigError
from backend.paths import PROJECT_ROOT


def run_cli(*args: str, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def one_line(res: subprocess.CompletedProcess) -> str:
    """The single problem line of a refused validate."""
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    (line,) = res.stderr.strip().splitlines()
    return line


def test_output_name_is_capped_in_utf8_bytes_not_characters():
    with pytest.raises(ConfigError) as err:
        load_config({"saving": {"output_name": "é" * 120}})  # 120 characters, 240 bytes
    path, message = err.value.problems[0]
    assert path == "saving.output_name" and "240 bytes" in message and "150" in message
    assert load_config({"saving": {"output_name": "é" * 75}}).saving.output_name == "é" * 75
    line = one_line(run_cli("validate", "presets/sd15-character-lora.toml", "--schema-only",
                            "--set", "saving.output_name='" + "é" * 120 + "'"))
    assert line.startswith("saving.output_name: is 240 bytes")


@pytest.fixture
def bad_unet_workspace(demo_workspace, tmp_path) -> Path:
    """The demo workspace with a UNet config.json whose layers_per_block is a string."""
    import json
    import shutil

    root = tmp_path / "ws"
    shutil.copytree(demo_workspace, root)
    config = root / "models" / "demo-sd15" / "unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "layers_per_block": "2"}))
    return root


def test_a_malformed_unet_config_is_one_line_in_validate_and_in_the_estimate(bad_unet_workspace):
    line = one_line(run_cli("validate", "demo", "--workspace", str(bad_unet_workspace)))
    assert line.startswith("model.path: ") and "layers_per_block = '2'" in line
    line = one_line(run_cli("validate", "demo", "--workspace", str(bad_unet_workspace), "--schema-only",
                            "--estimate"))
    assert line.startswith("model.path: the estimate could not build this model (ValueError: ")


@pytest.mark.parametrize("raw, fragment", [("[" * 3000, "nested too deeply"), ("9" * 5000, "4300 digits"),
                                           ("{a = " * 40 + "1" + "}" * 40, f"more than {16} deep")],
                         ids=["deep-arrays", "long-number", "deep-tables"])
def test_set_values_are_parsed_with_the_guards_of_a_config_file(raw, fragment):
    line = one_line(run_cli("validate", "presets/sd15-character-lora.toml", "--schema-only",
                            "--set", f"model.path={raw}"))
    assert line.startswith("model.path: the value is not usable (") and fragment in line
    assert load_config(overrides=["saving.output_name=my lora"]).saving.output_name == "my lora"


@pytest.mark.parametrize("value", ["{a={b=1}}", "{a=[1, 2]}", "{a=1979-05-27}"], ids=["table", "array", "date"])
def test_a_non_scalar_extra_args_value_is_one_line(value):
    line = one_line(run_cli("validate", "presets/sd15-character-lora.toml", "--schema-only",
                            "--set", f"optimizer.extra_args={value}"))
    assert line.startswith("optimizer.extra_args.a: a number, true/false or a string (got ")


def test_dots_in_comments_and_multi_line_strings_are_not_key_depth(tmp_path):
    demo = (PROJECT_ROOT / "presets" / "demo.toml").read_text(encoding="utf-8")
    dots = "." * 40
    config = tmp_path / "demo.toml"
    text = demo.replace("[saving]\n", f'[saving]\ndescription = """\n{dots}\nsee: a. b. {dots} = c\n"""\n')
    config.write_text(f"# {dots}\n{text}", encoding="utf-8")
    res = run_cli("validate", str(config), "--schema-only")
    assert res.returncode == 0, res.stderr
    config.write_text(f"{demo}\n[{'.'.join(['a'] * 40)}]\n", encoding="utf-8")
    assert one_line(run_cli("validate", str(config), "--schema-only")).endswith("a key 40 levels deep (a config has a few)")


@pytest.mark.parametrize("value, shown", [("0", "got 0"), ("true", "got true"), ("-3", "got a negative number"),
                                          ("1.5", "got 1.5"), ("'1'", "got '1'")])
def test_schema_version_shows_the_value_it_got(tmp_path, value, shown):
    config = tmp_path / "c.toml"
    config.write_text(f"schema_version = {value}\n")
    line = one_line(run_cli("validate", str(config), "--schema-only"))
    assert line == f"schema_version: must be a whole number from 1 to 1, {shown}"
