"""A LETS-compatible backend: Derrian's LoRA Easy Training Scripts front end can drive LoRA Dash.

Routes and shapes follow the LETS backend (main.py, utils/validation.py):
  POST /validate       {args: {section: {k: v}}, dataset: {section: {k: v}, subsets: [...]}}
                       → 200 {args: ["k = v", …], dataset: {general: [...], subsets: [[...]]}, tags: {tag: n}}
                         (+ "loradash": the preset and the import report), or 400 with a list of error strings
  POST /train          [?sdxl=True | ?flux=True] → {"detail": "Training Started", "training": true} (409 while a
                         run is active, 400 "No Previously Validated Args"); each validation starts one run
  GET  /is_training    → {"training": bool, "errored": bool}
  POST /stop_training  [?force=true] → {"detail": …}, 400 when nothing runs
  (GET /train and GET /stop_training, which LETS' front end sends, are accepted from programs only)
  POST /check_path     {path, type: file|folder, extensions: [...]} → {"valid": bool}
  GET  /tokenize?text= → {"tokens": [...], "token_ids": [...], "length": n}
The run is an ordinary LoRA Dash job (kind "train", group "lets-api"), so the dashboard shows it.
Unlike LETS, nothing is dropped for being 0 or false, and a stopped run reports errored = true, as
LETS' terminated process does (its front end then ends the queue).

Every request first passes `lets_guard` (no web pages, no foreign Host, JSON bodies of bounded
size); every path in a body must lie inside the server's allowed roots (`lets_paths`, `backend.roots`).
"""

from __future__ import annotations

import hmac
import json
import logging
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from backend.compat import lets_guard as guard
from backend.compat.export import kohya_config, kohya_dataset
from backend.compat.kohya_import import import_kohya
from backend.compat.lets_import import lets_to_kohya
from backend.compat.lets_paths import config_path_problems, resolve_body_paths
from backend.compat.report import ImportReport
from backend.compat.values import as_bool
from backend.config.io import to_dict
from backend.errors import ConfigError, JobError
from backend.jobs.registry import ACTIVE
from backend.jobs.supervisor import Supervisor
from backend.paths import WorkspacePaths
from backend.roots import AllowedRoots, OutsideRoots

log = logging.getLogger(__name__)
GROUP = "lets-api"
RUNNING = ACTIVE | {"queued"}
ERRORED = frozenset({"failed", "interrupted", "stopped"})
UNSUPPORTED_ROUTES = ("/resize", "/start_tunnel_service", "/kill_tunnel_service", "/stop_server", "/load_tokenizer")
LETS_PORT = 8000


@dataclass
class LetsState:
    paths: WorkspacePaths
    supervisor: Supervisor
    roots: AllowedRoots
    token: str | None = None
    loopback: bool = True                      # served on loopback only: the Host must say so
    port: int = LETS_PORT
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: dict[str, Any] | None = None      # the last validated config (full dict) and its name
    pending_name: str = ""
    job_id: str | None = None                  # the run this API started last
    tokenizer: Any = None
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)


def create_lets_app(paths: WorkspacePaths, supervisor: Supervisor, token: str | None = None, *,
                    roots: AllowedRoots | None = None, host: str = "127.0.0.1", port: int = LETS_PORT) -> Starlette:
    """The Starlette app; every request needs `token` (Bearer, X-LoRA-Dash-Token or ?token=) when set.
    `roots`: the folders bodies may name (default: the workspace only). `host`/`port`: where it is
    served, for the Host and Origin checks."""
    state = LetsState(paths, supervisor, roots or AllowedRoots.of(paths), token, guard.is_loopback_host(host), port)

    def route(path: str, func, methods: list[str], *, changes_state: bool = False) -> Route:
        async def endpoint(request: Request) -> JSONResponse:
            try:
                guard.check_request(request, loopback=state.loopback, port=state.port)
                denied = _check_token(state, request)
                if denied is not None:
                    return denied
                if changes_state:
                    guard.check_state_change(request)
                return await func(state, request)
            except guard.Refused as refused:
                return refused.response()
            except Exception:  # the request boundary: logged whole, answered in words
                log.exception("LETS API %s %s failed", request.method, path)
                return JSONResponse({"detail": f"{path} failed unexpectedly; the details are in LoRA Dash's "
                                               "console log"}, status_code=500)
        return Route(path, endpoint, methods=methods)

    routes = [route("/validate", _validate, ["POST"]),
              route("/train", _train, ["POST", "GET"], changes_state=True),
              route("/is_training", _is_training, ["GET"]),
              route("/stop_training", _stop, ["POST", "GET"], changes_state=True),
              route("/check_path", _check_path, ["POST"]), route("/tokenize", _tokenize, ["GET"])]
    routes += [route(p, _unsupported, ["GET", "POST"]) for p in UNSUPPORTED_ROUTES]
    app = Starlette(routes=routes)
    app.state.lets = state
    return app


