"""gateway.db.driver.DriverStatement: SQLAlchemy's statement on psycopg's cursor, with what the execution
layer did kept: types both ways, statement listeners, wrapped errors, broken connections invalidated,
row counts; and the workers' helpers (gateway.db.ops read_rows, execute_alone) that run on it."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
from sqlalchemy import (
    Column, Float, Integer, MetaData, Numeric, String, Table, bindparam, cast, create_engine, event, exc, literal, select,
    text, update,
)

from gateway.db.driver import DriverStatement
from gateway.db.models import UTCDateTime
from gateway.db.ops import autocommit, driver_statement, execute_alone, read_rows, rowcount_in, rows_in

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(postgres_url):
    engine = create_engine(postgres_url, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def test_rows_come_back_as_execute_gives_them(engine):
    """Bound and selected types convert as in SQLAlchemy's execution, and constants bound in the statement
    itself (here the literal ':' SQLAlchemy binds) go along."""
    moment = datetime(2026, 12, 2, 13, 5, 7, 123456, tzinfo=timezone.utc)
    when = bindparam("when", type_=UTCDateTime())
    statement = select(
        bindparam("n", type_=Integer).label("n"),
        (bindparam("a", type_=String) + literal(":") + bindparam("b", type_=String)).label("joined"),
        when.label("at"),
    )
    parameters = {"n": 7, "a": "x", "b": "y", "when": moment}
    with autocommit(engine) as connection:
        expected = connection.execute(statement, parameters).all()
        rows = DriverStatement(statement, engine.dialect).rows(connection, parameters)
    assert [tuple(row) for row in rows] == [tuple(row) for row in expected] == [(7, "x:y", moment)]
    assert rows[0].at.tzinfo is not None and rows[0].joined == "x:y"


def test_text_statements_give_plain_tuples(engine):
    statement = text("SELECT 1, CAST(:word AS varchar) UNION ALL SELECT 2, 'b'")
    with autocommit(engine) as connection:
        assert DriverStatement(statement, engine.dialect).rows(connection, {"word": "a"}) == [(1, "a"), (2, "b")]


def test_listeners_see_each_statement(engine):
    seen = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, sql, params, *_: seen.append((sql, params)))
    statement = DriverStatement(text("SELECT CAST(:x AS integer)"), engine.dialect)
    with autocommit(engine) as connection:
        statement.rows(connection, {"x": 3})
    assert seen == [(statement.sql, {"x": 3})]


def test_driver_errors_arrive_as_sqlalchemy_errors_and_the_connection_stays_usable(engine):
    """A unique violation is SQLAlchemy's IntegrityError with psycopg's error (and its SQLSTATE) as orig."""
    insert = DriverStatement(text("INSERT INTO t_driver (k) VALUES (CAST(:k AS integer)) RETURNING k"),
                             engine.dialect)
    with autocommit(engine) as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS t_driver (k int PRIMARY KEY)"))
        try:
            assert insert.rows(connection, {"k": 1}) == [(1,)]
            with pytest.raises(exc.IntegrityError) as raised:
                insert.rows(connection, {"k": 1})
            assert raised.value.orig.sqlstate == "23505"
            assert not raised.value.connection_invalidated
            assert insert.rows(connection, {"k": 2}) == [(2,)]  # autocommit: nothing left aborted
        finally:
            connection.execute(text("DROP TABLE t_driver"))


def test_a_broken_connection_is_invalidated_not_handed_out_again(engine):
    """The server ends the backend of the pool's one idle connection: the next statement on it fails as a
    disconnect, the pool drops that connection, and the next checkout opens a working one."""
    statement = DriverStatement(text("SELECT pg_backend_pid()"), engine.dialect)
    with autocommit(engine) as connection:
        (victim,) = statement.rows(connection, {})[0]
    killer_engine = create_engine(engine.url)
    with autocommit(killer_engine) as killer:
        killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
    killer_engine.dispose()
    with autocommit(engine) as connection:
        with pytest.raises(exc.DBAPIError) as raised:
            statement.rows(connection, {})
        assert raised.value.connection_invalidated
    with autocommit(engine) as connection:
        (pid,) = statement.rows(connection, {})[0]
    assert pid != victim


def test_other_paramstyles_are_refused():
    with pytest.raises(ValueError, match="named parameters"):
        DriverStatement(text("SELECT 1"), create_engine("sqlite://").dialect)


def test_a_connection_inside_a_transaction_is_refused(engine):
    """SQLAlchemy would not know the driver began a transaction, and could drop its writes: refused."""
    with engine.connect() as connection:
        with pytest.raises(RuntimeError, match="autocommit"):
            DriverStatement(text("SELECT 1"), engine.dialect).rows(connection, {})


@pytest.fixture
def tables(engine):
    """Tables of the test's own: one plain, one with a column whose default on UPDATE is computed in Python."""
    metadata = MetaData()
    plain = Table("t_driver_plain", metadata, Column("k", Integer, primary_key=True), Column("amount", Numeric(8, 2)),
                  Column("note", String(20)))
    stamped = Table("t_driver_stamped", metadata, Column("k", Integer, primary_key=True), Column("note", String(20)),
                    Column("stamp", String(40), onupdate=lambda: "changed"))
    metadata.create_all(engine)
    yield plain, stamped
    metadata.drop_all(engine)


