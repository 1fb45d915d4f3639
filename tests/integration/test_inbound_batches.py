"""Group commit of webhooks (gateway/services/inbound.py commit_texts): a batch stores exactly what
the same texts would have stored one by one, on SQLite and on PostgreSQL (SPEC 5, 6.1, 6.3, 6.4)."""

from __future__ import annotations

import collections
import re
import threading
from datetime import timedelta
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session as OrmSession

from gateway import create_app
from gateway.db.group_commit import GroupCommit
from gateway.db.models import Customer, Event, Message, Session
from gateway.schemas import PhoneNumberCreate
from gateway.services import inbound
from gateway.services.inbound import accept_inbound, commit_texts, jobs_for, parse_inbound
from gateway.services.phone_numbers import create_phone_number
from tests.conftest import BUSINESS, CUSTOMER, PUBLIC_URL, inbound_params, sign
from tests.support.recording_queue import RecordingQueue, queue, runtime  # noqa: F401 - pytest fixtures: jobs wait for the test

OTHER_CUSTOMER = "+14155550999"
OTHER_BUSINESS = "+15550100001"
NOBODYS_NUMBER = "+15550109999"


def store_texts(runtime, batch):
    """One batch as the webhooks' group commit handles it: committed, then its jobs queued."""
    accepted = commit_texts(runtime, batch)
    runtime.enqueue_many(jobs_for(accepted))
    return accepted


def sms(body: str, sid: str, from_: str = CUSTOMER, to: str = BUSINESS, **extra):
    return parse_inbound(inbound_params(body, sid=sid, from_=from_, to=to, **extra))


def texts_of(runtime) -> list[Message]:
    with runtime.db.begin() as tx:
        return list(tx.scalars(select(Message).where(Message.role == "user").order_by(Message.twilio_sid)))


def sessions_of(runtime) -> list[Session]:
    with runtime.db.begin() as tx:
        return list(tx.scalars(select(Session).order_by(Session.created_at, Session.name)))


def count(runtime, model) -> int:
    with runtime.db.begin() as tx:
        return tx.scalar(select(func.count()).select_from(model))


def turns(queue) -> list[str]:
    return [args[0] for job, args, _ in queue.jobs if job == "process_turns"]


def test_the_runtime_stores_webhooks_through_group_commit(runtime, number):
    """Every runtime's accept_inbound goes through a GroupCommit whose store is commit_texts."""
    assert isinstance(runtime.inbound, GroupCommit)
    assert accept_inbound(runtime, sms("hi", "SMaaa1")).outcome == "stored"
    assert [m.twilio_sid for m in texts_of(runtime)] == ["SMaaa1"]


def test_a_batch_stores_each_text_as_if_they_had_come_one_by_one(runtime, queue, number):
    """Texts of one conversation share its session in arrival order; duplicates and unknown numbers store nothing."""
    store_texts(runtime, [sms("before", "SMold")])
    queue.jobs.clear()
    batch = [
        sms("first", "SMb3"),
        sms("other customer", "SMb1", from_=OTHER_CUSTOMER),
        sms("second", "SMb2"),  # the same conversation as the first; sids out of order on purpose
        sms("first again", "SMb3"),  # Twilio retried the first text inside the same batch
        sms("nobody's", "SMb4", to=NOBODYS_NUMBER),
        sms("stored before", "SMold"),
    ]
    results = store_texts(runtime, batch)

    assert [r.outcome for r in results] == ["stored", "stored", "stored", "duplicate", "unknown_number", "duplicate"]
    first, other, second = results[:3]
    assert first.session_id == second.session_id != other.session_id
    # The conversation already had a session from "before"; the other customer's is new and opened by its text.
    assert (first.session_created, other.session_created, second.session_created) == (False, True, False)

    stored = {m.twilio_sid: m for m in texts_of(runtime)}
    assert sorted(stored) == ["SMb1", "SMb2", "SMb3", "SMold"]
    assert stored["SMb3"].content == "first" and stored["SMb2"].content == "second"
    # Order within a session is arrival order, whatever the sids: "first" before "second" (SPEC 6.3).
    assert stored["SMold"].seq < stored["SMb3"].seq < stored["SMb2"].seq
    assert stored["SMb1"].seq == 1
    assert count(runtime, Session) == 2 and count(runtime, Customer) == 2
    # One turn job per session with new texts, whatever the number of texts.
    assert sorted(turns(queue)) == sorted({first.session_id, other.session_id})


def test_a_new_conversation_with_two_texts_in_one_batch_opens_one_session(runtime, number):
    """Two first texts of one customer in one batch: one session, positions 1 and 2, the first text opened it."""
    results = store_texts(runtime, [sms("one", "SMc1"), sms("two", "SMc2")])
    assert [(r.outcome, r.session_created) for r in results] == [("stored", True), ("stored", False)]
    [session] = sessions_of(runtime)
    assert session.last_seq == 2
    assert [(m.content, m.seq) for m in texts_of(runtime)] == [("one", 1), ("two", 2)]


