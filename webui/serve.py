"""Serving: from LaunchSettings to a running app (console) or an inline one (Jupyter)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import gradio as gr

from backend.errors import LoraDashError
from webui.app import create_app, launch_options
from webui.context import AppContext, make_context
from webui.launching import (
    LaunchError,
    LaunchSettings,
    check_port,
    ensure_demo,
    generated_login,
    local_url,
    served_paths,
    settings_from,
)
from webui.login_throttle import LoginBackoff, LoginThrottleMiddleware

log = logging.getLogger("loradash.webui")
LETS_CACHE_KEY = "serve.lets_api"  # the running LETS API server (stopped when the app ends)


def start(settings: LaunchSettings, environ: Mapping[str, str], *, inline: bool | None = False,
          height: int = 900) -> tuple[gr.Blocks, AppContext, str | None]:
    """Build and launch the app without blocking; prints the URLs (and a generated login)."""
    check_port(settings.host, settings.port)  # fail fast, before building anything
    ctx = make_context(settings.workspace, max_concurrent=settings.max_concurrent, environ=dict(environ),
                       allow_dirs=settings.allow_dirs)
    if settings.demo:
        ensure_demo(ctx.paths)
    lets = start_lets_api(settings, ctx)
    login = generated_login(settings)
    auth = settings.auth or ([login] if login else None)
    app = create_app(ctx)
    app.queue(default_concurrency_limit=4)
    ctx.start_polling()
    try:
        _, _, share_url = app.launch(
            server_name=settings.host, server_port=settings.port, share=settings.share, auth=auth,
            auth_message="LoRA Dash: log in with the user and password set at launch.",
            root_path=settings.root_path or None, inbrowser=settings.inbrowser,
            allowed_paths=served_paths(ctx.paths), prevent_thread_lock=True, quiet=True, show_error=True,
            inline=inline, height=height, app_kwargs=_app_kwargs(auth), **launch_options())
    except OSError as err:
        ctx.stop_polling()
        if lets is not None:
            lets.stop()
        raise LaunchError(f"cannot serve on {settings.host}:{settings.port}: {err}. Choose another port "
                          "with --port N or LORADASH_PORT.") from err
    print(f"LoRA Dash is running at {local_url(settings)}  (workspace: {ctx.paths.root})", flush=True)
    print(f"Server folders the browser may name: {ctx.allowed.describe()}", flush=True)
    if settings.share:
        if share_url:
            print(f"Public link: {share_url}", flush=True)
        else:
            print("Could not create a public share link (no internet, or the share service is down): "
                  "serving locally only. Use an SSH tunnel or your provider's proxy to reach the port.",
                  flush=True)
    if login:
        print(f"This app is reachable from other machines, so it asks for a login:\n"
              f"    user: {login[0]}\n    password: {login[1]}\n"
              "(shown once; set your own with --auth USER:PASS, or turn it off with --no-auth)", flush=True)
    if settings.public and settings.no_auth:
        print("Warning: public app without a login (--no-auth): anyone with the link can use it.", flush=True)
    return app, ctx, share_url


def _app_kwargs(auth: list | None) -> dict:
    """The FastAPI app's extra arguments: with a login, the per-client back-off on failed attempts."""
    if not auth:
        return {}
    from starlette.middleware import Middleware

    return {"middleware": [Middleware(LoginThrottleMiddleware, backoff=LoginBackoff())]}


def start_lets_api(settings: LaunchSettings, ctx: AppContext):
    """The LETS-compatible API (`--lets-api`), on the app's supervisor so its runs show in the dashboard.
    Imported only when asked for. ConfigError (port taken, public without a token) stops the launch."""
    if settings.lets_port is None:
        return None
    from backend.compat.lets_api import serve_lets_api

    server = serve_lets_api(ctx.paths, settings.lets_host, settings.lets_port, settings.lets_token,
                            supervisor=ctx.supervisor, roots=ctx.allowed)
    with ctx.lock:
        ctx.cache[LETS_CACHE_KEY] = server
    print(server.message, flush=True)
    return server


def main(argv: list[str], environ: Mapping[str, str]) -> int:
    """The console entry: parse, launch, block until Ctrl+C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own startup requests
    try:
        settings = settings_from(argv, environ)
        app, ctx, _ = start(settings, environ)
    except LoraDashError as err:
        print(f"error: {err}", flush=True)
        return 2
    try:
        app.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        ctx.stop_polling()
        lets = ctx.cache.get(LETS_CACHE_KEY)
        if lets is not None:
            lets.stop()
    return 0
