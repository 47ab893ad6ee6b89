"""The UI process never imports torch, diffusers or transformers: it starts in seconds and stays small."""

from __future__ import annotations

import json
import subprocess
import sys

from backend.paths import PROJECT_ROOT

HEAVY = ("torch", "diffusers", "transformers", "accelerate", "lycoris", "onnxruntime", "peft")

SCRIPT = """
import json, sys, tempfile
from webui.context import make_context
from webui.app import create_app, tab_modules
import webui.serve, webui.launching
ctx = make_context(tempfile.mkdtemp())
app = create_app(ctx)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1:])
print(json.dumps({"heavy": heavy, "tabs": [m.TITLE for m in tab_modules()],
                  "lets_api": "backend.compat.lets_api" in sys.modules}))
"""


def test_building_the_app_imports_no_torch():
    out = subprocess.run([sys.executable, "-c", SCRIPT, *HEAVY], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=180, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["tabs"] == ["Dataset", "Captioning", "Training", "Runs", "Compare", "Models"]
    assert result["lets_api"] is False  # only `launch.py --lets-api` imports it


# Imports of the heavy packages fail outright in this child: a lazy import in a handler cannot hide.
CKPT_SCRIPT = """
import json, sys
from pathlib import Path
HEAVY = tuple(sys.argv[2:])

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} is blocked in the UI process")

sys.meta_path.insert(0, Refuse())
from webui.context import make_context
from webui.app import create_app
ctx = make_context(sys.argv[1])
app = create_app(ctx)
handlers = {f.name: f.fn for f in app.fns.values()}
ckpt = "models/tiny-sd15.ckpt"
scanned = handlers["scan"]()[2]                                  # the Models tab lists the workspace
picked = handlers["on_model"](ckpt)                              # the Training tab: a .ckpt is picked
from webui.training_actions import model_problems
problems = model_problems(ctx.paths.resolve(ckpt), "sd15", False)  # validation of a config using it
print(json.dumps({"scanned": [[m["name"], m["kind"], m["family"], m["precision"]] for m in scanned],
                  "picked": [str(v) for v in picked.values()], "problems": problems,
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)}))
"""


def test_a_ckpt_is_listed_picked_and_validated_without_torch(tmp_path):
    """Issue 17: the UI unpickled a .ckpt with torch when it was picked or listed; it reads the pickle
    itself now (names, dtypes and shapes only)."""
    import torch

    ws = tmp_path / "ws"
    (ws / "models").mkdir(parents=True)
    sd = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3, dtype=torch.float16),
          "model.diffusion_model.out.2.weight": torch.zeros(4, 8, 3, 3, dtype=torch.float16),
          "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight":
              torch.nn.Parameter(torch.zeros(10, 8, dtype=torch.float16)),
          "first_stage_model.encoder.conv_in.weight": torch.zeros(8, 3, 3, 3, dtype=torch.float16)}
    torch.save({"state_dict": sd, "global_step": 7}, ws / "models" / "tiny-sd15.ckpt")
    out = subprocess.run([sys.executable, "-c", CKPT_SCRIPT, str(ws), *HEAVY], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["scanned"] == [["tiny-sd15.ckpt", "checkpoint", "sd15", "fp16"]]
    assert any("SD 1.x checkpoint" in v for v in result["picked"]), result["picked"]
    assert result["problems"] == [] and result["heavy"] == []


def test_importing_webui_is_light():
    script = "import sys, webui; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "False"


FLUX_VALIDATE_SCRIPT = """
import json, sys
from pathlib import Path
HEAVY = tuple(sys.argv[2:])
from backend.errors import ConfigError
from backend.jobs.validation import validate_train
from backend.paths import WorkspacePaths
from tests._preflight_fixtures import flux_stub, tiny_dataset
root = Path(sys.argv[1])
paths = WorkspacePaths(root).ensure()
dataset = tiny_dataset(root / "datasets" / "tiny")
out = {}
for name in ("flux-dev", "demo-flux"):
    model = flux_stub(root / "models", name)
    for net in ({"algo": "boft", "rank": 8}, {"train_norm": True}):
        try:
            validate_train({"model": model, "dataset": {"path": str(dataset)}, "network": net}, paths)
            out[f"{name} {net}"] = []
        except ConfigError as err:
            out[f"{name} {net}"] = [p for p, _ in err.problems]
print(json.dumps({"problems": out, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)}))
"""


def test_validating_a_flux_config_reads_its_layers_without_torch(tmp_path):
    """Validate's adapter-shape checks on Flux (a BFL file through the shipped configs, a diffusers folder)
    and its train_norm rule run in the UI process: nothing heavy is imported."""
    out = subprocess.run([sys.executable, "-c", FLUX_VALIDATE_SCRIPT, str(tmp_path / "ws"), *HEAVY],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["problems"] == {  # BOFT at rank 8: the real [dev] needs 18; the demo's 192-wide modulation 6
        "flux-dev {'algo': 'boft', 'rank': 8}": ["network.rank"], "flux-dev {'train_norm': True}": ["network.train_norm"],
        "demo-flux {'algo': 'boft', 'rank': 8}": [], "demo-flux {'train_norm': True}": ["network.train_norm"]}
