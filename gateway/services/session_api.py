"""Sessions created and changed through the REST API (SPEC section 4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from gateway.db.models import Assistant, Customer, PhoneNumber, Session, new_id
from gateway.db.ops import insert_or_ignore
from gateway.domain.expiry import expires_at
from gateway.domain.templates import merge_variables, render
from gateway.errors import Conflict, InvalidField, NotFound
from gateway.schemas import SessionCreate, SessionGetOrCreate, SessionUpdate
from gateway.services import events
from gateway.services.outbound import queue_replies
from gateway.services.sessions import complete, ensure_customer, open_sms_session

if TYPE_CHECKING:
    from gateway.bootstrap import Runtime


def _overrides(data) -> dict:
    return data.model_dump(exclude_none=True) if data is not None else {}


def _existing(tx, model, object_id: str | None, field: str):
    if object_id is None:
        return None
    found = tx.get(model, object_id)
    if found is None:
        raise InvalidField(field, f"no {model.__tablename__[:-1].replace('_', ' ')} with id {object_id!r}")
    return found


def _customer(tx, customer, now) -> Customer | None:
    if customer is None:
        return None
    if customer.number is None:
        if customer.name is not None:
            # A customer is known by number; dropping the name silently would lose what the client sent.
            raise InvalidField("customer.number", "customer.number is required when a customer is given")
        return None
    customer_id = ensure_customer(tx, customer.number, now)
    row = tx.get(Customer, customer_id)
    if customer.name is not None and row.name != customer.name:
        row.name = customer.name
        row.updated_at = now
    return row


def create_session(runtime: "Runtime", data: SessionCreate) -> Session:
    now = runtime.clock.now()
    with runtime.db.begin() as tx:
        session = _create(runtime, tx, data, now)
    if session.phone_number_id is not None:
        runtime.enqueue("send_pending", session.id)  # the first message, if any, goes out by SMS
    return session


def _create(runtime: "Runtime", tx, data: SessionCreate, now, active_key: str | None = None) -> Session:
    number = _existing(tx, PhoneNumber, data.phoneNumberId, "phoneNumberId")
    assistant = _existing(tx, Assistant, data.assistantId or (number.assistant_id if number else None), "assistantId")
    if assistant is None:
        raise InvalidField("assistantId", "assistantId is required (or a phoneNumberId whose number has an assistant)")
    customer = _customer(tx, data.customer, now)
    if number is not None:
        if customer is None:
            raise InvalidField("customer.number", "customer.number is required for a session on a phone number")
        active_key = f"{number.id}:{customer.number}"
    lifetime = data.expirationSeconds or (number.session_expiration_seconds if number else runtime.settings.session_expiration)
    inactivity = number.session_inactivity_seconds if number else None
    session_id = insert_or_ignore(
        tx,
        Session,
        dict(
            id=new_id(), name=data.name, status="active", assistant_id=assistant.id,
            phone_number_id=number.id if number else None, customer_id=customer.id if customer else None,
            active_key=active_key, expiration_seconds=lifetime, inactivity_seconds=inactivity,
            expires_at=expires_at(now, lifetime, now, inactivity), last_activity_at=now,
            assistant_overrides=_overrides(data.assistantOverrides), metadata=data.metadata or {}, cost=0.0,
            engine_state={}, last_seq=0, created_at=now, updated_at=now,
        ),
        "active_key" if active_key else "id",
        Session.id,
    )
    if session_id is None:
        raise Conflict("this conversation already has an active session; use POST /api/sessions/get-or-create",
                       {"field": "customer.number"})
    session = tx.get(Session, session_id)
    events.session_event(tx, session, "session.created", now)
    _first_message(tx, session, assistant, number, customer, now)
    return session


def _first_message(tx, session: Session, assistant: Assistant, number, customer, now) -> None:
    """The assistant's firstMessage opens a session created through the API (an SMS session's customer spoke first)."""
    variables = merge_variables(
        (session.assistant_overrides or {}).get("variableValues"),
        assistant.variable_values,
        {"customer.number": customer.number if customer else None, "customer.name": customer.name if customer else None,
         "phoneNumber.number": number.number if number else None, "now": now.isoformat(timespec="seconds")},
    )
    text = render(assistant.first_message, variables)
    if text:
        queue_replies(tx, session, [text], "first", None, now)


def update_session(runtime: "Runtime", session_id: str, data: SessionUpdate) -> Session:
    now = runtime.clock.now()
    given = data.model_fields_set
    with runtime.db.begin() as tx:
        # Locked as read: a text committing meanwhile moves last_activity_at (and expires_at), and the sweep or an
        # end may complete the session; from an earlier read this would compute expiresAt from stale activity
        # and write it over the text's, or report the session active after it was completed.
        session = _get(tx, session_id, lock=True)
        if data.status == "active" and session.status == "completed":
            raise Conflict("a completed session cannot be made active again; create a new session")
        if "name" in given:
            session.name = data.name
        if "metadata" in given:
            session.metadata_ = data.metadata or {}
        if "assistantOverrides" in given:
            session.assistant_overrides = _overrides(data.assistantOverrides)
        if "expirationSeconds" in given and data.expirationSeconds is not None:
            session.expiration_seconds = data.expirationSeconds
            session.expires_at = expires_at(session.created_at, data.expirationSeconds, session.last_activity_at,
                                            session.inactivity_seconds)
        session.updated_at = now
        tx.flush()
        ends = data.status == "completed" or (session.status == "active" and session.expires_at <= now)
        if not (ends and complete(tx, session.id, now)):  # complete() reports session.updated itself
            events.session_event(tx, session, "session.updated", now)
        tx.refresh(session)
    return session


def delete_sessions(runtime: "Runtime", session_ids: list[str]) -> int:
    """Delete sessions with their messages and chats; unknown ids are skipped. Returns how many went."""
    now = runtime.clock.now()
    with runtime.db.begin() as tx:
        sessions = list(tx.scalars(select(Session).where(Session.id.in_(set(session_ids)))))
        for session in sessions:
            events.session_event(tx, session, "session.deleted", now)
        if sessions:
            tx.execute(delete(Session).where(Session.id.in_([s.id for s in sessions])))
    return len(sessions)


def _get_or_open_on_number(runtime: "Runtime", data: SessionGetOrCreate) -> tuple[Session, bool]:
    """That number's SMS session with the customer, opened if there is none (the same key texts use)."""
    now = runtime.clock.now()
    with runtime.db.begin() as tx:
        _existing(tx, Assistant, data.assistantId, "assistantId")
        number = _existing(tx, PhoneNumber, data.phoneNumberId, "phoneNumberId")
        customer = _customer(tx, data.customer, now)
        opened = open_sms_session(tx, number, customer.id, customer.number, now)
        if opened.created and opened.session.assistant_id:
            # Opened through the API, not by a text: it starts with the firstMessage, like POST /api/sessions.
            _first_message(tx, opened.session, tx.get(Assistant, opened.session.assistant_id), number, customer, now)
    if opened.created:
        runtime.enqueue("send_pending", opened.session.id)  # the first message goes out by SMS
    return opened.session, opened.created


