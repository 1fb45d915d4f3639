"""Each `gateway` command imports only what it uses: every command pays its imports at start, and tests run hundreds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.processes import clean_env

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"alembic", "flask", "httpx", "pydantic", "redis", "sqlalchemy"}


def imported_packages(instance: Path, *args: str) -> set[str]:
    """The top-level packages ``gateway ARGS`` imported (as -X importtime reports them)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "gateway", *args], cwd=ROOT,
                          env=clean_env(GATEWAY_INSTANCE_PATH=str(instance)), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in done.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_help_imports_no_database_or_web_library(tmp_path):
    assert imported_packages(tmp_path, "--help") & HEAVY == set()


def test_a_listing_on_a_current_database_imports_only_sqlalchemy(tmp_path):
    imported_packages(tmp_path, "numbers", "list")  # the first command creates and migrates the database
    assert imported_packages(tmp_path, "numbers", "list") & HEAVY == {"sqlalchemy"}
