"""Applying Alembic migrations from code (``gateway db upgrade`` and the embedded default).

The embedded default upgrades on every CLI command and process start, and
importing Alembic costs about as much as the command itself. So the current
revision is first read with plain SQLAlchemy: a database already at
``HEAD_REVISION`` needs nothing from Alembic, which is imported only when
there is something to apply or to report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions. A new migration must update it:
# tests/unit/test_migrate_head.py compares it with Alembic's own head.
HEAD_REVISION = "0003"
VERSION_TABLE = "alembic_version"  # Alembic's default, which env.py keeps


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # '%' must be escaped for configparser (URLs may hold percent-encoded passwords).
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def at_head(engine: Engine) -> bool:
    """Whether the database holds exactly ``HEAD_REVISION`` (False for a fresh one, which has no version table)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return False
        current = set(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
    return current == {HEAD_REVISION}


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest revision."""
    if at_head(engine):
        return
    from alembic import command

    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def pending_revisions(engine: Engine) -> list[str]:
    """Revisions not yet applied; empty when the schema is current."""
    if at_head(engine):
        return []
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(str(engine.url)))
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    head = script.get_current_head()
    if head in current:
        return []
    return [rev.revision for rev in script.walk_revisions("base", "heads") if rev.revision not in current]
