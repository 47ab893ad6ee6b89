"""create_app(ctx): the header and one tab per module in TAB_MODULES; nothing else.

Adding a tab
------------
Write `webui/tabs/<name>.py` with

    TITLE = "Dataset"          # the tab's label
    TAB_ID = "dataset"         # stable id (gr.Tabs(selected=TAB_ID) switches to it)

    def build(ctx: AppContext) -> None:
        ...                    # create components and wire events; called inside `with gr.Tab(...)`

and add "webui.tabs.<name>" to TAB_MODULES below.

What a tab gets (webui/context.py): `ctx.paths` (the WorkspacePaths: datasets/, models/, jobs/,
presets/), `ctx.supervisor` (backend.jobs Supervisor, shared by all sessions and thread-safe: submit,
stop, resume, …), and `ctx.ui` (components shared between tabs: `ctx.ui.tabs` to switch tab,
`ctx.ui.timer` to make the page follow running jobs, `ctx.ui.tab_items` (the gr.Tab objects),
`ctx.ui.job_id` to show a job in the Runs tab, `ctx.ui.dataset_pick` for the Dataset tab's
"Use for training").

Handlers: short functions that call the backend, decorated with `@user_errors` (webui/handlers.py)
so a LoraDashError reaches the user as a readable gr.Error and anything else is logged with its
traceback. Never run training, tagging or other long work in a handler: submit a job instead
(`ctx.supervisor.submit(kind, config, name)`) and let the Runs tab show it. Wire form values by
name: pass inputs as a set and read them with the component as key (see webui/forms.py). The UI
process must not import torch or diffusers (tests/test_webui_imports.py checks it).
"""

from __future__ import annotations

import importlib
from types import ModuleType

import gradio as gr

from webui.context import AppContext, SharedUI
from webui.text import code, md

TAB_MODULES: tuple[str, ...] = (
    "webui.tabs.dataset",
    "webui.tabs.captioning",
    "webui.tabs.training",
    "webui.tabs.runs",
    "webui.tabs.compare",
    "webui.tabs.models",
)

CSS = """
.ld-header h1 { margin: 0; font-size: 1.5em; }
.ld-header p { margin: 0; opacity: .7; }
.ld-invalid { outline: 2px solid #d33; border-radius: 6px; }
.ld-progress { padding: 4px 0; }
.ld-bar { height: 14px; background: #e4e7ec; border-radius: 7px; overflow: hidden; }
.ld-fill { height: 100%; background: linear-gradient(90deg, #3b6fd1, #5a8ff0); transition: width .4s; }
.ld-progress-label { font-size: .9em; margin-top: 4px; }
.ld-downloads button[aria-label="Remove this file"] { display: none; }
"""
THEME = "soft"


def tab_modules(names: tuple[str, ...] = TAB_MODULES) -> list[ModuleType]:
    """The tab modules, in order (a missing one is an error, not a silently dropped tab)."""
    return [importlib.import_module(name) for name in names]


def create_app(ctx: AppContext) -> gr.Blocks:
    """The Blocks app. Theme and CSS go to `launch()` (gradio 6): see `launch_options()`."""
    with gr.Blocks(title=ctx.title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {md(ctx.title)}\nTrain LoRA adapters for Stable Diffusion · workspace "
                    f"{code(ctx.paths.root)}", elem_classes=["ld-header"])
        timer = gr.Timer(1.0, active=True)
        job_id = gr.State(None)
        dataset_pick = gr.State({})  # Dataset tab → Training tab ("Use for training")
        datasets_changed = gr.State(0)  # Dataset tab → tabs listing datasets with their image counts
        with gr.Tabs() as tabs:
            ui = SharedUI(blocks=demo, tabs=tabs, timer=timer, job_id=job_id, dataset_pick=dataset_pick,
                          datasets_changed=datasets_changed)
            tab_ctx = AppContext(paths=ctx.paths, supervisor=ctx.supervisor, title=ctx.title, ui=ui,
                                 lock=ctx.lock, cache=ctx.cache, roots=ctx.roots)
            for module in tab_modules():
                with gr.Tab(module.TITLE, id=module.TAB_ID, elem_id=f"tab-{module.TAB_ID}") as tab:
                    tab_ctx.ui.tab_items[module.TAB_ID] = tab
                    module.build(tab_ctx)
    return demo


def launch_options() -> dict:
    """Arguments for `Blocks.launch()` that gradio 6 no longer takes in `Blocks()`."""
    return {"theme": THEME, "css": CSS}
