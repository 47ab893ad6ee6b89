"""The config schema, presets, overrides and the `validate`/`schema` commands."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from backend.config import (
    TrainConfig,
    diff_configs,
    dumps_toml,
    list_presets,
    load_config,
    load_preset,
    resolve_paths,
    save_preset,
    sparse_dict,
)
from backend.config.fields import leaf_fields
from backend.config.migrations import migrate
from backend.errors import ConfigError, WorkspaceError
from backend.paths import PROJECT_ROOT, WorkspacePaths, choose_root, open_workspace

SHIPPED = sorted((PROJECT_ROOT / "presets").glob("*.toml"))


def run_cli(*args: str, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_defaults_are_valid_and_every_field_documented():
    cfg = TrainConfig()
    assert load_config({}) == cfg
    specs = leaf_fields()
    assert len(specs) > 60
    for spec in specs:
        assert spec.help, f"{spec.path} has no help text"
        assert spec.label, f"{spec.path} has no label"


@pytest.mark.parametrize("preset", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_preset_validates_and_is_sparse(preset):
    raw = tomllib.loads(preset.read_text())
    cfg = load_config(preset)
    assert raw.get("schema_version") == 1
    assert preset.read_text().startswith("#"), "a preset starts with a comment saying who it is for"
    # Sparse: nothing in the file restates a default.
    defaults = TrainConfig().model_dump(mode="json")
    for section, values in raw.items():
        if isinstance(values, dict):
            for key, value in values.items():
                assert defaults[section][key] != value or section == "model" and key == "family", \
                    f"{preset.name}: {section}.{key} restates the default"
    assert sparse_dict(cfg) == sparse_dict(load_config(sparse_dict(cfg)))


def test_required_presets_are_shipped():
    names = {p.name for p in list_presets()}
    for needed in ("sd15-character-lora", "sd15-style-locon", "sdxl-character-lora-12gb", "sdxl-lokr-style",
                   "low-vram", "flux-dev-character-24gb", "flux-dev-style-16gb", "flux-schnell-lora", "demo-flux"):
        assert needed in names


def test_unknown_key_names_its_path_and_the_allowed_keys():
    with pytest.raises(ConfigError) as err:
        load_config({"network": {"rnak": 4}})
    (path, message), = err.value.problems
    assert path == "network.rnak"
    assert "unknown option" in message and "rank" in message


def test_unknown_section_is_rejected():
    with pytest.raises(ConfigError) as err:
        load_config({"netwrk": {"rank": 4}})
    assert err.value.problems[0][0] == "netwrk"


@pytest.mark.parametrize("override, path, fragment", [
    ("network.rank=0", "network.rank", "greater than or equal to 1"),
    ("dataset.caption_dropout_rate=1.5", "dataset.caption_dropout_rate", "less than or equal to 1"),
    ("optimizer.name='adamm'", "optimizer.name", "'adamw'"),
    ("training.batch_size='four'", "training.batch_size", "integer"),
    ("dataset.resolution=500", "dataset.resolution", "multiple of 8"),
])
def test_bounds_and_types(override, path, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert err.value.problems[0][0] == path
    assert fragment in err.value.problems[0][1]


def test_cross_field_rules():
    with pytest.raises(ConfigError) as err:
        load_config({"training": {"epochs": "", "max_steps": ""}})
    assert err.value.problems[0][0] == "training"
    assert "max_steps or epochs" in err.value.problems[0][1]
    with pytest.raises(ConfigError, match="warmup_steps or warmup_ratio"):
        load_config({"schedule": {"warmup_steps": 10, "warmup_ratio": 0.1}})
    with pytest.raises(ConfigError, match="min_bucket_reso"):
        load_config({"dataset": {"min_bucket_reso": 1024, "max_bucket_reso": 512}})
    # adapter combinations LyCORIS cannot build: refused when the config is read, before any model loads
    with pytest.raises(ConfigError, match=r"rank \(6\) to be a multiple of block_size \(4\)"):
        load_config({"network": {"algo": "dylora", "rank": 6, "block_size": 4}})
    with pytest.raises(ConfigError, match="DoRA works with lora, locon, loha and lokr, not ia3"):
        load_config({"network": {"algo": "ia3", "dora": True}})
    with pytest.raises(ConfigError, match="continuing a DyLoRA"):
        load_config({"network": {"algo": "dylora", "network_weights": "x.safetensors"}})


def test_missing_required_field_in_a_sample_prompt():
    with pytest.raises(ConfigError) as err:
        load_config({"sampling": {"prompts": [{"seed": 1}]}})
    assert err.value.problems[0] == ("sampling.prompts.0.prompt", "required, but missing")


def test_overrides_parse_toml_values():
    cfg = load_config(overrides=["network.rank=16", "optimizer.lr=2e-4", "dataset.flip_aug=true",
                                 "saving.output_name=my lora", "saving.trigger_words=['a', 'b']"])
    assert (cfg.network.rank, cfg.optimizer.lr, cfg.dataset.flip_aug) == (16, 2e-4, True)
    assert cfg.saving.output_name == "my lora" and cfg.saving.trigger_words == ["a", "b"]
    with pytest.raises(ConfigError, match="section.option=value"):
        load_config(overrides=["rank16"])


def test_toml_round_trip_full_and_sparse(tmp_path):
    cfg = load_config({"sampling": {"prompts": [{"prompt": "dashdemo, a cat", "seed": 7}]}},
                      overrides=["network.algo='lokr'", "network.factor=8", "training.max_steps=30",
                                 "training.epochs=''", "network.unet_lr=3e-4"])
    full = tmp_path / "full.toml"
    full.write_text(dumps_toml(cfg.model_dump(mode="json")))
    assert load_config(full) == cfg
    ws = WorkspacePaths(tmp_path / "ws").ensure()
    saved = save_preset(cfg, ws, "mine")
    assert load_config(saved) == cfg
    data = tomllib.loads(saved.read_text())
    assert set(data) == {"schema_version", "network", "training", "sampling"}
    assert data["training"] == {"max_steps": 30, "epochs": ""}
    with pytest.raises(ConfigError, match="exists already"):
        save_preset(cfg, ws, "mine")
    assert any(p.name == "mine" and not p.shipped for p in list_presets(ws))
    assert load_preset("mine", ws) == cfg


def test_diff_lists_exactly_the_changed_fields():
    a = load_config(overrides=["network.rank=8"])
    b = load_config(overrides=["network.rank=16", "optimizer.lr=5e-4"])
    assert diff_configs(a, b) == [("network.rank", 8, 16), ("optimizer.lr", 1e-4, 5e-4)]


def test_migration_steps_run_in_order():
    steps = {1: lambda d: {"schema_version": 1, "renamed": d["old"]}, 2: lambda d: {**d, "v3": True}}
    out = migrate({"schema_version": 1, "old": 5}, steps=steps, target=3)
    assert out == {"schema_version": 3, "renamed": 5, "v3": True}
    with pytest.raises(ConfigError, match="newer than this LoRA Dash"):
        load_config({"schema_version": 99})


def test_workspace_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert choose_root(None, {}) == tmp_path / "workspace"
    assert choose_root(None, {"LORADASH_WORKSPACE": "elsewhere"}) == tmp_path / "elsewhere"
    assert choose_root("cli", {"LORADASH_WORKSPACE": "elsewhere"}) == tmp_path / "cli"
    ws = open_workspace("ws", {})
    assert all((ws.root / d).is_dir() for d in ("datasets", "models", "jobs", "presets"))
    cfg = resolve_paths(load_config({"model": {"path": "models/demo-sd15"}, "dataset": {"path": "/abs/data"}}), ws)
    assert cfg.model.path == str(tmp_path / "ws" / "models" / "demo-sd15")
    assert cfg.dataset.path == "/abs/data"


def test_unwritable_workspace_names_the_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(WorkspaceError, match=str(blocker)):
        open_workspace(blocker / "ws", {})


def test_validate_command_exit_codes(tmp_path):
    ok = run_cli("validate", "presets/sd15-character-lora.toml", "--schema-only")  # a preset picks no model
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[network]\nrank = 0\nalgoo = "lora"\n[training]\nbatch_size = "x"\n')
    res = run_cli("validate", str(bad))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines == [
        "network.rank: 0 is out of range: input should be greater than or equal to 1",
        "network.algoo: unknown option 'algoo'; allowed here: " + ", ".join(
            TrainConfig.model_fields["network"].annotation.model_fields),
        "training.batch_size: Input should be a valid integer, unable to parse string as an integer (got 'x')",
    ]
    assert "Traceback" not in res.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[network\n")
    res = run_cli("validate", str(broken), "--json")
    assert res.returncode == 2 and '"valid": false' in res.stdout


def test_schema_command_prints_every_option():
    res = run_cli("schema")
    assert res.returncode == 0
    for spec in leaf_fields():
        assert f"`{spec.path}`" in res.stdout
