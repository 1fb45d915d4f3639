"""Small helpers the console's templates use to show times, durations and statuses."""

from __future__ import annotations

from datetime import datetime, timezone

from gateway.domain.timestamps import iso

# Message statuses by how an operator should read them (SPEC section 3).
GOOD = {"delivered", "processed"}
BAD = {"failed", "undelivered", "blocked"}
ROLES = {"user": "Customer", "assistant": "Assistant"}
UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def when(value: datetime | None) -> str:
    """UTC, to the second: the same instant the API and the logs show, without the milliseconds."""
    if value is None:
        return "—"
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """86400 -> '1 day', 5400 -> '1 hour 30 minutes'."""
    if seconds is None:
        return "—"
    remaining, parts = int(seconds), []
    for size, name in UNITS:
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count} {name}{'s' if count != 1 else ''}")
        if len(parts) == 2:
            break
    return " ".join(parts) or "0 seconds"


def tone(status: str | None) -> str:
    """The CSS modifier of a status badge: good, bad or pending."""
    if status in GOOD:
        return "good"
    if status in BAD:
        return "bad"
    return "pending"


def role_label(role: str) -> str:
    return ROLES.get(role, role)


def is_web_link(url: str | None) -> bool:
    """Only http(s) media URLs become links: a javascript: URL stays plain text."""
    return bool(url) and url.lower().startswith(("http://", "https://"))


HELPERS = {"when": when, "duration": duration, "tone": tone, "role_label": role_label, "is_web_link": is_web_link,
           "iso": iso}
