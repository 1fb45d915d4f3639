"""The Alembic migrations build exactly the schema the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from gateway.db.engine import make_engine
from gateway.db.migrate import alembic_config, pending_revisions, upgrade
from gateway.db.models import Base
from tests.support.postgres import scratch_engine
from tests.conftest import need


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_engine(request, tmp_path):
    """A database with no tables at all."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
        yield engine
        engine.dispose()
        return
    with scratch_engine(need) as (_, engine):
        yield engine


def test_upgrade_creates_the_models_schema(empty_engine):
    """After `db upgrade`, autogenerate finds no difference between the database and the models."""
    assert pending_revisions(empty_engine)
    upgrade(empty_engine)
    assert pending_revisions(empty_engine) == []
    with empty_engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_upgrade_is_idempotent_and_downgrade_removes_everything(empty_engine):
    """Upgrading twice changes nothing; downgrading to base leaves only Alembic's version table."""
    upgrade(empty_engine)
    upgrade(empty_engine)
    config = alembic_config(empty_engine.url.render_as_string(hide_password=False))
    with empty_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert set(inspect(empty_engine).get_table_names()) <= {"alembic_version"}
