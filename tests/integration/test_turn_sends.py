"""Who sends a turn's replies: the turn job itself once it has let the lane go, or a send job
when the replies would otherwise wait (another text to answer first, or a failure after the turn);
and what a turn reads for the engine, on each database, as these tests run jobs one by one."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, update

from gateway import create_app
from gateway.db.models import Message, OptOut, Session
from gateway.jobs import run_job
from gateway.schemas import AssistantUpdate
from gateway.services import turns
from gateway.services.assistants import update_assistant
from gateway.services.outbound import apply_status
from tests.conftest import BUSINESS, CUSTOMER, PUBLIC_URL, inbound_params, sign
from tests.support.recording_queue import queue, runtime  # noqa: F401 - pytest fixtures: jobs wait for the test


@pytest.fixture
def post(runtime):
    client = create_app(runtime=runtime).test_client()

    def send(body: str) -> None:
        params = inbound_params(body)
        response = client.post("/twilio/sms", data=params,
                               headers={"X-Twilio-Signature": sign(runtime.auth_token, PUBLIC_URL + "/twilio/sms", params)})
        assert response.status_code == 200

    return send


def replies(runtime) -> list[tuple[str, str]]:
    with runtime.db.begin() as tx:
        return [tuple(row) for row in tx.execute(
            select(Message.content, Message.status).where(Message.role == "assistant").order_by(Message.seq))]


def jobs(queue) -> list[str]:
    return [job for job, _, _ in queue.jobs]


def test_the_turn_job_sends_its_replies_itself(runtime, queue, number, post):
    post("hello")
    assert jobs(queue) == ["process_turns"]
    job, args, _ = queue.jobs.pop(0)
    run_job(runtime, job, *args)
    assert replies(runtime) == [("hello", "delivered")]  # sent (the sandbox sender delivers at once) by the turn job
    assert jobs(queue) == []  # no send job: one job per text


def test_the_turn_job_sends_after_letting_the_lane_go(runtime, queue, number, post, monkeypatch):
    """The session's next text need not wait while this worker talks to Twilio."""
    post("hello")
    session_id = queue.jobs.pop(0)[1][0]
    send_pending = turns.send_pending
    lane_at_send = []

    def sending(runtime_, session_id_):
        with runtime.db.begin() as tx:
            lane_at_send.append(tx.get(Session, session_id_).turn_lease_token)
        send_pending(runtime_, session_id_)

    monkeypatch.setattr(turns, "send_pending", sending)
    run_job(runtime, "process_turns", session_id)
    assert lane_at_send == [None]
    assert replies(runtime) == [("hello", "delivered")]


def test_replies_go_to_a_send_job_rather_than_wait_for_the_next_turn(runtime, queue, number, post, monkeypatch):
    """Two texts waiting: the first one's reply is handed to a send job before the engine is asked again."""
    post("one")
    post("two")
    session_id = queue.jobs[0][1][0]
    queue.jobs.clear()
    seen = []
    answer = turns.answer

    def answering(runtime_, lease, batch):
        seen.append((batch.text, jobs(queue)))
        return answer(runtime_, lease, batch)

    monkeypatch.setattr(turns, "answer", answering)
    run_job(runtime, "process_turns", session_id)
    assert seen == [("one", []), ("two", ["send_pending"])]
    # The turn job then sent what was still unsent; the send job finds nothing left.
    assert replies(runtime) == [("one", "delivered"), ("two", "delivered")]
    queue.run_all(runtime)
    assert replies(runtime) == [("one", "delivered"), ("two", "delivered")]


def test_replies_of_a_turn_job_that_fails_afterwards_go_to_a_send_job(runtime, queue, number, post, monkeypatch):
    post("hello")
    session_id = queue.jobs.pop(0)[1][0]
    next_batch = turns._next_batch
    calls = []

    def failing_after_the_first(runtime_, session_id_):
        calls.append(session_id_)
        if len(calls) > 1:
            raise RuntimeError("database went away")
        return next_batch(runtime_, session_id_)

    monkeypatch.setattr(turns, "_next_batch", failing_after_the_first)
    with pytest.raises(RuntimeError):
        run_job(runtime, "process_turns", session_id)
    assert replies(runtime) == [("hello", "queued")]
    assert jobs(queue) == ["send_pending"]
    monkeypatch.undo()
    queue.run_all(runtime)
    assert replies(runtime) == [("hello", "delivered")]


