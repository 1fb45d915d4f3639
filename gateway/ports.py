"""The small interfaces the services depend on. bootstrap.py picks the real or local part for each."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@dataclass(frozen=True)
class OutboundSms:
    """One message to hand to Twilio (or the sandbox)."""

    message_id: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    media_urls: tuple[str, ...]
    status_callback: str | None


@dataclass(frozen=True)
class SendReceipt:
    sid: str
    status: str  # Twilio's status at creation: usually "queued" or "accepted"


class SendError(Exception):
    """Twilio refused or could not be reached.

    ``transient`` errors are retried with backoff; ``throttled`` ones (HTTP 429)
    were never processed by Twilio and do not count against the retry budget;
    ``maybe_sent`` ones (a timeout or 5xx after the request went out) may have
    been accepted, so Twilio is asked before the message is sent again;
    ``code`` is Twilio's error code when it gave one.
    """

    def __init__(
        self,
        reason: str,
        *,
        transient: bool,
        code: int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
        throttled: bool = False,
        maybe_sent: bool = False,
    ):
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.code = code
        self.http_status = http_status
        self.retry_after = retry_after
        self.throttled = throttled
        self.maybe_sent = maybe_sent


class SmsSender(Protocol):
    name: str

    def send(self, sms: OutboundSms) -> SendReceipt: ...


class JobQueue(Protocol):
    """Runs gateway jobs (functions of gateway.jobs, by name) asynchronously."""

    name: str

    def enqueue(self, job: str, *args: Any, delay: float = 0.0) -> None: ...

    def enqueue_many(self, jobs: list[tuple[str, tuple]]) -> None:
        """Enqueue (job, args) pairs to run now, at the cost of one enqueue where the queue allows."""
        ...

    def ping(self) -> None: ...

    def depth(self) -> int:
        """Jobs waiting to run (for /metrics)."""
        ...


JobFunction = Callable[..., Any]
