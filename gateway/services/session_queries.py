"""Reading sessions and their messages for the API, the CLI and the console."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import exists, func, or_, select

from gateway.db.models import Customer, Message, Session
from gateway.errors import NotFound

if TYPE_CHECKING:
    from gateway.bootstrap import Runtime


@dataclass(frozen=True)
class SessionFilter:
    search: str | None = None
    status: str | None = None
    assistant_id: str | None = None
    phone_number_id: str | None = None
    customer_number: str | None = None
    created_before: datetime | None = None


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filtered(query, filters: SessionFilter):
    if filters.status:
        query = query.where(Session.status == filters.status)
    if filters.assistant_id:
        query = query.where(Session.assistant_id == filters.assistant_id)
    if filters.phone_number_id:
        query = query.where(Session.phone_number_id == filters.phone_number_id)
    if filters.customer_number:
        query = query.where(Session.customer_id.in_(select(Customer.id).where(Customer.number == filters.customer_number)))
    if filters.created_before:
        query = query.where(Session.created_at < filters.created_before)
    if filters.search:
        pattern = _like(filters.search)
        in_messages = exists().where(Message.session_id == Session.id, Message.content.ilike(pattern, escape="\\"))
        query = query.where(or_(Session.name.ilike(pattern, escape="\\"), in_messages))
    return query


def list_sessions(runtime: "Runtime", filters: SessionFilter, limit: int, offset: int):
    """Newest first; returns [(session, customer)] and the total matching count."""
    with runtime.db.begin() as tx:
        total = tx.scalar(_filtered(select(func.count()).select_from(Session), filters))
        rows = tx.execute(
            _filtered(select(Session, Customer).outerjoin(Customer, Customer.id == Session.customer_id), filters)
            .order_by(Session.created_at.desc(), Session.id)
            .limit(limit)
            .offset(offset)
        ).all()
    return [(row[0], row[1]) for row in rows], total


def matching_session_ids(runtime: "Runtime", filters: SessionFilter, batch: int = 1000) -> list[str]:
    """Every id the filter matches, read in pages of ``batch`` (for bulk operations)."""
    ids: list[str] = []
    while True:
        with runtime.db.begin() as tx:
            query = _filtered(select(Session.id), filters).order_by(Session.id).limit(batch)
            if ids:
                query = query.where(Session.id > ids[-1])  # keyset paging: stable while rows are deleted
            page = list(tx.scalars(query))
        ids += page
        if len(page) < batch:
            return ids


def get_session(runtime: "Runtime", session_id: str, with_messages: bool = True):
    """(session, customer, messages in order) or NotFound."""
    with runtime.db.begin() as tx:
        session = tx.get(Session, session_id) if session_id else None
        if session is None:
            raise NotFound(f"no session with id {session_id!r}")
        customer = tx.get(Customer, session.customer_id) if session.customer_id else None
        messages = (
            list(tx.scalars(select(Message).where(Message.session_id == session_id).order_by(Message.seq)))
            if with_messages
            else None
        )
    return session, customer, messages