def _check_token(state: LetsState, request: Request) -> JSONResponse | None:
    if not state.token:
        return None
    auth = request.headers.get("authorization", "")
    given = (auth[7:] if auth.lower().startswith("bearer ") else "") or request.headers.get("x-lora-dash-token", "") \
        or request.query_params.get("token", "")
    if given and hmac.compare_digest(given.encode(), state.token.encode()):
        return None
    return JSONResponse({"detail": "a token is required: send Authorization: Bearer <token>"}, status_code=401)


def _active_train(state: LetsState) -> str | None:
    """The id of a train job that runs or waits in this workspace (ours or the dashboard's)."""
    for rec in state.supervisor.poll(force=True):
        if rec.kind == "train" and rec.status in RUNNING:
            return rec.id
    return None


def _busy() -> JSONResponse:
    return JSONResponse({"detail": "Training Already Running"}, status_code=409)


# --- /validate ----------------------------------------------------------------------------------------------
async def _validate(state: LetsState, request: Request) -> JSONResponse:
    """Errors come back as a list of strings, as LETS' own /validate answers (its front end prints them)."""
    try:
        body = await guard.read_json(request)
    except guard.Refused as refused:
        if refused.status != 400:
            return JSONResponse([refused.detail], status_code=refused.status)
        return JSONResponse([f"body is not a JSON object with args and dataset ({refused.detail})"],
                            status_code=400)
    if await run_in_threadpool(_active_train, state):
        return _busy()
    return await run_in_threadpool(_validate_body, state, body)


def _validate_body(state: LetsState, body: Any) -> JSONResponse:
    shape = lets_errors(body, check_files=False)
    if shape:
        return JSONResponse(shape, status_code=400)
    # Before anything on disk is looked at: every path inside the allowed roots, extensions only; from
    # here on the body holds absolute resolved paths (nothing is taken from the working folder).
    body, outside = resolve_body_paths(body, state.roots)
    if outside:
        return JSONResponse(outside, status_code=400)
    errors = lets_errors(body)
    if errors:
        return JSONResponse(errors, status_code=400)
    report = ImportReport(source="LETS /validate")
    config, dataset, family = lets_to_kohya(body, report)
    try:
        result = import_kohya(config, dataset, family=family, paths=state.paths, source="LETS /validate",
                              report=report)
    except ConfigError as err:
        return JSONResponse([f"{p}: {m}" if p else m for p, m in err.problems], status_code=400)
    cfg = result.config
    resolved = to_dict(cfg)
    outside = config_path_problems(resolved, state.roots)
    if outside:
        return JSONResponse(outside, status_code=400)
    out_dir = Path(str(config.get("output_dir") or state.paths.root / "lets-api"))
    main = kohya_config(cfg, out_dir, state.paths)
    data = kohya_dataset(cfg, state.paths)
    with state.lock:
        state.pending, state.pending_name = resolved, cfg.saving.output_name
    return JSONResponse({
        "args": _lines(main),
        "dataset": {"general": _lines(data["general"]),
                    "subsets": [_lines(s) for d in data["datasets"] for s in d["subsets"]]},
        "tags": tag_counts(body),
        "loradash": {"preset": result.preset, "report": report.to_dict()},
    })


