"""Read-back for the simulator: what became of one inbound text."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from gateway.db.models import Chat, Message, Session
from gateway.domain.timestamps import iso

if TYPE_CHECKING:
    from gateway.bootstrap import Runtime

INBOUND_DONE = ("processed", "failed")
OUTBOUND_DONE = ("sent", "delivered", "undelivered", "failed", "blocked")


def conversation_after(runtime: "Runtime", message_sid: str) -> dict | None:
    with runtime.db.begin() as tx:
        inbound = tx.scalar(select(Message).where(Message.twilio_sid == message_sid, Message.role == "user"))
        if inbound is None:
            return None
        session = tx.get(Session, inbound.session_id)
        later = list(
            tx.scalars(
                select(Message)
                .where(Message.session_id == inbound.session_id, Message.seq > inbound.seq)
                .order_by(Message.seq)
            )
        )
        # Replies to this text are the assistant messages before the next user text.
        replies = []
        for message in later:
            if message.role == "user":
                break
            replies.append(message)
        chat = tx.get(Chat, replies[0].chat_id) if replies and replies[0].chat_id else None
    done = inbound.status in INBOUND_DONE and all(r.status in OUTBOUND_DONE for r in replies)
    return {
        "done": done,
        "inbound": {
            "id": inbound.id,
            "status": inbound.status,
            "errorMessage": inbound.error_message,
            "handling": (inbound.details or {}).get("handling"),
        },
        "session": {
            "id": session.id,
            "status": session.status,
            "createdAt": iso(session.created_at),
            "firstText": inbound.seq == 1,
        },
        "turn": {"engine": chat.engine, "engineMs": chat.engine_ms, "status": chat.status} if chat else None,
        "replies": [
            {
                "id": r.id,
                "content": r.content,
                "status": r.status,
                "twilioSid": r.twilio_sid,
                "segments": r.segments,
                "encoding": r.encoding,
                "errorCode": r.error_code,
                "errorMessage": r.error_message,
                "kind": r.kind,
            }
            for r in replies
        ],
    }
