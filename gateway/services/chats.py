"""API chats: one turn answered inline (SPEC section 4, "Chats").

A chat takes the session's turn lane like an SMS turn does, so an API chat
and an SMS text of the same session never reach the engine at once, and the
same code (history, variables, retries, fallback) answers both.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select

from gateway.db.models import Chat, Message, Session, new_id
from gateway.errors import Conflict, EngineFailed, InvalidField, NotFound
from gateway.schemas import ChatCreate, SessionCreate
from gateway.services import events
from gateway.services.leases import Lease
from gateway.services.session_api import create_session
from gateway.services.sessions import SessionEnded, complete, next_seqs
from gateway.services.turns import Batch, answer

if TYPE_CHECKING:
    from gateway.bootstrap import Runtime

LANE_POLL = 0.05
COMPLETED = "this session is completed; create a new session (POST /api/sessions) to keep chatting"
NO_ASSISTANT = "this session has no assistant (it was deleted); create a new session with an assistant to keep chatting"


def create_chat(runtime: "Runtime", data: ChatCreate) -> Chat:
    if (data.sessionId is None) == (data.assistantId is None):
        raise InvalidField("sessionId", "give either sessionId (an existing session) or assistantId (a new one)")
    if data.sessionId is None:
        session_id = create_session(runtime, SessionCreate(assistantId=data.assistantId)).id
    else:
        session_id = data.sessionId
        _check_open(runtime, session_id)

    lease = _take_lane(runtime, session_id)
    try:
        expired = False
        with runtime.db.begin() as tx:
            session = tx.get(Session, session_id)
            if session is None:
                raise NotFound(f"no session with id {session_id!r}")
            if session.status != "active":
                raise Conflict(COMPLETED)
            now = runtime.clock.now()
            if session.expires_at <= now:
                # It expired while the chat waited for the lane (a turn may hold it for a long engine call):
                # completed, as _check_open would have, and refused once that is committed. Taken in, the text
                # would land in an expired session, and with inactivity set its activity would revive it.
                complete(tx, session_id, now)
                expired = True
            else:
                try:
                    (seq,) = next_seqs(tx, session, 1, now, only_active=True)
                except SessionEnded:
                    raise Conflict(COMPLETED) from None  # ended since it was read
                message = Message(
                    id=new_id(), session_id=session_id, seq=seq, role="user", content=data.input, media=[],
                    channel="api", status="received", details={}, attempts=0, throttled=0, slot_reserved=False,
                    created_at=now, updated_at=now,
                )
                tx.add(message)
        if expired:
            raise Conflict(COMPLETED)
        overrides = data.assistantOverrides.model_dump(exclude_none=True) if data.assistantOverrides else None
        chat_id = answer(runtime, lease, Batch([message], overrides))
    finally:
        lease.release()
    # SMS texts of this session that arrived while the chat held the lane.
    runtime.enqueue("process_turns", session_id)

    with runtime.db.begin() as tx:
        chat = tx.get(Chat, chat_id) if chat_id else None
    if chat is None or (chat.status == "failed" and not chat.output):
        reason = chat.error_message if chat else "the engine did not answer"
        raise EngineFailed(f"the engine could not answer: {reason}", {"chatId": chat.id if chat else None})
    return chat


def _check_open(runtime: "Runtime", session_id: str) -> None:
    """409 for a completed or expired session (an expired one is completed on the spot)."""
    now = runtime.clock.now()
    with runtime.db.begin() as tx:
        session = tx.get(Session, session_id) if session_id else None
        if session is None:
            raise NotFound(f"no session with id {session_id!r}")
        if session.status == "active" and session.expires_at <= now:
            complete(tx, session_id, now)
            session.status = "completed"
    if session.status != "active":
        raise Conflict(COMPLETED)
    if session.assistant_id is None:
        # Nothing could answer: refuse before storing a text no engine will ever see.
        raise Conflict(NO_ASSISTANT)


def _take_lane(runtime: "Runtime", session_id: str) -> Lease:
    """Wait for the session's turn lane (another turn may be with the engine), up to one lease period."""
    lease = Lease(runtime, session_id, "turn")
    deadline = time.monotonic() + runtime.settings.lease_seconds
    while not lease.acquire():
        if time.monotonic() > deadline:
            raise Conflict("another turn of this session is still in progress; try again shortly")
        time.sleep(LANE_POLL)
    return lease


def list_chats(runtime: "Runtime", session_id: str | None, limit: int, offset: int) -> tuple[list[Chat], int]:
    def filtered(query):
        return query.where(Chat.session_id == session_id) if session_id else query

    with runtime.db.begin() as tx:
        total = tx.scalar(filtered(select(func.count()).select_from(Chat)))
        rows = list(tx.scalars(filtered(select(Chat)).order_by(Chat.created_at.desc(), Chat.id).limit(limit).offset(offset)))
    return rows, total


def delete_chat(runtime: "Runtime", chat_id: str) -> Chat:
    """Delete the chat record (the transcript's messages stay: they are what the customer saw)."""
    now = runtime.clock.now()
    with runtime.db.begin() as tx:
        chat = tx.get(Chat, chat_id) if chat_id else None
        if chat is None:
            raise NotFound(f"no chat with id {chat_id!r}")
        session = tx.get(Session, chat.session_id)
        events.chat_event(tx, chat, session.assistant_id if session else None, "chat.deleted", now)
        tx.execute(delete(Chat).where(Chat.id == chat_id))
    return chat


def list_messages(runtime: "Runtime", session_id: str | None, status: str | None, limit: int, offset: int):
    def filtered(query):
        if session_id:
            query = query.where(Message.session_id == session_id)
        if status:
            query = query.where(Message.status == status)
        return query

    with runtime.db.begin() as tx:
        total = tx.scalar(filtered(select(func.count()).select_from(Message)))
        rows = list(
            tx.scalars(filtered(select(Message)).order_by(Message.created_at.desc(), Message.seq.desc()).limit(limit).offset(offset))
        )
    return rows, total
