"""A daemon thread that calls a poll function every few seconds.

The web page's timers only tick while a browser tab is open; without this thread a queued job would
not start after the running one ends until someone opened the page again. A failing poll is logged
(with its traceback) and tried again on the next tick: one bad job folder must not stop the queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("loradash.jobs")

REPEAT_LOG_S = 60.0  # the same error again: one short line a minute, not a traceback every tick


class BackgroundPoller:
    """Runs `poll()` every `interval_s` seconds in one daemon thread; start/stop are idempotent."""

    def __init__(self, poll: Callable[[], object], name: str = "loradash-supervisor"):
        self._poll = poll
        self._name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self, interval_s: float) -> threading.Thread:
        """Start the thread, or return the one already running (its interval stays as it was)."""
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self._thread
            self._stop = threading.Event()  # a fresh event: a stop of the old thread must not leak
            self._thread = threading.Thread(target=self._loop, args=(interval_s, self._stop),
                                            name=self._name, daemon=True)
            self._thread.start()
            return self._thread

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Stop the thread and wait up to `timeout` s for a poll in progress to finish.
        True if no thread is left running."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _loop(self, interval_s: float, stop: threading.Event) -> None:
        last_error, last_logged, repeats = "", 0.0, 0
        while not stop.wait(interval_s):
            try:
                self._poll()
            except Exception as err:  # noqa: BLE001 - the loop's boundary: logged below, never dropped
                text, now = f"{type(err).__name__}: {err}", time.monotonic()
                if text != last_error:
                    log.exception("background poll failed; trying again every %.1f s", interval_s)
                    last_error, last_logged, repeats = text, now, 0
                else:
                    repeats += 1
                    if now - last_logged >= REPEAT_LOG_S:
                        log.error("background poll still failing (%d more times): %s", repeats, text)
                        last_logged, repeats = now, 0
            else:
                if last_error:
                    log.info("background poll works again (after: %s)", last_error)
                    last_error, repeats = "", 0
