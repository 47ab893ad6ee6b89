"""The caption job: sidecars written, unreadable images listed, undo byte for byte, the real worker
subprocess, the CLI and config errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backend.__main__ import build_parser
from backend.captioning import cli
from backend.captioning.config import CaptionConfig, load_caption_config
from backend.captioning.job import caption_foreground
from backend.captioning.undo import create_snapshot, get_snapshot, list_snapshots, restore
from backend.errors import ConfigError, ModelError
from backend.jobs.events import EventReader
from backend.jobs.registry import create_job, load_job
from backend.paths import PROJECT_ROOT, WorkspacePaths
from tests._caption_fixtures import RED_DEFAULT, make_tagger, solid


@pytest.fixture
def ws(tmp_path):
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    make_tagger(paths.models / "tiny-wd14")
    ds = paths.datasets / "chars"
    solid(ds / "10_red" / "a.png", (255, 0, 0))
    solid(ds / "10_red" / "b.png", (0, 255, 0))
    (ds / "10_red" / "c.jpg").write_bytes(b"\xff\xd8 truncated")
    solid(ds / "5_blue" / "d.png", (0, 0, 255))
    (ds / "5_blue" / "d.txt").write_bytes(b"old tag, Solo\r\nsecond line\n")
    return paths, ds


def config(**tagger):
    return {"dataset": {"path": "chars"}, "model": {"path": "tiny-wd14", "batch_size": 2},
            "tagger": {"trigger_words": ["sks"], **tagger}}


def test_tagging_writes_sidecars_and_lists_bad_images(ws):
    paths, ds = ws
    steps = []
    result = caption_foreground(paths, config(), lambda step, total, **kw: steps.append((step, total)))
    assert result.written == 3 and result.total == 4 and result.provider == "CPUExecutionProvider"
    assert [Path(f.path).name for f in result.failed] == ["c.jpg"]
    assert (ds / "10_red" / "a.txt").read_text() == ", ".join(["sks", *RED_DEFAULT]) + "\n"
    assert (ds / "10_red" / "b.txt").read_text().startswith("sks, green theme, ")
    assert (ds / "5_blue" / "d.txt").read_text().startswith("sks, blue theme, ")
    assert not (ds / "10_red" / "c.txt").exists()
    assert steps[0] == (0, 4) and steps[-1] == (4, 4)
    assert result.undo_id and list_snapshots(paths, ds)[0].id == result.undo_id


def test_append_and_skip_existing(ws):
    paths, ds = ws
    cfg = config()
    cfg["dataset"]["existing"] = "append"
    caption_foreground(paths, cfg)
    assert (ds / "5_blue" / "d.txt").read_text().startswith("sks, old tag, Solo, blue theme, ^_^, long hair")
    before = (ds / "10_red" / "a.txt").read_bytes()
    (ds / "10_red" / "a.txt").unlink()
    cfg["dataset"]["existing"] = "skip"
    result = caption_foreground(paths, cfg)
    assert result.total == 2 and result.written == 1 and result.skipped_existing == 2  # a.png; c.jpg fails
    assert (ds / "10_red" / "a.txt").read_bytes() == before


def test_undo_restores_byte_for_byte(ws):
    paths, ds = ws
    files = sorted(ds.rglob("*.txt"))
    original = {p: p.read_bytes() for p in files}
    result = caption_foreground(paths, config())
    assert (ds / "5_blue" / "d.txt").read_bytes() != original[ds / "5_blue" / "d.txt"]
    snap = get_snapshot(paths, result.undo_id)
    assert snap.num_existing == 1 and len(snap.entries) == 4
    done = restore(snap)
    assert sorted(ds.rglob("*.txt")) == files  # captions that did not exist are gone again
    assert {p: p.read_bytes() for p in files} == original
    assert len(done.removed) == 2 and len(done.restored) == 1


def test_snapshot_outside_dataset_is_refused(ws, tmp_path):
    paths, ds = ws
    from backend.errors import DatasetError
    with pytest.raises(DatasetError, match="outside the dataset"):
        create_snapshot(paths, ds, [tmp_path / "elsewhere.txt"], "x")


def test_config_errors_name_the_field(ws):
    paths, _ = ws
    with pytest.raises(ConfigError, match=r"tagger\.general_threshold"):
        load_caption_config({"tagger": {"general_threshold": 1.5}})
    with pytest.raises(ConfigError, match=r"tagger\.replacements: 'a => b'"):
        load_caption_config({"tagger": {"replacements": "a => b"}})
    with pytest.raises(ConfigError, match=r"model\.path: required"):
        load_caption_config({"dataset": {"path": "x"}})
    with pytest.raises(ModelError, match=r"selected_tags\.csv is missing"):
        (paths.models / "tiny-wd14" / "selected_tags.csv").unlink()
        caption_foreground(paths, config())
    assert list_snapshots(paths) == []  # nothing was written, so nothing to undo


def test_cli_foreground(ws, capsys):
    paths, ds = ws
    args = build_parser().parse_args(["caption", str(ds), "--workspace", str(paths.root), "--tagger",
                                      str(paths.models / "tiny-wd14"), "--trigger", "sks,mystyle", "--undesired",
                                      "long_hair", "--general-threshold", "0.5", "--caption-extension", ".caption"])
    assert cli.config_from_args(args)["tagger"] == {"general_threshold": 0.5, "trigger_words": ["sks", "mystyle"],
                                                    "undesired_tags": "long_hair"}
    assert args.func(args) == 1  # c.jpg failed
    out = capsys.readouterr()
    assert "wrote 3 of 4" in out.out and "c.jpg" in out.err
    assert (ds / "10_red" / "a.caption").read_text() == "sks, mystyle, red theme, ^_^, kirisame marisa (touhou)\n"
    assert CaptionConfig().tagger.general_threshold == 0.35  # the CLI left the default alone


def test_cli_subprocess_reports_a_bad_model_folder(ws):
    paths, ds = ws
    proc = subprocess.run([sys.executable, "-m", "backend", "caption", str(ds), "--workspace", str(paths.root),
                           "--tagger", str(paths.models / "missing")], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "tagger folder" in proc.stderr and "missing does not exist" in proc.stderr
    assert not list(ds.rglob("*.caption"))


def test_caption_job_through_the_worker(ws):
    paths, ds = ws
    job = create_job(paths, "caption", config(), "tag chars")
    proc = subprocess.run([sys.executable, "-m", "backend.worker", str(job)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rec = load_job(job)
    assert rec.status == "completed"
    events = EventReader(job).read_all()
    summary = [e for e in events if e["type"] == "caption_summary"][0]
    assert summary["written"] == 3 and summary["provider"] == "CPUExecutionProvider"
    assert [Path(f["path"]).name for f in summary["failed"]] == ["c.jpg"]
    assert summary["undo_id"] == list_snapshots(paths, ds)[0].id
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[-1]["step"] == progress[-1]["total"] == 4
    assert (ds / "10_red" / "a.txt").read_text().startswith("sks, red theme")
    assert json.loads(json.dumps(rec.extra["result"]))["written"] == 3


def test_caption_job_with_a_bad_config_fails_clearly(ws):
    paths, _ = ws
    job = create_job(paths, "caption", {"tagger": {"bogus": 1}}, "bad")
    proc = subprocess.run([sys.executable, "-m", "backend.worker", str(job)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    rec = load_job(job)
    assert rec.status == "failed" and "tagger.bogus: unknown option" in rec.error


def test_stop_is_honoured_between_batches(ws):
    paths, ds = ws
    from backend.captioning.job import caption_dataset
    result = caption_dataset(paths, config(), should_stop=lambda: True)
    assert result.stopped and result.written == 2  # the first batch (batch_size 2), then stop
    assert len(list(ds.rglob("*.txt"))) == 3  # a, b written; d existed


def test_cli_captioner_options():
    parser = build_parser()
    args = parser.parse_args(["caption", "ds", "--captioner", "blip", "--prompt", "<DETAILED_CAPTION>",
                              "--trigger", "sks", "--num-beams", "3", "--skip-existing"])
    cfg = load_caption_config(cli.config_from_args(args))
    assert (cfg.model.mode, cfg.captioner.prompt, cfg.captioner.prefix) == ("captioner", "<DETAILED_CAPTION>", "sks")
    assert cfg.captioner.num_beams == 3 and cfg.dataset.existing == "skip"
    with pytest.raises(SystemExit):
        parser.parse_args(["caption", "ds", "--captioner", "a", "--tagger", "b"])


def test_empty_result_is_reported_not_written(ws):
    paths, ds = ws
    result = caption_foreground(paths, config(general_threshold=1.0, character_threshold=1.0, trigger_words=[]))
    assert result.written == 0 and result.undo_id is None
    assert {Path(f.path).name for f in result.failed} == {"a.png", "b.png", "c.jpg", "d.png"}
    assert "no tag reached the thresholds" in result.failed[-1].error
    assert (ds / "5_blue" / "d.txt").read_bytes() == b"old tag, Solo\r\nsecond line\n"
