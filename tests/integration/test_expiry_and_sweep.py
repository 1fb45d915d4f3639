"""Session expiry and the periodic sweep (SPEC 6.2, 6.5), on a clock the test moves by hand.

Jobs go to a recording queue and are run by the test, so nothing happens
behind its back and no real time passes.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway import create_app
from gateway.db.models import Message, Session
from gateway.jobs import run_job
from gateway.schemas import PhoneNumberUpdate
from gateway.services.phone_numbers import update_phone_number
from gateway.services import sweeper, turns
from gateway.services.sweeper import sweep
from tests.conftest import CUSTOMER, PUBLIC_URL, inbound_params, sign
from tests.support.recording_queue import queue, runtime  # noqa: F401 - pytest fixtures: jobs wait for the test

DAY = 86400


@pytest.fixture
def text(runtime, queue):
    client = create_app(runtime=runtime).test_client()

    def send(body: str = "hello", customer: str = CUSTOMER) -> str:
        params = inbound_params(body, from_=customer)
        response = client.post(
            "/twilio/sms", data=params, headers={"X-Twilio-Signature": sign(runtime.auth_token, PUBLIC_URL + "/twilio/sms", params)}
        )
        assert response.status_code == 200
        queue.run_all(runtime)
        with runtime.db.begin() as tx:
            return tx.scalar(select(Message.session_id).where(Message.twilio_sid == params["MessageSid"]))

    return send


def session(runtime, session_id) -> Session:
    with runtime.db.begin() as tx:
        return tx.get(Session, session_id)


def test_text_within_the_lifetime_continues_the_session(text, clock, number):
    """Texts before expirationSeconds have passed stay in one session."""
    first = text("one")
    clock.advance(DAY - 1)
    assert text("two") == first


def test_text_after_expiry_completes_the_old_session_and_starts_a_new_one(text, runtime, clock, number):
    """After expirationSeconds, the next text completes the old session and opens a new one."""
    first = text("one")
    clock.advance(DAY + 1)
    second = text("two")
    assert second != first
    old, new = session(runtime, first), session(runtime, second)
    assert old.status == "completed" and old.completed_at is not None and old.active_key is None
    assert new.status == "active"


def test_number_expiration_setting_sets_the_session_lifetime(text, runtime, clock, number):
    """An SMS session lives for its number's sessionExpirationSeconds."""
    update_phone_number(runtime, number.id, PhoneNumberUpdate(sessionExpirationSeconds=120))
    first = text("one")
    assert session(runtime, first).expiration_seconds == 120
    clock.advance(121)
    assert text("two") != first


def test_inactivity_expiry_counts_from_the_last_message_either_way(text, runtime, clock, number):
    """With sessionInactivitySeconds, each message (in or out) pushes expiry; silence ends the session."""
    update_phone_number(runtime, number.id, PhoneNumberUpdate(sessionInactivitySeconds=600))
    first = text("one")
    for _ in range(5):
        clock.advance(590)
        assert text("still here") == first
    stored = session(runtime, first)
    assert stored.expires_at == stored.last_activity_at + timedelta(seconds=600)
    clock.advance(601)
    assert text("back again") != first


def test_absolute_expiry_wins_over_inactivity(text, runtime, clock, number):
    """Whichever comes first: a busy conversation still ends at expirationSeconds."""
    update_phone_number(runtime, number.id, PhoneNumberUpdate(sessionExpirationSeconds=1000, sessionInactivitySeconds=600))
    first = text("one")
    clock.advance(500)
    text("two")
    clock.advance(501)  # 1001 s after creation, 501 s after the last text
    assert text("three") != first


def test_sweep_completes_expired_sessions_without_a_new_text(text, runtime, clock, number):
    """The sweep completes sessions whose expiry passed, and only those."""
    old = text("one", customer="+14155550001")
    clock.advance(DAY - 60)
    young = text("two", customer="+14155550002")
    clock.advance(61)
    report = sweep(runtime)
    assert report.expired == 1
    assert session(runtime, old).status == "completed"
    assert session(runtime, young).status == "active"
    assert sweep(runtime).expired == 0


def test_sweep_completes_many_expired_sessions_in_batches(text, runtime, clock, number, monkeypatch):
    """More expired sessions than one batch holds: every one is completed, batch after batch, and reported."""
    monkeypatch.setattr(sweeper, "BATCH", 3)
    ids = [text("hi", customer=f"+1415555{index:04d}") for index in range(8)]
    clock.advance(DAY + 1)
    batches = []
    assert sweep(runtime, progress=batches.append).expired == 8
    assert batches == [3, 3, 2]
    assert {session(runtime, i).status for i in ids} == {"completed"}


def test_the_sweep_leaves_a_session_a_webhook_holds_and_never_waits_for_it(text, runtime, clock, number, database_url):
    """On PostgreSQL the sweep skips an expired session whose row another transaction has locked (a webhook
    completing it with a new text) instead of waiting: it cannot deadlock with a batch of webhooks."""
    held, free = text("hi", customer="+14155550001"), text("hi", customer="+14155550002")
    clock.advance(DAY + 1)
    if database_url is None:
        # SQLite has no row locks: one writer at a time, so the sweep simply completes both.
        assert sweep(runtime).expired == 2
        return
    with runtime.engine.connect() as other:
        other.execute(select(Session.id).where(Session.id == held).with_for_update())
        assert sweep(runtime).expired == 1  # returns at once: were it waiting, this call would hang
        assert session(runtime, free).status == "completed" and session(runtime, held).status == "active"
        other.rollback()
    assert sweep(runtime).expired == 1
    assert session(runtime, held).status == "completed"