def test_an_update_gives_its_rowcount_and_is_compiled_for_the_parameters_given(engine, tables):
    """As SQLAlchemy's execution does, an UPDATE without values() sets the columns its parameters name."""
    plain, _ = tables
    with autocommit(engine) as connection:
        connection.execute(plain.insert(), [{"k": 1, "note": "a"}, {"k": 2, "note": "b"}])
        statement = DriverStatement(update(plain).where(plain.c.k >= bindparam("lowest")), engine.dialect,
                                    ("lowest", "note"))
        assert statement.rowcount(connection, {"lowest": 2, "note": "z"}) == 1
        assert statement.rowcount(connection, {"lowest": 3, "note": "y"}) == 0
        assert connection.execute(select(plain.c.k, plain.c.note).order_by(plain.c.k)).all() == [(1, "a"), (2, "z")]


def test_numeric_results_convert_as_execute_converts_them(engine, tables):
    """A numeric's conversion depends on the type the server sent: read from the result's description."""
    plain, _ = tables
    as_float = select(plain.c.k, cast(plain.c.amount, Float).label("amount"), plain.c.amount.label("exact"))
    with autocommit(engine) as connection:
        connection.execute(plain.insert(), {"k": 1, "amount": Decimal("2.50")})
        expected = connection.execute(as_float).all()
        rows = DriverStatement(as_float, engine.dialect).rows(connection, {})
    assert [tuple(row) for row in rows] == [tuple(row) for row in expected] == [(1, 2.5, Decimal("2.50"))]
    assert isinstance(rows[0].amount, float) and isinstance(rows[0].exact, Decimal)


def test_statements_only_sqlalchemys_execution_can_run_are_refused(engine, tables):
    """Parameters expanded at execution time (IN lists) and defaults computed in Python (``onupdate``)."""
    plain, stamped = tables
    with pytest.raises(ValueError, match="rendered at execution time"):
        DriverStatement(select(plain.c.k).where(plain.c.k.in_(bindparam("keys", expanding=True))), engine.dialect)
    with pytest.raises(ValueError, match="column defaults"):
        DriverStatement(update(stamped).where(stamped.c.k == bindparam("key")).values(note="x"), engine.dialect)