def delete_session(runtime: "Runtime", session_id: str) -> None:
    if delete_sessions(runtime, [session_id]) == 0:
        raise NotFound(f"no session with id {session_id!r}")


def get_or_create(runtime: "Runtime", data: SessionGetOrCreate) -> tuple[Session, bool]:
    """The customer's active session with this assistant (or on this number), or a new one; (session, created)."""
    if data.phoneNumberId is not None:
        return _get_or_open_on_number(runtime, data)
    now = runtime.clock.now()
    with runtime.db.begin() as tx:
        assistant = _existing(tx, Assistant, data.assistantId, "assistantId")
        customer = _customer(tx, data.customer, now)
        found = _active_api_session(tx, assistant.id, customer.id, now)
        if found is not None:
            return found, False
        # The key makes concurrent get-or-create calls agree on one session.
        key = f"api:{assistant.id}:{customer.number}"
        try:
            create = SessionCreate(assistantId=assistant.id, customer={"number": customer.number})
            return _create(runtime, tx, create, now, active_key=key), True
        except Conflict:
            pass
    with runtime.db.begin() as tx:
        return tx.scalar(select(Session).where(Session.active_key == key)), False


def _active_api_session(tx, assistant_id: str, customer_id: str, now) -> Session | None:
    candidates = tx.scalars(
        select(Session)
        .where(Session.assistant_id == assistant_id, Session.customer_id == customer_id,
               Session.phone_number_id.is_(None), Session.status == "active")
        .order_by(Session.created_at.desc())
    )
    for session in candidates:
        if session.expires_at > now:
            return session
        complete(tx, session.id, now)
    return None


def _get(tx, session_id: str, lock: bool = False) -> Session:
    session = tx.get(Session, session_id, with_for_update=lock) if session_id else None
    if session is None:
        raise NotFound(f"no session with id {session_id!r}")
    return session

