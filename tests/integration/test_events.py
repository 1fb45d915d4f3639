"""Lifecycle events (SPEC 6.11): what is POSTed to an assistant's serverUrl, how it is signed, and how it is retried.

Every test runs the embedded gateway (in-process queue, sandbox sender unless
it says otherwise) against a real HTTP receiver on 127.0.0.1
(``tests/support/event_receiver.py``) that checks ``X-Gateway-Signature``,
records each POST with its raw bytes and arrival time, and fails deliveries
on cue. Event retry delays are shortened (``EVENT_TUNABLES``, and per test
through ``tune``) so each test takes about a second. The clock is real time
plus an offset a test can move forward, so expiry can be reached without
waiting while delivery backoff still runs on real time. Runs on SQLite and
on PostgreSQL.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from gateway.config import Settings
from gateway.db.models import Assistant, Event, Message, Session
from gateway.schemas import AssistantCreate, PhoneNumberCreate, SessionCreate
from gateway.services import events as events_service
from gateway.services import inbound
from gateway.services import session_api
from gateway.services import sessions as sessions_service
from gateway.services.assistants import create_assistant
from gateway.services.inbound import accept_inbound, parse_inbound
from gateway.services.phone_numbers import create_phone_number
from gateway.services.sweeper import sweep
from tests.conftest import BUSINESS, CUSTOMER, PUBLIC_URL, inbound_params
from tests.support.event_receiver import SIGNATURE_HEADER, EventReceiver, sign, verify
from tests.support.observe import wait_until

SECRET = "event-secret-for-tests-0123456789abcdef"
OTHER_CUSTOMER = "+14155550177"
QUIET_BUSINESS = "+15550100042"

# Short backoff so a delivery retried several times still lands well within a second.
EVENT_TUNABLES = dict(event_retry_delay=0.05, event_retry_cap=0.5, event_timeout=2.0, event_tries=8)

OBJECT_OF = {
    "session.created": "session",
    "session.updated": "session",
    "session.deleted": "session",
    "chat.created": "chat",
    "chat.deleted": "chat",
    "message.status": "message",
}
# SPEC section 3: the API's fields of each object (a session's `messages` only when one is fetched).
FIELDS = {
    "session": {"id", "name", "status", "assistantId", "phoneNumberId", "customer", "expirationSeconds", "expiresAt",
                "assistantOverrides", "metadata", "cost", "createdAt", "updatedAt"},
    "chat": {"id", "sessionId", "input", "output", "status", "cost", "createdAt", "updatedAt"},
    "message": {"id", "sessionId", "role", "content", "media", "channel", "twilioSid", "status", "errorCode",
                "errorMessage", "segments", "encoding", "createdAt"},
}
SESSION_AND_CHAT_TYPES = {"session.created", "session.updated", "session.deleted", "chat.created", "chat.deleted"}


# -- fixtures -------------------------------------------------------------------------------


class ShiftedClock:
    """Real time plus an offset the test moves forward: expiry without waiting, backoff in real time."""

    def __init__(self):
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return datetime.now(timezone.utc) + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@pytest.fixture
def database_url_or_default(database_url):
    return database_url


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
def settings(instance_path) -> Settings:
    return Settings.from_env({}, instance_path=instance_path, public_url=PUBLIC_URL).replace(**EVENT_TUNABLES)


@pytest.fixture
def runtime(make_runtime, settings, database_url_or_default, clock):
    return make_runtime(settings.replace(database_url=database_url_or_default), clock=clock)


@pytest.fixture
def receiver():
    events = EventReceiver(secret=SECRET).start()
    yield events
    events.stop()


@pytest.fixture
def assistant(runtime, receiver):
    """The echo assistant, reporting every event type to the receiver (conftest's ``number`` uses it)."""
    return create_assistant(
        runtime,
        AssistantCreate(name="Reporting assistant", engine={"provider": "echo"}, serverUrl=receiver.url,
                        serverSecret=SECRET, serverEvents=list(OBJECT_OF)),
    )


# -- helpers ------------------------------------------------------------------------------------


def tune(runtime, **tunables) -> None:
    """Change event tunables of a running gateway (delivery jobs read them on every try)."""
    runtime.settings = runtime.settings.replace(**tunables)


def settle(runtime, within: float = 2.0) -> None:
    """Wait until no job runs, is ready, or is due within ``within`` seconds."""
    assert runtime.queue.wait_idle(20, include_delayed_within=within), "the gateway's jobs did not settle"


def stored_events(runtime) -> list[Event]:
    with runtime.db.begin() as tx:
        return list(tx.scalars(select(Event).order_by(Event.created_at, Event.id)))


def stored_event(runtime, event_id: str) -> Event:
    with runtime.db.begin() as tx:
        return tx.get(Event, event_id)


def sessions(runtime) -> list[Session]:
    with runtime.db.begin() as tx:
        return list(tx.scalars(select(Session).order_by(Session.created_at)))


def all_delivered(runtime, count: int | None = None):
    """The outbox, once it holds ``count`` events (if given) and every one of them is delivered."""
    events = stored_events(runtime)
    if not events or (count is not None and len(events) != count):
        return None
    return events if all(e.status == "delivered" for e in events) else None


def session_of(event) -> str:
    """The session an event is about."""
    name = OBJECT_OF[event.type]
    subject = event.subject
    return subject["id"] if name == "session" else subject["sessionId"]


def wait_event(receiver, event_type: str, timeout: float = 10.0, **expected):
    """The first accepted event of ``event_type`` whose object has the ``expected`` field values."""

    def found():
        for delivery in receiver.of_type(event_type):
            if all(delivery.subject.get(key) == value for key, value in expected.items()):
                return delivery
        return None

    return receiver.wait_for(found, timeout, f"{event_type} with {expected}")


def check_envelope(delivery) -> dict:
    """SPEC 6.11's body and header for one delivery; returns the reported object."""
    body = json.loads(delivery.body)
    assert set(body) == {"message"}
    message = body["message"]
    name = OBJECT_OF[message["type"]]
    assert set(message) == {"id", "type", "timestamp", name}, f"{message['type']} carries {sorted(message)}"
    assert isinstance(message["id"], str) and message["id"]
    stamp = datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00"))
    assert stamp.tzinfo is not None, "the timestamp names no time zone"
    subject = message[name]
    assert FIELDS[name] <= set(subject), f"{message['type']} lacks {sorted(FIELDS[name] - set(subject))}"
    assert verify(SECRET, delivery.body, delivery.header(SIGNATURE_HEADER))
    assert (delivery.header("Content-Type") or "").startswith("application/json")
    return subject


def api_session(client, auth, **body) -> dict:
    response = client.post("/api/sessions", json=body, headers=auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["session"]


def api_chat(client, auth, **body) -> dict:
    response = client.post("/api/chats", json=body, headers=auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["chat"]


def ok(response, status: int = 200):
    assert response.status_code == status, response.get_json()
    return response.get_json()


def text(webhook, body: str, **params) -> None:
    assert webhook(body, **params).status_code == 200


class DownQueue:
    """A queue that cannot be reached (Redis down): every enqueue fails."""

    name = "down"

    def enqueue(self, job, *args, delay: float = 0.0):
        raise ConnectionError("the queue is down")

    def enqueue_many(self, jobs):
        raise ConnectionError("the queue is down")

    def ping(self):
        raise ConnectionError("the queue is down")


def test_event_retry_defaults_follow_the_spec():
    """8 tries, first delay 2 s, cap 5 min by default, each changeable through the environment (SPEC 6.5, 6.11)."""
    defaults = Settings.from_env({})
    assert (defaults.event_tries, defaults.event_retry_delay, defaults.event_retry_cap) == (8, 2.0, 300.0)
    changed = Settings.from_env({"GATEWAY_EVENT_TRIES": "3", "GATEWAY_EVENT_RETRY_DELAY_SECONDS": "0.5",
                                 "GATEWAY_EVENT_RETRY_CAP_SECONDS": "9", "GATEWAY_EVENT_TIMEOUT_SECONDS": "4"})
    assert (changed.event_tries, changed.event_retry_delay, changed.event_retry_cap, changed.event_timeout) == (
        3, 0.5, 9.0, 4.0)


# -- who gets what ----------------------------------------------------------------------------------


def test_only_subscribed_types_are_posted_and_an_assistant_without_server_url_emits_nothing(
    runtime, receiver, client, auth, webhook
):
    """serverEvents picks the types POSTed (none for an empty list); an assistant with no serverUrl emits nothing."""
    picky = create_assistant(runtime, AssistantCreate(
        name="Picky", engine={"provider": "echo"}, serverUrl=receiver.url, serverSecret=SECRET,
        serverEvents=["session.created", "chat.deleted"],
    ))
    quiet = create_assistant(runtime, AssistantCreate(name="Quiet", engine={"provider": "echo"}))
    deaf = create_assistant(runtime, AssistantCreate(  # a serverUrl but no subscriptions
        name="Deaf", engine={"provider": "echo"}, serverUrl=receiver.url, serverSecret=SECRET, serverEvents=[],
    ))
    create_phone_number(runtime, PhoneNumberCreate(number=QUIET_BUSINESS, assistantId=quiet.id, messagesPerSecond=1000))

    for assistant_id in (picky.id, quiet.id, deaf.id):
        chat = api_chat(client, auth, assistantId=assistant_id, input="hello")
        ok(client.delete(f"/api/chats/{chat['id']}", headers=auth))
        ok(client.post(f"/api/sessions/{chat['sessionId']}/end", headers=auth))
    text(webhook, "texting the quiet number", to=QUIET_BUSINESS)
    wait_until(lambda: any(m.role == "assistant" and m.channel == "sms" for m in _messages(runtime)), 10,
               "the quiet number's reply")
    wait_event(receiver, "chat.deleted")
    settle(runtime)

    assert sorted(d.type for d in receiver.all()) == ["chat.deleted", "session.created"]
    assert {d.type for d in receiver.all() if d.accepted} == {"chat.deleted", "session.created"}
    picky_sessions = {s.id for s in sessions(runtime) if s.assistant_id == picky.id}
    assert {session_of(d) for d in receiver.all()} <= picky_sessions
    assert {(e.assistant_id, e.type) for e in stored_events(runtime)} == {
        (picky.id, "session.created"), (picky.id, "chat.deleted"),
    }


def _messages(runtime) -> list[Message]:
    with runtime.db.begin() as tx:
        return list(tx.scalars(select(Message)))


# -- body shape per type --------------------------------------------------------------------------------


def test_session_created_and_updated_through_the_api(runtime, receiver, assistant, client, auth):
    """session.created on create; session.updated on PATCH and on end (completed); ending again sends nothing."""
    created = api_session(client, auth, assistantId=assistant.id, name="web visitor",
                          customer={"number": OTHER_CUSTOMER, "name": "Ada"}, metadata={"plan": "gold"})

    subject = check_envelope(wait_event(receiver, "session.created", id=created["id"]))
    assert set(subject) == set(created)
    for key in ("id", "name", "status", "assistantId", "phoneNumberId", "customer", "metadata", "expirationSeconds"):
        assert subject[key] == created[key], key
    assert subject["status"] == "active"

    ok(client.patch(f"/api/sessions/{created['id']}", json={"name": "renamed visitor"}, headers=auth))
    renamed = check_envelope(wait_event(receiver, "session.updated", id=created["id"], name="renamed visitor"))
    assert renamed["status"] == "active"

    ended = ok(client.post(f"/api/sessions/{created['id']}/end", headers=auth))["session"]
    assert ended["status"] == "completed"
    completed = check_envelope(wait_event(receiver, "session.updated", id=created["id"], status="completed"))
    assert completed["name"] == "renamed visitor"

    ok(client.post(f"/api/sessions/{created['id']}/end", headers=auth))  # a no-op: nothing changed, nothing reported
    refused = client.post("/api/chats", json={"sessionId": created["id"], "input": "still there?"}, headers=auth)
    assert refused.status_code == 409  # no chat happened, so no chat.created
    settle(runtime)
    assert [d.subject["status"] for d in receiver.of_type("session.updated")] == ["active", "completed"]
    assert sorted(d.type for d in receiver.unique()) == ["session.created", "session.updated", "session.updated"]


def test_session_updated_when_the_sweep_completes_expired_sessions(runtime, receiver, assistant, number, client, auth,
                                                                   webhook, clock):
    """The sweep completes an expired API session and an expired SMS session, each reported as session.updated."""
    api = api_session(client, auth, assistantId=assistant.id, expirationSeconds=60)
    text(webhook, "hello")
    sms = wait_event(receiver, "session.created", phoneNumberId=number.id).subject
    settle(runtime)

    clock.advance(86400 + 1)  # past both: 60 s for the API session, the number's default 86400 s for the SMS one
    assert sweep(runtime).expired == 2

    for session_id in (api["id"], sms["id"]):
        subject = check_envelope(wait_event(receiver, "session.updated", id=session_id))
        assert subject["status"] == "completed"
    settle(runtime)
    assert len(receiver.of_type("session.updated")) == 2


def test_next_text_after_expiry_reports_the_old_session_updated_and_a_new_one_created(
    runtime, receiver, assistant, number, webhook, clock
):
    """A text after expiry completes the old session (session.updated) and opens a new one (session.created)."""
    text(webhook, "first")
    old = wait_event(receiver, "session.created", phoneNumberId=number.id).subject
    settle(runtime)

    clock.advance(86400 + 1)
    text(webhook, "second")

    completed = check_envelope(wait_event(receiver, "session.updated", id=old["id"]))
    assert completed["status"] == "completed"
    newer = receiver.wait_for(
        lambda: [d for d in receiver.of_type("session.created") if d.subject["id"] != old["id"]], 10, "the new session"
    )
    new = check_envelope(newer[0])
    assert new["status"] == "active" and new["id"] != old["id"]
    assert new["customer"]["number"] == CUSTOMER
    chat = check_envelope(wait_event(receiver, "chat.created", sessionId=new["id"]))
    assert chat["input"] == "second"


def test_a_first_text_reports_session_created_with_the_subscriptions_read_along_with_its_number(
    runtime, receiver, assistant, number
):
    """The webhook's lookup reads the number's assistant with serverUrl and serverEvents: the event check
    reuses them instead of reading the subscription again (one statement less per stored batch)."""
    subscription_sql = str(events_service._SUBSCRIPTION.compile(dialect=runtime.engine.dialect))
    statements = []

    def record(_conn, _cursor, statement, *_):
        statements.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", record)
    try:
        accept_inbound(runtime, parse_inbound(inbound_params("first")))
    finally:
        event.remove(runtime.engine, "before_cursor_execute", record)

    created = check_envelope(wait_event(receiver, "session.created", phoneNumberId=number.id))
    assert created["customer"]["number"] == CUSTOMER
    assert statements and subscription_sql not in statements


def test_session_deleted_for_delete_and_delete_many(runtime, receiver, assistant, client, auth):
    """DELETE and delete-many report each deleted session as session.deleted, with its object."""
    one = api_session(client, auth, assistantId=assistant.id, name="one")
    two = api_session(client, auth, assistantId=assistant.id, name="two")
    three = api_session(client, auth, assistantId=assistant.id, name="three")
    api_chat(client, auth, sessionId=one["id"], input="something to delete with it")

    ok(client.delete(f"/api/sessions/{one['id']}", headers=auth))
    assert ok(client.post("/api/sessions/delete-many", json={"ids": [two["id"], three["id"], "no-such-id"]},
                          headers=auth)) == {"deleted": 2}

    for created in (one, two, three):
        subject = check_envelope(wait_event(receiver, "session.deleted", id=created["id"]))
        assert subject["name"] == created["name"]
    settle(runtime)
    assert len(receiver.of_type("session.deleted")) == 3


def test_chat_created_for_an_api_chat_and_for_an_sms_turn(runtime, receiver, assistant, number, client, auth, webhook):
    """Every turn is a chat: an API chat and an SMS text each emit chat.created with the turn's input and output."""
    chat = api_chat(client, auth, assistantId=assistant.id, input="from the web")
    api = check_envelope(wait_event(receiver, "chat.created", id=chat["id"]))
    assert (api["sessionId"], api["input"], api["status"]) == (chat["sessionId"], "from the web", "completed")
    assert api["output"] == [{"role": "assistant", "content": "from the web"}]

    text(webhook, "from a phone", sid="SM" + "1" * 32)
    text(webhook, "from a phone", sid="SM" + "1" * 32)  # Twilio redelivers the webhook: still one turn
    sms_session = wait_event(receiver, "session.created", phoneNumberId=number.id).subject
    sms = check_envelope(wait_event(receiver, "chat.created", sessionId=sms_session["id"]))
    assert (sms["input"], sms["status"]) == ("from a phone", "completed")
    assert sms["output"] == [{"role": "assistant", "content": "from a phone"}]
    settle(runtime)
    assert sorted(d.subject["input"] for d in receiver.of_type("chat.created")) == ["from a phone", "from the web"]
    assert len(receiver.of_type("session.created")) == 2


def test_chat_deleted(runtime, receiver, assistant, client, auth):
    """DELETE /api/chats/{id} reports chat.deleted with the chat's object."""
    chat = api_chat(client, auth, assistantId=assistant.id, input="forget me")
    ok(client.delete(f"/api/chats/{chat['id']}", headers=auth))

    subject = check_envelope(wait_event(receiver, "chat.deleted", id=chat["id"]))
    assert (subject["sessionId"], subject["input"]) == (chat["sessionId"], "forget me")


def test_message_status_for_a_twilio_status_callback(live_gateway, fake_twilio, receiver):
    """A status callback to /twilio/status moving a reply to delivered reports message.status; a late one does not."""
    gw = live_gateway()
    reporting = create_assistant(gw.runtime, AssistantCreate(
        name="Reporting", engine={"provider": "echo"}, serverUrl=receiver.url, serverSecret=SECRET,
        serverEvents=["message.status"],
    ))
    create_phone_number(gw.runtime, PhoneNumberCreate(number=BUSINESS, assistantId=reporting.id, messagesPerSecond=100))
    fake_twilio.script.callbacks = ()  # posted by hand below

    assert gw.phone.text(BUSINESS, CUSTOMER, "hello").http_status == 200
    (create,) = fake_twilio.wait_for_creates(1)
    reply = gw.wait_for(lambda: next((m for m in gw.messages("assistant") if m.twilio_sid), None), 10, "the sent reply")
    assert fake_twilio.post_callback(create, "sent") == 200
    assert fake_twilio.post_callback(create, "delivered") == 200

    subject = check_envelope(wait_event(receiver, "message.status", status="delivered"))
    assert (subject["id"], subject["sessionId"], subject["twilioSid"]) == (reply.id, reply.session_id, create.sid)
    assert (subject["role"], subject["content"], subject["channel"]) == ("assistant", "hello", "sms")

    assert fake_twilio.post_callback(create, "sent") == 200  # late: the message stays delivered, nothing to report
    settle(gw.runtime)
    statuses = [d.subject["status"] for d in receiver.of_type("message.status")]
    assert statuses.count("delivered") == 1 and statuses.count("sent") == 1
    # The send path's own change, reported with the subscriptions read at the hand-over.
    assert statuses.count("sending") == 1
    assert set(receiver.of_type("message.status")[-1].subject) == set(subject)


# -- signatures ---------------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_the_exact_body_with_the_server_secret(runtime, receiver, assistant, client, auth):
    """X-Gateway-Signature verifies with serverSecret over the raw bytes; another secret or re-encoded JSON does not."""
    created = api_session(client, auth, assistantId=assistant.id)
    delivery = wait_event(receiver, "session.created", id=created["id"])
    header = delivery.header(SIGNATURE_HEADER)

    assert header == sign(SECRET, delivery.body)
    assert verify(SECRET, delivery.body, header)
    assert not verify("some-other-secret-0123456789", delivery.body, header)
    reencoded = json.dumps(json.loads(delivery.body), indent=1).encode()
    assert not verify(SECRET, reencoded, header)
    assert receiver.bad_signatures == []

    # A receiver holding the wrong secret rejects what it gets (401); the gateway does not count that as delivered.
    tune(runtime, event_tries=1)
    receiver.secret = "not-the-assistants-secret-0123456789"
    second = api_session(client, auth, assistantId=assistant.id)
    rejected = receiver.wait_for(lambda: receiver.bad_signatures, 10, "a rejected delivery")[0]
    assert rejected.subject["id"] == second["id"] and rejected.answer == 401
    wait_until(lambda: stored_event(runtime, rejected.id).status == "failed", 10, "the rejected event to fail")


def test_a_generated_server_secret_is_readable_through_the_api_and_signs_events(runtime, client, auth):
    """Without serverSecret the gateway generates one; the API shows it, and events verify with it."""
    plain = EventReceiver().start()  # no secret of its own: it takes everything, the test verifies
    try:
        made = ok(client.post("/api/assistants", json={"name": "Generated", "engine": {"provider": "echo"},
                                                       "serverUrl": plain.url}, headers=auth), 201)["assistant"]
        secret = ok(client.get(f"/api/assistants/{made['id']}", headers=auth))["assistant"]["serverSecret"]
        assert secret and secret == made["serverSecret"]

        api_session(client, auth, assistantId=made["id"])
        delivery = plain.wait_for(lambda: plain.unique(), 10, "an event")[0]
        assert verify(secret, delivery.body, delivery.header(SIGNATURE_HEADER))
        assert not verify(SECRET, delivery.body, delivery.header(SIGNATURE_HEADER))
    finally:
        plain.stop()


# -- retries ---------------------------------------------------------------------------------------------


def test_failed_deliveries_are_retried_with_backoff_and_the_same_id_until_accepted(
    runtime, receiver, assistant, number, client, auth, webhook
):
    """Two 500s per event: each id is POSTed three times with identical bytes, spaced wider each time; one survives dedup."""
    tune(runtime, event_retry_delay=0.2, event_retry_cap=5.0)
    receiver.fail_first(2)

    text(webhook, "hello")
    api_session(client, auth, assistantId=assistant.id, name="api")
    wait_until(lambda: {"session.created", "chat.created", "message.status"} <= {e.type for e in stored_events(runtime)},
               10, "the conversation's events")
    settle(runtime, within=0)
    events = wait_until(lambda: all_delivered(runtime), 15, "every event delivered")

    gaps_first, gaps_second = [], []
    for event in events:
        attempts = receiver.attempts(event.id)
        assert [a.answer for a in attempts] == [500, 500, 200], event.type
        assert len({a.body for a in attempts}) == 1, "a retry must carry the same body, id included"
        assert all(a.type == event.type and a.signature_ok for a in attempts)
        first, second, third = (a.at for a in attempts)
        assert first < second < third
        gaps_first.append(second - first)
        gaps_second.append(third - second)
        assert event.attempts == 3 and event.last_error is None and event.delivered_at is not None
    # Backoff grows: try n waits between half and all of 0.2 * 2**(n-2) s, so the wait before the
    # third try is never shorter than the longest wait before the second. Only lower bounds are
    # asserted: a busy machine can delay a job past its schedule (once by 2 s in CI), never hasten it.
    slack = 0.02
    assert min(gaps_first) >= 0.1 - slack, gaps_first
    assert min(gaps_second) >= 0.2 - slack, gaps_second

    unique = receiver.unique()
    assert sorted(d.id for d in unique) == sorted(e.id for e in events)
    assert len(receiver.all()) == 3 * len(events)
    for delivery in unique:
        check_envelope(delivery)


@pytest.mark.parametrize("mode", ["hang", "drop"])
def test_a_receiver_that_hangs_or_drops_the_connection_gets_the_event_again(runtime, receiver, assistant, client, auth,
                                                                             mode):
    """A delivery that times out (event_timeout) or is cut off is a failed try: retried under the same id."""
    tune(runtime, event_timeout=0.3)
    receiver.fail_first(2, mode=mode, hang=5.0)

    created = api_session(client, auth, assistantId=assistant.id)
    delivery = wait_event(receiver, "session.created", id=created["id"])

    assert [a.answer for a in receiver.attempts(delivery.id)] == [mode, mode, 200]
    event = wait_until(lambda: (e := stored_event(runtime, delivery.id)).status == "delivered" and e, 10, "delivered")
    assert event.attempts == 3


def test_an_event_is_given_up_after_event_tries_and_recorded_failed(runtime, receiver, assistant, client, auth):
    """A receiver that always answers 500 gets exactly event_tries POSTs; then the event is failed with the reason."""
    tune(runtime, event_tries=3)
    receiver.fail_first(1000)

    created = api_session(client, auth, assistantId=assistant.id)
    (event,) = wait_until(lambda: [e for e in stored_events(runtime) if e.status == "failed"], 10, "the event to fail")

    assert event.type == "session.created" and event.payload["message"]["session"]["id"] == created["id"]
    assert event.attempts == 3 and event.delivered_at is None
    assert "500" in event.last_error
    settle(runtime, within=5)
    assert sweep(runtime).events_recovered == 0  # a failed event is not a lost one
    settle(runtime, within=5)
    assert [a.answer for a in receiver.attempts(event.id)] == [500, 500, 500]
    assert receiver.unique() == []
    assert stored_event(runtime, event.id).status == "failed"


def test_events_reach_a_receiver_that_was_down_once_it_is_back(runtime, receiver, assistant, client, auth):
    """Connection refused for a while: the deliveries keep being retried and arrive, once each, after it comes back."""
    tune(runtime, event_tries=40, event_retry_delay=0.05, event_retry_cap=0.3)
    receiver.stop()

    first = api_session(client, auth, assistantId=assistant.id, name="first")
    api_session(client, auth, assistantId=assistant.id, name="second")
    api_chat(client, auth, sessionId=first["id"], input="anyone there?")
    wait_until(
        lambda: (events := stored_events(runtime)) and len(events) == 3
        and all(e.attempts >= 2 and "ConnectError" in (e.last_error or "") for e in events),
        10, "every event to have failed twice with the receiver down",
    )
    assert receiver.all() == []

    receiver.restart()
    events = wait_until(lambda: all_delivered(runtime, 3), 15, "every event delivered after the receiver came back")

    assert sorted(d.id for d in receiver.unique()) == sorted(e.id for e in events)
    assert sorted(d.type for d in receiver.unique()) == ["chat.created", "session.created", "session.created"]
    assert all(len(receiver.attempts(e.id)) == 1 for e in events)  # refused tries never reached it


def test_a_delivery_whose_job_was_lost_is_sent_by_the_sweep(runtime, make_runtime, clock, receiver, assistant):
    """The queue was down when the change committed: the event waits in the outbox and the sweep delivers it."""
    queue_down = make_runtime(runtime.settings, clock=clock, queue=DownQueue())
    created = session_api.create_session(queue_down, SessionCreate(assistantId=assistant.id, name="while down"))

    (event,) = stored_events(runtime)
    assert (event.status, event.attempts) == ("pending", 0)
    settle(runtime)
    assert receiver.all() == []

    clock.advance(runtime.settings.recovery_grace + 1)
    assert sweep(runtime).events_recovered == 1

    delivery = wait_event(receiver, "session.created", id=created.id)
    assert delivery.id == event.id
    wait_until(lambda: stored_event(runtime, event.id).status == "delivered", 10, "the event to be delivered")


class CountingDownQueue(DownQueue):
    """A queue that cannot be reached, counting the tries to reach it."""

    def __init__(self):
        self.tries = 0

    def enqueue(self, job, *args, delay: float = 0.0):
        self.tries += 1
        super().enqueue(job, *args, delay=delay)

    def enqueue_many(self, jobs):
        self.tries += 1
        super().enqueue_many(jobs)


def test_the_events_of_one_transaction_reach_for_the_queue_once(runtime, make_runtime, clock, receiver, assistant,
                                                                number):
    """A text after expiry completes the old session and opens the next: two events in one transaction, handed
    to the queue in one round trip. With the queue down, the webhook waits for it once, not once per event."""
    down = CountingDownQueue()
    queue_down = make_runtime(runtime.settings, clock=clock, queue=down)
    inbound.commit_texts(queue_down, [parse_inbound(inbound_params("first"))])
    clock.advance(86400 + 1)
    tries = down.tries

    inbound.commit_texts(queue_down, [parse_inbound(inbound_params("second"))])

    assert down.tries - tries == 1
    assert sorted(e.type for e in stored_events(runtime)) == ["session.created", "session.created", "session.updated"]


def test_a_delivery_whose_worker_died_after_posting_is_sent_again_with_the_same_id(
    runtime, receiver, assistant, clock, monkeypatch
):
    """The worker dies between the POST and recording it: the sweep sends it again, same id; dedup keeps one."""
    record = events_service._record
    died = []

    def die_once(*args, **kwargs):
        if not died:
            died.append(True)
            raise RuntimeError("worker killed after the POST")
        return record(*args, **kwargs)

    monkeypatch.setattr(events_service, "_record", die_once)
    created = session_api.create_session(runtime, SessionCreate(assistantId=assistant.id))
    first = wait_event(receiver, "session.created", id=created.id)
    settle(runtime)
    assert stored_event(runtime, first.id).status == "pending"  # the outcome was never written

    settings = runtime.settings
    clock.advance(settings.event_timeout + 5 + settings.recovery_grace + 1)  # past the dead worker's claim
    assert sweep(runtime).events_recovered == 1
    wait_until(lambda: stored_event(runtime, first.id).status == "delivered", 10, "the event to be delivered")

    again = receiver.attempts(first.id)
    assert [a.answer for a in again] == [200, 200]
    assert again[0].body == again[1].body
    assert [d.id for d in receiver.unique()] == [first.id]


# -- one shape for every channel, and nothing for what did not happen ----------------------------------------------------


def test_sms_and_api_sessions_emit_the_same_types_with_the_same_shape(runtime, receiver, assistant, number, client,
                                                                      auth, webhook):
    """A whole SMS conversation and a whole API one emit the same session/chat events with the same keys; ids are unique."""
    text(webhook, "hello by sms")
    sms_chat = wait_event(receiver, "chat.created", input="hello by sms").subject
    sms_id = sms_chat["sessionId"]
    wait_event(receiver, "message.status", sessionId=sms_id, status="delivered")  # the reply went out (sandbox)
    ok(client.delete(f"/api/chats/{sms_chat['id']}", headers=auth))
    ok(client.post(f"/api/sessions/{sms_id}/end", headers=auth))
    wait_event(receiver, "session.updated", id=sms_id, status="completed")
    ok(client.delete(f"/api/sessions/{sms_id}", headers=auth))

    api = api_session(client, auth, assistantId=assistant.id, customer={"number": OTHER_CUSTOMER})
    api_chat_object = api_chat(client, auth, sessionId=api["id"], input="hello by api")
    ok(client.delete(f"/api/chats/{api_chat_object['id']}", headers=auth))
    ok(client.post(f"/api/sessions/{api['id']}/end", headers=auth))
    wait_event(receiver, "session.updated", id=api["id"], status="completed")
    ok(client.delete(f"/api/sessions/{api['id']}", headers=auth))

    wait_event(receiver, "session.deleted", id=sms_id)
    wait_event(receiver, "session.deleted", id=api["id"])
    settle(runtime)
    events = wait_until(lambda: all_delivered(runtime), 10, "every event delivered")

    unique = receiver.unique()
    by_session = {sms_id: [], api["id"]: []}
    for delivery in unique:
        check_envelope(delivery)
        by_session[session_of(delivery)].append(delivery)
    sms, web = by_session[sms_id], by_session[api["id"]]

    assert {d.type for d in sms} - {"message.status"} == SESSION_AND_CHAT_TYPES
    assert {d.type for d in web} == SESSION_AND_CHAT_TYPES
    assert "message.status" in {d.type for d in sms}  # the SMS reply's delivery, through the sandbox sender
    for name in ("session", "chat"):
        shapes = {frozenset(d.subject) for d in sms + web if OBJECT_OF[d.type] == name}
        assert len(shapes) == 1, f"{name} objects differ: {[sorted(s) for s in shapes]}"
    customers = {frozenset(d.subject["customer"]) for d in sms + web if OBJECT_OF[d.type] == "session"}
    assert customers == {frozenset({"number", "name"})}

    ids = [d.id for d in unique]
    assert len(ids) == len(set(ids)) == len(events)
    assert len({json.loads(d.body)["message"]["id"] for d in receiver.all()}) == len(events)


def test_a_change_that_is_rolled_back_emits_no_event(runtime, receiver, assistant, number, webhook, monkeypatch):
    """A session create (API or SMS) that fails after its event was written leaves no event; a later success reports once."""

    def disk_error(*args, **kwargs):
        raise OperationalError("INSERT INTO messages ...", {}, Exception("disk I/O error"))

    monkeypatch.setattr(session_api, "_first_message", disk_error)
    with pytest.raises(OperationalError):
        session_api.create_session(runtime, SessionCreate(assistantId=assistant.id, name="never"))
    if runtime.engine.dialect.name == "postgresql":
        # A first text's session, its session.created event and the text are one statement: the text's
        # row fails in it (a NULL where the column takes none), after the event's row.
        real_insert = inbound.insert_reserving_positions

        def text_fails(connection, live, now, parts):
            assert [model for model, rows, _, _ in parts if rows][-2:] == [Event, Message]
            *others, (model, rows, conflict, returning) = parts
            return real_insert(connection, live, now, [*others, (model, [dict(row, role=None) for row in rows],
                                                                 conflict, returning)])

        monkeypatch.setattr(inbound, "insert_reserving_positions", text_fails)
        failure = IntegrityError
    else:
        real_created = sessions_service._created

        def created_then_disk_error(*args, **kwargs):
            real_created(*args, **kwargs)  # the new session's event is written, then the transaction fails
            disk_error()

        monkeypatch.setattr(sessions_service, "_created", created_then_disk_error)
        failure = OperationalError
    with pytest.raises(failure):
        accept_inbound(runtime, parse_inbound(inbound_params("lost text")))
    monkeypatch.undo()

    settle(runtime)
    assert sessions(runtime) == []
    assert stored_events(runtime) == []
    assert receiver.all() == []

    kept = session_api.create_session(runtime, SessionCreate(assistantId=assistant.id, name="kept"))
    text(webhook, "stored text")
    wait_event(receiver, "session.created", id=kept.id)
    wait_event(receiver, "session.created", phoneNumberId=number.id)
    settle(runtime)
    created = receiver.of_type("session.created")
    assert sorted(d.subject["id"] for d in created) == sorted(s.id for s in sessions(runtime))


@pytest.mark.parametrize("server_url", ["http://xn--/events", "http://" + "a" * 64 + ".example/events"])
def test_a_server_url_no_request_can_reach_is_refused_and_one_stored_earlier_ends_failed(
    runtime, receiver, assistant, client, auth, server_url
):
    """A serverUrl that matches the URL pattern but that no HTTP client can even try (a host that is no
    name: an empty punycode label, a label over 63 characters) is refused (422) and changes nothing. One stored
    before URLs were checked that way does not leave its events pending for the sweep for ever: each try
    counts, and after event_tries the event is failed with the reason."""
    response = client.patch(f"/api/assistants/{assistant.id}", json={"serverUrl": server_url}, headers=auth)
    assert response.status_code == 422 and response.get_json()["error"]["details"] == {"field": "serverUrl"}
    assert client.get(f"/api/assistants/{assistant.id}", headers=auth).get_json()["assistant"]["serverUrl"] == receiver.url

    tune(runtime, event_tries=2)
    with runtime.db.begin() as tx:  # as an earlier version would have stored it
        tx.execute(update(Assistant).where(Assistant.id == assistant.id).values(server_url=server_url))
    api_session(client, auth, assistantId=assistant.id)
    (event,) = wait_until(lambda: [e for e in stored_events(runtime) if e.status == "failed"], 10, "the event to fail")

    assert event.attempts == 2 and event.last_error.startswith("delivery failed: ")
    settle(runtime, within=5)
    assert sweep(runtime).events_recovered == 0
