"""The periodic sweep: completes expired sessions and re-enqueues work nobody is doing (SPEC 6.2, 6.5).

Each query starts from an index whose range holds only the rows that need
attention (expired active sessions, received or queued messages), so the
sweep's cost follows the work to do, not the number of sessions stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Callable

from sqlalchemy import func, or_, select

from gateway.db.models import Message, Session
from gateway.db.ops import lock_rows
from gateway.services.events import due_events
from gateway.services.sessions import complete_many

if TYPE_CHECKING:
    from gateway.bootstrap import Runtime

log = logging.getLogger("gateway.sweep")

BATCH = 500


@dataclass(frozen=True)
class SweepReport:
    expired: int
    turns_recovered: int
    sends_recovered: int
    events_recovered: int = 0


def sweep(runtime: "Runtime", progress: Callable[[int], None] | None = None) -> SweepReport:
    """``progress(n)`` is told after each batch of n expired sessions is completed (the CLI's progress bar)."""
    expired = complete_expired(runtime, progress)
    turns = _recover(runtime, "process_turns", _stuck_turns)
    sends = _recover(runtime, "send_pending", _stuck_sends)
    deliveries = _recover(runtime, "deliver_event", lambda _runtime, cutoff, now: due_events(now, cutoff))
    report = SweepReport(expired, turns, sends, deliveries)
    if expired or turns or sends or deliveries:
        log.info("event=sweep.done expired=%d turns_recovered=%d sends_recovered=%d events_recovered=%d",
                 expired, turns, sends, deliveries)
    return report


def count_expired(runtime: "Runtime") -> int:
    with runtime.db.begin() as tx:
        return tx.scalar(
            select(func.count()).select_from(Session).where(Session.status == "active",
                                                            Session.expires_at <= runtime.clock.now())
        ) or 0


def complete_expired(runtime: "Runtime", progress: Callable[[int], None] | None = None) -> int:
    now = runtime.clock.now()
    total = 0
    while True:
        with runtime.db.begin() as tx:
            ids = list(
                lock_rows(
                    tx,
                    # ORDER BY the index's own order keeps PostgreSQL on (status, expires_at): without it the
                    # planner, taking the two conditions as independent, may scan the whole table instead.
                    # The oldest expiries complete first, too.
                    select(Session.id)
                    .where(Session.status == "active", Session.expires_at <= now)
                    .order_by(Session.expires_at)
                    .limit(BATCH),
                    # A session a webhook is completing (with a new text) is left to it: the sweep never
                    # waits for a lock, so it cannot deadlock with a batch of webhooks holding several.
                    skip_locked=True,
                ).scalars()
            )
            completed = complete_many(tx, ids, now)  # emits session.updated
        for session_id in completed:
            log.info("event=session.completed session=%s reason=expired", session_id)
        total += len(completed)
        if progress is not None:
            progress(len(ids))
        if len(ids) < BATCH:
            return total


def _stuck_turns(runtime: "Runtime", cutoff, now):
    return (
        select(Message.session_id)
        .join(Session, Session.id == Message.session_id)
        .where(
            Message.status == "received",
            Message.role == "user",
            Message.created_at <= cutoff,
            or_(Session.turn_lease_until.is_(None), Session.turn_lease_until < now),
        )
        .distinct()
    )


def _stuck_sends(runtime: "Runtime", cutoff, now):
    return (
        select(Message.session_id)
        .join(Session, Session.id == Message.session_id)
        .where(
            Message.status == "queued",
            Message.role == "assistant",
            Message.twilio_sid.is_(None),
            func.coalesce(Message.next_attempt_at, Message.created_at) <= cutoff,
            or_(Session.send_lease_until.is_(None), Session.send_lease_until < now),
        )
        .distinct()
    )


def _recover(runtime: "Runtime", job: str, query) -> int:
    """Enqueue ``job`` for each session whose work has waited past the grace period with no owner."""
    now = runtime.clock.now()
    cutoff = now - timedelta(seconds=runtime.settings.recovery_grace)
    with runtime.db.begin() as tx:
        session_ids = list(tx.scalars(query(runtime, cutoff, now)))
    for session_id in session_ids:
        log.info("event=sweep.recover job=%s session=%s", job, session_id)
        runtime.enqueue(job, session_id)
    return len(session_ids)
