"""Export to sd-scripts: files, the exact command, and import(export(x)) == x for every shipped preset."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tomllib

import pytest

from backend.compat.detect import import_text
from backend.compat.export import export_config, export_job, export_preset
from backend.compat.kohya_import import EXTRAS_FILE, import_kohya_files
from backend.compat.mapping import MAPPING, OURS_ALONE, UNSUPPORTED
from backend.compat.prompts import read_prompt_file
from backend.config import list_presets, load_config, load_preset, sparse_dict, to_dict
from backend.jobs.supervisor import Supervisor
from backend.paths import PROJECT_ROOT, WorkspacePaths
from tests._compat_fixtures import make_env

SHIPPED = [p.name for p in list_presets()]


def allowed_extra(path: str, family: str) -> bool:
    """What sd-scripts cannot say, and so may travel in loradash_extras.toml: the options only LoRA Dash
    has, and text-encoder output caching on SD 1.5 (train_network.py has no such option)."""
    return path in OURS_ALONE or (path == "training.cache_text_encoder_outputs" and family == "sd15")


@pytest.mark.parametrize("name", SHIPPED)
def test_import_of_export_is_the_shipped_preset(tmp_path, name):
    out = export_preset(name, None, tmp_path / name)
    back = import_kohya_files(out.out_dir / "config.toml", out.out_dir / "dataset.toml")
    assert back.preset == sparse_dict(load_preset(name))
    family = load_preset(name).model.family
    extra_paths = [f"{section}.{key}" for section, values in out.extras.items() for key in values]
    assert all(allowed_extra(p, family) for p in extra_paths), extra_paths
    # through the exported command line too (the script names the family; flags as sd-scripts reads them)
    again = import_text((out.out_dir / "train_command.txt").read_text(), ".txt")
    assert again.preset == back.preset


@pytest.mark.parametrize("name", SHIPPED)
def test_without_the_extras_file_only_the_noted_options_differ(tmp_path, name):
    out = export_preset(name, None, tmp_path)
    (tmp_path / EXTRAS_FILE).unlink(missing_ok=True)
    cfg = load_preset(name)
    back = import_kohya_files(tmp_path / "config.toml", tmp_path / "dataset.toml", family=cfg.model.family).config
    want, got = cfg.model_dump(mode="json"), back.model_dump(mode="json")
    differs = {f"{s}.{k}" for s in want if isinstance(want[s], dict) for k in want[s] if want[s][k] != got[s][k]}
    assert differs == {path for path, _ in out.notes}


def test_export_writes_only_sd_scripts_names_and_the_exact_command(tmp_path):
    cfg = load_config({"model": {"family": "sdxl", "path": "/models/my model.safetensors"},
                       "training": {"num_processes": 2, "max_steps": 100},
                       "network": {"algo": "loha", "dora": True, "conv_rank": 4, "target": "all"},
                       "sampling": {"prompts": [{"prompt": "a cat", "negative": "dog", "seed": 3}],
                                    "every_n_steps": 50}})
    out = export_config(cfg, tmp_path / "with space", sd_scripts_dir=tmp_path / "sd-scripts")
    d = out.out_dir
    assert out.argv == ["accelerate", "launch", "--multi_gpu", "--num_processes", "2",
                        str(tmp_path / "sd-scripts" / "sdxl_train_network.py"),
                        "--config_file", str(d / "config.toml"), "--dataset_config", str(d / "dataset.toml")]
    assert shlex.split(out.command) == out.argv
    assert (d / "train_command.txt").read_text().strip() == out.command
    config = tomllib.loads((d / "config.toml").read_text())
    known = {a.key for a in MAPPING} | set(UNSUPPORTED) | {"network_args"}
    assert set(config) <= known, f"not sd-scripts arguments: {set(config) - known}"
    assert config["network_module"] == "lycoris.kohya"
    assert config["network_args"] == ["algo=loha", "preset=full", "conv_dim=4", "conv_alpha=1.0", "dora_wd=True"]
    assert config["max_train_steps"] == 100 and "max_train_epochs" not in config
    assert "save_every_n_steps" not in config  # 0 would divide by zero in sd-scripts: absent instead
    dataset = tomllib.loads((d / "dataset.toml").read_text())
    assert set(dataset) == {"general", "datasets"} and dataset["general"]["batch_size"] == 1
    prompts, _ = read_prompt_file(d / "sample_prompts.txt")
    assert prompts == [p.model_dump() for p in cfg.sampling.prompts]
    assert config["sample_prompts"] == str(d / "sample_prompts.txt")


def test_export_job_lists_kohya_subsets_and_round_trips(tmp_path):
    env = make_env(tmp_path)
    paths = env.paths
    sup = Supervisor(paths, autostart=False)
    cfg = {"model": {"path": str(env.model)}, "dataset": {"path": str(env.data / "train"), "reg_path":
           str(env.data / "reg"), "caption_extension": ".txt"}, "training": {"max_steps": 2},
           "saving": {"trigger_words": ["trig"]}}
    rec = sup.submit("train", cfg, "my run", start=False)
    out = export_job(paths, rec.id)
    assert out.out_dir == paths.jobs / rec.id / "kohya"
    subsets = tomllib.loads((out.out_dir / "dataset.toml").read_text())["datasets"][0]["subsets"]
    assert [(s["num_repeats"], s["class_tokens"], s["is_reg"]) for s in subsets] == [
        (10, "alice", False), (3, "bob", False), (1, "person", True)]
    notes = dict(out.notes)
    assert "trigger-word" in notes["saving.trigger_words"]
    # one reg subset reads back as its own N_name folder (the same images): the extras file keeps "reg/"
    assert set(notes) == {"saving.trigger_words", "dataset.reg_path"}
    back = import_kohya_files(out.out_dir / "config.toml", out.out_dir / "dataset.toml", paths=paths)
    assert to_dict(back.config) == to_dict(load_config(paths.jobs / rec.id / "config.toml"))
    assert not back.report.problems, back.report.to_text()


def _cli(*args, cwd=PROJECT_ROOT):
    return subprocess.run([sys.executable, "-m", "backend", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_cli_import_and_export(tmp_path):
    env = make_env(tmp_path)
    ws = str(env.paths.root)
    out = tmp_path / "imported.toml"
    r = _cli("import-config", str(env.file("lora_sd15.toml")), "--dataset", str(env.file("lora_sd15_dataset.toml")),
             "-o", str(out), "--json", "--workspace", ws)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["file"] == str(out) and data["preset"]["network"]["rank"] == 16
    assert {e["key"] for e in data["report"]["unmapped"]} == set()  # output_dir maps to saving.output_dir
    assert out.read_text().startswith("# Imported from ")
    assert load_config(out).network.unet_lr == 1e-4
    again = _cli("import-config", str(env.file("lora_sd15.toml")), "-o", str(out), "--workspace", ws)
    assert again.returncode == 2 and "exists already" in again.stderr
    r = _cli("export-kohya", str(out), "-o", str(tmp_path / "kohya"), "--json", "--workspace", ws)
    assert r.returncode == 0, r.stderr
    exported = json.loads(r.stdout)
    assert exported["argv"][:3] == ["accelerate", "launch", "train_network.py"]
    assert all((tmp_path / "kohya" / n).is_file() for n in ("config.toml", "dataset.toml", "train_command.txt"))
    bad = _cli("export-kohya", "no-such-thing", "--workspace", ws)
    assert bad.returncode == 2 and "not a job id" in bad.stderr


def test_cli_import_bad_file_says_why(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text("this is = = not toml")
    r = _cli("import-config", str(f), "--workspace", str(WorkspacePaths(tmp_path / "ws").root))
    assert r.returncode == 2 and "not TOML, JSON or an sd-scripts command line" in r.stderr
