"""gateway.db.driver.DriverStatement: SQLAlchemy's statement on psycopg's cursor, with what the execution
layer did kept: types both ways, statement listeners, wrapped errors, broken connections invalidated."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import Integer, String, bindparam, create_engine, event, exc, literal, select, text

from gateway.db.driver import DriverStatement
from gateway.db.models import UTCDateTime
from gateway.db.ops import autocommit

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
