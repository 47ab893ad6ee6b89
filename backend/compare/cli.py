"""`python -m backend compare JOB_ID JOB_ID … --html FILE [--grid-png FILE] [--json]`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from backend.errors import JobError


def add_parsers(sub) -> None:
    p = sub.add_parser("compare", parents=[sub.common], help="compare training runs; export HTML or a PNG grid",
                       description="Compare 1–4 training runs (loss, settings, samples, outcome).")
    p.add_argument("jobs", nargs="*", metavar="JOB_ID", help="job ids (folders under workspace/jobs)")
    p.add_argument("--group", help="compare the runs of this A/B group instead of listing ids")
    p.add_argument("--html", metavar="FILE", help="write a standalone HTML report")
    p.add_argument("--grid-png", metavar="FILE", help="write the sample grid as one PNG")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--step", type=int, default=None, help="sample step for the grid (default: the last)")
    p.add_argument("--smoothing", type=float, default=None,
                   help="loss smoothing (EMA weight) in [0, 1); default: the charts' own")
    p.add_argument("--x", dest="x_axis", choices=("step", "images"), default="step",
                   help="x axis of the charts: optimizer step or images seen")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from backend.compare.runs import groups, load_runs
    from backend.compare.summary import comparison_data, diff_rows, outcome_table
    from backend.paths import WorkspacePaths, choose_root

    paths = WorkspacePaths(choose_root(args.workspace, os.environ))
    ids = list(args.jobs)
    if args.group:
        found = groups(paths)
        if args.group not in found:
            raise JobError(f"no group {args.group!r}; groups: {', '.join(found) or 'none'}")
        ids += [i for i in found[args.group] if i not in ids]
    if not 1 <= len(ids) <= 4:
        raise JobError(f"compare takes 1–4 job ids (or --group); got {len(ids)}")
    if args.smoothing is None:
        from backend.compare.runs import DEFAULT_SMOOTHING

        args.smoothing = DEFAULT_SMOOTHING
    if not 0.0 <= args.smoothing < 1.0:
        raise JobError(f"--smoothing must be in [0, 1), got {args.smoothing}")
    runs = load_runs(paths, ids)
    if args.html:
        from backend.compare.report import export_html

        print(f"wrote {export_html(runs, args.html, args.smoothing, args.x_axis, args.step)}", file=sys.stderr)
    if args.grid_png:
        from backend.compare.grid import build_grid, save_grid_png

        grid = build_grid(runs, args.step)
        print(f"wrote {save_grid_png(grid, args.grid_png)}", file=sys.stderr)
        if grid.empty:
            print(f"note: the grid is empty: {grid.reason}", file=sys.stderr)
    if args.json:
        print(json.dumps(comparison_data(runs, args.smoothing, args.step), indent=1, default=str))
    elif not (args.html or args.grid_png):
        for headers, rows in (outcome_table(runs, args.smoothing), diff_rows(runs)):
            print("\t".join(headers))
            for row in rows:
                print("\t".join(c.replace("\n", " | ") for c in row))
            print()
    return 0
