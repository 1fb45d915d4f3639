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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import bindparam, select, update
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
# Session.info keys of what a transaction has read about subscriptions (cleared when it ends): most
# assistants subscribe to nothing, and a send's two status changes should not read that twice.
SUBSCRIPTIONS_KEY = "gateway_subscriptions"  # assistant id -> the event types it takes
ASSISTANT_OF_MESSAGE_KEY = "gateway_assistant_of_message"  # message id -> its session's assistant id

# Built once: statements run on every turn and every status change (building one costs more CPU than
# running it, and a prebuilt statement's cache key is computed once).
_SUBSCRIPTION = select(Assistant.server_url, Assistant.server_events).where(Assistant.id == bindparam("assistant_id"))
_ASSISTANT_OF_MESSAGE = (
    select(Session.assistant_id).join(Message, Message.session_id == Session.id).where(Message.id == bindparam("message_id"))
)


def emit(tx: DbSession, assistant_id: str | None, event_type: str, name: str, view, now: datetime) -> str | None:
    """Add an event to the outbox if the assistant subscribes to it; returns its id.

    ``view`` is the object's dict, or a function that builds it: most
    assistants subscribe to nothing, and then nothing needs building.
    """
    if not subscribes(tx, assistant_id, event_type):
        return None
    row = event_row(assistant_id, event_type, name, view() if callable(view) else view, now)
    tx.add(Event(**row))
    tx.info.setdefault(PENDING_KEY, []).append(row["id"])
    return row["id"]


def event_row(assistant_id: str, event_type: str, name: str, body: dict, now: datetime) -> dict:
    """The outbox row of an event about ``body`` (the object's view, under ``name``), pending delivery."""
    event_id = new_id()
    payload = {"message": {"id": event_id, "type": event_type, "timestamp": iso(now), name: body}}
    return dict(id=event_id, assistant_id=assistant_id, type=event_type, payload=payload, status="pending",
                attempts=0, next_attempt_at=now, created_at=now)


def subscribes(tx: DbSession, assistant_id: str | None, event_type: str) -> bool:
    """Whether the assistant has a serverUrl and takes this event type (it is read once per transaction)."""
    if assistant_id is None:
        return False
    known = tx.info.setdefault(SUBSCRIPTIONS_KEY, {})
    if assistant_id not in known:
        row = tx.execute(_SUBSCRIPTION, {"assistant_id": assistant_id}).first()
        known[assistant_id] = _event_types(row)
    return event_type in known[assistant_id]


def _event_types(row) -> frozenset[str]:
    return frozenset(row.server_events or ()) if row is not None and row.server_url else frozenset()


@dataclass(frozen=True)
class Subscriber:
    """An assistant's subscription as a caller read it along with other rows (see known_assistant_of)."""

    assistant_id: str | None
    event_types: frozenset[str]

    @classmethod
    def of(cls, row) -> "Subscriber":
        """From a row with assistant_id, server_url and server_events (outer-joined: all may be None)."""
        return cls(row.assistant_id, _event_types(row) if row.assistant_id else frozenset())

    @classmethod
    def of_assistant(cls, assistant: Assistant) -> "Subscriber":
        return cls(assistant.id, _event_types(assistant))


def session_event(tx: DbSession, session: Session, event_type: str, now: datetime) -> str | None:
    if session.assistant_id is None:
        return None

    def view() -> dict:
        customer = tx.get(Customer, session.customer_id) if session.customer_id else None
        return session_view(session, customer)

    return emit(tx, session.assistant_id, event_type, "session", view, now)


def chat_event(tx: DbSession, chat: Chat, assistant_id: str | None, event_type: str, now: datetime) -> str | None:
    return emit(tx, assistant_id, event_type, "chat", lambda: chat_view(chat), now)


def known_assistant_of(tx: DbSession, message_id: str, subscriber: Subscriber) -> None:
    """What a caller read already, the message's assistant and its subscriptions, so that
    message_status_event need not read them again in this transaction."""
    tx.info.setdefault(ASSISTANT_OF_MESSAGE_KEY, {})[message_id] = subscriber.assistant_id
    known_subscriber(tx, subscriber)


def known_subscriber(tx: DbSession, subscriber: Subscriber) -> None:
    """An assistant's subscriptions that a caller read already, so that this transaction need not."""
    if subscriber.assistant_id is not None:
        tx.info.setdefault(SUBSCRIPTIONS_KEY, {})[subscriber.assistant_id] = subscriber.event_types


def message_status_event(tx: DbSession, message_id: str, now: datetime) -> str | None:
    # The message is read (fresh: the UPDATE that changed it bypassed the ORM) only for a subscriber.
    assistants = tx.info.setdefault(ASSISTANT_OF_MESSAGE_KEY, {})
    if message_id not in assistants:
        assistants[message_id] = tx.scalar(_ASSISTANT_OF_MESSAGE, {"message_id": message_id})
    assistant_id = assistants[message_id]
    if not subscribes(tx, assistant_id, "message.status"):
        return None
    message = tx.get(Message, message_id)
    tx.refresh(message)
    return emit(tx, assistant_id, "message.status", "message", message_view(message), now)


def enqueue_committed(runtime: "Runtime", tx: DbSession) -> None:
    """The after-commit hook: hand the transaction's new events to the queue, together: one round trip,
    and when the queue is down one wait for it, however many events (the sweep delivers them later)."""
    _forget_reads(tx)
    runtime.enqueue_many([("deliver_event", (event_id,)) for event_id in tx.info.pop(PENDING_KEY, [])])


def forget_rolled_back(tx: DbSession) -> None:
    _forget_reads(tx)
    tx.info.pop(PENDING_KEY, None)


def _forget_reads(tx: DbSession) -> None:
    """A session that goes on to another transaction reads subscriptions afresh."""
    tx.info.pop(SUBSCRIPTIONS_KEY, None)
    tx.info.pop(ASSISTANT_OF_MESSAGE_KEY, None)


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
    if target is None:
        error = "the assistant no longer has a serverUrl"
    else:
        try:
            error = _post(event, *target, settings.event_timeout)
        except Exception as problem:  # noqa: BLE001 - see below
            # Not the receiver's answer but a delivery that cannot even start (a serverUrl stored before
            # URLs were checked as they are now, say). Raised, it would leave the event pending, claimed
            # afresh by the sweep for ever; recorded, it takes its tries and ends failed with the reason.
            error = f"delivery failed: {type(problem).__name__}: {problem}"
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
