"""The Hugging Face download job with the Hub unreachable: a clear message, no folder left as if complete.

The endpoint points at a closed local port, so the test never touches the network whatever the machine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from backend.errors import ConfigError, ModelError
from backend.jobs.registry import create_job, load_job
from backend.models.download import DownloadConfig, download_repo, load_download_config
from backend.paths import PROJECT_ROOT, WorkspacePaths

UNREACHABLE = "http://127.0.0.1:9"


def test_offline_fails_clearly_and_leaves_no_model_folder(tmp_path):
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    # Leftovers of an interrupted download must not be promoted to a model folder.
    stale = paths.models / "wd-vit-tagger-v3.partial"
    stale.mkdir()
    (stale / "selected_tags.csv").write_text("tag_id,name,category,count\n")
    cfg = DownloadConfig(repo_id="SmilingWolf/wd-vit-tagger-v3", endpoint=UNREACHABLE)
    with pytest.raises(ModelError, match=r"cannot reach the Hugging Face Hub.*place them in .*models/wd-vit-tagger-v3"):
        download_repo(paths, cfg)
    assert sorted(p.name for p in paths.models.iterdir()) == ["wd-vit-tagger-v3.partial"]


def test_download_config_checks():
    with pytest.raises(ConfigError, match="repo_id"):
        load_download_config({"repo_id": "not a repo"})
    with pytest.raises(ConfigError, match="unknown|extra|Extra"):
        load_download_config({"repo_id": "a/b", "bogus": 1})
    from backend.models.download import target_name
    assert target_name(DownloadConfig(repo_id="a/b-c")) == "b-c"
    with pytest.raises(ConfigError, match="name"):
        target_name(DownloadConfig(repo_id="a/b", name="../x"))


def test_download_job_through_the_worker_fails_clearly(tmp_path):
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    job = create_job(paths, "download", {"repo_id": "SmilingWolf/wd-vit-tagger-v3", "name": "wd14",
                                         "endpoint": UNREACHABLE}, "get wd14")
    proc = subprocess.run([sys.executable, "-m", "backend.worker", str(job)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    rec = load_job(job)
    assert rec.status == "failed" and "cannot reach the Hugging Face Hub" in rec.error
    assert str(paths.models / "wd14") in rec.error
    assert list(paths.models.iterdir()) == []
