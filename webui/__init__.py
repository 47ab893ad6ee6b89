"""LoRA Dash web dashboard (Gradio). Import-light: `launch` imports Gradio only when called.

In Jupyter or Colab:

    from webui import launch
    app = launch(workspace="workspace")          # shows the app inline, or prints its link
    app = launch(share=True)                     # a public link (a login is generated and printed)
    app.close()                                  # stop serving
"""

from __future__ import annotations


def launch(workspace: str | None = None, *, share: bool = False, host: str = "127.0.0.1", port: int = 7860,
           auth: str | list[str] | None = None, no_auth: bool = False, root_path: str = "",
           demo: bool = False, max_concurrent: int = 1, inline: bool | None = None, height: int = 900):
    """Start the dashboard without blocking and return the gradio Blocks (call `.close()` to stop).

    `auth` is "user:password" (or a list of them). In a notebook the app shows inline (`inline=None`
    decides by itself); elsewhere the link is printed.
    """
    import os

    from webui.launching import LaunchSettings, parse_auth
    from webui.serve import start

    items = [auth] if isinstance(auth, str) else list(auth or [])
    settings = LaunchSettings(workspace=workspace, host=host, port=port, share=share,
                              auth=[parse_auth(a, "auth") for a in items], no_auth=no_auth,
                              root_path=("/" + root_path.strip("/")) if root_path.strip("/") else "",
                              demo=demo, max_concurrent=max_concurrent)
    app, _, _ = start(settings, os.environ, inline=inline, height=height)
    return app


__all__ = ["launch"]
