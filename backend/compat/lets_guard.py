"""What the LETS-compatible API checks before a route runs: that the request comes from a program
(LETS' front end, curl, a script) on this machine or with the token, never from a web page.

- Host: on loopback the Host header must name a loopback address, so a page on another domain that
  rebinds its DNS name to 127.0.0.1 is refused (DNS rebinding). A public listener needs the token,
  which such a page cannot know.
- Browser requests: an Origin other than the API's own, a Sec-Fetch-Site other than same-origin or
  none, or a Referer from another host is a web page calling across sites (CSRF): refused.
- State changes go through POST. GET /train and GET /stop_training, which LETS' front end sends (it
  uses python-requests: no Origin, no Sec-Fetch-*, no Referer), are kept only for such programs.
- Bodies: JSON (Content-Type application/json; a body with no Content-Type at all, as
  python-requests sends `data=`, is taken from programs only), at most MAX_BODY bytes, read in
  chunks so a huge body is refused without being held in memory. Malformed JSON is a 400.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse

MAX_BODY = 1 << 20            # LETS' /validate bodies are a few kB
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
BROWSER_HEADERS = ("origin", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest", "referer")


class Refused(Exception):
    """A request the API will not serve: `status` and `detail` for the JSON answer."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail}, status_code=self.status)


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hostname(value: str) -> str:
    """The host part of a Host header or of a URL's netloc (IPv6 brackets kept off)."""
    try:
        return (urlsplit("//" + value).hostname or "") if value else ""
    except ValueError:
        return "\0invalid"


def from_browser(request: Request) -> bool:
    """A request carrying what browsers add to every page-made request (Origin, Sec-Fetch-*, Referer)."""
    return any(h in request.headers for h in BROWSER_HEADERS)


def check_request(request: Request, *, loopback: bool, port: int) -> None:
    """Refused (403) for a foreign Host on loopback or a cross-site browser request."""
    host = _hostname(request.headers.get("host", ""))
    if loopback and not is_loopback_host(host):
        raise Refused(403, f"Host {request.headers.get('host', '')!r} is not this API's address: it answers only "
                           "to 127.0.0.1, localhost or [::1] (a page on another site cannot reach it)")
    origin = request.headers.get("origin")
    if origin is not None and not _own_origin(origin, port):
        raise Refused(403, f"requests from web pages ({origin}) are refused: the LETS API is for programs "
                           "on this machine (LETS' front end, scripts), not for browsers")
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Refused(403, f"cross-site browser requests (Sec-Fetch-Site: {site}) are refused")
    referer = request.headers.get("referer")
    if referer and not is_loopback_host(_hostname(_netloc(referer))):
        raise Refused(403, "requests referred by another site's page are refused")


def _netloc(url: str) -> str:
    try:
        return urlsplit(url).netloc
    except ValueError:
        return "\0invalid"


def _own_origin(origin: str, port: int) -> bool:
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    return parts.scheme == "http" and is_loopback_host(parts.hostname or "") and origin_port == port


def check_state_change(request: Request) -> None:
    """GET on a route that changes state: only for programs, never for a page (which could send it
    from an <img> tag); POST is the way for everyone. HEAD (which Starlette adds to every GET route) never:
    it is a probe, not a request to act."""
    if request.method == "HEAD" or request.method != "POST" and from_browser(request):
        raise Refused(405, f"{request.url.path} changes state: use POST")


async def read_json(request: Request, limit: int = MAX_BODY) -> Any:
    """The JSON body, or Refused: 415 for another content type, 413 past `limit`, 400 when malformed."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype:
        if ctype != "application/json" and not (ctype.startswith("application/") and ctype.endswith("+json")):
            raise Refused(415, f"the body must be JSON sent as Content-Type: application/json, not {ctype}")
    elif from_browser(request):
        raise Refused(415, "the body must be JSON sent as Content-Type: application/json")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Refused(413, f"the body is larger than {limit} bytes" if declared.isdigit()
                      else "Content-Length is not a number")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise Refused(400, "the body is empty: send a JSON object")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise Refused(400, "the body is not UTF-8 text") from None
    except ValueError as err:  # JSONDecodeError, or a number too long to convert
        raise Refused(400, f"the body is not valid JSON: {err}") from None
    except RecursionError:
        raise Refused(400, "the body is nested too deeply") from None
