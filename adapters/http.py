"""What every remote adapter shares: pooled httpx clients, JSON over HTTP, error classes, signatures.

Transient (worth retrying): timeouts, connection failures, HTTP 429 and 5xx.
Permanent: any other 4xx (``EngineRefused``, whose ``status`` lets an adapter
react to, say, a 404 for a remote session that expired), redirects, and
answers that are not the JSON the engine's protocol promises.

Credentials travel in headers only. A raised error's reason names the
provider, the status and the URL's path, never a header, a query string or
the engine's own error text (engines echo keys back in their error messages).
Each call is logged at DEBUG with the same safe parts.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import logging
import math
import threading
import time
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from adapters.base import PermanentEngineError, TransientEngineError

log = logging.getLogger("adapters.http")

_clients: dict[str, httpx.Client] = {}
_lock = threading.Lock()
POOL = httpx.Limits(max_connections=100, max_keepalive_connections=20)
MAX_ANSWER_BYTES = 1_000_000  # a chat answer; anything larger is a broken engine


class EngineRefused(PermanentEngineError):
    """The engine answered a 4xx other than 429: the request itself is wrong (key, ids, payload)."""

    def __init__(self, reason: str, status: int):
        super().__init__(reason)
        self.status = status


def client_for(provider: str) -> httpx.Client:
    """One pooled client per engine provider and process, reused across calls and threads."""
    with _lock:
        client = _clients.get(provider)
        if client is None:
            client = httpx.Client(limits=POOL, follow_redirects=False, headers={"User-Agent": "sms-session-gateway"})
            _clients[provider] = client
        return client


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of the body>``: the X-Gateway-Signature header."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def join_url(base_url: str, path: str) -> str:
    """``base_url`` + ``path`` the way the official OpenAI client joins them: no doubled slash."""
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def safe_url(url: str) -> str:
    """The URL without credentials or query string: what logs and error reasons may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def turn_deadline(timeout: float) -> float:
    """The moment (time.monotonic) by which one engine try must be over, however many calls it makes."""
    return time.monotonic() + timeout


def post_json(provider: str, url: str, payload: Any, *, timeout: float, headers: dict | None = None,
              secret: str | None = None, deadline: float | None = None) -> Any:
    """POST ``payload`` as JSON and return the decoded JSON answer, or raise an engine error.

    ``timeout`` bounds this call; ``deadline`` (from ``turn_deadline``) bounds
    the whole try when an adapter makes several calls per turn, so a session
    set-up plus a chat still fit in the one engine timeout the worker's lease
    is sized for.
    """
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if secret:
        all_headers["X-Gateway-Signature"] = signature(secret, body)
    started = time.monotonic()
    deadline = min(started + timeout, deadline if deadline is not None else math.inf)
    timed_out = TransientEngineError(f"{provider} engine timed out after {timeout:g}s")
    if deadline <= started:
        raise timed_out
    shown = safe_url(url)

    def exchange():
        try:
            # httpx's timeout applies to each read; an engine that trickles its
            # answer would never trip it. Streaming lets the whole call be held to
            # the deadline, which must stay under the worker's lease.
            with client_for(provider).stream(
                "POST", url, content=body, headers=all_headers, timeout=deadline - started
            ) as response:
                chunks = []
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise timed_out
                    if sum(map(len, chunks)) > MAX_ANSWER_BYTES:
                        raise PermanentEngineError(f"{provider} engine answer is larger than {MAX_ANSWER_BYTES} bytes")
        except httpx.TimeoutException:
            _log_call(provider, shown, "timeout", started)
            raise timed_out from None
        except httpx.DecodingError:
            # The body does not match its Content-Encoding (say "gzip" over plain bytes): a broken answer.
            _log_call(provider, shown, "undecodable", started)
            raise PermanentEngineError(f"{provider} engine answered a body its Content-Encoding cannot decode") from None
        except httpx.TransportError as error:
            _log_call(provider, shown, type(error).__name__, started)
            raise TransientEngineError(f"{provider} engine unreachable: {type(error).__name__}") from None
        _log_call(provider, shown, response.status_code, started)
        return response.status_code, response.headers, b"".join(chunks)

    # httpx's timeouts apply per phase (connect, write, each read) and the loop
    # above only looks at the clock between chunks: an engine that sends its
    # headers late and then stalls would hold the call for up to twice the
    # timeout. The exchange runs in its own thread so the caller gets its
    # answer, or the timeout, by the deadline; an abandoned exchange still
    # ends by itself within httpx's own timeout.
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["answer"] = exchange()
        except BaseException as error:  # noqa: BLE001 - handed to the caller below
            outcome["error"] = error

    worker = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True,
                              name=f"engine-call-{provider}")
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        _log_call(provider, shown, "timeout", started)
        raise timed_out
    if "error" in outcome:
        raise outcome["error"]
    status, answer_headers, content = outcome["answer"]
    if time.monotonic() > deadline:
        raise timed_out
    return _decode(provider, urlsplit(url).path or "/", status, answer_headers, content)


def _log_call(provider: str, url: str, outcome, started: float) -> None:
    log.debug("event=engine.http provider=%s method=POST url=%s outcome=%s ms=%d",
              provider, url, outcome, (time.monotonic() - started) * 1000)


def _decode(provider: str, path: str, status: int, headers: httpx.Headers, content: bytes) -> Any:
    if status == 429 or status >= 500:
        raise TransientEngineError(f"{provider} engine answered HTTP {status} to {path}",
                                   retry_after=_retry_after(headers))
    if status >= 400:
        raise EngineRefused(f"{provider} engine answered HTTP {status} to {path}", status)
    if status >= 300:
        # Following a redirect could carry the credentials to another host.
        raise PermanentEngineError(f"{provider} engine answered HTTP {status} to {path}; redirects are not followed")
    try:
        return json.loads(content, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # RecursionError: arrays or objects nested too deep to decode
        raise PermanentEngineError(f"{provider} engine answered something that is not JSON") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _retry_after(headers: httpx.Headers) -> float | None:
    return retry_after_seconds(headers.get("Retry-After"))


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (RFC 9110: delay-seconds or an HTTP date) as seconds to wait from ``now`` (a Unix
    time; the clock's by default); None when absent or no wait at all ("inf" and "nan" parse as floats)."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT; one that says "-0000" is read as such
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def reported_cost(value: Any) -> float | None:
    """A cost the engine reported: a finite number of at least zero, else None (not reported)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def malformed(provider: str, what: str) -> PermanentEngineError:
    """The engine answered JSON, but not the shape its protocol promises."""
    return PermanentEngineError(f"{provider} engine answer is malformed: {what}")
