"""Speaking kohya in the dashboard: "Import config" in the Training tab, "Export to sd-scripts" in the
Runs tab (handlers on real files), and `launch.py --lets-api` (a real launch answering on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess

import gradio as gr
import httpx
import pytest

from backend.config import load_config, to_dict
from backend.jobs.registry import create_job
from backend.paths import PROJECT_ROOT
from tests._compat_fixtures import make_env
from tests._webui_fixtures import build_tab, free_port, launch_argv, running_app
from webui import forms
from webui.context import AppContext, SharedUI, make_context
from webui.tabs import runs, training

KOHYA = 'network_module = "networks.lora"\nnetwork_dim = 12\nnetwork_alpha = 6\nmax_train_steps = 40\n' \
        'optimizer_type = "AdamW8bit"\nwhat_is_this = 1\n'


@pytest.fixture
def env(tmp_path):
    return make_env(tmp_path)


def _form_data(tab, **picks) -> dict:
    values = forms.config_to_values(load_config({}))
    data = {comp: values[path] for path, comp in tab.form.components.items()}
    for path, value in picks.items():
        data[tab.form.components[path.replace("__", ".")]] = value
    data.update({tab.kohya_file: None, tab.kohya_dataset: None, tab.kohya_text: "", tab.marked: []})
    return data


def test_import_config_file_fills_the_form_from_defaults(env):
    ctx = AppContext(paths=env.paths, supervisor=make_context(str(env.paths.root)).supervisor)
    _, tab = build_tab(ctx, training)
    comps = tab.form.components
    data = _form_data(tab, network__dropout=0.3)  # set before: the import starts from the defaults
    data[tab.kohya_file] = str(env.file("lets_queue.toml"))
    out = tab.import_config_file(data)
    assert out[comps["network.algo"]] == "lokr" and out[comps["network.rank"]] == 16
    assert out[comps["model.family"]] == "sdxl" and out[comps["model.path"]] == str(env.model)
    assert out[comps["network.dropout"]] == forms.config_to_values(load_config({}))["network.dropout"]
    assert "max_token_length" in out[tab.kohya_report] and "lets_queue.toml" in out[tab.status]
    assert tab.import_config_file({**data, tab.kohya_file: None}) == {}


def test_pasted_kohya_config_keeps_the_picks_and_clears_old_marks(env):
    ctx = make_context(str(env.paths.root))
    _, tab = build_tab(ctx, training)
    comps = tab.form.components
    data = _form_data(tab, model__path="models/mine", dataset__path="datasets/cats")
    data.update({tab.kohya_text: KOHYA, tab.marked: ["network.rank"]})
    out = tab.import_config_text(data)
    assert out[comps["network.rank"]] == {"__type__": "update", "info": comps["network.rank"].info,
                                          "elem_classes": [], "value": 12}
    assert out[comps["network.alpha"]] == 6 and out[comps["optimizer.name"]] == "adamw8bit"
    assert out[comps["model.path"]] == "models/mine" and out[comps["dataset.path"]] == "datasets/cats"
    assert out[tab.marked] == [] and "what_is_this" in out[tab.kohya_report]
    with pytest.raises(gr.Error, match="Paste"):
        tab.import_config_text({**data, tab.kohya_text: "  "})
    with pytest.raises(gr.Error, match="not TOML, JSON"):
        tab.import_config_text({**data, tab.kohya_text: "{{ nonsense"})


def _runs_tab(ctx):
    with gr.Blocks() as demo, gr.Tabs() as tabs, gr.Tab("Runs", id="runs") as tab_item:
        ui = SharedUI(blocks=demo, tabs=tabs, timer=gr.Timer(), job_id=gr.State(),
                      tab_items={"runs": tab_item})
        return runs.build(AppContext(paths=ctx.paths, supervisor=ctx.supervisor, ui=ui))


def test_export_a_run_to_sd_scripts(env):
    ctx = make_context(str(env.paths.root))
    cfg = load_config({"model": {"path": str(env.model)}, "dataset": {"path": str(env.data / "10_char")},
                       "network": {"rank": 8}, "loss": {"multires_noise_iterations": 6}})
    job = create_job(env.paths, "train", to_dict(cfg), "my run", status="completed")
    other = create_job(env.paths, "selftest", {"steps": 1}, "not training", status="completed")
    tab = _runs_tab(ctx)
    command, notes, files = tab.export_kohya(job.name)
    assert command.visible and "train_network.py" in command.value and "--config_file" in command.value
    shown = [f["path"] if isinstance(f, dict) else f for f in files.value]
    assert {"config.toml", "dataset.toml", "train_command.txt"} <= {p.rsplit("/", 1)[-1] for p in shown}
    assert files.visible and all((job / "kohya" / p.rsplit("/", 1)[-1]).is_file() for p in shown)
    assert (job / "kohya" / "train_command.txt").read_text().strip() in command.value
    assert notes.startswith(("Every option", "**Not expressible"))
    with pytest.raises(gr.Error, match="Only training runs"):
        tab.export_kohya(other.name)
    with pytest.raises(gr.Error, match="Select a job"):
        tab.export_kohya(None)


def test_launch_with_the_lets_api_serves_it_on_loopback(tmp_path):
    port = free_port()
    with running_app(tmp_path / "ws", "--lets-api", str(port)) as app:
        assert f"LETS-compatible API on http://127.0.0.1:{port}" in app.output()
        r = httpx.get(f"http://127.0.0.1:{port}/is_training", timeout=30)
        assert r.status_code == 200 and r.json() == {"training": False, "errored": False}
        assert httpx.get(app.url, timeout=30).status_code == 200  # the dashboard too


def test_a_public_lets_api_without_a_token_stops_the_launch(tmp_path):
    argv = launch_argv(tmp_path / "ws", free_port(), "--lets-api-public", "0.0.0.0")
    out = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "LORADASH_LETS_TOKEN"})
    assert out.returncode == 2, out.stdout + out.stderr
    assert "error: --lets-api-public: listening on 0.0.0.0 needs a token" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


def test_lets_api_flags_and_token_from_the_environment():
    from webui.launching import LaunchError, settings_from

    s = settings_from([], {})
    assert s.lets_port is None
    s = settings_from(["--lets-api"], {"LORADASH_LETS_TOKEN": "t0k"})
    assert (s.lets_port, s.lets_host, s.lets_token) == (8000, "127.0.0.1", "t0k")
    s = settings_from(["--lets-api", "9100", "--lets-api-public", "0.0.0.0", "--lets-api-token", "x"], {})
    assert (s.lets_port, s.lets_host, s.lets_token) == (9100, "0.0.0.0", "x")
    with pytest.raises(LaunchError, match="dashboard's own port"):
        settings_from(["--lets-api", "7860"], {})


def test_a_pasted_config_reads_no_file_outside_the_allowed_folders(env, tmp_path):
    """The Import config box read what a config named anywhere on the server: `sample_prompts =
    "/etc/passwd"` filled the prompts with its lines, `dataset_config` echoed a file into the report."""
    ctx = make_context(str(env.paths.root))
    _, tab = build_tab(ctx, training)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    data = _form_data(tab)
    data[tab.kohya_text] = KOHYA + f'sample_prompts = "{secret}"\n'
    out = tab.import_config_text(data)
    report = out[tab.kohya_report]
    assert "root:x:0:0" not in str(out) and f"{secret} is outside the folders this server may use" in report
    data[tab.kohya_text] = KOHYA + f'dataset_config = "{secret}"\n'
    with pytest.raises(gr.Error, match="dataset_config: .* is outside the folders"):
        tab.import_config_text(data)
    # Inside the workspace the same options are read as before.
    (env.paths.root / "prompts.txt").write_text("a photo of sks --n blurry\n")
    data[tab.kohya_text] = KOHYA + 'sample_prompts = "prompts.txt"\n'
    out = tab.import_config_text(data)
    assert out[tab.form.components["sampling.prompts"]][0][0] == "a photo of sks"