def answered_not_sent(runtime, queue, post, monkeypatch) -> str:
    """A text answered by its turn job, whose reply stays queued (no send yet); returns the session's id."""
    post("hello")
    session_id = queue.jobs.pop(0)[1][0]
    with monkeypatch.context() as patched:
        patched.setattr(turns, "send_pending", lambda runtime_, session_id_: None)
        run_job(runtime, "process_turns", session_id)
    return session_id


def test_a_reply_sent_again_after_its_worker_died_takes_its_place_in_the_pace_again(runtime, queue, clock, number,
                                                                                   post, monkeypatch):
    """A worker took the reply's slot in its number's pace and died during the send. Its successor, once the
    lease has run out, finds no record at Twilio and sends the reply again: as a new send, which takes a new
    slot (and passes loop protection again), not the slot that passed long ago (SPEC 6.7, 6.9)."""
    from gateway.db.models import PhoneNumber
    from gateway.services import outbound
    from gateway.services.leases import Lease

    session_id = answered_not_sent(runtime, queue, post, monkeypatch)
    dying = Lease(runtime, session_id, "send")
    assert dying.acquire()
    wait, handover = outbound._hand_over(runtime, dying, outbound._next_unsent(runtime, session_id))
    assert wait is None and handover is not None  # handed over; then the worker died, the lease still held

    def next_send_at():
        with runtime.db.begin() as tx:
            return tx.get(PhoneNumber, number.id).next_send_at

    first_slot_ends = next_send_at()
    clock.advance(runtime.settings.lease_seconds + 1)
    run_job(runtime, "send_pending", session_id)

    assert replies(runtime) == [("hello", "delivered")]
    assert next_send_at() > first_slot_ends + timedelta(seconds=runtime.settings.lease_seconds)


def test_a_reply_whose_worker_died_after_twilio_took_it_counts_as_sent_from_its_callback(runtime, queue, number,
                                                                                        post, monkeypatch):
    """The worker died between Twilio's accepting the reply and recording it; the status callback brings the
    sid. The reply counts as sent from its hand-over, so loop protection counts it (SPEC 6.9)."""
    from gateway.services import outbound
    from gateway.services.leases import Lease

    session_id = answered_not_sent(runtime, queue, post, monkeypatch)
    dying = Lease(runtime, session_id, "send")
    assert dying.acquire()
    _, handover = outbound._hand_over(runtime, dying, outbound._next_unsent(runtime, session_id))

    assert apply_status(runtime, handover.sms.message_id, "SMtookbeforethecrash", "sent", None)

    with runtime.db.begin() as tx:
        reply = tx.scalar(select(Message).where(Message.role == "assistant"))
    assert (reply.status, reply.twilio_sid) == ("sent", "SMtookbeforethecrash")
    assert reply.sent_at is not None and reply.sent_at == reply.send_started_at


def test_a_reply_settled_by_a_callback_after_the_lane_read_it_is_not_handed_over(runtime, queue, number, post,
                                                                                 monkeypatch):
    """The send lane reads the next unsent reply outside a transaction; a status callback (of an earlier try
    that Twilio had after all) settles it before the hand-over. The hand-over checks it is still unsent."""
    from gateway.services import outbound

    session_id = answered_not_sent(runtime, queue, post, monkeypatch)
    read = outbound._next_unsent

    def read_then_settled(runtime_, session_id_):
        found = read(runtime_, session_id_)
        if found is not None:
            assert apply_status(runtime_, found.id, "SMsettledmeanwhile", "delivered", None)
        return found

    monkeypatch.setattr(outbound, "_next_unsent", read_then_settled)
    run_job(runtime, "send_pending", session_id)

    with runtime.db.begin() as tx:
        reply = tx.scalar(select(Message).where(Message.role == "assistant"))
    assert (reply.status, reply.twilio_sid, reply.attempts) == ("delivered", "SMsettledmeanwhile", 0)