def lets_errors(body: Any, check_files: bool = True) -> list[str]:
    """What LETS' validate() refuses, in its words: missing parts, empty sections, missing files
    (with `check_files=False` only the shape: call it before the paths are known to be allowed)."""
    if not isinstance(body, dict):
        return ["body is not a JSON object with args and dataset"]
    errors = [f"{k} is not present" for k in ("args", "dataset") if not isinstance(body.get(k), dict)]
    if errors:
        return errors
    flat: dict[str, Any] = {}
    for part in ("args", "dataset"):
        for key, value in body[part].items():
            if value is None or (isinstance(value, str) and not value.strip()):
                errors.append(f"No data filled in for {key}")
            elif part == "args" and isinstance(value, dict):
                flat.update(value)
    model = flat.get("pretrained_model_name_or_path")
    if not model:
        errors.append("pretrained_model_name_or_path is not found")
    subsets = body["dataset"].get("subsets")
    if not isinstance(subsets, list) or not subsets:
        errors.append("No Data filled in for subsets")
    if not check_files or errors:
        return errors
    for name in ("pretrained_model_name_or_path", "output_dir", "sample_prompts", "logging_dir"):
        value = flat.get(name)
        if value and not Path(str(value)).expanduser().exists():
            errors.append(f"{name} input '{value}' does not exist")
    for i, subset in enumerate(subsets, 1):
        name = subset.get("name", f"subset {i}") if isinstance(subset, dict) else f"subset {i}"
        folder = subset.get("image_dir") if isinstance(subset, dict) else None
        if not folder or not Path(str(folder)).expanduser().is_dir():
            errors.append(f"Image directory path for '{name}' does not exist")
    return errors


def _lines(table: dict[str, Any]) -> list[str]:
    """`key = value` lines as LETS' process_args returns them (here written by tomli_w, escaped)."""
    return [tomli_w.dumps({k: v}).strip() for k, v in table.items() if not isinstance(v, dict)]


def tag_counts(body: dict[str, Any]) -> dict[str, int]:
    """How often each tag occurs in the training subsets' caption files, most frequent first."""
    counts: Counter[str] = Counter()
    flat_general: dict[str, Any] = {}
    for key, value in body["dataset"].items():
        if key != "subsets" and isinstance(value, dict):
            flat_general.update(value)
    for subset in body["dataset"].get("subsets", []):
        if not isinstance(subset, dict) or subset.get("is_reg") or subset.get("is_val"):
            continue
        ext = str(subset.get("caption_extension") or flat_general.get("caption_extension") or ".txt")
        folder = Path(str(subset.get("image_dir", "")))
        for caption in sorted(folder.glob(f"*{ext}")) if folder.is_dir() else []:
            text = caption.read_text(encoding="utf-8", errors="replace")
            counts.update(t.strip() for t in text.replace("\n", ",").split(",") if t.strip())
    return dict(counts.most_common())


# --- /train, /is_training, /stop_training ---------------------------------------------------------------------
async def _train(state: LetsState, request: Request) -> JSONResponse:
    mode = request.query_params.get("train_mode", "lora")
    sdxl = as_bool(request.query_params.get("sdxl", "False"), default=False)
    flux = as_bool(request.query_params.get("flux", "False"), default=False)
    if mode != "lora":
        return JSONResponse({"detail": "Invalid Train Parameters", "sdxl": sdxl, "train_type": mode},
                            status_code=400)
    return await run_in_threadpool(_start, state, "flux" if flux else "sdxl" if sdxl else None)


def _start(state: LetsState, family: str | None) -> JSONResponse:
    with state.lock:
        if _active_train(state):
            return _busy()
        if state.pending is None:
            return JSONResponse({"detail": "No Previously Validated Args"}, status_code=400)
        config = json.loads(json.dumps(state.pending))
        if family:  # the front end's sdxl= / flux= switch names the script; it wins over the guess
            config["model"]["family"] = family
        try:
            rec = state.supervisor.submit("train", config, state.pending_name or "lets", group=GROUP)
        except (ConfigError, JobError) as err:
            return JSONResponse({"detail": str(err)}, status_code=400)
        # One validation, one run: a later /train (a replayed or forged request) finds nothing to start.
        state.job_id, state.pending = rec.id, None
    return JSONResponse({"detail": "Training Started", "training": True, "job_id": rec.id})


def _status(state: LetsState) -> tuple[str | None, str | None]:
    if state.job_id is None:
        return None, None
    state.supervisor.poll(force=True)
    try:
        return state.job_id, state.supervisor.get(state.job_id).status
    except JobError:
        return state.job_id, None


async def _is_training(state: LetsState, request: Request) -> JSONResponse:
    _, status = await run_in_threadpool(_status, state)
    return JSONResponse({"training": status in RUNNING, "errored": status in ERRORED})


async def _stop(state: LetsState, request: Request) -> JSONResponse:
    force = as_bool(request.query_params.get("force", "False"), default=False)
    job_id, status = await run_in_threadpool(_status, state)
    if job_id is None or status not in RUNNING:
        return JSONResponse({"detail": "Not Currently Training"}, status_code=400)
    try:
        await run_in_threadpool(state.supervisor.stop, job_id, 0.0 if force else None)
    except JobError as err:
        return JSONResponse({"detail": str(err)}, status_code=400)
    return JSONResponse({"detail": "Training Thread Killed" if force else "Training Thread Requested to Die"})