def test_an_expired_session_in_a_batch_is_completed_and_replaced_while_a_live_one_continues(runtime, clock, number):
    """In one batch: a conversation past its expiry gets a new session, another one keeps its live session."""
    first = store_texts(runtime, [sms("hello", "SMd1")])[0]
    clock.advance(86400 - 10)
    other = store_texts(runtime, [sms("hello", "SMd2", from_=OTHER_CUSTOMER)])[0]
    clock.advance(20)  # the first conversation's session has expired, the other's has not

    again, continued = store_texts(runtime, [sms("back again", "SMd3"),
                                             sms("still here", "SMd4", from_=OTHER_CUSTOMER)])

    assert again.session_id != first.session_id and again.session_created
    assert continued.session_id == other.session_id and not continued.session_created
    statuses = {s.id: s.status for s in sessions_of(runtime)}
    assert statuses == {first.session_id: "completed", other.session_id: "active", again.session_id: "active"}


def test_live_sessions_in_one_batch_each_reserve_their_positions_and_record_the_activity(runtime, clock, assistant):
    """Several live conversations in one batch (on PostgreSQL one UPDATE reserves all their positions): each
    gets the next positions of its own session, in arrival order, and its activity and inactivity expiry move on."""
    number = create_phone_number(runtime, PhoneNumberCreate(number=BUSINESS, assistantId=assistant.id,
                                                            sessionInactivitySeconds=600))
    first = {customer: store_texts(runtime, [sms("hello", f"SMm{n}", from_=customer)])[0]
             for n, customer in enumerate((CUSTOMER, OTHER_CUSTOMER, "+14155550777"))}
    clock.advance(100)

    results = store_texts(runtime, [sms("a2", "SMm9", from_=CUSTOMER), sms("b2", "SMm8", from_=OTHER_CUSTOMER),
                                    sms("a3", "SMm7", from_=CUSTOMER)])

    assert [r.session_id for r in results] == [first[CUSTOMER].session_id, first[OTHER_CUSTOMER].session_id,
                                               first[CUSTOMER].session_id]
    assert not any(r.session_created for r in results)
    stored = {m.twilio_sid: m.seq for m in texts_of(runtime)}
    assert (stored["SMm0"], stored["SMm9"], stored["SMm7"]) == (1, 2, 3)
    assert (stored["SMm1"], stored["SMm8"]) == (1, 2)
    sessions = {s.id: s for s in sessions_of(runtime)}
    now = clock.now()
    for customer, last_seq in ((CUSTOMER, 3), (OTHER_CUSTOMER, 2), ("+14155550777", 1)):
        session = sessions[first[customer].session_id]
        assert session.last_seq == last_seq
        touched = customer != "+14155550777"  # the third conversation had no text in the batch
        assert session.last_activity_at == (now if touched else now - timedelta(seconds=100))
        assert session.expires_at == session.last_activity_at + timedelta(seconds=600)
    assert number.id == sessions[first[CUSTOMER].session_id].phone_number_id


def test_one_customer_texting_two_numbers_in_one_batch_is_one_customer_with_two_sessions(runtime, assistant, number):
    """A customer is one row however many numbers it texts; each (number, customer) pair is its own conversation."""
    create_phone_number(runtime, PhoneNumberCreate(number=OTHER_BUSINESS, assistantId=assistant.id))
    results = store_texts(runtime, [sms("to one", "SMe1"), sms("to two", "SMe2", to=OTHER_BUSINESS)])
    assert [r.outcome for r in results] == ["stored", "stored"]
    assert results[0].session_id != results[1].session_id
    assert count(runtime, Customer) == 1 and count(runtime, Session) == 2


def test_a_text_found_by_its_messaging_service_is_stored_beside_texts_found_by_number(runtime, assistant, number):
    """A text whose To is unknown but whose MessagingServiceSid names a number maps to that number, in one batch."""
    service = "MG" + "1" * 32
    serviced = create_phone_number(runtime, PhoneNumberCreate(number=OTHER_BUSINESS, assistantId=assistant.id,
                                                              messagingServiceSid=service))
    results = store_texts(runtime, [
        sms("by number", "SMf1"),
        sms("by service", "SMf2", to=NOBODYS_NUMBER, MessagingServiceSid=service),
        sms("no service", "SMf3", to=NOBODYS_NUMBER),
    ])
    assert [r.outcome for r in results] == ["stored", "stored", "unknown_number"]
    with runtime.db.begin() as tx:
        assert tx.get(Session, results[1].session_id).phone_number_id == serviced.id


