"""What every remote adapter shares: pooled httpx clients, JSON over HTTP, error classes, signatures.

Transient (worth retrying): timeouts, connection failures, HTTP 429 and 5xx.
Permanent: any other 4xx, and answers that are not the JSON the engine's
protocol promises. Credentials travel in headers only and never appear in a
raised error's reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import threading
import time
from typing import Any

import httpx

from adapters.base import PermanentEngineError, TransientEngineError

_clients: dict[str, httpx.Client] = {}
_lock = threading.Lock()
POOL = httpx.Limits(max_connections=100, max_keepalive_connections=20)
MAX_ANSWER_BYTES = 1_000_000  # a chat answer; anything larger is a broken engine


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


def post_json(provider: str, url: str, payload: Any, *, timeout: float, headers: dict | None = None,
              secret: str | None = None) -> Any:
    """POST ``payload`` as JSON and return the decoded JSON answer, or raise an engine error."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if secret:
        all_headers["X-Gateway-Signature"] = signature(secret, body)
    deadline = time.monotonic() + timeout
    timed_out = TransientEngineError(f"{provider} engine timed out after {timeout:g}s")
    try:
        # httpx's timeout applies to each read; an engine that trickles its
        # answer would never trip it. Streaming lets the whole call be held to
        # the deadline, which must stay under the worker's lease.
        with client_for(provider).stream("POST", url, content=body, headers=all_headers, timeout=timeout) as response:
            chunks = []
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise timed_out
                if sum(map(len, chunks)) > MAX_ANSWER_BYTES:
                    raise PermanentEngineError(f"{provider} engine answer is larger than {MAX_ANSWER_BYTES} bytes")
    except httpx.TimeoutException:
        raise timed_out from None
    except httpx.TransportError as error:
        raise TransientEngineError(f"{provider} engine unreachable: {type(error).__name__}") from None
    if time.monotonic() > deadline:
        raise timed_out
    return _decode(provider, response.status_code, response.headers, b"".join(chunks))


def _decode(provider: str, status: int, headers: httpx.Headers, content: bytes) -> Any:
    if status == 429 or status >= 500:
        raise TransientEngineError(f"{provider} engine answered HTTP {status}", retry_after=_retry_after(headers))
    if status >= 400:
        raise PermanentEngineError(f"{provider} engine answered HTTP {status}")
    try:
        return json.loads(content, parse_constant=_refuse_constant)
    except ValueError:
        raise PermanentEngineError(f"{provider} engine answered something that is not JSON") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _retry_after(headers: httpx.Headers) -> float | None:
    try:
        value = float(headers.get("Retry-After", ""))
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None
