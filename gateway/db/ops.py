"""Small database operations that must be atomic on both SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column
from sqlalchemy.orm import Session as DbSession


def insert_or_ignore(
    tx: DbSession, model: type, values: dict[str, Any], conflict_on: str | list[str], returning: Column
) -> Any:
    """INSERT ... ON CONFLICT (conflict_on columns) DO NOTHING RETURNING returning.

    Returns the returned value, or None when a row with the same key exists.
    The database decides, so two transactions racing on one key cannot both
    win: the loser waits for the winner's commit and then gets None.
    """
    dialect = tx.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the gateway supports SQLite and PostgreSQL only
        raise RuntimeError(f"unsupported database {dialect}")
    statement = (
        insert(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[conflict_on] if isinstance(conflict_on, str) else conflict_on)
        .returning(returning)
    )
    return tx.execute(statement).scalar_one_or_none()


def lock_row(tx: DbSession, statement):
    """SELECT ... FOR UPDATE on PostgreSQL. SQLite's BEGIN IMMEDIATE already holds the write lock."""
    if tx.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    return tx.execute(statement)
