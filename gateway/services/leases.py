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
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Callable

from sqlalchemy import and_, or_, update
from sqlalchemy.orm import Session as DbSession

from gateway.db.models import Session

if TYPE_CHECKING:
    from gateway.bootstrap import Runtime


log = logging.getLogger("gateway.leases")


class LeaseLost(Exception):
    """Another worker owns the lane now; this one must drop what it was doing."""


_COLUMNS = {
    "turn": (Session.turn_lease_token, Session.turn_lease_until),
    "send": (Session.send_lease_token, Session.send_lease_until),
}


class Lease:
    def __init__(self, runtime: "Runtime", session_id: str, lane: str):
        self.runtime = runtime
        self.session_id = session_id
        self.token_column, self.until_column = _COLUMNS[lane]
        self.token = str(uuid.uuid4())

    def _until(self):
        return self.runtime.clock.now() + timedelta(seconds=self.runtime.settings.lease_seconds)

    def acquire(self) -> bool:
        now = self.runtime.clock.now()
        with self.runtime.db.begin() as tx:
            result = tx.execute(
                update(Session)
                .where(
                    Session.id == self.session_id,
                    or_(self.until_column.is_(None), self.until_column < now),
                )
                .values({self.token_column: self.token, self.until_column: self._until()})
            )
            return result.rowcount == 1

    def renew(self, tx: DbSession | None = None) -> None:
        """Extend the lease; raises LeaseLost if another worker took it over."""
        if tx is not None:
            self._renew(tx)
            return
        with self.runtime.db.begin() as own:
            self._renew(own)

    def _renew(self, tx: DbSession) -> None:
        result = tx.execute(
            update(Session)
            .where(Session.id == self.session_id, self.token_column == self.token)
            .values({self.until_column: self._until()})
        )
        if result.rowcount != 1:
            raise LeaseLost(self.session_id)

    def release(self) -> None:
        with self.runtime.db.begin() as tx:
            tx.execute(
                update(Session)
                .where(and_(Session.id == self.session_id, self.token_column == self.token))
                .values({self.token_column: None, self.until_column: None})
            )


def work_lane(
    runtime: "Runtime",
    session_id: str,
    lane: str,
    job: str,
    drain: Callable[["Runtime", Lease], float | None],
    has_work: Callable[["Runtime", str], bool],
) -> None:
    """The loop the turn and send jobs share: own the session's lane, drain it, let go.

    ``drain`` returns None when nothing is left, or a delay when the next
    piece of work is not yet due; the job is then enqueued again for that
    moment. After letting go, the lane is checked once more: work committed
    while this worker held the lease may have had its own job give up on the
    lease, and this check is what picks it up.
    """
    lease = Lease(runtime, session_id, lane)
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
