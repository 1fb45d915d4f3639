"""When a session expires (SPEC 6.2)."""

from __future__ import annotations

from datetime import datetime, timedelta

MIN_EXPIRATION_SECONDS = 60
MAX_EXPIRATION_SECONDS = 2_592_000


def expires_at(
    created_at: datetime,
    expiration_seconds: int,
    last_activity_at: datetime,
    inactivity_seconds: int | None,
) -> datetime:
    """The earlier of the absolute lifetime and, when set, the inactivity limit."""
    absolute = created_at + timedelta(seconds=expiration_seconds)
    if not inactivity_seconds:
        return absolute
    return min(absolute, last_activity_at + timedelta(seconds=inactivity_seconds))
