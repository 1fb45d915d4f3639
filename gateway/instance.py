"""The instance folder: the embedded database and secrets generated on first use."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path


def read_or_create_secret(folder: Path, name: str, nbytes: int = 32) -> str:
    """Return the secret stored in folder/name, creating it (mode 0600) if absent.

    Creation uses O_EXCL so that several processes starting at once agree on
    one value: the loser of the race reads the winner's file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_when_written(path)
    value = secrets.token_hex(nbytes)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def _read_when_written(path: Path) -> str:
    # The creator may not have written yet; the window is microseconds.
    for _ in range(200):
        value = path.read_text().strip()
        if value:
            return value
        import time

        time.sleep(0.005)
    raise RuntimeError(f"{path} exists but is empty")


def sandbox_auth_token(folder: Path) -> str:
    """The token the sandbox checks webhook signatures with, and the simulator signs with."""
    return read_or_create_secret(folder, "sandbox_auth_token", 16)


def sandbox_account_sid(token: str) -> str:
    return "AC" + hashlib.sha256(token.encode()).hexdigest()[:32]
