"""Per-session leases: one worker at a time owns a session's turn lane or send lane.

A lease is a token and an expiry on the session row, taken with one
conditional UPDATE, so exactly one of any number of workers on any number of
machines wins. A worker that dies simply stops renewing: its lease runs out
and the next job (or the sweep) takes the lane over. Writes that finish a
piece of work check the token in the same transaction ("fencing"), so a
worker that lost its lease while stalled cannot commit over its successor.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Callable

from sqlalchemy import Column, and_, bindparam, or_, update
from sqlalchemy.orm import Session as DbSession

from gateway.db.models import Session
from gateway.db.ops import execute_alone, rowcount_in

if TYPE_CHECKING:
    from gateway.bootstrap import Runtime


log = logging.getLogger("gateway.leases")


# How long one job works a lane before it hands the lane on to a fresh job of its own (at the back of
# the queue): a busy session neither holds a worker indefinitely nor runs into the queue's job
# timeout, which is set above this plus the longest piece of work (jobs.redis_queue.job_timeout).
LANE_BUDGET_SECONDS = 120.0


class LeaseLost(Exception):
    """Another worker owns the lane now; this one must drop what it was doing."""


class _LaneStatements:
    """The lease's three statements for one lane's columns, built once: they run several times per text."""

    def __init__(self, token: Column, until: Column):
        sessions = Session.__table__
        mine = and_(sessions.c.id == bindparam("session_id"), token == bindparam("token"))
        free = or_(until.is_(None), until < bindparam("now"))
        self.acquire = (
            update(sessions).where(sessions.c.id == bindparam("session_id"), free)
            .values({token: bindparam("new_token"), until: bindparam("new_until")})
        )
        self.renew = update(sessions).where(mine).values({until: bindparam("new_until")})
        self.release = update(sessions).where(mine).values({token: None, until: None})


_LANES = {
    "turn": _LaneStatements(Session.__table__.c.turn_lease_token, Session.__table__.c.turn_lease_until),
    "send": _LaneStatements(Session.__table__.c.send_lease_token, Session.__table__.c.send_lease_until),
}


class Lease:
    def __init__(self, runtime: "Runtime", session_id: str, lane: str):
        self.runtime = runtime
        self.session_id = session_id
        self.statements = _LANES[lane]
        self.token = str(uuid.uuid4())
        self.renewed_at = None  # when this worker's own transaction last took or extended the lease
        self.taken_at: float | None = None  # time.monotonic() when this job took the lane

    def _until(self):
        return self.runtime.clock.now() + timedelta(seconds=self.runtime.settings.lease_seconds)

    def acquire(self) -> bool:
        now = self.runtime.clock.now()
        # Each of the lease's own statements is a transaction by itself (on PostgreSQL in autocommit:
        # one round trip, not three); they run twice per job.
        taken = execute_alone(self.runtime.engine, self.statements.acquire, {
            "session_id": self.session_id, "now": now, "new_token": self.token, "new_until": self._until()}) == 1
        if taken:
            self.renewed_at = now
            if self.taken_at is None:
                self.taken_at = time.monotonic()
        return taken

    def ran_long(self) -> bool:
        """Whether this job has worked the lane for LANE_BUDGET_SECONDS; its drain then returns 0 (go on in a
        fresh job) after the piece of work in hand."""
        return self.taken_at is not None and time.monotonic() - self.taken_at >= LANE_BUDGET_SECONDS

    def renew(self, tx: DbSession | None = None) -> None:
        """Extend the lease; raises LeaseLost if another worker took it over.

        In the caller's transaction it always runs: that is the fence of a write. On its own (a keep-alive
        during long work) it is skipped while the lease is still fresh, less than a tenth of its length
        old: a transaction of its own per engine try would otherwise follow right after the acquire.
        """
        if tx is not None:
            self._renew(tx)
            return
        now = self.runtime.clock.now()
        if self.renewed_at is not None and now - self.renewed_at < timedelta(seconds=self.runtime.settings.lease_seconds / 10):
            return
        renewed = execute_alone(self.runtime.engine, self.statements.renew,
                                {"session_id": self.session_id, "token": self.token, "new_until": self._until()})
        if renewed != 1:
            raise LeaseLost(self.session_id)
        self.renewed_at = now

    def _renew(self, tx: DbSession) -> None:
        renewed = rowcount_in(
            tx, self.statements.renew, {"session_id": self.session_id, "token": self.token, "new_until": self._until()}
        )
        if renewed != 1:
            raise LeaseLost(self.session_id)

    def release(self) -> None:
        execute_alone(self.runtime.engine, self.statements.release, {"session_id": self.session_id, "token": self.token})


def work_lane(
    runtime: "Runtime",
    session_id: str,
    lane: str,
    job: str,
    drain: Callable[["Runtime", Lease], float | None],
    has_work: Callable[["Runtime", str], bool],
    lease: Lease | None = None,
) -> None:
    """The loop the turn and send jobs share: own the session's lane, drain it, let go.

    ``drain`` returns None when nothing is left, or a delay when the next
    piece of work is not yet due; the job is then enqueued again for that
    moment. After letting go, the lane is checked once more: work committed
    while this worker held the lease may have had its own job give up on the
    lease, and this check is what picks it up.
    """
    lease = lease or Lease(runtime, session_id, lane)
    while True:
        if not lease.acquire():
            return  # another worker owns the lane and will see the work
        try:
            wait = drain(runtime, lease)
        except LeaseLost:
            log.warning("event=%s.lease_lost session=%s", lane, session_id)
            return
        finally:
            lease.release()
        if wait is not None:
            runtime.enqueue(job, session_id, delay=wait)
            return
        if not has_work(runtime, session_id):
            return
