"""Download one file by URL (Hugging Face file links, Civitai, any HTTP(S) server) with resume.

Bytes go to `<name>.partial`; after a dropped connection the next request asks for the rest with an
HTTP Range header (a server that ignores it sends the whole file and we start over). The file is
renamed to its final name only once complete and, when known, of the right size and sha256. API
tokens travel in an Authorization header that is never forwarded to another host on redirects (the
signed CDN links Civitai and Hugging Face redirect to refuse a second credential), and never into a
job folder: the job reads them from its environment.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend.errors import ConfigError, ModelError

PARTIAL = ".partial"
CHUNK = 1 << 20
USER_AGENT = "lora-dash/0.1"
TOKEN_ENV = {"civitai": "CIVITAI_TOKEN", "huggingface": "HF_TOKEN"}
HF_HOSTS = ("huggingface.co", "hf.co")
RETRY_STATUS = (408, 425, 429, 500, 502, 503, 504)
Progress = Callable[[int, "int | None", "float | None"], Any]


@dataclass(frozen=True)
class Source:
    """Where a user's URL really downloads from, and whose token it takes."""
    url: str
    kind: str  # huggingface | civitai | http
    name_hint: str = ""


@dataclass
class DownloadResult:
    path: str
    bytes: int
    sha256: str
    resumed_from: int
    source: str
    reconnects: int = 0
    stopped: bool = False


