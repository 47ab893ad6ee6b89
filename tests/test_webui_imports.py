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


def test_importing_webui_is_light():
    script = "import sys, webui; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "False"
