"""Lifecycle events (SPEC 6.11): written to an outbox with the change, delivered by jobs, at least once.

``emit`` adds an ``events`` row in the caller's transaction, so an event
exists exactly when the change it reports was committed. After the commit,
bootstrap's hook enqueues ``deliver_event`` for each new row. Delivery claims
one attempt at a time, POSTs the body with ``X-Gateway-Signature`` and retries
with backoff under the same event id; the sweep re-enqueues deliveries whose
job was lost.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session as DbSession

from adapters.base import RetryPolicy
from adapters.http import client_for, signature
from gateway.db.models import Assistant, Chat, Customer, Event, Message, Session, new_id
from gateway.domain.timestamps import iso
from gateway.views import chat_view, message_view, session_view

if TYPE_CHECKING:
    from gateway.bootstrap import Runtime

log = logging.getLogger("gateway.events")

PENDING_KEY = "gateway_events"  # Session.info key: event ids to enqueue once the transaction commits


def emit(tx: DbSession, assistant_id: str | None, event_type: str, name: str, view, now: datetime) -> str | None:
    """Add an event to the outbox if the assistant subscribes to it; returns its id.

    ``view`` is the object's dict, or a function that builds it: most
    assistants subscribe to nothing, and then nothing needs building.
    """
    if not subscribes(tx, assistant_id, event_type):
        return None
    event_id = new_id()
    body = view() if callable(view) else view
    payload = {"message": {"id": event_id, "type": event_type, "timestamp": iso(now), name: body}}
    tx.add(Event(id=event_id, assistant_id=assistant_id, type=event_type, payload=payload, status="pending",
                 attempts=0, next_attempt_at=now, created_at=now))
    tx.info.setdefault(PENDING_KEY, []).append(event_id)
    return event_id


def subscribes(tx: DbSession, assistant_id: str | None, event_type: str) -> bool:
    """Whether the assistant has a serverUrl and takes this event type (it is read once per transaction)."""
    assistant = tx.get(Assistant, assistant_id) if assistant_id else None
    return assistant is not None and bool(assistant.server_url) and event_type in (assistant.server_events or [])


def session_event(tx: DbSession, session: Session, event_type: str, now: datetime) -> str | None:
    if session.assistant_id is None:
        return None

    def view() -> dict:
        customer = tx.get(Customer, session.customer_id) if session.customer_id else None
        return session_view(session, customer)

    return emit(tx, session.assistant_id, event_type, "session", view, now)


def chat_event(tx: DbSession, chat: Chat, assistant_id: str | None, event_type: str, now: datetime) -> str | None:
    return emit(tx, assistant_id, event_type, "chat", chat_view(chat), now)


def message_status_event(tx: DbSession, message_id: str, now: datetime) -> str | None:
    message = tx.get(Message, message_id)
    tx.refresh(message)
    session = tx.get(Session, message.session_id)
    return emit(tx, session.assistant_id, "message.status", "message", message_view(message), now)


def enqueue_committed(runtime: "Runtime", tx: DbSession) -> None:
    """The after-commit hook: hand the transaction's new events to the queue."""
    for event_id in tx.info.pop(PENDING_KEY, []):
        runtime.enqueue("deliver_event", event_id)


def forget_rolled_back(tx: DbSession) -> None:
    tx.info.pop(PENDING_KEY, None)


def deliver_event(runtime: "Runtime", event_id: str) -> None:
    settings = runtime.settings
    now = runtime.clock.now()
    # Claim this attempt: moving next_attempt_at past the call's timeout keeps a
    # second copy of the job (or the sweep) from delivering it at the same time.
    claim_until = now + timedelta(seconds=settings.event_timeout + 5)
    with runtime.db.begin() as tx:
        claimed = tx.execute(
            update(Event)
            .where(Event.id == event_id, Event.status == "pending", Event.next_attempt_at <= now)
            .values(next_attempt_at=claim_until, attempts=Event.attempts + 1)
        ).rowcount
        event = tx.get(Event, event_id)
        if not claimed:
            if event is not None and event.status == "pending" and event.next_attempt_at > claim_until:
                runtime.enqueue("deliver_event", event_id, delay=(event.next_attempt_at - now).total_seconds())
            return
        assistant = tx.get(Assistant, event.assistant_id) if event.assistant_id else None
        target = (assistant.server_url, assistant.server_secret) if assistant and assistant.server_url else None
    error = "the assistant no longer has a serverUrl" if target is None else _post(event, *target, settings.event_timeout)
    _record(runtime, event, error, final=target is None)


def _post(event: Event, url: str, secret: str, timeout: float) -> str | None:
    """POST the event; None when the receiver took it (2xx), else why not."""
    body = json.dumps(event.payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = {"Content-Type": "application/json", "X-Gateway-Signature": signature(secret, body)}
    try:
        response = client_for("events").post(url, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as problem:
        return f"delivery failed: {type(problem).__name__}"
    if 200 <= response.status_code < 300:
        return None
    return f"receiver answered HTTP {response.status_code}"


def _record(runtime: "Runtime", event: Event, error: str | None, final: bool = False) -> None:
    settings = runtime.settings
    now = runtime.clock.now()
    retry_in = None
    with runtime.db.begin() as tx:
        if error is None:
            values = dict(status="delivered", delivered_at=now, last_error=None)
        elif final or event.attempts >= settings.event_tries:
            values = dict(status="failed", last_error=error)
        else:
            policy = RetryPolicy(settings.event_tries, settings.event_retry_delay, settings.event_retry_cap)
            retry_in = policy.delay(event.attempts)
            values = dict(next_attempt_at=now + timedelta(seconds=retry_in), last_error=error)
        tx.execute(update(Event).where(Event.id == event.id).values(**values))
    if error is None:
        log.info("event=event.delivered id=%s type=%s attempts=%d", event.id, event.type, event.attempts)
    elif retry_in is None:
        log.warning("event=event.failed id=%s type=%s attempts=%d error=%s", event.id, event.type, event.attempts, error)
    else:
        log.info("event=event.retry id=%s in=%.1fs error=%s", event.id, retry_in, error)
        runtime.enqueue("deliver_event", event.id, delay=retry_in)


def due_events(now: datetime, cutoff: datetime):
    """Pending deliveries whose next try is past due by the grace period: their job was lost."""
    return select(Event.id).where(Event.status == "pending", Event.next_attempt_at <= cutoff)