def test_status_callbacks_without_a_subscriber_are_applied_without_a_transaction(runtime, queue, number, post):
    """Callbacks come two or three per reply. On PostgreSQL one whose assistant takes no message.status
    event writes only the message's row, by autocommit statements: no BEGIN or COMMIT. Forward only, found
    by id or by sid; an opt-out code (21610) still takes a transaction, which records the opt-out."""
    post("hello")
    job, args, _ = queue.jobs.pop(0)
    run_job(runtime, job, *args)
    with runtime.db.begin() as tx:
        reply = tx.scalars(select(Message).where(Message.role == "assistant")).one()
        tx.execute(update(Message).where(Message.id == reply.id).values(status="sending", twilio_sid=None))
    commits = []

    def committed(connection):
        commits.append(1)

    def callback(message_id, sid, status, code=None) -> bool:
        event.listen(runtime.engine, "commit", committed)
        try:
            return apply_status(runtime, message_id, sid, status, code)
        finally:
            event.remove(runtime.engine, "commit", committed)

    assert callback(reply.id, "SMcallback1", "sent")
    assert state(runtime, reply.id) == ("sent", "SMcallback1")
    assert callback(None, "SMcallback1", "delivered")  # found by its sid
    assert callback(reply.id, "SMcallback1", "sent")  # late: never back
    assert not callback(None, "SMnobody", "sent")
    assert state(runtime, reply.id) == ("delivered", "SMcallback1")
    if runtime.engine.dialect.name == "postgresql":
        assert commits == []
    commits.clear()
    assert callback(reply.id, "SMcallback1", "undelivered", "21610")
    assert commits
    with runtime.db.begin() as tx:
        assert tx.scalar(select(func.count()).select_from(OptOut)) == 1


def state(runtime, message_id: str) -> tuple[str, str | None]:
    with runtime.db.begin() as tx:
        message = tx.get(Message, message_id)
        return message.status, message.twilio_sid


def test_a_turn_reads_its_session_number_assistant_and_history_on_every_database(runtime, queue, number, assistant,
                                                                                  post, monkeypatch):
    """What the engine is given comes from the session's rows as read on this database (the turn reads plain
    columns, not ORM objects): the assistant's prompt, variables and secret, the customer's and the number's
    numbers, and every earlier text and reply in order, none of the texts being answered."""
    update_assistant(runtime, assistant.id, AssistantUpdate(
        systemPrompt="Help {{customer.number}} for {{business}} at {{phoneNumber.number}}",
        variableValues={"business": "Bikes"}))
    seen = []
    call_with_retries = turns.call_with_retries

    def spying(engine, context, turn, *args, **kwargs):
        seen.append((context, turn))
        return call_with_retries(engine, context, turn, *args, **kwargs)

    monkeypatch.setattr(turns, "call_with_retries", spying)
    post("one")
    run_job(runtime, *_turn_job(queue))
    post("two")
    post("three")
    run_job(runtime, *_turn_job(queue))
    queue.jobs.clear()  # the second text's job: the first job answered both

    (first, _), (second, two), (third, three) = seen
    assert (two.text, three.text) == ("two", "three")
    assert first.history == []
    assert [(item.role, item.content) for item in second.history] == [("user", "one"), ("assistant", "one")]
    assert [(item.role, item.content) for item in third.history] == [
        ("user", "one"), ("assistant", "one"), ("user", "two"), ("assistant", "two")]
    with runtime.db.begin() as tx:
        session = tx.scalar(select(Session))
    for context in (first, second, third):
        assert (context.session_id, context.assistant_id) == (session.id, assistant.id)
        assert context.system_prompt == f"Help {CUSTOMER} for Bikes at {BUSINESS}"
        assert context.customer_number == CUSTOMER
        assert context.session_name == session.name
        assert context.secret == assistant.server_secret
        assert context.config["provider"] == "echo"
    assert replies(runtime) == [("one", "delivered"), ("two", "delivered"), ("three", "delivered")]


def _turn_job(queue) -> tuple[str, str]:
    job, args, _ = queue.jobs.pop(0)
    assert job == "process_turns"
    return job, args[0]
