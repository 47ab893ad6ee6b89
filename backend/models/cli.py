"""`python -m backend demo [--family sd15]`: build the built-in demo model and dataset (idempotent)."""

from __future__ import annotations

import json

# family → "module:function(paths) -> (model_dir, dataset_dir)"
DEMO_BUILDERS = {
    "sd15": "backend.models.demo:build_demo",
    "sdxl": "backend.models.sdxl_demo:build_sdxl_demo",
    "flux": "backend.models.flux_demo:build_flux_demo",
}


def add_parsers(sub) -> None:
    parents = [sub.common] if getattr(sub, "common", None) is not None else []
    p = sub.add_parser("demo", parents=parents, help="build the tiny demo model and dataset (offline, seconds)")
    p.add_argument("--family", choices=[*sorted(DEMO_BUILDERS), "all"], default="sd15",
                   help="model family of the demo (all: every family's, as the shipped demo presets need)")
    p.add_argument("--json", action="store_true", help="print the folders as JSON")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    import importlib

    from backend.paths import open_workspace

    paths = open_workspace(getattr(args, "workspace", None))
    for family in DEMO_BUILDERS if args.family == "all" else [args.family]:
        module_name, _, func = DEMO_BUILDERS[family].partition(":")
        model_dir, dataset_dir = getattr(importlib.import_module(module_name), func)(paths)
        if args.json:
            print(json.dumps({"family": family, "model": str(model_dir), "dataset": str(dataset_dir),
                              "workspace": str(paths.root)}))
        else:
            print(f"demo model:   {model_dir}\ndemo dataset: {dataset_dir}")
    return 0
