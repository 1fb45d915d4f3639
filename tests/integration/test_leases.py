"""Session lane leases (SPEC 6.3, 6.5): a keep-alive skipped while fresh, a fence that never is.

On SQLite and PostgreSQL, on a clock the test moves by hand. The statements
each call sends are counted on the engine, so "skipped" means no round trip.
"""

from __future__ import annotations

import pytest
from sqlalchemy import event, select, update

from gateway.db.models import Message, Session
from gateway.services.leases import Lease, LeaseLost
from tests.support.recording_queue import queue, runtime  # noqa: F401 - pytest fixtures: jobs wait for the test


@pytest.fixture
def session_id(runtime, number, queue):
    from gateway import create_app
    from tests.conftest import PUBLIC_URL, inbound_params, sign

    params = inbound_params("hello")
    signature = sign(runtime.auth_token, PUBLIC_URL + "/twilio/sms", params)
    assert create_app(runtime=runtime).test_client().post(
        "/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}
    ).status_code == 200
    queue.jobs.clear()
    with runtime.db.begin() as tx:
        return tx.scalar(select(Message.session_id))


@pytest.fixture
def statements(runtime):
    seen: list[str] = []

    def note(_conn, _cursor, statement, *_):
        seen.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", note)
    yield seen
    event.remove(runtime.engine, "before_cursor_execute", note)


def lease_until(runtime, session_id):
    with runtime.db.begin() as tx:
        return tx.get(Session, session_id).turn_lease_until


def test_a_keep_alive_right_after_taking_the_lease_costs_nothing_and_later_one_extends_it(
    runtime, clock, session_id, statements
):
    lease = Lease(runtime, session_id, "turn")
    assert lease.acquire()
    taken_until = lease_until(runtime, session_id)
    statements.clear()

    clock.advance(runtime.settings.lease_seconds / 10 - 0.01)
    lease.renew()
    assert statements == []  # fresh: no transaction of its own
    assert lease_until(runtime, session_id) == taken_until

    clock.advance(0.02)
    lease.renew()
    assert any(s.startswith("UPDATE sessions") for s in statements)
    assert lease_until(runtime, session_id) > taken_until
    assert not Lease(runtime, session_id, "turn").acquire()


def test_a_stale_keep_alive_of_a_lease_taken_over_raises_lease_lost(runtime, clock, session_id):
    dead = Lease(runtime, session_id, "turn")
    assert dead.acquire()
    clock.advance(runtime.settings.lease_seconds + 1)
    assert Lease(runtime, session_id, "turn").acquire()  # the lease ran out: another worker takes the lane
    with pytest.raises(LeaseLost):
        dead.renew()


def test_a_renewal_in_a_write_always_runs_and_fences_it_even_while_fresh(runtime, clock, session_id):
    """The skip is for keep-alives only: a write's fence checks the token every time."""
    lease = Lease(runtime, session_id, "turn")
    assert lease.acquire()
    with runtime.db.begin() as tx:  # the lane changes hands behind this worker's back
        tx.execute(update(Session).where(Session.id == session_id).values(turn_lease_token="someone-else"))

    lease.renew()  # fresh: not checked, and nothing is written by it
    with pytest.raises(LeaseLost):
        with runtime.db.begin() as tx:
            lease.renew(tx)
            tx.execute(update(Session).where(Session.id == session_id).values(name="written under a lost lease"))
    with runtime.db.begin() as tx:
        assert tx.get(Session, session_id).name != "written under a lost lease"


def test_release_lets_the_next_worker_in_and_only_the_holder_can_release(runtime, session_id):
    holder, other = Lease(runtime, session_id, "send"), Lease(runtime, session_id, "send")
    assert holder.acquire()
    other.release()  # not the holder: changes nothing
    assert not other.acquire()
    holder.release()
    assert other.acquire()
