"""The fast path of gateway.db.migrate: a database at HEAD_REVISION is left alone without importing Alembic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory

from gateway.db.engine import make_engine
from gateway.db.migrate import HEAD_REVISION, alembic_config, at_head, pending_revisions, upgrade

ROOT = Path(__file__).resolve().parents[2]


def test_head_revision_is_the_newest_migration():
    # Adding a migration without updating HEAD_REVISION would let an old database skip it.
    assert HEAD_REVISION == ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_at_head_only_once_every_migration_ran(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        assert not at_head(engine)  # no alembic_version table yet
        assert pending_revisions(engine)[0] == HEAD_REVISION
        upgrade(engine)
        assert at_head(engine)
        assert pending_revisions(engine) == []
    finally:
        engine.dispose()


def test_upgrading_a_current_database_does_not_import_alembic(tmp_path):
    database = tmp_path / "current.db"
    engine = make_engine(f"sqlite:///{database}")
    upgrade(engine)
    engine.dispose()
    code = (
        "import sys; from gateway.db.engine import make_engine; "
        "from gateway.db.migrate import pending_revisions, upgrade; "
        f"engine = make_engine({f'sqlite:///{database}'!r}); upgrade(engine); assert pending_revisions(engine) == []; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
