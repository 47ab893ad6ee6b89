"""For kohya users writing configs (issue 17): an output folder option so scripts need not parse the job
folder (saving.output_dir, kohya's output_dir), `train` run from any directory with the config's relative
paths taken from the workspace as documented, and import-config offered by the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from backend.compat import import_text
from backend.compat.export import export_config
from backend.config import load_config, resolve_paths
from backend.config.fields import leaf_fields
from backend.paths import PROJECT_ROOT, WorkspacePaths
from backend.roots import AllowedRoots
from webui.context import AppContext
from webui.training_actions import path_problems


def test_every_path_option_is_taken_from_the_workspace(tmp_path):
    """README: "Relative paths in a config are taken from the workspace": every path option of the schema,
    (model.clip_l_path and model.t5_path were left relative to wherever the worker ran)."""
    paths = WorkspacePaths(tmp_path / "ws")
    path_options = [s.path for s in leaf_fields() if s.widget in ("path", "output_dir")]
    assert {"model.path", "model.clip_l_path", "model.t5_path", "saving.output_dir"} <= set(path_options)
    cfg = load_config({}, {p: f"rel/{p}" for p in path_options})
    resolved = resolve_paths(cfg, paths).model_dump()
    for p in path_options:
        section, key = p.split(".")
        assert resolved[section][key] == str(paths.root / "rel" / p), p


def test_kohya_output_dir_maps_to_saving_output_dir_and_back(tmp_path):
    out = tmp_path / "loras"
    result = import_text(f'pretrained_model_name_or_path = "/m/model.safetensors"\noutput_dir = "{out}"\n'
                         'output_name = "mine"\n', ".toml", family="sd15")
    assert result.preset["saving"]["output_dir"] == str(out)
    assert not any("output_dir" in str(row) for row in result.report.unmapped)
    exported = export_config(load_config(result.preset), tmp_path / "kohya")
    assert exported.config["output_dir"] == str(out)
    assert tomllib.loads((tmp_path / "kohya" / "config.toml").read_text())["output_dir"] == str(out)


def test_an_output_dir_that_is_a_file_is_refused_before_the_job(demo_copy, demo_workspace):
    paths = WorkspacePaths(demo_copy)
    ctx = AppContext(paths=paths, supervisor=None, roots=AllowedRoots.of(paths, [demo_workspace]))  # the linked model
    (paths.root / "not-a-folder").write_text("x")
    values = {"model.path": "models/demo-sd15", "dataset.path": "datasets/demo", "model.family": "sd15",
              "saving.output_dir": "not-a-folder"}
    problems = dict(path_problems(values, ctx))
    assert "saving.output_dir" in problems and "not a folder" in problems["saving.output_dir"]
    values["saving.output_dir"] = "exports/new"  # a folder to be made is fine
    assert path_problems(values, ctx) == []


def test_the_cli_help_offers_import_config():
    proc = subprocess.run([sys.executable, "-m", "backend", "--help"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert "import-config" in proc.stdout
    assert "python -m backend import-config" in proc.stdout  # how, not only the command's name


def test_train_and_validate_say_how_to_use_a_kohya_config(tmp_path):
    kohya = tmp_path / "kohya.toml"
    kohya.write_text('pretrained_model_name_or_path = "/m.safetensors"\ntrain_data_dir = "/d"\n'
                     'network_dim = 8\nlearning_rate = 1e-4\n')
    for command in ("validate", "train"):
        proc = subprocess.run([sys.executable, "-m", "backend", command, str(kohya), "--workspace",
                               str(tmp_path / "ws")], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"python -m backend import-config {kohya}" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_train_from_another_directory_writes_the_lora_to_output_dir(demo_copy, tmp_path):
    """`python -m backend train my.toml` run from the config's own folder: relative paths are the
    workspace's, the final LoRA is also written to saving.output_dir, and its path is printed."""
    here = tmp_path / "elsewhere"
    here.mkdir()
    (here / "my.toml").write_text('[model]\npath = "models/demo-sd15"\n[dataset]\npath = "datasets/demo"\n'
                                  'resolution = 64\nmin_bucket_reso = 64\nmax_bucket_reso = 128\nnum_workers = 0\n'
                                  '[training]\nmax_steps = 2\nbatch_size = 2\n'
                                  '[saving]\noutput_name = "mine"\noutput_dir = "exports"\nevery_n_epochs = 0\n')
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "backend", "train", "my.toml", "--workspace", str(demo_copy),
                           "--quiet"], cwd=here, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    copy = demo_copy / "exports" / "mine.safetensors"
    assert f"lora: {copy}" in proc.stdout.splitlines(), proc.stdout
    (job,) = (demo_copy / "jobs").iterdir()
    assert copy.read_bytes() == (job / "output" / "mine.safetensors").read_bytes()
    assert [p.name for p in copy.parent.iterdir()] == ["mine.safetensors"]  # no temporary file left
    assert not (here / "exports").exists() and not (here / "workspace").exists()
    config = tomllib.loads((job / "config.toml").read_text())
    assert Path(config["saving"]["output_dir"]) == demo_copy / "exports"


def test_every_path_option_of_a_train_job_is_checked_against_the_roots():
    """saving.output_dir, the one path a run writes to, was missing from the list the supervisor and the
    LETS API check."""
    from backend.jobs.kinds import KINDS

    schema_paths = {s.path for s in leaf_fields() if s.widget in ("path", "output_dir")}
    assert set(KINDS["train"].path_options) == schema_paths