def test_read_rows_and_execute_alone_run_on_the_driver_and_fall_back_to_sqlalchemy(engine, tables):
    """The workers' helpers: a statement the driver can run goes past SQLAlchemy's execution (its
    DriverStatement is cached), one it cannot runs as before; both give the same results."""
    plain, stamped = tables
    with autocommit(engine) as connection:
        connection.execute(plain.insert(), [{"k": n, "note": str(n)} for n in (1, 2, 3)])
        connection.execute(stamped.insert(), [{"k": 1, "note": "1", "stamp": "s"}])
    by_key = select(plain.c.k, plain.c.note).where(plain.c.k >= bindparam("lowest")).order_by(plain.c.k)
    by_keys = select(plain.c.k, plain.c.note).where(plain.c.k.in_(bindparam("keys", expanding=True))).order_by(plain.c.k)
    rename = update(plain).where(plain.c.k == bindparam("key")).values(note=bindparam("new_note"))
    stamp = update(stamped).where(stamped.c.k == bindparam("key")).values(note="stamped")  # onupdate: SQLAlchemy's

    assert [tuple(row) for row in read_rows(engine, by_key, {"lowest": 2})] == [(2, "2"), (3, "3")]
    assert read_rows(engine, by_key, {"lowest": 3})[0].note == "3"
    assert [tuple(row) for row in read_rows(engine, by_keys, {"keys": [1, 3]})] == [(1, "1"), (3, "3")]
    assert execute_alone(engine, rename, {"key": 1, "new_note": "one"}) == 1
    assert execute_alone(engine, rename, {"key": 9, "new_note": "none"}) == 0
    assert execute_alone(engine, stamp, {"key": 1}) == 1
    with autocommit(engine) as connection:
        assert connection.execute(select(plain.c.note).order_by(plain.c.k)).scalars().all() == ["one", "2", "3"]
        assert connection.execute(select(stamped.c.note, stamped.c.stamp)).all() == [("stamped", "changed")]
    names = ("lowest",)
    assert isinstance(driver_statement(by_key, engine.dialect, names), DriverStatement)
    assert driver_statement(by_key, engine.dialect, names) is driver_statement(by_key, engine.dialect, names)
    assert driver_statement(by_keys, engine.dialect, ("keys",)) is None
    assert driver_statement(stamp, engine.dialect, ("key",)) is None


def test_inside_a_transaction_sqlalchemy_began_its_commit_or_rollback_ends_the_drivers_work(engine, tables):
    plain, _ = tables
    insert_row = DriverStatement(plain.insert(), engine.dialect, ("k", "note"))
    with engine.begin() as connection:
        assert insert_row.rowcount(connection, {"k": 1, "note": "kept"}) == 1
    with pytest.raises(RuntimeError, match="undone"):
        with engine.begin() as connection:
            insert_row.rowcount(connection, {"k": 2, "note": "undone"})
            raise RuntimeError("undone")
    with autocommit(engine) as connection:
        assert connection.execute(select(plain.c.k, plain.c.note)).all() == [(1, "kept")]


def test_rows_in_an_orm_transaction_see_its_pending_changes_and_fall_back_when_they_must(engine, tables):
    """rows_in and rowcount_in flush the ORM session first, as its execute would, and run what the driver
    cannot (an IN list) through the session."""
    from sqlalchemy.orm import Session as OrmSession, registry

    plain, _ = tables

    class Row:
        pass

    mapper_registry = registry()
    mapper_registry.map_imperatively(Row, plain)
    pending = Row()
    pending.k, pending.note = 3, "three"
    by_key = select(plain.c.note).where(plain.c.k == bindparam("key"))
    by_keys = select(plain.c.note).where(plain.c.k.in_(bindparam("keys", expanding=True))).order_by(plain.c.k)
    rename = update(plain).where(plain.c.k == bindparam("key")).values(note=bindparam("new_note"))
    with OrmSession(engine) as tx, tx.begin():
        tx.execute(plain.insert(), {"k": 1, "note": "one"})
        assert [tuple(row) for row in rows_in(tx, by_key, {"key": 1})] == [("one",)]
        assert rowcount_in(tx, rename, {"key": 1, "new_note": "uno"}) == 1
        tx.execute(plain.insert(), {"k": 2, "note": "two"})
        assert [tuple(row) for row in rows_in(tx, by_keys, {"keys": [1, 2]})] == [("uno",), ("two",)]
        tx.add(pending)  # an ORM object not flushed yet
        assert [tuple(row) for row in rows_in(tx, by_key, {"key": 3})] == [("three",)]
    mapper_registry.dispose()
    with autocommit(engine) as connection:
        assert connection.execute(select(plain.c.note).order_by(plain.c.k)).scalars().all() == ["uno", "two", "three"]
