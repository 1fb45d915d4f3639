"""Gateway processes started by tests: `gateway worker`, `gateway serve`, `gateway demo`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

GATEWAY = [sys.executable, "-m", "gateway"]
GUNICORN = [sys.executable, "-m", "gunicorn"]

# Variables of the developer's shell that must never leak into a test process.
SCRUBBED = (
    "GATEWAY_DATABASE_URL", "GATEWAY_REDIS_URL", "GATEWAY_PUBLIC_URL", "GATEWAY_INSTANCE_PATH", "GATEWAY_SECRET_KEY",
    "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_BASE_URL", "TWILIO_EDGE", "TWILIO_REGION",
)


def clean_env(**values: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update({k: str(v) for k, v in values.items() if v is not None})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class GatewayProcess:
    """One `gateway ...` (or gunicorn) subprocess, its output kept in a file for failure messages."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: str | Path | None = None, program: list[str] | None = None):
        self.args = args
        self.env = env
        self.cwd = cwd
        self.program = program or GATEWAY
        self.log = tempfile.NamedTemporaryFile(prefix="gw-proc-", suffix=".log", delete=False)
        self.process: subprocess.Popen | None = None

    def start(self) -> "GatewayProcess":
        self.process = subprocess.Popen(
            self.program + self.args, env=self.env, cwd=self.cwd, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def kill(self, wait: bool = True) -> None:
        """SIGKILL: the process gets no chance to clean up, like a crashed machine."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            if wait:
                self.wait()

    def wait(self) -> None:
        if self.process:
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
