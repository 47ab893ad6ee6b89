"""Speak kohya: import kohya sd-scripts / LETS / kohya_ss configs, export runs to sd-scripts, and a
LETS-compatible backend API (lets_api.py, imported on its own: it pulls in Starlette)."""

from backend.compat.detect import import_file, import_text
from backend.compat.export import KohyaExport, export_config, export_job, export_preset
from backend.compat.kohya_import import import_kohya, import_kohya_files
from backend.compat.report import ImportReport, ImportResult

__all__ = ["ImportReport", "ImportResult", "KohyaExport", "export_config", "export_job", "export_preset",
           "import_file", "import_kohya", "import_kohya_files", "import_text"]
