"""Small database operations that must be atomic on both SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Column, Connection, Integer, bindparam, literal, literal_column, select, text, union_all
from sqlalchemy.orm import Session as DbSession, make_transient_to_detached

from gateway.db.driver import DriverStatement


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
    # Several rows on PostgreSQL travel as one JSON parameter (see json_rows_insert).
    as_json = dialect == "postgresql" and len(rows) > 1
    # Keyed by names only: SQLAlchemy columns overload ==, so they make poor dict keys.
    shape = (dialect, model, tuple(rows[0]), conflict, returning.key, as_json)
    statement = _STATEMENTS.get(shape)
    if statement is None:
        build = json_rows_insert if as_json else _insert_statement
        statement = _STATEMENTS[shape] = build(dialect, model, tuple(rows[0]), conflict, returning)
    # A Core statement does not autoflush; rows added earlier in this transaction
    # (that this one may reference) must reach the database first, as with the ORM.
    tx.flush()
    if as_json:
        parameters: Any = {"rows": json_rows(model, rows)}
    else:
        # Several rows (on SQLite) go out as one multi-row INSERT: SQLAlchemy's "insertmanyvalues".
        parameters = rows if len(rows) > 1 else rows[0]
    # On the connection, not the ORM session: a Core INSERT needs none of the ORM's execute machinery.
    return list(tx.connection().execute(statement, parameters).scalars())


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
    keys = {column_of(model, name): bindparam(name) for name in columns}
    return insert(target).values(keys).on_conflict_do_nothing(index_elements=list(conflict)).returning(returning)


def json_rows_insert(dialect: str, model: type, columns: tuple[str, ...], conflict: tuple[str, ...], returning: Any,
                      parameter: str = "rows"):
    """INSERT ... SELECT FROM json_populate_recordset(NULL::table, :rows) ON CONFLICT DO NOTHING RETURNING.

    A multi-row VALUES list carries one parameter per value, and psycopg parses
    (rather than caches) any statement with more than 50 of them: with the 24
    columns of a session, that parsing cost more than the rest of the insert.
    One JSON array of rows is one parameter, the statement's text never changes,
    and PostgreSQL converts each field to its column's type.
    """
    from sqlalchemy.dialects.postgresql import insert

    table = model.__table__
    names = [column_of(model, name).name for name in columns]
    rows = text(f"json_populate_recordset(NULL::{table.name}, CAST(:{parameter} AS json)) AS rows")
    source = select(*(literal_column(f'rows."{name}"') for name in names)).select_from(rows)
    statement = insert(table).from_select(names, source)
    if conflict:
        statement = statement.on_conflict_do_nothing(index_elements=list(conflict))
    return statement.returning(returning)


def insert_together(
    tx: DbSession | Connection, parts: list[tuple[type, list[dict[str, Any]], str | None, Column]]
) -> list[list[Any]]:
    """``insert_many_or_ignore`` for several tables in one statement (PostgreSQL only): for each part
    (model, rows, conflict column, returning column), the returned values of its rows inserted.
    A part without a conflict column is a plain INSERT: a row whose key exists fails the statement.
    ``tx`` is an ORM transaction or a connection (in autocommit, the statement is atomic by itself).

    Each part is a data-modifying CTE over its JSON rows; the statement reads
    them in the order given, so rows lock their keys table by table, in the
    order of the parts, as the separate statements would. Foreign keys are
    checked at the end of the statement: a row may refer to a row of an
    earlier part. When an earlier part's row was skipped (its key existed),
    the rows referring to it fail that check and the statement raises; the
    caller then takes the one-statement-per-table way, which sees who won.
    """
    present = [(index, part) for index, part in enumerate(parts) if part[1]]
    inserted: list[list[Any]] = [[] for _ in parts]
    if not present:
        return inserted
    shape = ("together", *((model, tuple(rows[0]), conflict, returning.key) for _, (model, rows, conflict, returning)
                           in present))
    statement = _STATEMENTS.get(shape)
    if statement is None:
        statement = _STATEMENTS[shape] = _together_statement([part for _, part in present])
    if isinstance(tx, DbSession):
        tx.flush()  # as in insert_many_or_ignore: rows added earlier in this transaction go first
        tx = tx.connection()
    parameters = {f"rows{position}": json_rows(model, rows) for position, (_, (model, rows, _, _)) in enumerate(present)}
    for position, value in tx.execute(statement, parameters):
        inserted[present[position][0]].append(value)
    return inserted


def _together_statement(parts):
    selects = []
    for index, (model, rows, conflict, returning) in enumerate(parts):
        insert = json_rows_insert("postgresql", model, tuple(rows[0]), (conflict,) if conflict else (), returning,
                                   f"rows{index}")
        inserted = insert.cte(f"inserted{index}")
        selects.append(select(literal(index, Integer).label("part"), inserted.c[returning.key].label("value")))
    return union_all(*selects)


def json_rows(model: type, rows: list[dict[str, Any]]) -> str:
    """The rows as one JSON array, keyed by column name (rows may use attribute names such as ``metadata_``)."""
    names = _column_names(model, tuple(rows[0]))
    return json.dumps([{name: row[key] for name, key in names} for row in rows], default=json_value,
                      ensure_ascii=False)


@functools.lru_cache(maxsize=256)
def _column_names(model: type, keys: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(column name, key) per key: looked up once per shape of row, as the webhook writes the same few shapes."""
    return tuple((column_of(model, key).name, key) for key in keys)


