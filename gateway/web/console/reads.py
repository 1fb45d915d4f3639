"""What the console's session pages show beyond the API's session query: message counts, the latest
message of each session, and the names of numbers and assistants, each fetched for a whole page at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from sqlalchemy import and_, func, select

from gateway.db.models import Assistant, Customer, Message, PhoneNumber, Session

if TYPE_CHECKING:
    from gateway.bootstrap import Runtime


@dataclass(frozen=True)
class SessionRow:
    session: Session
    customer: Customer | None
    number: str | None  # the business number, None for API sessions
    assistant_name: str | None
    message_count: int
    last_message: Message | None


def _lookup(tx, column, label, ids: Iterable[str | None]) -> dict[str, str]:
    wanted = {i for i in ids if i}
    if not wanted:
        return {}
    return dict(tx.execute(select(column, label).where(column.in_(wanted))).all())


def session_rows(runtime: "Runtime", pairs: list[tuple[Session, Customer | None]]) -> list[SessionRow]:
    ids = [session.id for session, _ in pairs]
    if not ids:
        return []
    with runtime.db.begin() as tx:
        stats = (
            select(Message.session_id, func.count().label("message_count"), func.max(Message.seq).label("last_seq"))
            .where(Message.session_id.in_(ids))
            .group_by(Message.session_id)
            .subquery()
        )
        counted = tx.execute(
            select(stats.c.session_id, stats.c.message_count, Message)
            .join(Message, and_(Message.session_id == stats.c.session_id, Message.seq == stats.c.last_seq))
        ).all()
        numbers = _lookup(tx, PhoneNumber.id, PhoneNumber.number, (s.phone_number_id for s, _ in pairs))
        names = _lookup(tx, Assistant.id, Assistant.name, (s.assistant_id for s, _ in pairs))
    latest = {session_id: (count, message) for session_id, count, message in counted}
    rows = []
    for session, customer in pairs:
        count, message = latest.get(session.id, (0, None))
        rows.append(SessionRow(session, customer, numbers.get(session.phone_number_id),
                               names.get(session.assistant_id), count, message))
    return rows


def session_context(runtime: "Runtime", session: Session) -> tuple[str | None, str | None]:
    """(business number, assistant name) of one session."""
    with runtime.db.begin() as tx:
        number = tx.get(PhoneNumber, session.phone_number_id) if session.phone_number_id else None
        assistant = tx.get(Assistant, session.assistant_id) if session.assistant_id else None
        return (number.number if number else None), (assistant.name if assistant else None)
