"""Opening, touching and completing sessions (SPEC 6.1, 6.2)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session as DbSession

from gateway.db.models import Customer, PhoneNumber, Session
from gateway.db.ops import as_persistent, insert_or_ignore
from gateway.domain.expiry import expires_at
from gateway.services import events

log = logging.getLogger("gateway.sessions")


@dataclass(frozen=True)
class Opened:
    session: Session
    created: bool
    completed_id: str | None  # the expired session this text closed, if any
    seqs: tuple[int, ...] = ()  # message positions reserved for the caller


# "Not looked up yet", as opposed to None: "looked up, there is no active session".
UNKNOWN = object()


def conversation_key(phone_number_id: str, customer_number: str) -> str:
    return f"{phone_number_id}:{customer_number}"


def ensure_customer(tx: DbSession, number: str, now: datetime) -> str:
    values = dict(id=_new_id(), number=number, created_at=now, updated_at=now)
    customer_id = insert_or_ignore(tx, Customer, values, "number", Customer.id)
    if customer_id is None:
        customer_id = tx.scalar(select(Customer.id).where(Customer.number == number))
    return customer_id


def open_sms_session(
    tx: DbSession, number: PhoneNumber, customer_id: str, customer_number: str, now: datetime, *,
    active=UNKNOWN, reserve: int = 0,
) -> Opened:
    """The active session of this conversation, or a new one, with ``reserve`` message positions taken.

    An expired session found here is completed first. Creation is an
    INSERT ... ON CONFLICT on the conversation's active key, so when many
    first texts race, one insert wins and the others read the winner's row.
    ``active`` is the conversation's active session when the caller has
    already read it (the webhook reads it with the number, in one query).
    """
    key = conversation_key(number.id, customer_number)
    completed_id = None
    for _ in range(3):
        session = tx.scalar(select(Session).where(Session.active_key == key)) if active is UNKNOWN else active
        active = UNKNOWN
        if session is not None and session.expires_at > now:
            return Opened(session, False, completed_id, tuple(next_seqs(tx, session, reserve, now)) if reserve else ())
        if session is not None:
            if complete(tx, session.id, now):
                completed_id = session.id
        values = dict(
            id=_new_id(),
            name=customer_number,
            status="active",
            assistant_id=number.assistant_id,
            phone_number_id=number.id,
            customer_id=customer_id,
            active_key=key,
            expiration_seconds=number.session_expiration_seconds,
            inactivity_seconds=number.session_inactivity_seconds,
            expires_at=expires_at(now, number.session_expiration_seconds, now, number.session_inactivity_seconds),
            last_activity_at=now,
            assistant_overrides={},
            metadata_={},
            cost=0.0,
            engine_state={},
            # A new row is invisible to others until commit: its first positions need no lock.
            last_seq=reserve,
            turn_lease_token=None,
            turn_lease_until=None,
            send_lease_token=None,
            send_lease_until=None,
            completed_at=None,
            created_at=now,
            updated_at=now,
        )
        if insert_or_ignore(tx, Session, values, "active_key", Session.id) is not None:
            created = as_persistent(tx, Session, values)
            events.session_event(tx, created, "session.created", now)
            return Opened(created, True, completed_id, tuple(range(1, reserve + 1)))
    raise RuntimeError(f"could not open a session for conversation {key}")


def complete(tx: DbSession, session_id: str, now: datetime) -> bool:
    """Mark a session completed; False if it already was. Completed sessions never reopen."""
    result = tx.execute(
        update(Session)
        .where(Session.id == session_id, Session.status == "active")
        .values(status="completed", active_key=None, completed_at=now, updated_at=now)
    )
    if result.rowcount != 1:
        return False
    session = tx.get(Session, session_id)
    tx.refresh(session)
    events.session_event(tx, session, "session.updated", now)
    return True


def next_seqs(tx: DbSession, session: Session, count: int, now: datetime) -> list[int]:
    """Reserve the session's next message positions and record the activity.

    The UPDATE takes the session's row lock until commit, so positions are
    handed out in commit order: a turn can never see position n+1 committed
    while n is still in flight (SPEC 6.3).
    """
    new_expiry = expires_at(session.created_at, session.expiration_seconds, now, session.inactivity_seconds)
    last = tx.execute(
        update(Session)
        .where(Session.id == session.id)
        .values(
            last_seq=Session.last_seq + count,
            last_activity_at=now,
            expires_at=new_expiry if session.status == "active" else Session.expires_at,
            updated_at=now,
        )
        .returning(Session.last_seq)
    ).scalar_one()
    return list(range(last - count + 1, last + 1))


def _new_id() -> str:
    from gateway.db.models import new_id

    return new_id()


def end_session(runtime, session_id: str) -> tuple[Session, bool]:
    """Complete a session by hand; ending a completed one changes nothing. Returns (session, changed)."""
    from gateway.errors import NotFound

    now = runtime.clock.now()
    with runtime.db.begin() as tx:
        session = tx.get(Session, session_id) if session_id else None
        if session is None:
            raise NotFound(f"no session with id {session_id!r}")
        changed = complete(tx, session_id, now)
        tx.refresh(session)
    if changed:
        log.info("event=session.completed session=%s reason=ended", session_id)
    return session, changed
