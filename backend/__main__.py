"""`python -m backend …`: the command line. Each area adds its own commands through `add_parsers`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from backend.errors import LoraDashError
from backend.known_warnings import silence_known_warnings

# Modules that contribute commands; each has add_parsers(subparsers) registering handlers with
# set_defaults(func=handler), handler(args) -> exit code. Imported lazily so `--help` stays fast.
COMMAND_MODULES = (
    "backend.config.cli",
    "backend.models.cli",
    "backend.models.manager_cli",
    "backend.training.cli",
    "backend.jobs.cli",
    "backend.dataset.cli",
    "backend.captioning.cli",
    "backend.compat.cli",
    "backend.compare.cli",
)


EPILOG = """\
start here:
  python -m backend demo                                  build the tiny demo model and dataset
  python -m backend train demo                            train the demo preset (or a config .toml)
  python -m backend COMMAND --help                        the options of one command

coming from kohya sd-scripts, LETS or kohya_ss? turn your config into a preset, then train it:
  python -m backend import-config config.toml --dataset dataset.toml -o mine.toml
  python -m backend train mine.toml --set saving.output_dir=/path/to/loras
"""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", metavar="DIR", default=None,
                        help="workspace folder (default: $LORADASH_WORKSPACE or ./workspace)")
    parser = argparse.ArgumentParser(prog="python -m backend", description="LoRA Dash command line",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.common = common  # areas pass parents=[sub.common] so every command takes --workspace
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    silence_known_warnings()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LoraDashError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
