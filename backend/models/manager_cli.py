"""`models scan | inspect | get`: the model manager from the command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def add_parsers(sub) -> None:
    p = sub.add_parser("models", parents=[sub.common], help="list, inspect and download models")
    cmds = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    s = cmds.add_parser("scan", parents=[sub.common], help="list the models in the workspace")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_scan)
    i = cmds.add_parser("inspect", parents=[sub.common], help="what a model file or folder is")
    i.add_argument("path")
    i.set_defaults(func=cmd_inspect)
    g = cmds.add_parser("get", parents=[sub.common],
                        help="download a file by URL into models/ (resumes; CIVITAI_TOKEN / HF_TOKEN from the "
                             "environment)")
    g.add_argument("url")
    g.add_argument("--dest", default="", help="folder or file under models/ (default: models/)")
    g.add_argument("--sha256", default=None)
    g.add_argument("--size", type=int, default=None)
    g.set_defaults(func=cmd_get)


def _paths(args):
    from backend.paths import open_workspace

    return open_workspace(args.workspace, os.environ)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_scan(args) -> int:
    from backend.models.inspect import scan_models

    found = scan_models(_paths(args).models)
    if args.json:
        print(json.dumps([m.to_dict() for m in found], indent=1))
        return 0
    for m in found:
        what = m.label or m.kind
        extra = f" {m.lora.algo} rank {m.lora.rank} for {m.lora.base_model or '?'}" if m.lora else ""
        print(f"{m.kind:10} {what:22} {m.precision:9} {_size(m.size_bytes):>9}  {m.path}{extra}"
              + (f"  ! {m.error}" if m.error else ""))
    return 0


def cmd_inspect(args) -> int:
    from backend.models.inspect import inspect_file, inspect_folder

    path = Path(args.path)
    info = inspect_folder(path) if path.is_dir() else inspect_file(path)
    print(json.dumps(info.to_dict(), indent=1))
    return 1 if info.error else 0


def cmd_get(args) -> int:
    from backend.models import http_download as hd

    paths = _paths(args)
    src = hd.resolve(args.url)
    token = os.environ.get(hd.TOKEN_ENV.get(src.kind, ""), None) if src.kind in hd.TOKEN_ENV else None
    dest = hd.job_dest(paths.models, args.dest)
    if not args.dest or args.dest.endswith("/"):
        dest.mkdir(parents=True, exist_ok=True)

    def show(done, total, rate):
        pct = f"{100 * done / total:5.1f} %" if total else ""
        speed = f"{rate / 1e6:6.1f} MB/s" if rate else ""
        print(f"\r{_size(done):>9} {pct} {speed}", end="", file=sys.stderr, flush=True)

    res = hd.download(args.url, dest, args.sha256, args.size, token, show)
    print(file=sys.stderr)
    print(f"{res.path} ({_size(res.bytes)}, sha256 {res.sha256})")
    return 0
