"""Process identity and signals: is the process recorded in job.json still ours, and stop it.

A pid alone is not an identity (the kernel reuses them), so job.json also keeps the process start
time. On Linux that is field 22 of /proc/<pid>/stat (clock ticks since boot): exact, and the same
value whoever reads it. Elsewhere psutil's create_time is used, if psutil is installed.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

_PROC = Path("/proc")


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its last ')'.
    rest = raw[raw.rfind(")") + 2:].split()
    return rest  # rest[0] is field 3 (state); field 22 (starttime) is rest[19]


def _state_and_start(pid: int) -> tuple[str, float] | None:
    if _PROC.is_dir():
        fields = _proc_stat(pid)
        return None if fields is None else (fields[0], float(fields[19]))
    try:
        import psutil  # optional: only where there is no /proc
    except ModuleNotFoundError:
        return None
    try:
        proc = psutil.Process(pid)
        return ("Z" if proc.status() == psutil.STATUS_ZOMBIE else "R"), proc.create_time()
    except psutil.Error:
        return None


def start_time(pid: int) -> float | None:
    """The start time of process `pid` (also of a zombie), or None if there is no such process."""
    info = _state_and_start(pid)
    return None if info is None else info[1]


def is_alive(pid: int | None, expected_start: float | None) -> bool:
    """True if `pid` runs (not a zombie) and started at `expected_start`: the process we launched."""
    if not pid or pid <= 0 or expected_start is None:
        return False  # without a start time we cannot tell ours from a stranger: treat as gone
    info = _state_and_start(pid)
    if info is None or info[0] in ("Z", "X", "x"):
        return False
    return abs(info[1] - float(expected_start)) < 1e-3


def die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux prctl PR_SET_PDEATHSIG).

    Ranks started by `accelerate launch` (torchrun) run in sessions of their own, out of reach of
    the signals sent to the launcher's group; this ties them to the launcher, so killing the job
    kills every rank. Returns False where the call is not available.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) != 0:
        return False
    return True


def signal_group(pgid: int | None, pid: int | None, sig: signal.Signals) -> bool:
    """Send `sig` to process group `pgid` (or to `pid` alone without one). False if nobody got it."""
    try:
        if pgid and pgid > 0:
            os.killpg(pgid, sig)
        elif pid and pid > 0:
            os.kill(pid, sig)
        else:
            return False
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True
