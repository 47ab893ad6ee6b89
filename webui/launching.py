"""Launch settings (flags and environment variables), auth, port checks, the demo and serving.

`launch.py` hands argv and the environment to `main()`; nothing here reads them by itself.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from backend.compat.lets_guard import is_loopback_host
from backend.dataset.filecache import thumbs_cache_dir
from backend.errors import LoraDashError
from backend.models import demos
from backend.paths import PROJECT_ROOT, WorkspacePaths
from backend.roots import ENV_VAR, FLAG, dirs_from_env

GENERATED_USER = "loradash"
LETS_PORT = 8000  # the LETS backend's own default, which its front end expects


class LaunchError(LoraDashError):
    """The app cannot be launched as asked (port taken, bad auth file, demo build failed, …)."""


@dataclass
class LaunchSettings:
    workspace: str | None = None
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: list[tuple[str, str]] = field(default_factory=list)
    no_auth: bool = False
    root_path: str = ""
    inbrowser: bool = False
    demo: bool = False
    max_concurrent: int = 1
    lets_port: int | None = None      # the LETS-compatible API: off unless --lets-api
    lets_host: str = "127.0.0.1"
    lets_token: str | None = None
    allow_dirs: list[str] = field(default_factory=list)   # server folders besides the workspace

    @property
    def public(self) -> bool:
        """Reachable from other machines: a share link or a non-loopback interface."""
        return self.share or not is_loopback(self.host)


def is_loopback(host: str) -> bool:
    return host == "" or is_loopback_host(host)  # "": Gradio's default, which serves on 127.0.0.1


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def parse_auth(item: str, where: str = "--auth") -> tuple[str, str]:
    user, sep, password = item.partition(":")
    if not sep or not user.strip() or not password:
        raise LaunchError(f"{where}: expected USER:PASSWORD, got {item!r}")
    return user.strip(), password


def read_auth_file(path: str | Path) -> list[tuple[str, str]]:
    """USER:PASSWORD per line; blank lines and lines starting with # are skipped."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise LaunchError(f"cannot read the auth file {path}: {err.strerror or err}") from err
    pairs = [parse_auth(line.strip(), f"{path} line {n}") for n, line in enumerate(lines, 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not pairs:
        raise LaunchError(f"the auth file {path} holds no USER:PASSWORD line")
    return pairs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="launch.py", description="Start the LoRA Dash web dashboard.")
    p.add_argument("--workspace", metavar="DIR", help="workspace folder (env LORADASH_WORKSPACE; default ./workspace)")
    p.add_argument("--host", metavar="ADDR", help="interface to listen on (env LORADASH_HOST; default 127.0.0.1)")
    p.add_argument("--listen", action="store_true", help="listen on all interfaces (0.0.0.0), e.g. in a container")
    p.add_argument("--port", type=int, metavar="N", help="port (env LORADASH_PORT; default 7860)")
    p.add_argument("--share", action="store_true", default=None,
                   help="also open a public gradio.live link (env LORADASH_SHARE=1)")
    p.add_argument("--auth", action="append", metavar="USER:PASS", help="require this login (repeatable; env LORADASH_AUTH)")
    p.add_argument("--auth-file", metavar="FILE", help="logins from a file, USER:PASS per line (env LORADASH_AUTH_FILE)")
    p.add_argument("--no-auth", action="store_true",
                   help="no login even on a public link (otherwise one is generated and printed)")
    p.add_argument("--root-path", metavar="PATH", help="URL prefix behind a reverse proxy, e.g. /loradash (env LORADASH_ROOT_PATH)")
    p.add_argument("--inbrowser", action="store_true", help="open the dashboard in the default browser")
    p.add_argument("--demo", action="store_true", help="build the tiny demo model and dataset first if missing")
    p.add_argument("--max-concurrent", type=int, metavar="N", help="jobs run at once (env LORADASH_MAX_JOBS; default 1)")
    p.add_argument(FLAG, action="append", dest="allow_dirs", metavar="DIR",
                   help="a server folder, besides the workspace, that the browser and the LETS API may name "
                        f"(datasets, models elsewhere); repeatable (env {ENV_VAR}, folders separated by ':')")
    p.add_argument("--lets-api", nargs="?", type=int, const=LETS_PORT, metavar="PORT",
                   help=f"also serve the LETS-compatible backend API (Derrian's front end) on 127.0.0.1:PORT "
                        f"(default {LETS_PORT})")
    p.add_argument("--lets-api-public", metavar="HOST",
                   help="serve the LETS API on HOST (e.g. 0.0.0.0) instead of 127.0.0.1; needs a token")
    p.add_argument("--lets-api-token", metavar="TOKEN",
                   help="token every LETS API request must carry (Authorization: Bearer …; "
                        "env LORADASH_LETS_TOKEN)")
    return p


def settings_from(argv: list[str], environ: Mapping[str, str]) -> LaunchSettings:
    """Flags win over environment variables, which win over the defaults."""
    a = build_parser().parse_args(argv)
    host = "0.0.0.0" if a.listen else (a.host or environ.get("LORADASH_HOST") or "127.0.0.1")
    try:
        port = a.port if a.port is not None else int(environ.get("LORADASH_PORT") or 7860)
        max_jobs = a.max_concurrent or int(environ.get("LORADASH_MAX_JOBS") or 1)
    except ValueError as err:
        raise LaunchError(f"LORADASH_PORT and LORADASH_MAX_JOBS must be whole numbers ({err})") from None
    if not 0 < port < 65536:
        raise LaunchError(f"--port {port}: choose a port between 1 and 65535")
    auth = [parse_auth(item) for item in a.auth or []]
    if not auth and environ.get("LORADASH_AUTH"):
        auth = [parse_auth(environ["LORADASH_AUTH"], "LORADASH_AUTH")]
    auth_file = a.auth_file or environ.get("LORADASH_AUTH_FILE")
    if auth_file:
        auth += read_auth_file(auth_file)
    if auth and a.no_auth:
        raise LaunchError("--no-auth contradicts --auth/--auth-file: choose one")
    lets_port = a.lets_api if a.lets_api is not None else (LETS_PORT if a.lets_api_public else None)
    if lets_port is not None and not 0 < lets_port < 65536:
        raise LaunchError(f"--lets-api {lets_port}: choose a port between 1 and 65535")
    if lets_port is not None and lets_port == port:
        raise LaunchError(f"--lets-api {lets_port} is the dashboard's own port: choose another one")
    allow_dirs = [*(a.allow_dirs or []), *dirs_from_env(environ)]
    for folder in allow_dirs:
        if not Path(folder).expanduser().is_dir():
            raise LaunchError(f"{FLAG} {folder}: not an existing folder")
    root_path = (a.root_path or environ.get("LORADASH_ROOT_PATH") or "").rstrip("/")
    if root_path and not root_path.startswith("/"):
        root_path = "/" + root_path
    return LaunchSettings(
        workspace=a.workspace or environ.get("LORADASH_WORKSPACE"), host=host, port=port,
        share=bool(a.share) or _truthy(environ.get("LORADASH_SHARE")), auth=auth, no_auth=a.no_auth,
        root_path=root_path, inbrowser=a.inbrowser, demo=a.demo, max_concurrent=max(1, max_jobs),
        lets_port=lets_port, lets_host=a.lets_api_public or "127.0.0.1",
        lets_token=a.lets_api_token or environ.get("LORADASH_LETS_TOKEN") or None, allow_dirs=allow_dirs)


def generated_login(settings: LaunchSettings) -> tuple[str, str] | None:
    """A fresh login for a public app that has none (never written anywhere but the console)."""
    if settings.public and not settings.auth and not settings.no_auth:
        return GENERATED_USER, secrets.token_urlsafe(12)
    return None


def check_port(host: str, port: int) -> None:
    """LaunchError if the port cannot be bound (another program, or another LoRA Dash, has it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise LaunchError(
                f"port {port} on {host} is not available ({err.strerror or err}). Another program "
                f"(perhaps another LoRA Dash) uses it: stop it, or choose another port with --port N "
                f"or LORADASH_PORT.") from None


def ensure_demo(paths: WorkspacePaths) -> None:
    """Build every demo model (one per family, what the shipped demo presets need) and the demo dataset,
    in a subprocess (this process never imports torch)."""
    todo = demos.missing(paths)
    if not todo:
        return
    print(f"Building the demo models ({', '.join(d.family for d in todo)}) and dataset (once) …", flush=True)
    argv = [sys.executable, "-m", "backend", "demo", "--family", "all", "--workspace", str(paths.root)]
    result = subprocess.run(argv, cwd=PROJECT_ROOT, check=False)
    if result.returncode != 0:
        raise LaunchError(f"building the demo failed (exit code {result.returncode}); run "
                          f"`python -m backend demo --family all --workspace {paths.root}` to see why")


def local_url(settings: LaunchSettings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}{settings.root_path}/"


def served_paths(paths: WorkspacePaths) -> list[str]:
    """The only folders whose files the app serves: job outputs, datasets, and the thumbnails the
    Dataset and Captioning galleries show (cache/thumbs; the rest of cache/ is not served)."""
    return [str(paths.jobs), str(paths.datasets), str(thumbs_cache_dir(paths))]