def json_value(value: Any) -> Any:
    """What a column value becomes inside JSON rows (``json.dumps`` default): UTC datetimes as UTCDateTime
    stores them on PostgreSQL."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a JSON row")


def as_persistent(tx: DbSession, model: type, values: dict[str, Any]):
    """The row just inserted with ``values`` (attribute names) as an ORM object, without reading it back."""
    row = model(**values)
    make_transient_to_detached(row)
    tx.add(row)
    return row


def column_of(model: type, name: str):
    """The column behind an attribute name (``metadata_``) or a column name (``metadata``)."""
    attribute = model.__mapper__.attrs.get(name)
    return attribute.columns[0] if attribute is not None else model.__table__.c[name]


def lock_rows(tx: DbSession, statement, parameters: dict | None = None, *, skip_locked: bool = False):
    """SELECT ... FOR UPDATE [SKIP LOCKED] on PostgreSQL: the rows, locked until commit, leaving out
    (with ``skip_locked``) those another transaction holds. SQLite's BEGIN IMMEDIATE already holds
    the write lock of the whole database. ``statement`` may be a LockingSelect, built once."""
    postgres = tx.get_bind().dialect.name == "postgresql"
    if isinstance(statement, LockingSelect):
        statement = statement.locking if postgres else statement.plain
    elif postgres:
        statement = statement.with_for_update(skip_locked=skip_locked)
    return tx.execute(statement, parameters)


class LockingSelect:
    """A SELECT for lock_rows built once in both forms, for a hot path: deriving the FOR UPDATE form
    per call would cost a new statement and cache key each time."""

    def __init__(self, statement, *, skip_locked: bool = False):
        self.plain = statement
        self.locking = statement.with_for_update(skip_locked=skip_locked)


def autocommit(engine) -> Connection:
    """A pooled connection in autocommit mode (PostgreSQL): each statement commits by itself, with no
    BEGIN or COMMIT round trip. Use it as a context manager; it goes back to the pool as it came."""
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def execute_alone(engine, statement, parameters: dict | None = None) -> int:
    """Run one writing statement as a transaction of its own; the number of rows it matched.

    On PostgreSQL in autocommit mode: one statement is atomic by itself, and it then costs one
    round trip instead of three (BEGIN, the statement, COMMIT). SQLite takes its usual
    transaction, whose BEGIN IMMEDIATE takes the write lock (see engine.py).
    """
    if engine.dialect.name == "postgresql":
        with autocommit(engine) as connection:
            driver = driver_statement(statement, connection.dialect, tuple(sorted(parameters or ())))
            if driver is not None:
                return driver.rowcount(connection, parameters or {})
            return connection.execute(statement, parameters).rowcount
    with engine.begin() as connection:
        return connection.execute(statement, parameters).rowcount


def read_rows(engine, statement, parameters: dict | None = None) -> list:
    """The rows of one SELECT, read outside any ORM session.

    On PostgreSQL in autocommit mode: one statement is a consistent snapshot by itself, and it then
    costs one round trip instead of three (BEGIN, the SELECT, COMMIT). The workers' loops run such
    checks several times per text. SQLite reads in its usual transaction (see engine.py).
    """
    if engine.dialect.name == "postgresql":
        with autocommit(engine) as connection:
            driver = driver_statement(statement, connection.dialect, tuple(sorted(parameters or ())))
            if driver is not None:
                return driver.rows(connection, parameters or {})
            return connection.execute(statement, parameters).all()
    with engine.begin() as connection:
        return connection.execute(statement, parameters).all()


def rows_in(tx: DbSession, statement, parameters: dict) -> list:
    """``tx.execute(statement, parameters).all()`` in the ORM transaction ``tx``, on the driver's cursor when
    it can run the statement (PostgreSQL; see driver_statement): rows with the selected columns as attributes.

    For statements built once (module constants): each is compiled once per process. Changes pending in
    ``tx`` are flushed first, as ``tx.execute`` would.
    """
    driver, connection = _driver_in(tx, statement, parameters)
    if driver is None:
        return tx.execute(statement, parameters).all()
    return driver.rows(connection, parameters)


def rowcount_in(tx: DbSession, statement, parameters: dict) -> int:
    """``tx.execute(statement, parameters).rowcount``, on the driver's cursor when it can (see rows_in)."""
    driver, connection = _driver_in(tx, statement, parameters)
    if driver is None:
        return tx.execute(statement, parameters).rowcount
    return driver.rowcount(connection, parameters)


def _driver_in(tx: DbSession, statement, parameters: dict):
    connection = tx.connection()  # the transaction's, begun by SQLAlchemy (it commits or rolls back)
    if connection.dialect.name != "postgresql":
        return None, connection
    driver = driver_statement(statement, connection.dialect, tuple(sorted(parameters)))
    if driver is not None and tx.autoflush:
        tx.flush()
    return driver, connection


@functools.lru_cache(maxsize=256)
def driver_statement(statement, dialect, parameter_names: tuple[str, ...]) -> DriverStatement | None:
    """``statement`` run on the driver's cursor (see gateway.db.driver), compiled once for the parameters
    it is given (as SQLAlchemy compiles an INSERT or UPDATE); None when only SQLAlchemy's execution can
    run it (parameters rendered at execution time, defaults computed in Python).

    The workers' statements are built once at import, so each is compiled once per process.
    """
    try:
        return DriverStatement(statement, dialect, parameter_names)
    except ValueError:
        return None
