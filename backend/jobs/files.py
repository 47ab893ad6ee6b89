"""Moved to `backend.files` (one home for atomic writes, JSON reads and the file lock). This name stays
only so code written against the old location keeps importing; new code imports `backend.files`."""

from backend.files import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "read_json"]
