"""Statements run on the driver's own cursor: the webhook's two statements and the workers' autocommit
reads and lease updates (``gateway.db.ops.read_rows``, ``execute_alone``), past SQLAlchemy's execution.

For a statement already compiled, SQLAlchemy's execution (the compiled-cache lookup, an
execution context, result metadata read from the cursor's description, row processing) costs
about as much CPU as psycopg's own work. The webhook runs two statements per batch, and at low
load every batch is one text: that layer was a sixth of a webhook's CPU in the web process. A
worker runs some 25 statements per text, a third of them alone in autocommit.

A DriverStatement is still SQLAlchemy's statement, compiled once by SQLAlchemy for the dialect:
its SQL, its bind types and its result types are SQLAlchemy's; only the execution is the
driver's. What the execution layer does that callers rely on is kept: listeners of
``before_cursor_execute`` see each statement (tests count statements, bench/scale explains
them), driver errors arrive as SQLAlchemy's ``DBAPIError`` (with the driver's error as
``orig``), and a connection found broken is invalidated so the pool never hands it out again.
PostgreSQL (psycopg's named ``%(name)s`` parameters) only, on a connection in autocommit
(``gateway.db.ops.autocommit``), where each statement is its own transaction, or inside a
transaction SQLAlchemy began on the connection (an ORM transaction's, ``gateway.db.ops.rows_in``):
SQLAlchemy then ends the driver's transaction with its own COMMIT or ROLLBACK. On a connection in
neither state SQLAlchemy would not know the driver had begun a transaction, and could end the
connection's use without committing it: refused.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

from sqlalchemy import Connection, exc


class DriverStatement:
    """A statement compiled once for ``dialect``; ``rows`` runs it on a connection's driver cursor."""

    def __init__(self, statement, dialect, column_keys: tuple[str, ...] | None = None):
        """``column_keys``: the names of the parameters it will run with, as SQLAlchemy's execution compiles
        an INSERT or UPDATE (a parameter named after a column the statement does not set is SET too)."""
        if dialect.paramstyle != "pyformat":
            raise ValueError(f"DriverStatement needs named parameters, not {dialect.paramstyle} ({dialect.name})")
        compiled = statement.compile(dialect=dialect, column_keys=list(column_keys) if column_keys is not None else None)
        if compiled.escaped_bind_names:
            raise ValueError("DriverStatement: a bound parameter's name needs escaping; name it plainly")
        self.sql = compiled.string
        self._constants: dict[str, Any] = {}  # values bound in the statement itself, such as a literal ":"
        self._processors: dict[str, Any] = {}  # per parameter given at run time, its type's conversion
        if compiled.insert_prefetch or compiled.update_prefetch:
            # Column defaults computed in Python at execution time (``default=``/``onupdate=``): only
            # SQLAlchemy's execution context runs them.
            raise ValueError("DriverStatement: the statement has column defaults computed at execution time")
        for bind, name in compiled.bind_names.items():
            if bind.expanding or bind.literal_execute:
                raise ValueError(f"DriverStatement: parameter {name!r} is rendered at execution time")
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                if processor is not None:
                    self._processors[name] = processor
            else:
                value = bind.effective_value
                self._constants[name] = processor(value) if processor is not None else value
        self._columns = list(getattr(statement, "selected_columns", ()))
        self._row = namedtuple("Row", [column.key for column in self._columns], rename=True) if self._columns else None
        self._dialect = dialect
        # The status of a result that carries rows. Asked of the result itself: psycopg builds the
        # cursor's ``description`` afresh, a Column per column, every time it is read (some 10 us for
        # the webhook's lookup), and only the first result's is needed (see _result_processors).
        self._tuples_ok = dialect.loaded_dbapi.pq.ExecStatus.TUPLES_OK
        # Per selected column, its type's conversion of the driver's value. Some depend on the type the
        # server sent (a numeric's), so they are built from the first result's description.
        self._results: list | None = None if self._columns else []

    def rows(self, connection: Connection, parameters: dict[str, Any]) -> list:
        """Run with ``parameters`` (by name, unprocessed, as for ``connection.execute``); all the rows returned,
        as named tuples when the statement selects named columns, else as plain tuples."""
        return self._run(connection, parameters)[0]

    def rowcount(self, connection: Connection, parameters: dict[str, Any]) -> int:
        """Run with ``parameters``; the number of rows it matched (an UPDATE's or DELETE's), as ``CursorResult.rowcount``."""
        return self._run(connection, parameters)[1]

    def _run(self, connection: Connection, parameters: dict[str, Any]) -> tuple[list, int]:
        values = {**self._constants, **parameters}
        for name, processor in self._processors.items():
            values[name] = processor(values[name])
        dialect = connection.dialect
        driver_connection = connection.connection.driver_connection
        if not driver_connection.autocommit and not connection.in_transaction():
            raise RuntimeError("DriverStatement runs on a connection in autocommit (see gateway.db.ops.autocommit) "
                               "or in a transaction SQLAlchemy began, which it then commits or rolls back")
        cursor = driver_connection.cursor()
        try:
            # As SQLAlchemy's own execution would call them (listeners that return a new statement,
            # retval=True, are not supported here).
            connection.dispatch.before_cursor_execute(connection, cursor, self.sql, values, None, False)
            cursor.execute(self.sql, values)
            result = cursor.pgresult
            returned = result is not None and result.status == self._tuples_ok
            rows = cursor.fetchall() if returned else []
            matched = cursor.rowcount
            if self._results is None and returned:
                self._results = self._result_processors(cursor.description)
        except dialect.loaded_dbapi.Error as error:
            broken = dialect.is_disconnect(error, driver_connection, cursor)
            if broken:
                connection.invalidate(error)
            raise exc.DBAPIError.instance(self.sql, values, error, dialect.loaded_dbapi.Error,
                                          hide_parameters=connection.engine.hide_parameters,
                                          connection_invalidated=broken, dialect=dialect) from error
        finally:
            cursor.close()
        if self._results:
            rows = [self._processed(row) for row in rows]
        if self._row is not None:
            rows = [self._row._make(row) for row in rows]
        return rows, matched

    def _result_processors(self, description) -> list:
        dialect = self._dialect
        return [
            (index, processor) for index, (column, described) in enumerate(zip(self._columns, description))
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, described.type_code))
            is not None
        ]

    def _processed(self, row: tuple) -> list:
        row = list(row)
        for index, processor in self._results:
            row[index] = processor(row[index])
        return row
