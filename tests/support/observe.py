"""Watching a gateway from a test: polling for a condition, reading its messages."""

from __future__ import annotations

import time
from typing import Callable

from sqlalchemy import select

from gateway.db.models import Message


def wait_until(predicate, timeout: float = 20.0, what: str = "condition", detail: Callable[[], str] | None = None):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` (and ``detail()``) on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{detail()}" if detail else ""))


def all_messages(runtime, role: str | None = None) -> list[Message]:
    with runtime.db.begin() as tx:
        query = select(Message).order_by(Message.session_id, Message.seq)
        if role:
            query = query.where(Message.role == role)
        return list(tx.scalars(query))


def still_busy(messages: list[Message]) -> bool:
    """Some text is still waiting for its turn, or some reply for its send."""
    return any(
        (m.role == "user" and m.status == "received") or (m.role == "assistant" and m.status == "queued")
        for m in messages
    )