def test_a_duplicate_stored_elsewhere_after_the_lookup_sends_the_batch_through_one_text_at_a_time(
    runtime, queue, number, monkeypatch
):
    """A MessageSid committed by another process between lookup and insert: that text is a duplicate, its
    session work is undone, and the rest of the batch is stored as usual (SPEC 6.4)."""
    store_texts(runtime, [sms("stored by the other process", "SMg1", from_=OTHER_CUSTOMER)])
    queue.jobs.clear()
    real_look_up = inbound._look_up
    hidden = {"SMg1"}

    def look_up_missing_the_race(source, batch):
        # What a lookup sees when the other process commits just after it: no duplicate yet.
        found = real_look_up(source, batch)
        return [f if f is None or sms.sid not in hidden else type(f)(f.number, f.subscriber, None, f.customer_id, None)
                for f, sms in zip(found, batch)]

    monkeypatch.setattr(inbound, "_look_up", look_up_missing_the_race)
    results = store_texts(runtime, [sms("new", "SMg2"), sms("the same text again", "SMg1", from_=OTHER_CUSTOMER)])

    assert [r.outcome for r in results] == ["stored", "duplicate"]
    assert sorted(m.twilio_sid for m in texts_of(runtime)) == ["SMg1", "SMg2"]
    sessions = {s.name: s for s in sessions_of(runtime)}
    assert sorted(sessions) == [CUSTOMER, OTHER_CUSTOMER]
    # The duplicate's rolled-back attempt left no session and no reserved position behind.
    assert sessions[OTHER_CUSTOMER].last_seq == 1 and sessions[CUSTOMER].last_seq == 1
    assert turns(queue) == [results[0].session_id]


class DiskFull(Exception):
    sqlstate = "53100"


class Deadlock(Exception):
    sqlstate = "40P01"


def fail_inserts(monkeypatch, error_for):
    """Make the batch's inserts raise ``error_for(texts)`` (or go ahead when it returns None), whichever way
    they are made: one statement per table, or together in one (PostgreSQL), in a transaction or not."""
    real_insert, real_together = inbound.insert_many_or_ignore, inbound.insert_together
    real_reserving = inbound.insert_reserving_positions

    def insert(tx, model, rows, *args):
        error = error_for(len(rows)) if model is Message else None
        if error is not None:
            raise error
        return real_insert(tx, model, rows, *args)

    def together(tx, parts):
        error = error_for(len(parts[-1][1]))  # the last part holds the texts
        if error is not None:
            raise error
        return real_together(tx, parts)

    def reserving(connection, live, now, parts):
        error = error_for(len(parts[-1][1]))
        if error is not None:
            raise error
        return real_reserving(connection, live, now, parts)

    monkeypatch.setattr(inbound, "insert_many_or_ignore", insert)
    monkeypatch.setattr(inbound, "insert_together", together)
    monkeypatch.setattr(inbound, "insert_reserving_positions", reserving)


def test_a_batch_aborted_by_a_deadlock_is_stored_one_text_at_a_time(runtime, number, monkeypatch):
    """PostgreSQL breaking a deadlock aborts the batch (SQLSTATE 40P01); each text is then stored on its own."""
    aborted = []

    def deadlock_once(texts):
        if texts > 1 and not aborted:
            aborted.append(texts)
            return DBAPIError("INSERT INTO messages ...", {}, Deadlock("deadlock detected"))
        return None

    fail_inserts(monkeypatch, deadlock_once)
    results = store_texts(runtime, [sms("one", "SMh1"), sms("two", "SMh2", from_=OTHER_CUSTOMER)])

    assert aborted == [2]
    assert [r.outcome for r in results] == ["stored", "stored"]
    assert sorted(m.twilio_sid for m in texts_of(runtime)) == ["SMh1", "SMh2"]


def test_other_database_errors_fail_the_whole_batch_and_store_nothing(runtime, number, monkeypatch):
    """Any other error rolls the batch back and reaches every caller: nothing half-stored (SPEC 5)."""
    fail_inserts(monkeypatch, lambda texts: DBAPIError("INSERT INTO messages ...", {}, DiskFull("could not extend file")))
    with pytest.raises(DBAPIError):
        store_texts(runtime, [sms("one", "SMi1"), sms("two", "SMi2", from_=OTHER_CUSTOMER)])
    assert count(runtime, Message) == 0 and count(runtime, Session) == 0 and count(runtime, Customer) == 0


def deadlock_then_fail_the_second_alone(texts_per_call: list[int]):
    """An ``error_for`` of fail_inserts: the first write of more than one text deadlocks; of the texts then
    written one at a time, the second fails on its own (the disk full meanwhile), the others go ahead."""
    def error_for(texts: int):
        texts_per_call.append(texts)
        if texts > 1:
            return DBAPIError("INSERT INTO messages ...", {}, Deadlock("deadlock detected"))
        if texts_per_call.count(1) == 2:
            return DBAPIError("INSERT INTO messages ...", {}, DiskFull("could not extend file"))
        return None

    return error_for


def test_a_text_failing_alone_after_its_batch_failed_fails_alone(runtime, queue, number, monkeypatch):
    """Two faults in a row: a batch aborted by a deadlock is stored one text at a time, and one of those texts
    then fails on its own. The texts committed before and after it are stored and reported stored, with
    their turns queued; only the failed one reports its error, and nothing of it was committed."""
    calls: list[int] = []
    fail_inserts(monkeypatch, deadlock_then_fail_the_second_alone(calls))
    batch = [sms("one", "SMj1"), sms("two", "SMj2", from_=OTHER_CUSTOMER), sms("three", "SMj3", from_=CUSTOMER)]
    results = store_texts(runtime, batch)

    assert calls == [3, 1, 1, 1]
    assert [r.outcome for r in results] == ["stored", "failed", "stored"]
    assert isinstance(results[1].error, DBAPIError) and results[0].error is None and results[2].error is None
    assert [m.twilio_sid for m in texts_of(runtime)] == ["SMj1", "SMj3"]
    assert [s.name for s in sessions_of(runtime)] == [CUSTOMER]
    assert turns(queue) == [results[0].session_id]  # one turn job for the session of both stored texts


