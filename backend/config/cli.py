"""`validate` and `schema` commands."""

from __future__ import annotations

import json
import os
import sys

from backend.errors import ConfigError, LoraDashError


def add_parsers(sub) -> None:
    p = sub.add_parser("validate", parents=[sub.common], help="check a config or preset file")
    p.add_argument("config", help="a TOML file or the name of a preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--estimate", action="store_true",
                   help="also estimate the peak VRAM of a training run, with a verdict per GPU size")
    p.add_argument("--schema-only", action="store_true",
                   help="check the options only, not the files, model, dataset and machine they name "
                        "(for a preset that leaves the model and dataset to be picked)")
    p.set_defaults(func=cmd_validate)
    s = sub.add_parser("schema", parents=[sub.common], help="print the option reference")
    s.add_argument("--json", action="store_true", help="machine-readable list of options")
    s.set_defaults(func=cmd_schema)


def cmd_validate(args) -> int:
    """The whole gate a job passes before its worker starts (backend.jobs.validation.validate_train):
    the schema, then the files, model, dataset, machine and adapter shapes, against the workspace."""
    from backend.compat.hint import import_hint
    from backend.config.io import one_line, to_dict
    from backend.config.presets import find_preset, load_preset
    from backend.jobs.validation import validate_train
    from backend.paths import WorkspacePaths, choose_root

    paths = WorkspacePaths(choose_root(args.workspace, os.environ))
    try:
        path = find_preset(args.config, paths)
        cfg = load_preset(path, paths, args.overrides)
        if not args.schema_only:
            validate_train(to_dict(cfg), paths)
    except ConfigError as err:
        if args.json:
            print(json.dumps({"valid": False, "file": err.source,
                              "problems": [{"path": p, "message": m} for p, m in err.problems]}))
        else:
            head = f"{one_line(err.source)}: " if err.source and not any(p for p, _ in err.problems) else ""
            for p, m in err.problems:
                print(head + one_line(f"{p}: {m}" if p else m), file=sys.stderr)
            hint = import_hint(args.config)
            if hint:
                print(hint, file=sys.stderr)
        return 2
    estimate = None
    if args.estimate:
        from backend.training.cost.estimate import estimate_config, format_report

        problem = None
        try:
            estimate = estimate_config(cfg, paths)
        except LoraDashError as err:  # e.g. a model whose architecture cannot be read
            problem = ("", str(err))
        except Exception as err:  # noqa: BLE001 - diffusers building a malformed model config: one line, not a traceback
            problem = ("model.path", f"the estimate could not build this model ({type(err).__name__}: {err}); "
                                     "fix its config files or pick another model")
        if problem:
            where, message = problem
            if args.json:
                print(json.dumps({"valid": False, "file": str(path),
                                  "problems": [{"path": where, "message": message}]}))
            else:
                print(one_line(f"{where}: {message}" if where else message), file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps({"valid": True, "file": str(path), **({"estimate": estimate} if estimate else {})}))
    else:
        print(f"{path}: valid")
        if estimate:
            print(format_report(estimate))
    return 0


def cmd_schema(args) -> int:
    from backend.config.docs import schema_json, schema_markdown

    print(json.dumps(schema_json(), indent=1) if args.json else schema_markdown())
    return 0