# --- /check_path, /tokenize -------------------------------------------------------------------------------------
async def _check_path(state: LetsState, request: Request) -> JSONResponse:
    body = await guard.read_json(request)
    extensions = body.get("extensions") or [] if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(body.get("path"), str) or body.get("type") not in ("file", "folder") \
            or not isinstance(extensions, list) or not all(isinstance(e, str) for e in extensions):
        return JSONResponse({"detail": 'expected {"path": str, "type": "file" or "folder", "extensions": [str, ...]}'},
                            status_code=400)
    try:
        p = state.roots.check(body["path"], "path")
    except ConfigError as err:
        return JSONResponse({"valid": False, "detail": str(err)}, status_code=403 if isinstance(err, OutsideRoots) else 400)
    valid = p.is_dir() if body["type"] == "folder" else (p.is_file() and (not extensions or p.suffix in extensions))
    return JSONResponse({"valid": bool(valid)})


async def _tokenize(state: LetsState, request: Request) -> JSONResponse:
    text = request.query_params.get("text")
    if text is None:
        return JSONResponse({"detail": "give the text to tokenize: /tokenize?text=..."}, status_code=400)
    tokenizer = await run_in_threadpool(_tokenizer, state)
    tokens = tokenizer.tokenize(text)
    return JSONResponse({"tokens": tokens, "token_ids": tokenizer.convert_tokens_to_ids(tokens),
                         "length": len(tokens)})


def _tokenizer(state: LetsState) -> Any:
    """CLIP's tokenizer (the one LETS loads from the hub), derived offline from the BPE merges we ship."""
    with state.tokenizer_lock:
        if state.tokenizer is None:
            from transformers import CLIPTokenizer

            from backend.models.clip_vocab import write_tokenizer

            with tempfile.TemporaryDirectory(prefix="loradash-clip-") as tmp:
                write_tokenizer(Path(tmp), "<|endoftext|>")
                state.tokenizer = CLIPTokenizer.from_pretrained(tmp)
        return state.tokenizer


async def _unsupported(state: LetsState, request: Request) -> JSONResponse:
    return JSONResponse({"detail": f"{request.url.path} is not supported by LoRA Dash's LETS-compatible API"},
                        status_code=501)


# --- serving -----------------------------------------------------------------------------------------------------
@dataclass
class LetsServer:
    url: str
    message: str
    server: Any
    thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def serve_lets_api(paths: WorkspacePaths, host: str = "127.0.0.1", port: int = LETS_PORT, token: str | None = None,
                   supervisor: Supervisor | None = None, start_timeout: float = 15.0,
                   roots: AllowedRoots | None = None) -> LetsServer:
    """Serve the LETS-compatible API with uvicorn in a background thread. Off loopback it needs a token.
    `roots`: the folders request bodies may name (default: the workspace only)."""
    import uvicorn

    public = not guard.is_loopback_host(host)
    if public and not token:
        raise ConfigError([("--lets-api-public", f"listening on {host} needs a token: LETS' front end sends no "
                                                 "credentials, so anyone who reaches the port could train")])
    app = create_lets_app(paths, supervisor or Supervisor(paths), token, roots=roots, host=host, port=port)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    def run() -> None:
        try:
            server.run()
        except SystemExit as err:  # uvicorn exits when it cannot bind; the caller is told below
            log.error("LETS-compatible API stopped: uvicorn exit %s", err.code)

    thread = threading.Thread(target=run, name="lets-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        server.should_exit = True
        raise ConfigError([("--lets-api", f"could not listen on {host}:{port} (in use, or not allowed)")])
    sockets = [sock for srv in getattr(server, "servers", []) for sock in getattr(srv, "sockets", [])]
    if port == 0 and sockets:  # port 0: the system picked one
        port = sockets[0].getsockname()[1]
        app.state.lets.port = port
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    roots_text = f"; request paths limited to {app.state.lets.roots.describe()}"
    message = (f"LETS-compatible API on {url}: token required (Authorization: Bearer …){roots_text}" if public else
               f"LETS-compatible API on {url} (this machine only; from elsewhere use an SSH tunnel: "
               f"ssh -L {port}:127.0.0.1:{port} …){roots_text}")
    log.info(message)
    return LetsServer(url, message, server, thread)
