"""Login throttling for the dashboard: a per-client back-off on Gradio's POST /login.

Gradio checks the password itself and tells nobody how often it was wrong, so a public link could be
guessed at full speed. This ASGI middleware (installed with `launch(app_kwargs=...)`, see
`webui.serve`) counts the failed logins of each client address: the first FREE_ATTEMPTS are free, then
each further attempt must wait BASE_S·2^k seconds (at most MAX_S) after the last failure, answered
429 with Retry-After, whatever the password. An attempt counts as failed from its start (parallel
guesses cannot slip through one check), and a successful login forgets the client. IPv6 clients are
counted per /64. Behind a reverse proxy every browser shares the proxy's address, so they share one
back-off.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable
from typing import Any

FREE_ATTEMPTS = 3
BASE_S = 1.0
MAX_S = 300.0
MAX_CLIENTS = 10_000        # forget the oldest beyond this: memory stays bounded under a flood


class LoginBackoff:
    """Failures in a row and when the next attempt is allowed, per client."""

    def __init__(self, free: int = FREE_ATTEMPTS, base_s: float = BASE_S, max_s: float = MAX_S,
                 clock: Callable[[], float] = time.monotonic):
        self.free, self.base_s, self.max_s, self.clock = free, base_s, max_s, clock
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[int, float]] = {}   # client → (failures, next attempt allowed at)

    def wait_s(self, client: str) -> float:
        """Seconds `client` must still wait before its next attempt (0: it may try now)."""
        with self._lock:
            _, allowed_at = self._clients.get(client, (0, 0.0))
        return max(0.0, allowed_at - self.clock())

    def attempt(self, client: str) -> float:
        """A login attempt begins: the seconds still to wait (refused; nothing counted), or 0 with the
        attempt counted as failed until `succeeded` says otherwise, so that guesses sent in parallel
        cannot all pass one check before any of them has failed."""
        with self._lock:
            wait = max(0.0, self._clients.get(client, (0, 0.0))[1] - self.clock())
            if wait == 0:
                self._count_failure(client)
            return wait

    def failed(self, client: str) -> float:
        """Record a failed login; returns the wait before the next attempt."""
        with self._lock:
            return self._count_failure(client)

    def _count_failure(self, client: str) -> float:
        failures = self._clients.pop(client, (0, 0.0))[0] + 1
        over = failures - self.free
        wait = min(self.max_s, self.base_s * 2 ** (over - 1)) if over > 0 else 0.0
        self._clients[client] = (failures, self.clock() + wait)
        while len(self._clients) > MAX_CLIENTS:
            self._clients.pop(next(iter(self._clients)))
        return wait

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)


def _is_login(scope: dict[str, Any]) -> bool:
    return scope.get("type") == "http" and scope.get("method") == "POST" \
        and scope.get("path", "").rstrip("/").endswith("/login")


class LoginThrottleMiddleware:
    """Pure ASGI: only POST …/login is looked at; every other request passes untouched."""

    def __init__(self, app: Any, backoff: LoginBackoff | None = None):
        self.app = app
        self.backoff = backoff or LoginBackoff()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not _is_login(scope):
            await self.app(scope, receive, send)
            return
        client = client_key((scope.get("client") or ("unknown", 0))[0])
        wait = self.backoff.attempt(client)  # counted as failed from here on: see attempt()
        if wait > 0:
            await _too_many(send, wait)
            return
        status: list[int] = []

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, receive, watch)
        if status and status[0] == 200:
            self.backoff.succeeded(client)


def client_key(address: str) -> str:
    """Whom a failure counts against: the IPv4 address, or the /64 of an IPv6 one (one subscriber's
    block; counting each of its 2^64 addresses apart would give every guess three free tries)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


async def _too_many(send: Any, wait: float) -> None:
    seconds = max(1, int(wait + 0.999))
    body = json.dumps({"detail": f"Too many failed logins from your address: try again in {seconds} s."}).encode()
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", str(seconds).encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