def resolve(url: str) -> Source:
    """Turn a page or file link into the URL that serves the bytes.

    Hugging Face `…/blob/<rev>/<file>` becomes `…/resolve/<rev>/<file>`; a Civitai model page with
    `?modelVersionId=N` becomes `https://civitai.com/api/download/models/N`."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelError(f"{url!r} is not an http(s) URL")
    host = parts.hostname.lower()
    if host in HF_HOSTS or host.endswith(".huggingface.co"):
        path = re.sub(r"^(/[^/]+/[^/]+)/blob/", r"\1/resolve/", parts.path)
        if "/resolve/" not in path:
            raise ModelError(f"{url}: a Hugging Face link to one file looks like "
                             "https://huggingface.co/<owner>/<repo>/resolve/main/<file>; for a whole "
                             "repository use the repository download instead")
        return Source(urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")),
                      "huggingface", Path(urllib.parse.unquote(path)).name)
    if host == "civitai.com" or host.endswith(".civitai.com"):
        if parts.path.startswith("/api/download/models/"):
            return Source(urllib.parse.urlunsplit(("https", parts.netloc, parts.path, parts.query, "")), "civitai")
        query = urllib.parse.parse_qs(parts.query)
        version = (query.get("modelVersionId") or [""])[0]
        if re.fullmatch(r"/models/\d+(/.*)?", parts.path) and version.isdigit():
            return Source(f"https://civitai.com/api/download/models/{version}", "civitai")
        raise ModelError(f"{url}: for Civitai give the model page with ?modelVersionId=<id> (pick the "
                         "version on the page, then copy the address) or the download button's link "
                         "(https://civitai.com/api/download/models/<id>)")
    return Source(url.strip(), "http", Path(urllib.parse.unquote(parts.path)).name)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects; keep the token only while the host stays the same."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib's hook
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.unredirected_hdrs.get("Authorization")
        if new is not None and auth and urllib.parse.urlsplit(newurl).hostname == \
                urllib.parse.urlsplit(req.full_url).hostname:
            new.add_unredirected_header("Authorization", auth)
        return new


def filename_from_headers(headers: Mapping[str, str], fallback: str) -> str:
    """The file name a server proposes (Content-Disposition, RFC 6266 `filename*` first), made safe:
    no folders, no leading dots, no control or shell-special characters."""
    cd = headers.get("Content-Disposition", "") or ""
    name = ""
    m = re.search(r"filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)", cd)
    if m:
        name = urllib.parse.unquote(m.group(1).strip().strip('"'))
    else:
        m = re.search(r'filename\s*=\s*"([^"]+)"|filename\s*=\s*([^;]+)', cd)
        if m:
            name = (m.group(1) or m.group(2) or "").strip()
    name = Path(name.replace("\\", "/")).name or fallback
    name = re.sub(r"[^\w.+ ()\[\]-]", "_", name).lstrip(". ")
    return name[:200] or "download.bin"


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    m = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", value or "")
    if not m:
        return None
    return int(m.group(1)), (None if m.group(2) == "*" else int(m.group(2)))


def _hash_file(path: Path) -> Any:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h


class _Speed:
    """Bytes per second over the last few seconds (not since the start: resumes and stalls show)."""

    def __init__(self, window_s: float = 5.0):
        self.window_s, self.points = window_s, []

    def add(self, done: int) -> float | None:
        now = time.monotonic()
        self.points.append((now, done))
        while len(self.points) > 2 and now - self.points[0][0] > self.window_s:
            self.points.pop(0)
        (t0, d0), (t1, d1) = self.points[0], self.points[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None


def _http_error(err: urllib.error.HTTPError, src: Source, has_token: bool) -> ModelError:
    if err.code in (401, 403):
        env = TOKEN_ENV.get(src.kind)
        hint = (f" Set an API token ({env} in the environment, or the token field in the settings)."
                if env and not has_token else " Check that the token is valid and has access.")
        return ModelError(f"{src.url}: the server refused the download (HTTP {err.code}).{hint}")
    if err.code == 404:
        return ModelError(f"{src.url}: not found (HTTP 404); check the link")
    return ModelError(f"{src.url}: HTTP {err.code} {err.reason}")


def download(url: str, dest: Path, sha256: str | None = None, size: int | None = None,
             token: str | None = None, progress: Progress | None = None, *,
             should_stop: Callable[[], bool] | None = None, retries: int = 5, timeout: float = 30.0,
             backoff_s: float = 1.0, progress_interval_s: float = 0.25) -> DownloadResult:
    """Download `url` to `dest` (a file path, or an existing folder: the server's file name is used).

    Resumes a `<dest>.partial` left by an earlier try. Retries dropped connections `retries` times in a
    row (any progress resets the count). `progress(done, total, bytes_per_s)`. With `should_stop`
    returning True the partial file is kept and the result has `stopped=True`."""
    src = resolve(url)
    want_sha = sha256.lower().strip() if sha256 else None
    if want_sha and not re.fullmatch(r"[0-9a-f]{64}", want_sha):
        raise ModelError(f"sha256 {sha256!r} is not 64 hexadecimal digits")
    opener = urllib.request.build_opener(_Redirects())
    dest = Path(dest)
    into_folder = dest.is_dir()
    final: Path | None = None if into_folder else dest
    speed, failures, resumed_from, reconnects = _Speed(), 0, -1, 0
    last_emit = 0.0
    while True:
        partial = final.with_name(final.name + PARTIAL) if final else None
        have = partial.stat().st_size if partial and partial.exists() else 0
        if resumed_from < 0 and final:
            resumed_from = have
        req = urllib.request.Request(src.url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        if have:
            req.add_header("Range", f"bytes={have}-")
        if token:
            req.add_unredirected_header("Authorization", f"Bearer {token}")
        progressed = False
        try:
            with opener.open(req, timeout=timeout) as resp:
                if final is None:  # into a folder: the name comes with the first response
                    final = dest / filename_from_headers(resp.headers, src.name_hint or "download.bin")
                    if final.with_name(final.name + PARTIAL).exists():
                        continue  # an earlier try of the same file: ask again with a Range
                    partial = final.with_name(final.name + PARTIAL)
                    resumed_from = 0
                if final.exists():
                    raise ModelError(f"{final} exists already: delete it or choose another name")
                total = None
                length = resp.headers.get("Content-Length")
                if resp.status == 206:
                    rng = _content_range(resp.headers.get("Content-Range"))
                    if rng is None or rng[0] != have:
                        raise ModelError(f"{src.url}: the server answered a resume with the wrong range "
                                         f"({resp.headers.get('Content-Range')!r})")
                    total = rng[1]
                else:
                    if have:  # the server ignored the Range: it is sending the whole file again
                        have, resumed_from = 0, 0
                    total = int(length) if length and length.isdigit() else None
                if size is not None and total is not None and total != size:
                    raise ModelError(f"{src.url}: the server offers {total:,} bytes, expected {size:,}")
                final.parent.mkdir(parents=True, exist_ok=True)
                with partial.open("ab" if have else "wb") as fh:
                    while True:
                        if should_stop and should_stop():
                            return DownloadResult(str(partial), have, "", max(resumed_from, 0), src.kind,
                                                  reconnects, stopped=True)
                        chunk = resp.read(CHUNK)
                        if not chunk:
                            break
                        fh.write(chunk)
                        have += len(chunk)
                        progressed = True
                        rate = speed.add(have)
                        now = time.monotonic()
                        if progress and now - last_emit >= progress_interval_s:
                            last_emit = now
                            progress(have, total, rate)
                if total is not None and have < total:
                    raise http.client.IncompleteRead(b"", total - have)
                break
        except urllib.error.HTTPError as err:
            if err.code == 416 and have and (size is None or have == size):
                break  # asked for bytes past the end: the partial file is already whole
            if err.code not in RETRY_STATUS:
                raise _http_error(err, src, bool(token)) from err
            failure: BaseException = err
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as err:
            failure = err
        failures = 0 if progressed else failures + 1
        reconnects += 1
        if failures > retries:
            where = f"; {partial} is kept, start the download again to resume" if partial else ""
            raise ModelError(f"{src.url}: connection failed {failures} times in a row "
                             f"({type(failure).__name__}: {failure}){where}") from failure
        time.sleep(backoff_s * min(2 ** max(failures - 1, 0), 30))
    result = _finish(final, partial, have, want_sha, size, src, max(resumed_from, 0), progress, speed)
    result.reconnects = reconnects
    return result


def _finish(final: Path, partial: Path, have: int, want_sha: str | None, size: int | None, src: Source,
            resumed_from: int, progress: Progress | None, speed: _Speed) -> DownloadResult:
    if size is not None and have != size:
        raise ModelError(f"{partial}: {have:,} bytes, expected {size:,}; start the download again")
    digest = _hash_file(partial).hexdigest()
    if want_sha and digest != want_sha:
        partial.unlink()
        raise ModelError(f"{src.url}: sha256 mismatch (got {digest}, expected {want_sha}); the damaged "
                         "download was deleted, try again")
    umask = os.umask(0)
    os.umask(umask)
    partial.chmod(0o666 & ~umask)
    os.replace(partial, final)
    if progress:
        progress(have, have, speed.add(have))
    return DownloadResult(str(final), have, digest, resumed_from, src.kind)


class UrlDownloadConfig(BaseModel):
    """config.toml of a "download_url" job. Tokens are not here: the job reads them from its environment."""
    model_config = ConfigDict(extra="forbid")
    url: str = Field(..., description="File URL: Hugging Face file link, Civitai model/version link, or any "
                                      "http(s) address.", pattern=r"^https?://")
    dest: str = Field("", description="Folder (or file path) under the workspace's models/; empty: models/.")
    sha256: str = Field("", description="Expected SHA-256 (hex); empty: not checked.",
                        pattern=r"^([0-9a-fA-F]{64})?$")
    size: int | None = Field(None, description="Expected size in bytes; empty: not checked.", ge=0)


def job_dest(models_dir: Path, dest: str) -> Path:
    """`dest` inside `models_dir` (relative paths only; `..` may not leave it)."""
    root = Path(models_dir).resolve()
    target = (root / dest).resolve() if dest else root
    if target != root and root not in target.parents:
        raise ConfigError([("dest", f"{dest!r} leaves the models folder; give a path inside {root}")])
    return target


def run_job(ctx: Any) -> dict[str, Any]:
    """Worker runner of kind "download_url" (ctx: backend.worker.context.WorkerContext)."""
    try:
        cfg = UrlDownloadConfig.model_validate(ctx.config)
    except ValidationError as err:
        raise ConfigError([(".".join(map(str, e["loc"])), e["msg"]) for e in err.errors()],
                          "download_url config") from None
    src = resolve(cfg.url)
    # The process boundary: the supervisor hands tokens over in the environment, never in config.toml.
    token = os.environ.get(TOKEN_ENV[src.kind]) if src.kind in TOKEN_ENV else None
    dest = job_dest(ctx.paths.models, cfg.dest)
    if cfg.dest.endswith("/") or not cfg.dest:
        dest.mkdir(parents=True, exist_ok=True)
    ctx.log.info("downloading %s (%s) into %s", src.url, src.kind, dest)

    def report(done: int, total: int | None, rate: float | None) -> None:
        ctx.progress(done, total, unit="bytes", bytes_per_s=round(rate) if rate else None)

    result = download(cfg.url, dest, cfg.sha256 or None, cfg.size, token, report,
                      should_stop=lambda: ctx.stop_requested)
    summary = asdict(result)
    if not result.stopped:
        from backend.models.inspect import inspect_file

        info = inspect_file(Path(result.path))
        summary["detected"] = info.label or info.kind
        ctx.log.info("downloaded %s: %s", result.path, info.label or info.kind)
    ctx.events.emit("download_summary", **summary)
    return summary
