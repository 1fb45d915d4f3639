"""A PostgreSQL database of our own, created for the test run and dropped after it."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

import psycopg
from psycopg import sql

ADMIN_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class PostgresUnavailable(Exception):
    pass


class ScratchDatabase:
    def __init__(self, admin_url: str = ADMIN_URL):
        self.admin_url = admin_url
        self.name = f"gw_test_{uuid.uuid4().hex[:12]}"

    @property
    def url(self) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{self.name}"

    def create(self) -> "ScratchDatabase":
        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=3) as connection:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        except psycopg.OperationalError as error:
            raise PostgresUnavailable(f"PostgreSQL not reachable at {self.admin_url}: {error}") from None
        return self

    def drop(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))


def engine_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@contextmanager
def scratch_engine(on_unavailable):
    """An engine on a fresh, empty database that is dropped afterwards.

    ``on_unavailable(reason)`` is called when PostgreSQL cannot be reached (it
    skips locally and fails in CI).
    """
    from gateway.db.engine import make_engine

    database = ScratchDatabase()
    try:
        database.create()
    except PostgresUnavailable as error:
        on_unavailable(str(error))
    engine = make_engine(engine_url(database.url))
    try:
        yield database, engine
    finally:
        engine.dispose()
        database.drop()
