"""`python -m backend demo [--family sd15|sdxl|…|all]`: build the built-in demo models and dataset (idempotent)."""

from __future__ import annotations

import json

from backend.models.demos import DEMOS

# family → "module:function(paths) -> (model_dir, dataset_dir)"; the list itself is backend.models.demos.DEMOS.
DEMO_BUILDERS = {d.family: d.builder for d in DEMOS}


def add_parsers(sub) -> None:
    parents = [sub.common] if getattr(sub, "common", None) is not None else []
    p = sub.add_parser("demo", parents=parents, help="build the tiny demo model and dataset (offline, seconds)")
    p.add_argument("--family", choices=[*DEMO_BUILDERS, "all"], default="sd15",
                   help="model family of the demo; all: every demo (what the shipped demo presets need)")
    p.add_argument("--json", action="store_true", help="print the folders as JSON")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from backend.models import demos
    from backend.paths import open_workspace

    paths = open_workspace(getattr(args, "workspace", None))
    chosen = demos.families() if args.family == "all" else [args.family]
    built = {family: demos.build(family, paths) for family in chosen}
    if args.json:
        out = {"workspace": str(paths.root), "demos": {f: {"model": str(m), "dataset": str(d)}
                                                       for f, (m, d) in built.items()}}
        if len(built) == 1:  # the one-family form scripts already read
            (model_dir, dataset_dir), = built.values()
            out.update(model=str(model_dir), dataset=str(dataset_dir))
        print(json.dumps(out))
    else:
        for family, (model_dir, _) in built.items():
            print(f"demo model ({family}): {model_dir}")
        print(f"demo dataset: {next(iter(built.values()))[1]}")
    return 0
