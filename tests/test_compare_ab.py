"""A/B launches: presets or one swept option, queued as one group with equal seeds and prompts."""

from __future__ import annotations

import pytest

from backend.compare.ab import launch_ab, parse_sweep, plan_ab
from backend.compare.diff import settings_diff
from backend.compare.runs import groups, load_runs
from backend.errors import ConfigError
from backend.jobs.registry import list_jobs, load_config
from backend.jobs.supervisor import Supervisor
from backend.paths import WorkspacePaths
from tests._preflight_fixtures import sd15_folder, tiny_dataset

# The sd15 presets are GPU presets; jobs must pass the checks of this machine (backend.preflight).
CPU = {"training.mixed_precision": "no", "optimizer.name": "adamw"}


@pytest.fixture
def ws(tmp_path):
    paths = WorkspacePaths(tmp_path / "ws").ensure()
    for name in ("demo", "demo-sd15"):
        sd15_folder(paths.models / name)
    tiny_dataset(paths.datasets / "demo", count=4)
    return paths


@pytest.fixture
def sup(ws):
    return Supervisor(ws, autostart=False)  # queue only: these tests check what is queued


def test_parse_sweep_forms():
    assert parse_sweep("network.rank = [8, 16, 32]").values == (8, 16, 32)
    assert parse_sweep("optimizer.lr=1e-4, 5e-4").values == (1e-4, 5e-4)
    s = parse_sweep(" network.algo = [lora, locon] ")
    assert (s.path, s.values) == ("network.algo", ("lora", "locon"))
    with pytest.raises(ConfigError, match="option = \\[value"):
        parse_sweep("network.rank")


def test_preset_ab_queues_one_group_with_equal_seed_and_prompts(ws, sup):
    plan = plan_ab(ws, presets=["sd15-character-lora", "sd15-style-locon"], model_path="models/demo",
                   dataset_path="datasets/demo", seed=1234, prompts=["a photo of sks", "sks on a beach"],
                   overrides={"training.max_steps": 5, **CPU})
    group, recs = launch_ab(sup, plan, "style vs character")
    assert len(recs) == 2 and all(r.status == "queued" and r.group == group for r in recs)
    assert groups(ws) == {group: [r.id for r in recs]}
    configs = [load_config(ws.jobs / r.id) for r in recs]
    for cfg in configs:
        assert cfg["training"]["seed"] == 1234 and cfg["training"]["max_steps"] == 5
        assert [p["prompt"] for p in cfg["sampling"]["prompts"]] == ["a photo of sks", "sks on a beach"]
        assert cfg["model"]["path"] == str(ws.root / "models" / "demo")
        assert cfg["dataset"]["path"] == str(ws.root / "datasets" / "demo")
    diff = {r.path for r in settings_diff(configs)}
    assert "training.seed" not in diff and "sampling.prompts" not in diff and "network.algo" in diff
    assert [r.name for r in recs] == ["style vs character sd15-character-lora", "style vs character sd15-style-locon"]


def test_sweep_queues_n_jobs_differing_only_in_the_swept_option(ws, sup):
    plan = plan_ab(ws, presets=["sd15-character-lora"], sweep="network.rank = [8, 16, 32]",
                   model_path="models/demo", dataset_path="datasets/demo", overrides=CPU)
    assert [p.label for p in plan] == ["network.rank=8", "network.rank=16", "network.rank=32"]
    group, recs = launch_ab(sup, plan)
    assert len({r.group for r in recs}) == 1 and group.startswith("ab-")
    runs = load_runs(ws, [r.id for r in recs])
    assert {r.config["training"]["seed"] for r in runs} == {42}
    rows = settings_diff([r.config for r in runs])
    assert [(r.path, r.values) for r in rows] == [("network.rank", (8, 16, 32))]


def test_bad_sweep_value_names_the_value_and_the_field_and_queues_nothing(ws, sup):
    with pytest.raises(ConfigError) as err:
        plan_ab(ws, presets=["sd15-character-lora"], sweep="network.rank = [8, 0, 16.5]",
                model_path="models/demo", dataset_path="datasets/demo", overrides=CPU)
    problems = dict(err.value.problems)
    msg = "\n".join(m for p, m in err.value.problems if p == "network.rank")
    assert "sweep value 0 for network.rank" in msg and "sweep value 16.5 for network.rank" in msg
    assert "sweep value 8 " not in msg and set(problems) == {"network.rank"}
    assert list_jobs(ws) == []
    with pytest.raises(ConfigError, match="sweep value 'fast' for optimizer.lr"):
        plan_ab(ws, presets=["low-vram"], sweep="optimizer.lr = [1e-4, fast]")


@pytest.mark.parametrize("kwargs, match", [
    ({"presets": ["low-vram"]}, "choose 2–4 presets"),
    ({"presets": ["low-vram"] * 5}, "choose 2–4 presets"),
    ({"presets": ["low-vram", "sd15-style-locon"], "sweep": "network.rank=[4, 8]"}, "a sweep runs one preset"),
    ({"presets": ["low-vram"], "sweep": "network.rank=[4]"}, "takes 2–4 values"),
    ({"presets": ["low-vram"], "sweep": "network.rnk=[4, 8]"}, "no such option to sweep"),
    ({"presets": ["low-vram"], "sweep": "rank=[4, 8]"}, "did you mean network.rank"),
    ({"presets": ["low-vram"], "sweep": "network.rank=[4, 4]"}, "repeats a value"),
    ({"presets": ["nope", "low-vram"]}, "no preset or config file 'nope'"),
])
def test_ab_rejects_bad_requests_with_a_reason(ws, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        plan_ab(ws, **kwargs)


def test_prompt_lines_keep_the_first_presets_sample_settings(ws):
    plan = plan_ab(ws, presets=["demo", "low-vram"], prompts=["one", "two"], model_path="models/demo",
                   dataset_path="datasets/demo", overrides=CPU)
    for run in plan:
        prompts = run.config["sampling"]["prompts"]
        assert [p["prompt"] for p in prompts] == ["one", "two"]
        assert all(p["width"] == 128 and p["steps"] == 4 and p["guidance"] == 4.0 for p in prompts)
        assert run.config["sampling"]["every_n_steps"] == 20 and run.config["sampling"]["sampler"] == "euler"


def test_a_problem_every_run_shares_is_told_once(ws):
    """A missing model made each run of a sweep repeat the same lines (one block per run)."""
    with pytest.raises(ConfigError) as err:
        plan_ab(ws, presets=["sd15-character-lora"], sweep="network.rank = [4, 8, 16]",
                model_path="models/missing", dataset_path="datasets/demo", overrides=CPU)
    paths = [p for p, _ in err.value.problems]
    assert paths == ["model.path"], err.value.problems
    assert "does not exist" in err.value.problems[0][1]
