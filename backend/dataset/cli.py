"""`python -m backend dataset import|check`: the same code as the dataset tab, for servers and notebooks.

Each leaf parser sets `func` to a handler taking the parsed args and returning the exit code; the common
`--workspace` option comes from backend/__main__.py's `subparsers.common` parent (args.workspace may be None).
Exit codes of `check`: 0 no errors (warnings allowed), 1 the report holds errors, 2 the folder cannot be
used at all (e.g. no images).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from backend.config.schema import DatasetSection
from backend.dataset.filecache import dataset_cache_dir
from backend.dataset.importer import import_folder, import_zip
from backend.dataset.scan import scan_dataset
from backend.dataset.validate import validate_dataset
from backend.errors import DatasetError, WorkspaceError
from backend.paths import open_workspace


def add_parsers(subparsers) -> argparse.ArgumentParser:
    ds = subparsers.add_parser("dataset", help="import or check a training dataset")
    sub = ds.add_subparsers(dest="dataset_command", required=True)
    common = getattr(subparsers, "common", None)
    parents = [common] if common is not None else []

    imp = sub.add_parser("import", parents=parents, help="import a zip or a server folder into workspace/datasets/NAME")
    imp.add_argument("source", metavar="ZIP_OR_FOLDER")
    imp.add_argument("--name", help="dataset name (required for a zip or --copy)")
    imp.add_argument("--copy", action="store_true", help="copy a folder into the workspace (default: use it in place)")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that name")
    imp.add_argument("--json", action="store_true", help="print the result as one JSON object")
    imp.set_defaults(func=cmd_import)

    chk = sub.add_parser("check", parents=parents, help="validate a dataset folder and print the report")
    chk.add_argument("path", metavar="PATH")
    d = {name: f.default for name, f in DatasetSection.model_fields.items()}  # the schema's defaults
    chk.add_argument("--caption-extension", default=d["caption_extension"],
                     help=f"caption sidecar extension (default {d['caption_extension']})")
    chk.add_argument("--json", action="store_true", help="print the report as one JSON object")
    chk.add_argument("--resolution", type=int, default=d["resolution"])
    chk.add_argument("--min-reso", type=int, default=d["min_bucket_reso"], help="smallest bucket side")
    chk.add_argument("--max-reso", type=int, default=d["max_bucket_reso"], help="largest bucket side")
    chk.add_argument("--step", type=int, default=d["bucket_reso_steps"], help="bucket resolution step")
    chk.add_argument("--no-bucket", action="store_true", help="bucketing off: one square bucket")
    chk.add_argument("--no-upscale", action="store_true", help="bucket_no_upscale")
    chk.add_argument("--max-aspect", type=float, default=4.0, help="flag aspect ratios above this (default 4)")
    chk.add_argument("--no-cache", action="store_true", help="do not read or write the hash cache")
    chk.set_defaults(func=cmd_check)
    if common is None:
        for leaf in (imp, chk):
            leaf.add_argument("--workspace", default=None, help="workspace folder")
    return ds


def cmd_check(args: argparse.Namespace) -> int:
    try:
        cache_dir = None if args.no_cache else dataset_cache_dir(open_workspace(getattr(args, "workspace", None)))
        scan = scan_dataset(args.path, caption_extension=args.caption_extension)
        report = validate_dataset(scan, resolution=args.resolution, min_reso=args.min_reso,
                                  max_reso=args.max_reso, step=args.step, enable_bucket=not args.no_bucket,
                                  no_upscale=args.no_upscale, max_aspect=args.max_aspect, cache_dir=cache_dir)
    except (DatasetError, WorkspaceError) as err:
        if args.json:
            print(json.dumps({"root": str(Path(args.path).absolute()), "error": str(err), "counts": {},
                              "subsets": [], "problems": []}, ensure_ascii=False))
        else:
            print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(report.to_json())
    else:
        _print_report(report)
    return 1 if any(p.severity == "error" for p in report.problems) else 0


def _print_report(report) -> None:
    c = report.counts
    print(f"{report.root}: {c['images']} images in {c['subsets']} subset(s), {c['images_per_epoch']} per epoch; "
          f"{c['problems']} problem(s) in {c['files_with_problems']} file(s)")
    for s in report.subsets:
        print(f"  {s.name}: {s.images} images x {s.repeats} repeats = {s.images_per_epoch}, "
              f"{s.captioned} captioned")
    for p in report.problems:
        fix = f"  [fix: {p.fix}]" if p.fix else ""
        print(f"{p.severity:7} {p.kind:17} {p.file}: {p.detail}{fix}")


def cmd_import(args: argparse.Namespace) -> int:
    src = Path(args.source).expanduser()
    try:
        paths = open_workspace(getattr(args, "workspace", None))
        if src.is_dir():
            if args.copy and not args.name:
                args.name = src.name
            result = import_folder(paths, src, args.name, copy=args.copy, overwrite=args.overwrite)
        elif src.is_file():
            if not args.name:
                raise DatasetError("--name is required to import a zip")
            result = import_zip(paths, src, args.name, overwrite=args.overwrite)
        else:
            raise DatasetError(f"{src} is neither a zip file nor a folder")
    except (DatasetError, WorkspaceError) as err:
        if args.json:
            print(json.dumps({"error": str(err)}, ensure_ascii=False))
        else:
            print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"name": result.name, "path": str(result.path), "images": result.images,
                          "captions": result.captions, "in_place": result.in_place,
                          "skipped": [{"file": f, "reason": r} for f, r in result.skipped],
                          "broken": [{"file": f, "reason": r} for f, r in result.broken]}, ensure_ascii=False))
    else:
        how = "used in place" if result.in_place else "imported"
        print(f"{how}: {result.name} at {result.path} ({result.images} images, {result.captions} captions)")
        for f, why in result.skipped:
            print(f"  skipped {f}: {why}")
        for f, why in result.broken:
            print(f"  cannot be read (kept; `dataset check` flags it): {f}: {why}")
    return 0
