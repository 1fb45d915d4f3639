"""Long-lived processes freeze the objects they built at start (gateway/heap.py); tests and CLI runs do not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Prints how many objects the garbage collector leaves out of its passes once the code under test ran.
BUILD_APP = "import gc; from gateway import create_app; create_app(); print(gc.get_freeze_count())"
BUILD_WORKER = (
    "import gc; from gateway.config import Settings; from gateway.worker import _redis_runtime; "
    "_redis_runtime(Settings.from_env(), 'worker'); print(gc.get_freeze_count())"
)


def frozen_after(code: str, tmp_path: Path, **env: str) -> int:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("GATEWAY_", "TWILIO_")) and key != "SERVER_SOFTWARE"}
    environment.update(GATEWAY_INSTANCE_PATH=str(tmp_path / "instance"), PYTHONPATH=str(ROOT), **env)
    done = subprocess.run([sys.executable, "-c", code], env=environment, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1])


def test_a_gunicorn_worker_freezes_what_building_the_app_left(tmp_path):
    assert frozen_after(BUILD_APP, tmp_path, SERVER_SOFTWARE="gunicorn/27.0.1") > 10_000


def test_an_app_built_outside_gunicorn_leaves_the_collector_alone(tmp_path):
    # Tests and CLI commands build many apps in one process: frozen, each one's garbage would stay.
    assert frozen_after(BUILD_APP, tmp_path) == 0


def test_a_queue_worker_freezes_what_it_built_at_start(tmp_path):
    # Building the runtime connects to nothing, so an unused Redis URL will do.
    assert frozen_after(BUILD_WORKER, tmp_path, GATEWAY_REDIS_URL="redis://127.0.0.1:1/0") > 10_000
