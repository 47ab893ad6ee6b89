"""`import-config` and `export-kohya` commands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from backend.errors import ConfigError


def add_parsers(sub) -> None:
    p = sub.add_parser("import-config", parents=[sub.common],
                       help="import a kohya / LETS / kohya_ss config (or sd-scripts command line) as a preset")
    p.add_argument("file", help="kohya config TOML, LETS TOML/JSON, kohya_ss JSON, or a file holding the "
                                "accelerate launch … (sdxl_|flux_)train_network.py command")
    p.add_argument("--dataset", metavar="FILE", help="the kohya --dataset_config TOML")
    p.add_argument("-o", "--output", metavar="PRESET.toml", help="write the preset here (default: print it)")
    p.add_argument("--family", choices=("sd15", "sdxl", "flux"), help="say which model family the config "
                                                                      "trains (a bare config file does not say)")
    p.add_argument("--force", action="store_true", help="overwrite the output file")
    p.add_argument("--json", action="store_true", help="print the preset and the report as JSON")
    p.set_defaults(func=cmd_import)
    e = sub.add_parser("export-kohya", parents=[sub.common],
                       help="write sd-scripts config + dataset TOML and the accelerate command for a run or preset")
    e.add_argument("source", metavar="JOB_ID_OR_PRESET", help="a job id in the workspace, a preset name or a TOML")
    e.add_argument("-o", "--output", metavar="DIR", help="folder for the files (default: the job's kohya/ folder)")
    e.add_argument("--sd-scripts", metavar="DIR", dest="sd_scripts", help="sd-scripts folder, for the script's path")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=cmd_export)


def _paths(args):
    from backend.paths import WorkspacePaths, choose_root

    return WorkspacePaths(choose_root(args.workspace, os.environ))


def cmd_import(args) -> int:
    from backend.compat.detect import import_file
    from backend.config.io import write_toml

    result = import_file(args.file, args.dataset, family=args.family, paths=_paths(args))
    written = None
    if args.output:
        out = Path(args.output).expanduser()
        if out.suffix != ".toml":
            out = out.with_suffix(".toml")
        if out.exists() and not args.force:
            raise ConfigError([("", f"{out} exists already: choose another name or pass --force")])
        out.parent.mkdir(parents=True, exist_ok=True)
        written = write_toml(out, result.preset, result.header())
    if args.json:
        data = json.loads(result.to_json())
        data["file"] = str(written) if written else None
        print(json.dumps(data, indent=1))
        return 0
    print(result.report.to_text(), file=sys.stderr if not written else sys.stdout)
    if written:
        print(f"preset written: {written}")
    else:
        print(result.to_toml())
    return 0


def cmd_export(args) -> int:
    from backend.compat.export import export_job, export_preset
    from backend.jobs.registry import JOB_FILE

    paths = _paths(args)
    if (paths.jobs / args.source / JOB_FILE).is_file():
        result = export_job(paths, args.source, args.output, sd_scripts_dir=args.sd_scripts)
    else:
        if not args.output:
            raise ConfigError([("", f"{args.source!r} is not a job id in {paths.jobs}; to export a preset, "
                                    "give the output folder with -o DIR")])
        result = export_preset(args.source, paths, args.output, sd_scripts_dir=args.sd_scripts)
    if args.json:
        print(json.dumps({"dir": str(result.out_dir), "files": [str(f) for f in result.files()],
                          "argv": result.argv, "command": result.command, "script": result.script,
                          "not_in_kohya_files": [{"path": p, "why": w} for p, w in result.notes],
                          "warnings": result.warnings}, indent=1))
        return 0
    print(f"Wrote {', '.join(f.name for f in result.files())} to {result.out_dir}")
    for path, why in result.notes:
        print(f"  not in the kohya files: {path} ({why})")
    for warning in result.warnings:
        print(f"  before running: {warning}")
    print("Run from the sd-scripts folder:")
    print(result.command)
    return 0
