"""Small database operations that must be atomic on both SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, bindparam
from sqlalchemy.orm import Session as DbSession, make_transient_to_detached


def insert_or_ignore(
    tx: DbSession, model: type, values: dict[str, Any], conflict_on: str | list[str], returning: Column
) -> Any:
    """INSERT ... ON CONFLICT (conflict_on columns) DO NOTHING RETURNING returning.

    Returns the returned value, or None when a row with the same key exists.
    The database decides, so two transactions racing on one key cannot both
    win: the loser waits for the winner's commit and then gets None.
    """
    inserted = insert_many_or_ignore(tx, model, [values], conflict_on, returning)
    return inserted[0] if inserted else None


def insert_many_or_ignore(
    tx: DbSession, model: type, rows: list[dict[str, Any]], conflict_on: str | list[str], returning: Column
) -> list[Any]:
    """``insert_or_ignore`` for many rows of one shape in one statement: the returned values of the rows inserted.

    A row whose key exists already, or appeared earlier in ``rows``, is skipped.
    Callers that insert under unique keys from several transactions at once
    pass ``rows`` sorted by that key: rows lock their keys in order, and two
    transactions that lock in the same order cannot deadlock.
    """
    if not rows:
        return []
    conflict = (conflict_on,) if isinstance(conflict_on, str) else tuple(conflict_on)
    dialect = tx.get_bind().dialect.name
    # Keyed by names only: SQLAlchemy columns overload ==, so they make poor dict keys.
    shape = (dialect, model, tuple(rows[0]), conflict, returning.key)
    statement = _STATEMENTS.get(shape)
    if statement is None:
        statement = _STATEMENTS[shape] = _insert_statement(dialect, model, tuple(rows[0]), conflict, returning)
    # A Core statement does not autoflush; rows added earlier in this transaction
    # (that this one may reference) must reach the database first, as with the ORM.
    tx.flush()
    # Several rows go out as one multi-row INSERT (SQLAlchemy's "insertmanyvalues").
    # On the connection, not the ORM session: a Core INSERT needs none of the ORM's execute machinery.
    return list(tx.connection().execute(statement, rows if len(rows) > 1 else rows[0]).scalars())


# Built once per shape with bound parameters: the webhook runs these on every text,
# and a reused statement object keeps its compiled form and cache key.
_STATEMENTS: dict[tuple, Any] = {}


def _insert_statement(dialect: str, model: type, columns: tuple[str, ...], conflict: tuple[str, ...], returning: Any):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the gateway supports SQLite and PostgreSQL only
        raise RuntimeError(f"unsupported database {dialect}")
    # The table, not the mapped class: a Core INSERT skips the ORM's bulk-insert bookkeeping,
    # which costs more than the statement itself.
    target = model.__table__
    # Unnamed-typed parameters take each column's type (JSON, UTC datetimes) from the VALUES clause.
    keys = {_column(model, name): bindparam(name) for name in columns}
    return insert(target).values(keys).on_conflict_do_nothing(index_elements=list(conflict)).returning(returning)


def as_persistent(tx: DbSession, model: type, values: dict[str, Any]):
    """The row just inserted with ``values`` (attribute names) as an ORM object, without reading it back."""
    row = model(**values)
    make_transient_to_detached(row)
    tx.add(row)
    return row


def _column(model: type, name: str):
    """The column behind an attribute name (``metadata_``) or a column name (``metadata``)."""
    attribute = model.__mapper__.attrs.get(name)
    return attribute.columns[0] if attribute is not None else model.__table__.c[name]


def lock_row(tx: DbSession, statement):
    """SELECT ... FOR UPDATE on PostgreSQL. SQLite's BEGIN IMMEDIATE already holds the write lock."""
    if tx.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    return tx.execute(statement)