def test_each_webhook_of_a_batch_answers_for_its_own_text_when_one_fails_alone(runtime, queue, number, monkeypatch):
    """Over the Flask app: three webhooks that wait behind a fourth are stored as one batch, which deadlocks;
    stored one at a time, the second fails. Its webhook alone answers 500; the other two answer 200, as
    their texts are committed (answering them 500 would make Twilio report a text that was in fact taken)."""
    app = create_app(runtime=runtime)
    holding, let_go = threading.Event(), threading.Event()
    calls: list[int] = []
    then = deadlock_then_fail_the_second_alone(calls)

    def error_for(texts: int):
        if not holding.is_set():  # the first webhook's own batch holds the lane until three more wait behind it
            holding.set()
            assert let_go.wait(10), "the test never let the first batch go"
            return None
        return then(texts)

    fail_inserts(monkeypatch, error_for)
    customers = [CUSTOMER, OTHER_CUSTOMER, "+14155550998", "+14155550997"]

    def deliver(index: int) -> int:
        params = inbound_params(f"text {index}", sid=f"SMk{index}{'0' * 31}", from_=customers[index])
        signature = sign(runtime.auth_token, PUBLIC_URL + "/twilio/sms", params)
        return app.test_client().post("/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = [pool.submit(deliver, 0)]
        assert holding.wait(10), "the first webhook never reached its write"
        for index in range(1, 4):  # one at a time, so that the batch holds them in this order
            answers.append(pool.submit(deliver, index))
            for _ in range(500):
                if len(runtime.inbound._waiting) == index:  # waiting in the group commit behind the first
                    break
                threading.Event().wait(0.01)
            assert len(runtime.inbound._waiting) == index
        let_go.set()
        statuses = [answer.result(timeout=10) for answer in answers]

    assert calls == [3, 1, 1, 1]
    assert statuses == [200, 200, 500, 200]
    assert sorted(m.content for m in texts_of(runtime)) == ["text 0", "text 1", "text 3"]


def hide_from_lookup(monkeypatch, hidden_customers=(), hidden_sessions=()):
    """The lookup sees what it would have seen just before another process committed: these customers and
    their conversations' sessions do not exist yet."""
    real_look_up = inbound._look_up

    def look_up(source, batch):
        found = real_look_up(source, batch)
        return [
            f if f is None else type(f)(
                f.number, f.subscriber, None if sms.from_ in hidden_sessions else f.session,
                None if sms.from_ in hidden_customers else f.customer_id, f.duplicate_id)
            for f, sms in zip(found, batch)
        ]

    monkeypatch.setattr(inbound, "_look_up", look_up)


def test_a_customer_created_elsewhere_after_the_lookup_is_the_one_the_new_session_refers_to(
    runtime, number, monkeypatch
):
    """Another process created the customer (for another number's conversation) just after the lookup: the
    batch's own customer row is skipped, and its session refers to the existing customer; one customer row."""
    existing = store_texts(runtime, [sms("to the first number", "SMk0", from_=OTHER_CUSTOMER)])[0]
    with runtime.db.begin() as tx:
        customer_id = tx.get(Session, existing.session_id).customer_id
        tx.query(Session).filter_by(id=existing.session_id).update({"status": "completed", "active_key": None})
    hide_from_lookup(monkeypatch, hidden_customers={OTHER_CUSTOMER})

    results = store_texts(runtime, [sms("hi", "SMk1"), sms("new conversation", "SMk2", from_=OTHER_CUSTOMER)])

    assert [(r.outcome, r.session_created) for r in results] == [("stored", True), ("stored", True)]
    assert count(runtime, Customer) == 2
    with runtime.db.begin() as tx:
        assert tx.get(Session, results[1].session_id).customer_id == customer_id


def statements_of(runtime, work) -> int:
    """How many SQL statements ``work()`` sends to the database."""
    sent = []

    def record(*_):
        sent.append(1)

    event.listen(runtime.engine, "before_cursor_execute", record)
    try:
        work()
    finally:
        event.remove(runtime.engine, "before_cursor_execute", record)
    return len(sent)


def store_counting(runtime, batch) -> tuple[list, int]:
    """store_texts(batch)'s results, and how many SQL statements it sent."""
    results = []
    sent = statements_of(runtime, lambda: results.extend(store_texts(runtime, batch)))
    return results, sent


def test_live_and_new_conversations_in_one_batch_take_one_lookup_and_one_write_on_postgres(runtime, number):
    """On PostgreSQL a batch of live and new conversations (no expired session, no event due) is read by one
    statement and written by one more, in autocommit: positions reserved, customers, sessions and texts stored."""
    first = store_texts(runtime, [sms("hello", "SMo1")])[0]
    results, sent = store_counting(runtime, [
        sms("again", "SMo2"), sms("someone new", "SMo3", from_=OTHER_CUSTOMER), sms("and again", "SMo4")])

    if runtime.engine.dialect.name == "postgresql":
        assert sent == 2
    assert [(r.outcome, r.session_created) for r in results] == [("stored", False), ("stored", True), ("stored", False)]
    assert results[0].session_id == results[2].session_id == first.session_id
    stored = {m.twilio_sid: (m.session_id, m.seq) for m in texts_of(runtime)}
    assert stored == {"SMo1": (first.session_id, 1), "SMo2": (first.session_id, 2), "SMo4": (first.session_id, 3),
                      "SMo3": (results[1].session_id, 1)}
    assert {s.name: s.last_seq for s in sessions_of(runtime)} == {CUSTOMER: 3, OTHER_CUSTOMER: 1}


def test_session_created_events_are_written_with_the_sessions_they_report(runtime, queue, assistant):
    """A number whose assistant subscribes to session.created: each session a batch opens has its event,
    whose view is the session as stored (with the name of a customer known before), and its delivery
    is enqueued with the turns. On PostgreSQL the events join the batch's one write in autocommit."""
    from gateway.schemas import AssistantCreate, SessionCreate
    from gateway.services.assistants import create_assistant
    from gateway.services.session_api import create_session
    from gateway.views import session_view

    hooked = create_assistant(runtime, AssistantCreate(
        name="Hooked", engine={"provider": "echo"}, serverUrl="https://hooks.example.com/gateway",
        serverEvents=["session.created"]))
    create_phone_number(runtime, PhoneNumberCreate(number=BUSINESS, assistantId=hooked.id, messagesPerSecond=1000))
    # A customer known by name (from a web session of another assistant) before the first text.
    create_session(runtime, SessionCreate(assistantId=assistant.id, customer={"number": OTHER_CUSTOMER, "name": "Ann"}))
    queue.jobs.clear()

    results, sent = store_counting(runtime, [
        sms("hi", "SMe1"), sms("hello", "SMe2", from_=OTHER_CUSTOMER), sms("me again", "SMe3")])

    if runtime.engine.dialect.name == "postgresql":
        assert sent == 2
    assert [(r.outcome, r.session_created) for r in results] == [("stored", True), ("stored", True), ("stored", False)]
    with runtime.db.begin() as tx:
        written = {e.payload["message"]["session"]["id"]: e
                   for e in tx.scalars(select(Event).where(Event.assistant_id == hooked.id))}
        assert sorted(written) == sorted({results[0].session_id, results[1].session_id})
        for session_id, event_row in written.items():
            session = tx.get(Session, session_id)
            assert event_row.payload["message"]["session"] == session_view(session, tx.get(Customer, session.customer_id))
            assert event_row.payload["message"]["id"] == event_row.id
            assert (event_row.type, event_row.status, event_row.attempts) == ("session.created", "pending", 0)
        assert written[results[1].session_id].payload["message"]["session"]["customer"] == {
            "number": OTHER_CUSTOMER, "name": "Ann"}
    assert sorted(args[0] for job, args, _ in queue.jobs if job == "deliver_event") == sorted(
        e.id for e in written.values())
    assert sorted(turns(queue)) == sorted({results[0].session_id, results[1].session_id})


# Prepared statements and their plans are PostgreSQL's: this test runs there only.
@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_texts_to_live_sessions_reuse_a_generic_plan_on_postgres(runtime, queue, number):
    """Texts of returning customers, alone or several in a batch, are written by statements PostgreSQL
    plans once and then reuses (psycopg prepares each after five runs): with the sessions' ids as an
    array, the generic plan assumed ten ids and looked costlier than a fresh plan for the few a batch
    holds, so every batch paid for planning again."""
    assert runtime.engine.dialect.name == "postgresql"
    # Enough sessions, and their statistics, for the planner's estimates to tell one id from ten.
    customers = [f"+1415555{n:04d}" for n in range(2000)]
    for start in range(0, len(customers), 500):
        store_texts(runtime, [sms("first", f"SMg{n}a", from_=customers[n]) for n in range(start, start + 500)])
    with runtime.engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE sessions")
    ran_on = set()  # prepared statements are each connection's own: those that wrote are read below

    def note_connection(connection, cursor, statement, *args):
        if statement.startswith("WITH reserved AS (UPDATE sessions"):
            ran_on.add(connection.connection.driver_connection)

    event.listen(runtime.engine, "before_cursor_execute", note_connection)
    for n, customer in enumerate(customers[:25]):
        assert store_texts(runtime, [sms("again", f"SMg{n}b", from_=customer)])[0].session_created is False
    for start in range(25, 100, 3):  # three returning customers a batch
        batch = [sms("again", f"SMg{n}b", from_=customers[n]) for n in range(start, start + 3)]
        assert [r.session_created for r in store_texts(runtime, batch)] == [False] * 3
    event.remove(runtime.engine, "before_cursor_execute", note_connection)
    plans = collections.Counter()  # generic plans, by the number of live sessions a statement matches
    for driver_connection in ran_on:  # back in the pool, idle
        for statement, generic in driver_connection.execute(
                "SELECT statement, generic_plans FROM pg_prepared_statements "
                "WHERE starts_with(statement, 'WITH reserved AS (UPDATE sessions') "
                "AND position('INSERT INTO customers' IN statement) = 0").fetchall():
            listed = re.search(r"WHERE sessions\.id IN \(((CAST\(\$\d+ AS varchar\)(, )?)+)\)", statement)
            plans[len(listed.group(1).split(", ")) if listed else statement[statement.index("WHERE"):]] += generic
        driver_connection.rollback()
    # Of 25 runs of each: psycopg prepares at the 6th, PostgreSQL tries 5 custom plans first.
    assert plans[1] >= 10 and plans[3] >= 10, plans


def test_a_session_deleted_after_the_lookup_gets_its_text_in_a_new_session(runtime, queue, number, monkeypatch):
    """The conversation's session was deleted (DELETE /api/sessions/{id}) just after the lookup: the write
    fails as a whole (its text refers to no session) and the careful way opens a new session for it."""
    from gateway.services.session_api import delete_session

    gone = store_texts(runtime, [sms("hello", "SMp1")])[0]
    real_look_up = inbound._look_up

    def look_up_then_delete(source, batch):
        found = real_look_up(source, batch)
        if not isinstance(source, OrmSession):  # the first, autocommit lookup of PostgreSQL (SQLite: the careful way)
            delete_session(runtime, gone.session_id)
        return found

    monkeypatch.setattr(inbound, "_look_up", look_up_then_delete)
    if runtime.engine.dialect.name != "postgresql":
        delete_session(runtime, gone.session_id)
    result = store_texts(runtime, [sms("anyone there?", "SMp2"), sms("hi", "SMp3", from_=OTHER_CUSTOMER)])

    assert [(r.outcome, r.session_created) for r in result] == [("stored", True), ("stored", True)]
    assert result[0].session_id != gone.session_id
    assert {m.twilio_sid: m.seq for m in texts_of(runtime)} == {"SMp2": 1, "SMp3": 1}
    assert {s.name for s in sessions_of(runtime)} == {CUSTOMER, OTHER_CUSTOMER}


def end_after_lookup(runtime, monkeypatch, session_id: str, lookups: tuple[str, ...]) -> list[str]:
    """End the session (POST /api/sessions/{id}/end) right after the lookups named run: "autocommit" (the
    first lookup of PostgreSQL), "transaction" (the careful way's). Returns the kinds of lookups made."""
    from gateway.services.sessions import end_session

    real_look_up = inbound._look_up
    made = []

    def look_up_then_end(source, batch):
        found = real_look_up(source, batch)
        kind = "transaction" if isinstance(source, OrmSession) else "autocommit"
        made.append(kind)
        if kind in lookups and made.count(kind) == 1:
            end_session(runtime, session_id)
        return found

    monkeypatch.setattr(inbound, "_look_up", look_up_then_end)
    return made


@pytest.mark.parametrize("lookups", [("autocommit",), ("transaction",)], ids=["one statement", "careful way"])
def test_a_session_ended_after_the_lookup_is_not_reopened_its_text_opens_the_next(
    runtime, queue, number, monkeypatch, lookups
):
    """The conversation's session was ended (by hand, or by the sweep) just after the lookup found it active:
    the text does not go into the completed session (SPEC 6.2) but opens the next one, and the completed
    session keeps its positions and its end."""
    ended = store_texts(runtime, [sms("hello", "SMr1")])[0]
    queue.jobs.clear()
    with runtime.db.begin() as tx:
        before = tx.get(Session, ended.session_id)
        before = (before.last_seq, before.expires_at)
    if runtime.engine.dialect.name == "postgresql":
        if lookups == ("transaction",):
            monkeypatch.setattr(inbound, "_store_together", lambda rt, batch: inbound._store_batch(rt, batch, False))
        made = end_after_lookup(runtime, monkeypatch, ended.session_id, lookups)
    else:  # SQLite: the lookup and the write are one IMMEDIATE transaction, which nothing can come between
        from gateway.services.sessions import end_session

        end_session(runtime, ended.session_id)
        made = None
    results = store_texts(runtime, [sms("anyone there?", "SMr2"), sms("hi", "SMr3", from_=OTHER_CUSTOMER)])

    if made is not None:
        assert made[0] == lookups[0] and "transaction" in made  # looked up again, the careful way
    assert [(r.outcome, r.session_created) for r in results] == [("stored", True), ("stored", True)]
    assert results[0].session_id != ended.session_id
    assert {m.twilio_sid: (m.session_id, m.seq) for m in texts_of(runtime)} == {
        "SMr1": (ended.session_id, 1), "SMr2": (results[0].session_id, 1), "SMr3": (results[1].session_id, 1)}
    with runtime.db.begin() as tx:
        completed = tx.get(Session, ended.session_id)
        assert completed.status == "completed"
        assert (completed.last_seq, completed.expires_at) == before
    assert sorted(turns(queue)) == sorted({results[0].session_id, results[1].session_id})


def test_a_duplicate_of_a_live_conversation_stored_after_the_lookup_reserves_nothing(runtime, queue, number,
                                                                                       monkeypatch):
    """A MessageSid committed elsewhere just after the lookup, in a live conversation: nothing of the batch's
    write stays (no position taken by it), the text is a duplicate and the other one is stored."""
    first = store_texts(runtime, [sms("hello", "SMq1")])[0]
    store_texts(runtime, [sms("stored by the other process", "SMq2")])
    queue.jobs.clear()
    real_look_up = inbound._look_up

    def look_up_missing_the_race(source, batch):
        found = real_look_up(source, batch)
        return [f if f is None or sms.sid != "SMq2" else type(f)(f.number, f.subscriber, f.session, f.customer_id, None)
                for f, sms in zip(found, batch)]

    monkeypatch.setattr(inbound, "_look_up", look_up_missing_the_race)
    results = store_texts(runtime, [sms("the same text again", "SMq2"), sms("next", "SMq3")])

    assert [r.outcome for r in results] == ["duplicate", "stored"]
    assert {m.twilio_sid: m.seq for m in texts_of(runtime)} == {"SMq1": 1, "SMq2": 2, "SMq3": 3}
    assert [s.last_seq for s in sessions_of(runtime)] == [3]
    assert turns(queue) == [first.session_id]


def test_a_session_opened_elsewhere_after_the_lookup_takes_the_text_after_its_own(runtime, queue, number, monkeypatch):
    """Another process opened the conversation's session just after the lookup: the batch's new session is
    not created, the text goes into the winner's session at the next position, and nothing else changes."""
    winner = store_texts(runtime, [sms("first, stored elsewhere", "SMl1")])[0]
    queue.jobs.clear()
    hide_from_lookup(monkeypatch, hidden_customers={CUSTOMER}, hidden_sessions={CUSTOMER})

    results = store_texts(runtime, [sms("second", "SMl2"), sms("someone else", "SMl3", from_=OTHER_CUSTOMER)])

    assert [r.outcome for r in results] == ["stored", "stored"]
    assert results[0].session_id == winner.session_id and not results[0].session_created
    assert results[1].session_created
    assert count(runtime, Session) == 2 and count(runtime, Customer) == 2
    stored = {m.twilio_sid: m for m in texts_of(runtime)}
    assert (stored["SMl1"].seq, stored["SMl2"].seq, stored["SMl3"].seq) == (1, 2, 1)
    assert sorted(turns(queue)) == sorted({winner.session_id, results[1].session_id})


def test_rows_stored_in_a_batch_equal_rows_stored_alone(runtime, number):
    """Every column of a session, customer and text stored in a batch reads back as it does when stored alone
    (on PostgreSQL a batch's rows travel as one JSON parameter: datetimes, JSON and booleans must survive)."""
    media = [{"url": "https://example.com/a.jpg", "contentType": "image/jpeg"}]
    extra = dict(NumMedia="1", MediaUrl0=media[0]["url"], MediaContentType0="image/jpeg", FromCity="ÅLESUND")
    # The reference: one text stored the careful way, a plain INSERT ... VALUES with typed parameters.
    alone = inbound._store_batch(runtime, [sms("ünïcode 🚲 'quoted' \"text\"", "SMj1", **extra)], together=False)[0]
    batch = store_texts(runtime, [sms("ünïcode 🚲 'quoted' \"text\"", "SMj2", from_=OTHER_CUSTOMER, **extra),
                                  sms("ünïcode 🚲 'quoted' \"text\"", "SMj3", from_="+14155550777", **extra)])

    def columns(row, skip):
        return {c.key: getattr(row, c.key) for c in row.__mapper__.column_attrs if c.key not in skip}

    with runtime.db.begin() as tx:
        sessions = [tx.get(Session, r.session_id) for r in (alone, *batch)]
        messages = [tx.get(Message, r.message_id) for r in (alone, *batch)]
        customers = [tx.get(Customer, s.customer_id) for s in sessions]
        own = {"id", "name", "customer_id", "active_key", "session_id", "twilio_sid", "number"}
        assert columns(sessions[1], own) == columns(sessions[2], own) == columns(sessions[0], own)
        assert columns(messages[1], own) == columns(messages[2], own) == columns(messages[0], own)
        assert columns(customers[1], own) == columns(customers[2], own) == columns(customers[0], own)
        assert messages[1].media == media and messages[1].details["FromCity"] == "ÅLESUND"
        assert sessions[1].expires_at == sessions[0].expires_at and sessions[1].expires_at.tzinfo is not None


def test_concurrent_webhooks_to_one_app_are_stored_once_each_in_arrival_order_per_customer(runtime, queue, number):
    """48 webhooks from 16 threads at once (4 customers, 3 texts each, every text delivered 4 times) through
    the real Flask app: all answered 200, each text stored once, one session per customer, and each
    customer's texts in the order they were sent."""
    app = create_app(runtime=runtime)
    customers = [f"+1415555{index:04d}" for index in range(4)]
    texts = [(customer, f"text {n}", f"SM{index}x{n}{'0' * 28}") for index, customer in enumerate(customers)
             for n in range(3)]
    start = threading.Barrier(16)

    def deliver(worker: int) -> list[int]:
        client = app.test_client()
        statuses = []
        start.wait()
        # Each worker sends the texts of one customer, in order; four workers share each customer.
        for sender, body, sid in texts:
            if sender == customers[worker % 4]:
                params = inbound_params(body, sid=sid, from_=sender)
                signature = sign(runtime.auth_token, PUBLIC_URL + "/twilio/sms", params)
                statuses.append(client.post("/twilio/sms", data=params,
                                            headers={"X-Twilio-Signature": signature}).status_code)
        return statuses

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = [status for result in pool.map(deliver, range(16)) for status in result]

    assert statuses == [200] * 48
    stored = texts_of(runtime)
    assert sorted(m.twilio_sid for m in stored) == sorted(sid for *_, sid in texts)
    sessions = sessions_of(runtime)
    assert sorted(s.name for s in sessions) == customers
    for session in sessions:
        own = sorted((m for m in stored if m.session_id == session.id), key=lambda m: m.seq)
        # Every delivery of "text n" waited for "text n-1" to be answered, so arrival order is send order.
        assert [m.content for m in own] == ["text 0", "text 1", "text 2"]
        assert [m.seq for m in own] == [1, 2, 3] and session.last_seq == 3


class HeldQueue(RecordingQueue):
    """A queue whose enqueue waits until the test lets it go, as a slow Redis would."""

    def __init__(self):
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def enqueue_many(self, jobs):
        self.entered.set()
        assert self.release.wait(10), "the test never let the queue go"
        super().enqueue_many(jobs)


def test_the_webhook_answers_once_its_text_is_committed_and_queues_its_turn_after_answering(runtime, number):
    """Over a real HTTP server: Twilio gets its 200 while the turn's enqueue is still waiting on the queue, the
    text already committed; once the queue answers, the turn is queued (SPEC 5: stored before the response,
    all other work in jobs). Were the enqueue part of the answer, the POST would wait for the queue."""
    import httpx

    from tests.conftest import inbound_params as params_of
    from tests.support.net import LiveServer

    queue = runtime.queue = HeldQueue()
    server = LiveServer(create_app(runtime=runtime)).start()
    try:
        params = params_of("answered first", sid="SMfirst" + "0" * 27)
        signature = sign(runtime.auth_token, PUBLIC_URL + "/twilio/sms", params)
        response = httpx.post(server.url + "/twilio/sms", data=params, headers={"X-Twilio-Signature": signature},
                              timeout=5)
        assert response.status_code == 200 and "<Response/>" in response.text
        assert [m.content for m in texts_of(runtime)] == ["answered first"]
        assert queue.entered.wait(5), "the turn was never handed to the queue"
        assert queue.jobs == []
        queue.release.set()
        for _ in range(500):
            if queue.jobs:
                break
            threading.Event().wait(0.01)
        assert [(job, args) for job, args, _ in queue.jobs] == [("process_turns", (texts_of(runtime)[0].session_id,))]
    finally:
        queue.release.set()
        server.stop()


class CountingHeldQueue(HeldQueue):
    """A held queue that also records how many jobs each round trip carried."""

    def __init__(self):
        super().__init__()
        self.round_trips: list[int] = []

    def enqueue_many(self, jobs):
        self.round_trips.append(len(jobs))
        super().enqueue_many(jobs)


def test_jobs_of_batches_committed_while_a_push_waits_go_to_the_queue_together_once_each(runtime, number):
    """While the queue holds one batch's push, batches committed meanwhile wait for it in the push lane and then
    reach the queue in one round trip: every turn queued exactly once, in far fewer round trips than batches."""
    queue = runtime.queue = CountingHeldQueue()
    customers = [f"+1415556{index:04d}" for index in range(7)]

    def deliver(index: int):
        return accept_inbound(runtime, sms(f"text {index}", f"SMpush{index:02d}{'0' * 26}", from_=customers[index]))

    with ThreadPoolExecutor(max_workers=7) as pool:
        first = pool.submit(deliver, 0)
        assert queue.entered.wait(5), "the first batch's jobs never reached the queue"
        rest = []
        for index in range(1, 7):  # one at a time, each its own batch, committed before the next comes
            rest.append(pool.submit(deliver, index))
            for _ in range(500):
                if count(runtime, Message) == index + 1:
                    break
                threading.Event().wait(0.01)
        threading.Event().wait(0.3)  # the last one's jobs reach the push lane
        queue.release.set()
        accepted = [future.result(timeout=10) for future in [first, *rest]]

    assert [result.outcome for result in accepted] == ["stored"] * 7
    assert sorted(turns(queue)) == sorted(result.session_id for result in accepted)
    # One round trip for the first batch; the six batches committed while it waited share the next (a
    # slow thread may make it two). Pushed batch by batch, they would take six.
    assert queue.round_trips[0] == 1 and sum(queue.round_trips) == 7 and len(queue.round_trips) <= 3
