"""Opt-out state per (customer, business number) (SPEC 6.9)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession

from gateway.db.models import OptOut
from gateway.db.ops import insert_or_ignore


def is_opted_out(tx: DbSession, customer_id: str | None, phone_number_id: str | None) -> bool:
    if not customer_id or not phone_number_id:
        return False
    found = tx.scalar(
        select(OptOut.customer_id).where(OptOut.customer_id == customer_id, OptOut.phone_number_id == phone_number_id)
    )
    return found is not None


def opt_out(tx: DbSession, customer_id: str, phone_number_id: str, source: str, now: datetime) -> None:
    """Record the opt-out; repeating it keeps the first record (and its source)."""
    insert_or_ignore(
        tx,
        OptOut,
        dict(customer_id=customer_id, phone_number_id=phone_number_id, source=source, created_at=now),
        ["customer_id", "phone_number_id"],
        OptOut.customer_id,
    )


def opt_in(tx: DbSession, customer_id: str, phone_number_id: str) -> None:
    tx.execute(delete(OptOut).where(OptOut.customer_id == customer_id, OptOut.phone_number_id == phone_number_id))