def test_completed_session_is_never_reopened(text, runtime, clock, number):
    """After the sweep completed a session, the customer's next text starts a new one."""
    first = text("one")
    clock.advance(DAY + 1)
    sweep(runtime)
    second = text("again")
    assert second != first
    assert session(runtime, first).status == "completed"


def test_sweep_scans_only_expired_sessions(runtime, clock, number, text):
    """Sessions far from expiry are not touched: the sweep's range starts at the expiry index."""
    ids = [text("hi", customer=f"+1415555{index:04d}") for index in range(20)]
    clock.advance(60)
    assert sweep(runtime).expired == 0
    assert {session(runtime, i).status for i in ids} == {"active"}


def test_text_stored_while_the_queue_was_down_is_recovered_by_the_sweep(runtime, clock, queue, number):
    """The webhook stores the text even when enqueueing fails; the sweep finds it and the turn completes."""
    client = create_app(runtime=runtime).test_client()
    queue.down = True
    params = inbound_params("are you there?")
    signature = sign(runtime.auth_token, PUBLIC_URL + "/twilio/sms", params)
    assert client.post("/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}).status_code == 200
    queue.down = False
    assert sweep(runtime).turns_recovered == 0  # still inside the grace period
    clock.advance(runtime.settings.recovery_grace + 1)
    report = sweep(runtime)
    assert report.turns_recovered == 1
    queue.run_all(runtime)
    with runtime.db.begin() as tx:
        statuses = {m.role: m.status for m in tx.scalars(select(Message))}
    assert statuses == {"user": "processed", "assistant": "delivered"}


def test_turn_held_by_a_dead_worker_is_taken_over_after_its_lease(runtime, clock, queue, number, text):
    """A lease left by a worker that died is not honoured after it expires; the sweep re-enqueues the turn."""
    from gateway.services.leases import Lease

    client = create_app(runtime=runtime).test_client()
    params = inbound_params("hello?")
    signature = sign(runtime.auth_token, PUBLIC_URL + "/twilio/sms", params)
    client.post("/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})
    queue.jobs.clear()  # the job was lost with the worker
    with runtime.db.begin() as tx:
        session_id = tx.scalar(select(Message.session_id))
    dead = Lease(runtime, session_id, "turn")
    assert dead.acquire()

    clock.advance(runtime.settings.recovery_grace + 1)
    assert sweep(runtime).turns_recovered == 0  # the lease is still live
    clock.advance(runtime.settings.lease_seconds)
    assert sweep(runtime).turns_recovered == 1
    queue.run_all(runtime)
    with runtime.db.begin() as tx:
        assert tx.scalar(select(Message.status).where(Message.role == "user")) == "processed"


class WorkerDied(BaseException):
    """What a killed worker leaves behind: nothing after this point runs, not even except clauses."""


def test_sweep_requeues_sends_whose_job_was_lost(runtime, clock, queue, number, text, monkeypatch):
    """A reply queued but never sent (its worker died after the turn committed) is picked up by the sweep."""
    client = create_app(runtime=runtime).test_client()
    params = inbound_params("hi")
    signature = sign(runtime.auth_token, PUBLIC_URL + "/twilio/sms", params)
    client.post("/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})
    job, args, _ = queue.jobs.pop(0)

    def dies(*_args):
        raise WorkerDied

    monkeypatch.setattr(turns, "send_pending", dies)
    with pytest.raises(WorkerDied):
        run_job(runtime, job, *args)  # the turn commits its reply, and the worker dies before sending it
    monkeypatch.undo()
    queue.jobs.clear()  # nor did any other job survive it
    clock.advance(runtime.settings.recovery_grace + 1)
    assert sweep(runtime).sends_recovered == 1
    queue.run_all(runtime)
    with runtime.db.begin() as tx:
        assert tx.scalar(select(Message.status).where(Message.role == "assistant")) == "delivered"


def test_a_session_completed_while_its_turn_ran_keeps_its_end(runtime, clock, queue, fake_engine):
    """The sweep completes an inactivity session while a turn is with the engine: the reply is still stored in
    it, but the completed session is not given a new expiry (with inactivity set, the reply's activity would
    otherwise move expiresAt past the moment it was completed, as if it were still open)."""
    import threading

    from gateway.schemas import AssistantCreate, PhoneNumberCreate
    from gateway.services.assistants import create_assistant
    from gateway.services.phone_numbers import create_phone_number

    slow = create_assistant(runtime, AssistantCreate(name="Slow", engine={"provider": "webhook", "url": fake_engine.url}))
    create_phone_number(runtime, PhoneNumberCreate(number="+15550100000", assistantId=slow.id, messagesPerSecond=1000,
                                                   sessionInactivitySeconds=600))
    fake_engine.script.delay = 1.0
    client = create_app(runtime=runtime).test_client()
    params = inbound_params("hello?")
    signature = sign(runtime.auth_token, PUBLIC_URL + "/twilio/sms", params)
    assert client.post("/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}).status_code == 200
    with runtime.db.begin() as tx:
        session_id = tx.scalar(select(Message.session_id))

    turn = threading.Thread(target=queue.run_all, args=(runtime,))
    turn.start()
    try:
        fake_engine.wait_for_calls(1, started_only=True)
        clock.advance(601)  # silent for longer than sessionInactivitySeconds: the sweep ends the session
        assert sweep(runtime).expired == 1
        ended = session(runtime, session_id)
        assert ended.status == "completed"
    finally:
        turn.join(20)
    assert not turn.is_alive()

    after = session(runtime, session_id)
    with runtime.db.begin() as tx:
        roles = [m.role for m in tx.scalars(select(Message).where(Message.session_id == session_id).order_by(Message.seq))]
    assert roles == ["user", "assistant"]  # the turn's reply went into the session it answered
    assert after.status == "completed"
    assert after.expires_at == ended.expires_at <= after.completed_at
