"""Contract tests of the session, chat and message API (SPEC 3, 4 and 6.12), on SQLite and on PostgreSQL.

The runtime runs on the hand-moved ``clock``, so createdAt, expiresAt and
updatedAt are exact and expiry happens when the test says so.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import func, select

from gateway import create_app
from gateway.db.models import Event
from gateway.schemas import SessionCreate
from gateway.services.session_api import create_session
from tests.conftest import BUSINESS, CUSTOMER
from tests.integration.session_api_helpers import (
    CHAT_FIELDS,
    ISO_Z,
    MESSAGE_FIELDS,
    SESSION_FIELDS,
    UNKNOWN_ID,
    SessionApi,
    assert_invalid,
    error_of,
    ids,
    ok,
)
from tests.support.net import LiveServer

OTHER = "+14155550124"
CUSTOMER_WRITTEN = "+1 (415) 555-0123"  # CUSTOMER as an operator might type it
SQL_AND_SCRIPT = "x');DROP TABLE sessions;--<script>"  # at most 40 characters: it is also a session name
DAY = 86400


def iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def database_url_or_default(database_url):
    """Every test here runs on SQLite and on PostgreSQL."""
    return database_url


@pytest.fixture
def runtime(make_runtime, settings, clock, database_url):
    return make_runtime(settings.replace(database_url=database_url), clock=clock)


@pytest.fixture
def api(client, auth) -> SessionApi:
    return SessionApi(client, auth)


@pytest.fixture
def faq_assistant(api) -> dict:
    return ok(api.post("/api/assistants", {"name": "Harbor Bikes", "engine": {"provider": "faq"}}), 201)["assistant"]


def new_assistant(api: SessionApi, **fields) -> dict:
    body = {"name": "Helper", "engine": {"provider": "echo"}, **fields}
    return ok(api.post("/api/assistants", body), 201)["assistant"]


# -- POST /api/sessions -------------------------------------------------------------------------


def test_create_session_answers_201_with_every_field_and_the_defaults(api, assistant, clock):
    """Only an assistantId: 201, the literal message, every SPEC 3 field, active, 86400 s, no number, no customer."""
    created_at = clock.now()
    body = ok(api.post("/api/sessions", {"assistantId": assistant.id}), 201)
    assert set(body) == {"message", "session"}
    assert body["message"] == "Session created successfully"
    session = body["session"]
    assert set(session) == SESSION_FIELDS
    assert session["status"] == "active"
    assert session["assistantId"] == assistant.id
    assert session["phoneNumberId"] is None
    assert session["customer"] is None
    assert session["expirationSeconds"] == 86400
    assert session["createdAt"] == session["updatedAt"] == iso(created_at)
    assert session["expiresAt"] == iso(created_at + timedelta(seconds=86400))
    assert session["assistantOverrides"] == {}
    assert session["metadata"] == {}
    assert session["cost"] == 0
    assert ISO_Z.match(session["createdAt"])

    fetched = api.session(session["id"])
    assert fetched == {**session, "messages": []}


def test_create_session_round_trips_every_given_field(api, assistant):
    """name, expirationSeconds, assistantOverrides (variables and engine settings), customer and metadata come back
    as given; the customer's number is normalised to E.164."""
    given = {
        "name": "Web widget visitor",
        "assistantId": assistant.id,
        "expirationSeconds": 3600,
        "assistantOverrides": {"variableValues": {"name": "Ann", "floor": 2, "vip": True}, "model": "house-2",
                               "temperature": 0.3, "maxTokens": 256},
        "customer": {"number": CUSTOMER_WRITTEN, "name": "Ann Lee"},
        "metadata": {"source": "widget", "tags": ["a", "b"], "nested": {"n": 1}},
    }
    session = api.new_session(**given)
    assert session["customer"] == {"number": CUSTOMER, "name": "Ann Lee"}
    for field in ("name", "assistantId", "expirationSeconds", "assistantOverrides", "metadata"):
        assert session[field] == given[field], field
    assert api.session(session["id"]) == {**session, "messages": []}


def test_create_session_accepts_the_ends_of_each_range(api, assistant):
    """expirationSeconds 60 and 2592000, and a name of exactly 40 characters (also non-ASCII ones), are accepted."""
    for seconds in (60, 2592000):
        assert api.new_session(assistantId=assistant.id, expirationSeconds=seconds)["expirationSeconds"] == seconds
    for name in ("n" * 40, "名" * 39 + "🤖"):
        assert api.new_session(assistantId=assistant.id, name=name)["name"] == name


def test_create_session_rejects_invalid_fields_naming_them(api, assistant, number):
    """Each invalid body: 422 naming the field in error.details.field, and no session is stored."""
    cases = [
        ("name of 41 characters", {"name": "n" * 41}, "name"),
        ("name not a string", {"name": 41}, "name"),
        ("expirationSeconds 59", {"expirationSeconds": 59}, "expirationSeconds"),
        ("expirationSeconds 2592001", {"expirationSeconds": 2592001}, "expirationSeconds"),
        ("expirationSeconds a word", {"expirationSeconds": "a day"}, "expirationSeconds"),
        ("expirationSeconds fractional", {"expirationSeconds": 90.5}, "expirationSeconds"),
        ("unknown assistantId", {"assistantId": UNKNOWN_ID}, "assistantId"),
        ("no assistantId", {"assistantId": None}, "assistantId"),
        ("unknown phoneNumberId", {"phoneNumberId": UNKNOWN_ID}, "phoneNumberId"),
        ("phoneNumberId without a customer", {"phoneNumberId": number.id}, "customer"),
        ("customer number not E.164", {"customer": {"number": "call me"}}, "customer.number"),
        ("customer number without country code", {"customer": {"number": "4155550123"}}, "customer.number"),
        ("customer not an object", {"customer": CUSTOMER}, "customer"),
        ("unknown customer field", {"customer": {"number": CUSTOMER, "email": "a@b.c"}}, "customer.email"),
        ("temperature out of range", {"assistantOverrides": {"temperature": 3}}, "assistantOverrides.temperature"),
        ("unknown override", {"assistantOverrides": {"voice": "x"}}, "assistantOverrides.voice"),
        ("variableValues a list", {"assistantOverrides": {"variableValues": ["a"]}}, "assistantOverrides"),
        ("metadata a string", {"metadata": "x"}, "metadata"),
        ("unknown field", {"colour": "blue"}, "colour"),
        ("snake_case field", {"expiration_seconds": 3600}, "expiration_seconds"),
    ]
    for label, body, field in cases:
        assert_invalid(api.post("/api/sessions", {"assistantId": assistant.id, **body}), field, label)
    assert api.total("/api/sessions") == 0


VARIABLE_CASES = [
    pytest.param(
        "Hi {{name}}, welcome to {{shop}}. We will text {{customer.number}}.",
        {"name": "Assistant default", "shop": "Corner Shop"}, {"name": "Ann"}, {"number": CUSTOMER},
        f"Hi Ann, welcome to Corner Shop. We will text {CUSTOMER}.",
        id="session override beats assistant default, built-in fills the rest",
    ),
    pytest.param(
        "Hi {{customer.name}}!", {"customer.name": "valued customer"}, None, {"number": CUSTOMER, "name": "Bob"},
        "Hi valued customer!",
        id="assistant variableValues beat the built-ins",
    ),
    pytest.param(
        "Hi {{customer.name}}!", {"customer.name": "valued customer"}, {"customer.name": "Robert"},
        {"number": CUSTOMER, "name": "Bob"}, "Hi Robert!",
        id="session override beats assistant and built-in",
    ),
    pytest.param(
        "Hi {{ customer.name }}, today is {{now}}; {{unknown.thing}} stays.", None, None,
        {"number": CUSTOMER, "name": "Bob"}, "Hi Bob, today is 2026-01-05{rest}; {{unknown.thing}} stays.",
        id="built-ins, and an unknown variable left as written",
    ),
]


@pytest.mark.parametrize("first_message, defaults, overrides, customer, expected", VARIABLE_CASES)
def test_first_message_opens_an_api_session_with_template_variables_applied(
    api, first_message, defaults, overrides, customer, expected
):
    """The assistant's firstMessage is the session's first (assistant) message, rendered with SPEC 4's precedence:
    session assistantOverrides.variableValues, then the assistant's variableValues, then built-ins."""
    assistant = new_assistant(api, firstMessage=first_message, variableValues=defaults)
    body = {"assistantId": assistant["id"], "customer": customer}
    if overrides is not None:
        body["assistantOverrides"] = {"variableValues": overrides}
    session = api.new_session(**body)
    messages = api.session(session["id"])["messages"]
    assert len(messages) == 1
    first = messages[0]
    assert set(first) == MESSAGE_FIELDS
    assert first["role"] == "assistant"
    assert first["sessionId"] == session["id"]
    if "{rest}" in expected:
        head, tail = expected.split("{rest}")
        assert first["content"].startswith(head) and first["content"].endswith(tail), first["content"]
        assert "{{now}}" not in first["content"]
    else:
        assert first["content"] == expected


def test_first_message_also_opens_sessions_from_chats_and_get_or_create(api):
    """Sessions started by POST /api/chats (assistantId only) and by get-or-create are API sessions too: both open
    with the firstMessage (the chat's session has no customer, so {{customer.number}} stays as written)."""
    assistant = new_assistant(api, firstMessage="Hello {{customer.number}}")
    chat = ok(api.post("/api/chats", {"assistantId": assistant["id"], "input": "hi"}), 201)["chat"]
    via_chat = api.session(chat["sessionId"])["messages"]
    assert [(m["role"], m["content"]) for m in via_chat] == [
        ("assistant", "Hello {{customer.number}}"), ("user", "hi"), ("assistant", "hi")]
    body = {"assistantId": assistant["id"], "customer": {"number": CUSTOMER}}
    session = ok(api.post("/api/sessions/get-or-create", body), 201)["session"]
    assert [m["content"] for m in api.session(session["id"])["messages"]] == [f"Hello {CUSTOMER}"]


class Captured(logging.Handler):
    """Collects the records of one logger (the gateway's loggers do not propagate to pytest's caplog)."""

    def __init__(self, logger_name: str):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(logger_name)

    def emit(self, record):
        self.records.append(record)

    def __enter__(self) -> "Captured":
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)


def test_unknown_variable_in_a_first_message_is_left_as_written_and_logged_once(api):
    """{{unknown}} stays in the text of every session's first message, and is logged once, not once per session."""
    name = f"mystery_{uuid.uuid4().hex[:10]}"  # the "logged once" memory is process-wide
    assistant = new_assistant(api, firstMessage=f"Hello {{{{{name}}}}}!")
    with Captured("gateway.templates") as captured:
        sessions = [api.new_session(assistantId=assistant["id"]) for _ in range(3)]
    for session in sessions:
        assert [m["content"] for m in api.session(session["id"])["messages"]] == [f"Hello {{{{{name}}}}}!"]
    assert len([r for r in captured.records if name in r.getMessage()]) == 1


def test_api_session_on_a_phone_number_sends_its_first_message_by_sms(api, runtime, assistant, number):
    """POST /api/sessions with phoneNumberId and a customer: the number's lifetime, and the rendered firstMessage
    (phoneNumber.number built-in) is the first message, sent by SMS."""
    ok(api.patch(f"/api/assistants/{assistant.id}", {"firstMessage": "This is {{phoneNumber.number}} texting you."}))
    session = api.new_session(phoneNumberId=number.id, customer={"number": CUSTOMER_WRITTEN})
    assert session["phoneNumberId"] == number.id
    assert session["assistantId"] == assistant.id  # the number's assistant
    assert session["customer"] == {"number": CUSTOMER, "name": None}
    assert session["expirationSeconds"] == 86400
    assert runtime.queue.wait_idle(10)
    (first,) = api.session(session["id"])["messages"]
    assert (first["role"], first["content"], first["channel"]) == ("assistant", f"This is {BUSINESS} texting you.",
                                                                   "sms")
    assert first["status"] in ("sent", "delivered")
    # One active session per conversation: a second one for the same customer and number is a conflict.
    error_of(api.post("/api/sessions", {"phoneNumberId": number.id, "customer": {"number": CUSTOMER}}), 409)


def test_null_session_variable_falls_back_to_the_assistant_default(api):
    """A session override of null does not hide the assistant's value: the first message reads "Hi friend"."""
    assistant = new_assistant(api, firstMessage="Hi {{name}}", variableValues={"name": "friend"})
    session = api.new_session(assistantId=assistant["id"],
                              assistantOverrides={"variableValues": {"name": None}})
    assert [m["content"] for m in api.session(session["id"])["messages"]] == ["Hi friend"]


def test_customer_name_without_a_number_is_refused_naming_customer_number(api, assistant):
    """A customer is known by number: a name alone is refused (not silently dropped), and nothing is stored."""
    response = api.post("/api/sessions", {"assistantId": assistant.id, "customer": {"name": "Ann"}})
    assert_invalid(response, "customer.number")
    assert ok(api.get("/api/sessions"))["totalCount"] == 0


# -- GET /api/sessions ----------------------------------------------------------------------------


def seed_sessions(runtime, clock, assistant_id: str, count: int) -> None:
    """``count`` sessions through the service, several per instant so that the order must break ties."""
    for index in range(count):
        if index % 7 == 0:
            clock.advance(1)
        create_session(runtime, SessionCreate(assistantId=assistant_id, name=f"seeded {index:03d}"))


def test_list_pages_cover_300_sessions_once_in_a_stable_order(api, runtime, clock, assistant):
    """300 sessions: pages of 25 (and a last short page of 40) never overlap, cover every session, agree with one big
    page, and report totalCount 300 on each; an offset past the end is an empty page."""
    seed_sessions(runtime, clock, assistant.id, 300)
    everything = ok(api.get("/api/sessions", query_string={"limit": 1000}))
    assert everything["totalCount"] == 300
    assert len(everything["sessions"]) == 300
    all_ids = ids(everything["sessions"])
    assert len(set(all_ids)) == 300

    paged = []
    for offset in range(0, 300, 26):
        page = ok(api.get("/api/sessions", query_string={"limit": 26, "offset": offset}))
        assert page["totalCount"] == 300
        assert len(page["sessions"]) == min(26, 300 - offset)
        paged += ids(page["sessions"])
    assert paged == all_ids
    assert ok(api.get("/api/sessions", query_string={"offset": 300}))["sessions"] == []
    assert len(ok(api.get("/api/sessions"))["sessions"]) == 20  # the default limit
    assert ids(ok(api.get("/api/sessions", query_string={"limit": 5, "offset": 295}))["sessions"]) == all_ids[295:]


def test_search_matches_session_names_and_message_content(api, assistant):
    """search finds sessions by name and by the content of any message, in any case; totalCount counts matches."""
    by_name = api.new_session(assistantId=assistant.id, name="Refund desk")
    by_message = api.new_session(assistantId=assistant.id, name="Visitor 7")
    api.chat(by_message["id"], "I would like a REFUND for my rental")
    unrelated = api.new_session(assistantId=assistant.id, name="Opening hours")
    api.chat(unrelated["id"], "when do you open?")

    found = ok(api.get("/api/sessions", query_string={"search": "refund"}))
    assert sorted(ids(found["sessions"])) == sorted([by_name["id"], by_message["id"]])
    assert found["totalCount"] == 2
    assert ids(ok(api.get("/api/sessions", query_string={"search": "RENTAL"}))["sessions"]) == [by_message["id"]]
    assert ids(ok(api.get("/api/sessions", query_string={"search": "hours"}))["sessions"]) == [unrelated["id"]]
    assert ok(api.get("/api/sessions", query_string={"search": "nothing like this"})) == {"sessions": [],
                                                                                         "totalCount": 0}


def test_list_filters_by_status_assistant_phone_number_and_customer(api, webhook, runtime, assistant, number):
    """status, assistantId, phoneNumberId and customerNumber (written with spaces and brackets) each filter, and
    combine; totalCount follows the filter."""
    assert webhook("hello", from_=CUSTOMER, to=BUSINESS).status_code == 200
    assert runtime.queue.wait_idle(10)
    sms = ok(api.get("/api/sessions", query_string={"phoneNumberId": number.id}))["sessions"]
    assert len(sms) == 1
    other_assistant = new_assistant(api)
    api_for_customer = api.new_session(assistantId=assistant.id, customer={"number": CUSTOMER})
    for_other = api.new_session(assistantId=other_assistant["id"], customer={"number": OTHER})
    ended = api.new_session(assistantId=other_assistant["id"])
    ok(api.post(f"/api/sessions/{ended['id']}/end"))

    def listed(**query) -> list[str]:
        body = ok(api.get("/api/sessions", query_string=query))
        assert body["totalCount"] == len(body["sessions"])
        return sorted(ids(body["sessions"]))

    assert listed(status="completed") == [ended["id"]]
    assert listed(status="active") == sorted([sms[0]["id"], api_for_customer["id"], for_other["id"]])
    assert listed(assistantId=other_assistant["id"]) == sorted([for_other["id"], ended["id"]])
    assert listed(phoneNumberId=number.id) == [sms[0]["id"]]
    assert listed(customerNumber=CUSTOMER_WRITTEN) == sorted([sms[0]["id"], api_for_customer["id"]])
    assert listed(customerNumber=CUSTOMER) == sorted([sms[0]["id"], api_for_customer["id"]])
    assert listed(customerNumber=CUSTOMER_WRITTEN, phoneNumberId=number.id) == [sms[0]["id"]]
    assert listed(assistantId=other_assistant["id"], status="active") == [for_other["id"]]
    assert listed(assistantId=UNKNOWN_ID) == []
    assert listed(customerNumber="+14155550999") == []


def test_empty_query_values_are_ignored(api, assistant):
    """?search=&status=&... with every value empty lists everything, with the default paging."""
    for index in range(3):
        api.new_session(assistantId=assistant.id, name=f"s{index}")
    query = "limit=&offset=&search=&status=&assistantId=&phoneNumberId=&customerNumber="
    body = ok(api.get(f"/api/sessions?{query}"))
    assert body["totalCount"] == 3 and len(body["sessions"]) == 3


@pytest.mark.parametrize(
    "path, query, field",
    [
        ("/api/sessions", "limit=0", "limit"),
        ("/api/sessions", "limit=abc", "limit"),
        ("/api/sessions", "limit=-5", "limit"),
        ("/api/sessions", "offset=-1", "offset"),
        ("/api/sessions", "offset=first", "offset"),
        ("/api/sessions", "status=bogus", "status"),
        ("/api/sessions", "customerNumber=not-a-number", "customerNumber"),
        ("/api/chats", "limit=0", "limit"),
        ("/api/chats", "offset=abc", "offset"),
        ("/api/messages", "status=bogus", "status"),
        ("/api/messages", "limit=abc", "limit"),
    ],
)
def test_bad_query_values_get_422_naming_the_parameter(api, path, query, field):
    """limit/offset out of range or not integers, an unknown status, a customerNumber that is no phone number."""
    assert_invalid(api.get(f"{path}?{query}"), field)


# -- GET /api/sessions/{id} ------------------------------------------------------------------------


def test_get_session_includes_its_messages_in_order(api, assistant, clock):
    """GET one: the session with every field plus ``messages``, oldest first, each with SPEC 3's message fields."""
    session = api.new_session(assistantId=assistant.id, name="Chatty")
    for text in ("one", "two", "three"):
        clock.advance(1)
        api.chat(session["id"], text)
    body = ok(api.get(f"/api/sessions/{session['id']}"))
    assert set(body) == {"session"}
    fetched = body["session"]
    assert set(fetched) == SESSION_FIELDS | {"messages"}
    assert fetched["name"] == "Chatty"
    messages = fetched["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "one"), ("assistant", "one"), ("user", "two"), ("assistant", "two"),
        ("user", "three"), ("assistant", "three")]
    for message in messages:
        assert set(message) == MESSAGE_FIELDS
        assert message["sessionId"] == session["id"]
        assert message["channel"] == "api"
        assert ISO_Z.match(message["createdAt"])
    assert [m["createdAt"] for m in messages] == sorted(m["createdAt"] for m in messages)
    # A list shows no transcript.
    assert "messages" not in ok(api.get("/api/sessions"))["sessions"][0]


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/api/sessions/{id}", None),
        ("PATCH", "/api/sessions/{id}", {"name": "x"}),
        ("DELETE", "/api/sessions/{id}", None),
        ("POST", "/api/sessions/{id}/end", None),
        ("GET", "/api/chats/session/{id}", None),
        ("DELETE", "/api/chats/{id}", None),
    ],
)
def test_unknown_ids_get_404_with_the_error_body(api, method, path, body):
    """Every route that takes an id answers an unknown one with 404 {"error": {"code", "message", ...}}."""
    error = error_of(api.request(method, path.format(id=UNKNOWN_ID), body), 404)
    assert error["code"] == "not_found"


# -- PATCH /api/sessions/{id} -----------------------------------------------------------------------


def test_patch_changes_name_metadata_and_overrides_only(api, assistant, clock):
    """PATCH name, metadata and assistantOverrides: those change, updatedAt moves to now, the rest stays."""
    before = api.new_session(assistantId=assistant.id, name="Before", metadata={"a": 1},
                             customer={"number": CUSTOMER})
    clock.advance(30)
    changes = {"name": "After", "metadata": {"b": [1, 2]},
               "assistantOverrides": {"variableValues": {"name": "Ann"}, "temperature": 0.5}}
    body = ok(api.patch(f"/api/sessions/{before['id']}", changes))
    assert set(body) == {"session"}
    after = body["session"]
    for field, value in changes.items():
        assert after[field] == value, field
    assert after["updatedAt"] == iso(clock.now())
    unchanged = SESSION_FIELDS - set(changes) - {"updatedAt"}
    assert {f: after[f] for f in unchanged} == {f: before[f] for f in unchanged}
    assert api.session(before["id"]) == {**after, "messages": []}


def test_patch_expiration_seconds_recomputes_expires_at_within_the_range(api, assistant):
    """expirationSeconds 60 and 2592000 are accepted and expiresAt becomes createdAt + expirationSeconds;
    59 and 2592001 get 422 naming expirationSeconds and change nothing."""
    session = api.new_session(assistantId=assistant.id)
    created = datetime.fromisoformat(session["createdAt"].replace("Z", "+00:00"))
    path = f"/api/sessions/{session['id']}"
    for seconds in (3600, 2592000, 60):
        after = ok(api.patch(path, {"expirationSeconds": seconds}))["session"]
        assert after["expirationSeconds"] == seconds
        assert after["expiresAt"] == iso(created + timedelta(seconds=seconds))
        assert after["status"] == "active"
    before = api.session(session["id"])
    for seconds in (59, 2592001, 0, -60):
        assert_invalid(api.patch(path, {"expirationSeconds": seconds}), "expirationSeconds", str(seconds))
    assert api.session(session["id"]) == before


def test_patch_to_a_lifetime_the_session_has_outlived_ends_it(api, assistant, clock):
    """A session 10 minutes old given expirationSeconds 60 is past its expiry: it is completed and refuses chats."""
    session = api.new_session(assistantId=assistant.id)
    clock.advance(600)
    ok(api.patch(f"/api/sessions/{session['id']}", {"expirationSeconds": 60}))
    assert api.session(session["id"])["status"] == "completed"
    error_of(api.post("/api/chats", {"sessionId": session["id"], "input": "hi"}), 409)


def test_patch_expiration_during_a_text_keeps_the_texts_activity(api, runtime, number, clock):
    """PATCH expirationSeconds of an inactivity session while a text to it commits: the new expiresAt counts
    from the text's activity (whichever of the two limits comes first), not from the activity the PATCH read
    before the text committed, which would end the session early and lose the text's extension."""
    from gateway.db.models import Session as SessionRow
    from gateway.services.sessions import next_seqs

    def text_arrives(tx) -> None:
        # What storing a text does: reserve its position and record the activity (the row locked until commit).
        next_seqs(tx, tx.get(SessionRow, session["id"]), 1, clock.now(), only_active=True)

    ok(api.patch(f"/api/phone-numbers/{number.id}", {"sessionExpirationSeconds": 1000, "sessionInactivitySeconds": 600}))
    session = api.new_session(phoneNumberId=number.id, customer={"number": CUSTOMER})
    created = datetime.fromisoformat(session["createdAt"].replace("Z", "+00:00"))
    clock.advance(500)
    with runtime.db.begin() as tx:
        text_arrives(tx)
    assert api.session(session["id"])["expiresAt"] == iso(created + timedelta(seconds=1000))  # the lifetime's end
    clock.advance(200)
    answers = []
    patching = threading.Thread(target=lambda: answers.append(
        api.patch(f"/api/sessions/{session['id']}", {"expirationSeconds": 3600})))
    with runtime.db.begin() as tx:
        text_arrives(tx)
        patching.start()
        # The PATCH waits for the text's row lock: to read the row (locking it), or else to write it.
        _wait_for_a_blocked_writer(runtime, r"^(UPDATE sessions SET expiration_seconds|SELECT .*\sFROM sessions\s.*FOR UPDATE)")
    patching.join(20)
    expected = iso(created + timedelta(seconds=700 + 600))  # 600 s after the last text, before 3600 s of lifetime
    assert ok(answers[0])["session"]["expiresAt"] == expected
    assert api.session(session["id"])["expiresAt"] == expected


def _wait_for_a_blocked_writer(runtime, pattern: str, timeout: float = 10.0) -> None:
    """Until another connection waits for a lock in a statement matching the regular expression ``pattern`` (PostgreSQL);
    SQLite's writers queue for the database's write lock instead, which this cannot see: a moment's pause
    lets the other thread get there."""
    if runtime.engine.dialect.name != "postgresql":
        time.sleep(0.5)
        return
    deadline = time.monotonic() + timeout
    with runtime.engine.connect() as watcher:
        while time.monotonic() < deadline:
            waiting = watcher.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
                "AND query ~ %(pattern)s", {"pattern": pattern}
            ).scalar()
            watcher.rollback()
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError(f"no statement matching {pattern!r} waited for a lock")


def test_patch_name_of_41_characters_and_other_bad_values_get_422(api, assistant):
    """Each invalid PATCH gets 422 naming the field and leaves the session as it was."""
    session = api.new_session(assistantId=assistant.id, name="Keep me")
    path = f"/api/sessions/{session['id']}"
    cases = [
        ("name of 41 characters", {"name": "x" * 41}, "name"),
        ("status unknown", {"status": "paused"}, "status"),
        ("status not a string", {"status": True}, "status"),
        ("metadata a list", {"metadata": [1]}, "metadata"),
        ("override out of range", {"assistantOverrides": {"maxTokens": 0}}, "assistantOverrides.maxTokens"),
        ("field PATCH does not take", {"assistantId": UNKNOWN_ID}, "assistantId"),
        ("unknown field", {"colour": "blue"}, "colour"),
    ]
    for label, body, field in cases:
        assert_invalid(api.patch(path, body), field, label)
    assert api.session(session["id"]) == {**session, "messages": []}
    assert ok(api.patch(path, {"name": "y" * 40}))["session"]["name"] == "y" * 40


def test_patch_status_completed_ends_the_session_and_it_cannot_become_active_again(api, assistant, clock):
    """status completed is accepted; then status active gets 409 conflict and the session stays completed."""
    session = api.new_session(assistantId=assistant.id)
    path = f"/api/sessions/{session['id']}"
    clock.advance(5)
    completed = ok(api.patch(path, {"status": "completed"}))["session"]
    assert completed["status"] == "completed"
    assert completed["updatedAt"] == iso(clock.now())
    error = error_of(api.patch(path, {"status": "active"}), 409)
    assert error["code"] == "conflict"
    assert api.session(session["id"])["status"] == "completed"
    error_of(api.patch(path, {"status": "active", "name": "sneaky"}), 409)
    assert api.session(session["id"])["name"] is None


# -- DELETE /api/sessions/{id}, POST /api/sessions/delete-many ------------------------------------


def test_delete_session_removes_its_messages_and_chats(api, assistant):
    """DELETE answers {"session": {"id"}}; the session, its messages and its chats are gone; others stay;
    a second DELETE is 404."""
    doomed = api.new_session(assistantId=assistant.id)
    kept = api.new_session(assistantId=assistant.id)
    for session in (doomed, kept):
        api.chat(session["id"], "hello")
        api.chat(session["id"], "again")
    assert api.total("/api/messages", sessionId=doomed["id"]) == 4
    assert api.total("/api/chats", sessionId=doomed["id"]) == 2

    assert ok(api.delete(f"/api/sessions/{doomed['id']}")) == {"session": {"id": doomed["id"]}}
    assert error_of(api.get(f"/api/sessions/{doomed['id']}"), 404)["code"] == "not_found"
    assert ok(api.get("/api/messages", query_string={"sessionId": doomed["id"]})) == {"messages": [], "totalCount": 0}
    assert ok(api.get("/api/chats", query_string={"sessionId": doomed["id"]})) == {"chats": [], "totalCount": 0}
    assert api.total("/api/messages", sessionId=kept["id"]) == 4
    assert api.total("/api/chats", sessionId=kept["id"]) == 2
    assert api.total("/api/sessions") == 1
    assert error_of(api.delete(f"/api/sessions/{doomed['id']}"), 404)["code"] == "not_found"


def test_delete_many_counts_only_the_sessions_that_existed(api, assistant):
    """{"ids": [...]} with two existing ids (one twice) and an unknown one: {"deleted": 2}; the third session stays;
    repeating the call deletes 0."""
    first, second, third = (api.new_session(assistantId=assistant.id) for _ in range(3))
    api.chat(first["id"], "hi")
    body = {"ids": [first["id"], second["id"], UNKNOWN_ID, first["id"]]}
    assert ok(api.post("/api/sessions/delete-many", body)) == {"deleted": 2}
    assert ids(ok(api.get("/api/sessions"))["sessions"]) == [third["id"]]
    assert api.total("/api/messages", sessionId=first["id"]) == 0
    assert api.total("/api/chats", sessionId=first["id"]) == 0
    assert ok(api.post("/api/sessions/delete-many", body)) == {"deleted": 0}


def test_delete_many_refuses_an_empty_or_non_list_ids(api, assistant):
    """An empty list, a string, null, a list of non-strings or no ids at all: 422 naming ids; nothing deleted."""
    api.new_session(assistantId=assistant.id)
    for label, body in [("empty list", {"ids": []}), ("string", {"ids": "abc"}), ("null", {"ids": None}),
                        ("object", {"ids": {"a": 1}}), ("numbers", {"ids": [1, 2]}), ("missing", {})]:
        assert_invalid(api.post("/api/sessions/delete-many", body), "ids", label)
    assert api.total("/api/sessions") == 1


# -- POST /api/sessions/get-or-create ------------------------------------------------------------------


def test_get_or_create_creates_once_then_returns_the_same_session(api, assistant):
    """201 with a new session, then 200 with the same one (also for the number written differently); another
    customer or another assistant gets its own session; a completed session is replaced by a new one."""
    body = {"assistantId": assistant.id, "customer": {"number": CUSTOMER}}
    first = ok(api.post("/api/sessions/get-or-create", body), 201)
    assert set(first) == {"session"}
    session = first["session"]
    assert set(session) == SESSION_FIELDS
    assert session["customer"]["number"] == CUSTOMER
    assert session["assistantId"] == assistant.id
    assert session["phoneNumberId"] is None
    assert session["status"] == "active"

    again = ok(api.post("/api/sessions/get-or-create", body), 200)["session"]
    assert again == session
    written = {"assistantId": assistant.id, "customer": {"number": CUSTOMER_WRITTEN}}
    assert ok(api.post("/api/sessions/get-or-create", written), 200)["session"]["id"] == session["id"]

    other_customer = ok(api.post("/api/sessions/get-or-create",
                                 {"assistantId": assistant.id, "customer": {"number": OTHER}}), 201)["session"]
    assert other_customer["id"] != session["id"]
    other_assistant = new_assistant(api)
    for_other_assistant = ok(api.post("/api/sessions/get-or-create",
                                      {**body, "assistantId": other_assistant["id"]}), 201)["session"]
    assert for_other_assistant["id"] != session["id"]
    assert api.total("/api/sessions") == 3

    ok(api.post(f"/api/sessions/{session['id']}/end"))
    replacement = ok(api.post("/api/sessions/get-or-create", body), 201)["session"]
    assert replacement["id"] != session["id"]
    assert ok(api.post("/api/sessions/get-or-create", body), 200)["session"]["id"] == replacement["id"]


def test_get_or_create_returns_an_existing_api_session_and_skips_expired_ones(api, assistant, clock):
    """A session made by POST /api/sessions for the customer is found (200); once it has expired, a new one is made
    (201) and the old one is completed."""
    made = api.new_session(assistantId=assistant.id, customer={"number": CUSTOMER}, expirationSeconds=60)
    body = {"assistantId": assistant.id, "customer": {"number": CUSTOMER}}
    assert ok(api.post("/api/sessions/get-or-create", body), 200)["session"]["id"] == made["id"]
    clock.advance(61)
    fresh = ok(api.post("/api/sessions/get-or-create", body), 201)["session"]
    assert fresh["id"] != made["id"]
    assert api.session(made["id"])["status"] == "completed"


def test_get_or_create_with_a_phone_number_returns_that_numbers_sms_session(api, webhook, runtime, assistant, number):
    """After the customer texted the number, get-or-create with phoneNumberId answers 200 with that SMS session (which,
    the customer having spoken first, starts with the text, not the firstMessage)."""
    ok(api.patch(f"/api/assistants/{assistant.id}", {"firstMessage": "Welcome!"}))
    assert webhook("hello there", from_=CUSTOMER, to=BUSINESS).status_code == 200
    assert runtime.queue.wait_idle(10)
    (sms,) = ok(api.get("/api/sessions"))["sessions"]
    assert [(m["role"], m["content"]) for m in api.session(sms["id"])["messages"]] == [
        ("user", "hello there"), ("assistant", "hello there")]
    body = {"assistantId": assistant.id, "customer": {"number": CUSTOMER_WRITTEN}, "phoneNumberId": number.id}
    found = ok(api.post("/api/sessions/get-or-create", body), 200)["session"]
    assert found["id"] == sms["id"]
    assert found["phoneNumberId"] == number.id
    assert api.total("/api/sessions") == 1
    # Without phoneNumberId the SMS session is not an API session: a new one is made.
    api_session = ok(api.post("/api/sessions/get-or-create", {**body, "phoneNumberId": None}), 201)["session"]
    assert api_session["phoneNumberId"] is None
    # Another customer on the number gets a new SMS session.
    new_sms = ok(api.post("/api/sessions/get-or-create", {**body, "customer": {"number": OTHER}}), 201)["session"]
    assert new_sms["phoneNumberId"] == number.id and new_sms["id"] != sms["id"]


def test_get_or_create_that_opens_a_session_on_a_phone_number_starts_it_with_the_first_message(
    api, runtime, assistant, number
):
    """get-or-create creating (201) a session on a number opens it with the firstMessage, like POST /api/sessions."""
    ok(api.patch(f"/api/assistants/{assistant.id}", {"firstMessage": "Welcome to {{phoneNumber.number}}"}))
    body = {"assistantId": assistant.id, "customer": {"number": CUSTOMER}, "phoneNumberId": number.id}
    session = ok(api.post("/api/sessions/get-or-create", body), 201)["session"]
    assert runtime.queue.wait_idle(10)
    messages = api.session(session["id"])["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [("assistant", f"Welcome to {BUSINESS}")]


def test_get_or_create_rejects_incomplete_bodies(api, assistant, number):
    """No customer, no customer number, no assistantId or an unknown assistant or number: 422 naming the field."""
    cases = [
        ("no customer", {"assistantId": assistant.id}, "customer"),
        ("customer without number", {"assistantId": assistant.id, "customer": {"name": "Ann"}}, "customer.number"),
        ("bad number", {"assistantId": assistant.id, "customer": {"number": "12"}}, "customer.number"),
        ("no assistantId", {"customer": {"number": CUSTOMER}}, "assistantId"),
        ("unknown assistantId", {"assistantId": UNKNOWN_ID, "customer": {"number": CUSTOMER}}, "assistantId"),
        ("unknown phoneNumberId", {"assistantId": assistant.id, "customer": {"number": CUSTOMER},
                                   "phoneNumberId": UNKNOWN_ID}, "phoneNumberId"),
        ("unknown field", {"assistantId": assistant.id, "customer": {"number": CUSTOMER}, "name": "x"}, "name"),
    ]
    for label, body, field in cases:
        assert_invalid(api.post("/api/sessions/get-or-create", body), field, label)
    assert api.total("/api/sessions") == 0


def test_twenty_simultaneous_get_or_create_calls_make_exactly_one_session(runtime, api_key, assistant, api):
    """20 threads call get-or-create for the same new customer at once over a real threaded HTTP server: one 201,
    nineteen 200, all with the same session, and one session stored."""
    server = LiveServer(create_app(runtime=runtime)).start()
    barrier = threading.Barrier(20)
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()
    body = {"assistantId": assistant.id, "customer": {"number": CUSTOMER}}
    try:
        with httpx.Client(base_url=server.url, headers={"x-api-key": api_key}, timeout=60,
                          limits=httpx.Limits(max_connections=25)) as http:

            def call():
                barrier.wait(timeout=30)
                response = http.post("/api/sessions/get-or-create", json=body)
                session_id = response.json().get("session", {}).get("id") if response.status_code < 300 else None
                with lock:
                    results.append((response.status_code, session_id))

            threads = [threading.Thread(target=call) for _ in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
    finally:
        server.stop()
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 19 + [201], statuses
    assert len({session_id for _, session_id in results}) == 1
    assert api.total("/api/sessions") == 1
    assert api.total("/api/sessions", customerNumber=CUSTOMER, status="active") == 1


# -- POST /api/sessions/{id}/end -------------------------------------------------------------------


def test_end_completes_the_session_and_ending_again_is_a_no_op(api, runtime, clock):
    """end: 200 {"session"} completed, one session.updated event; again: 200, the same session, no new event."""
    assistant = new_assistant(api, serverUrl="http://127.0.0.1:9/events", serverEvents=["session.updated"])
    session = api.new_session(assistantId=assistant["id"])
    path = f"/api/sessions/{session['id']}/end"
    clock.advance(10)
    body = ok(api.post(path))
    assert set(body) == {"session"}
    ended = body["session"]
    assert ended["status"] == "completed"
    assert ended["updatedAt"] == iso(clock.now())
    assert {f: ended[f] for f in SESSION_FIELDS - {"status", "updatedAt"}} == {
        f: session[f] for f in SESSION_FIELDS - {"status", "updatedAt"}}

    def updated_events() -> int:
        with runtime.db.begin() as tx:
            return tx.scalar(select(func.count()).select_from(Event).where(Event.type == "session.updated"))

    assert updated_events() == 1
    clock.advance(10)
    assert ok(api.post(path)) == {"session": ended}
    assert updated_events() == 1


# -- POST /api/chats --------------------------------------------------------------------------------


def test_chat_on_a_session_answers_201_with_the_reply(api, assistant):
    """201 with the literal message and a chat of SPEC 3's fields; output[0].content is the engine's reply; the turn
    is in the session's transcript."""
    session = api.new_session(assistantId=assistant.id)
    response = api.post("/api/chats", {"sessionId": session["id"], "input": "Ping 1"})
    body = ok(response, 201)
    assert set(body) == {"message", "chat"}
    assert body["message"] == "Chat created successfully"
    chat = body["chat"]
    assert set(chat) == CHAT_FIELDS
    assert chat["sessionId"] == session["id"]
    assert chat["input"] == "Ping 1"
    assert chat["output"][0] == {"role": "assistant", "content": "Ping 1"}
    assert ISO_Z.match(chat["createdAt"])
    messages = api.session(session["id"])["messages"]
    assert [(m["role"], m["content"], m["channel"]) for m in messages] == [
        ("user", "Ping 1", "api"), ("assistant", "Ping 1", "api")]


def test_chat_with_only_an_assistant_id_starts_a_new_session(api, assistant):
    """assistantId instead of sessionId: a new active API session of that assistant holds the turn."""
    chat = ok(api.post("/api/chats", {"assistantId": assistant.id, "input": "new here"}), 201)["chat"]
    assert chat["output"][0]["content"] == "new here"
    session = api.session(chat["sessionId"])
    assert session["assistantId"] == assistant.id
    assert session["status"] == "active"
    assert session["phoneNumberId"] is None
    assert [m["content"] for m in session["messages"]] == ["new here", "new here"]
    second = ok(api.post("/api/chats", {"assistantId": assistant.id, "input": "again"}), 201)["chat"]
    assert second["sessionId"] != chat["sessionId"]
    assert api.total("/api/sessions") == 2


def test_faq_chat_keeps_context_across_turns(api, faq_assistant):
    """Three turns on a faq assistant: after two questions, "what was my first question?" is answered from the
    session's history."""
    session = api.new_session(assistantId=faq_assistant["id"])
    hours = api.chat(session["id"], "what are your hours?")["output"][0]["content"]
    assert "open" in hours.lower()
    where = api.chat(session["id"], "where are you located?")["output"][0]["content"]
    assert "Pier Road" in where
    answer = api.chat(session["id"], "what was my first question?")["output"][0]["content"]
    assert answer == 'Your first question was: "what are your hours?"'
    assert api.total("/api/chats", sessionId=session["id"]) == 3


def test_chat_on_a_completed_session_gets_409_saying_to_create_a_new_session(api, assistant):
    """Chatting on an ended session: 409 conflict whose message says to create a new session; nothing stored."""
    session = api.new_session(assistantId=assistant.id)
    api.chat(session["id"], "before")
    ok(api.post(f"/api/sessions/{session['id']}/end"))
    error = error_of(api.post("/api/chats", {"sessionId": session["id"], "input": "after"}), 409)
    assert error["code"] == "conflict"
    assert "new session" in error["message"].lower()
    assert api.total("/api/messages", sessionId=session["id"]) == 2
    assert api.total("/api/chats", sessionId=session["id"]) == 1


def test_chat_on_an_expired_session_gets_409_and_completes_it(api, assistant, clock):
    """Once the clock passes expiresAt the session takes no chat (409, create a new session) and shows completed."""
    session = api.new_session(assistantId=assistant.id, expirationSeconds=3600)
    clock.advance(3599)
    api.chat(session["id"], "just in time")
    clock.advance(2)
    error = error_of(api.post("/api/chats", {"sessionId": session["id"], "input": "too late"}), 409)
    assert "new session" in error["message"].lower()
    assert api.session(session["id"])["status"] == "completed"
    assert api.total("/api/messages", sessionId=session["id"]) == 2


def test_chat_that_waited_for_the_lane_past_expiry_gets_409_and_stores_nothing(api, runtime, assistant, clock):
    """A chat checked while the session was live, then kept waiting for its turn lane (another turn held it)
    until the session expired: 409 like any chat on an expired session, the session completed, no text stored."""
    from gateway.services.leases import Lease

    session = api.new_session(assistantId=assistant.id, expirationSeconds=3600)
    clock.advance(3590)
    busy = Lease(runtime, session["id"], "turn")  # an SMS turn of this session is with the engine
    assert busy.acquire()
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(
        api.post("/api/chats", {"sessionId": session["id"], "input": "are you there?"})))
    waiting.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _waits_for_the_lane(waiting):
            time.sleep(0.01)
        clock.advance(20)  # the session expires while the chat waits
    finally:
        busy.release()
        waiting.join(20)
    (answer,) = answers
    error = error_of(answer, 409)
    assert "new session" in error["message"].lower()
    assert api.session(session["id"])["status"] == "completed"
    assert api.total("/api/messages", sessionId=session["id"]) == 0
    assert api.total("/api/chats", sessionId=session["id"]) == 0


def _waits_for_the_lane(thread: threading.Thread) -> bool:
    """Whether ``thread`` is in chats._take_lane, polling for the lane (past the session check)."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "_take_lane":
            return True
        frame = frame.f_back
    return False


def test_chat_on_an_unknown_session_gets_404(api):
    """An unknown sessionId: 404 not_found, and no session is created."""
    assert error_of(api.post("/api/chats", {"sessionId": UNKNOWN_ID, "input": "hi"}), 404)["code"] == "not_found"
    assert api.total("/api/sessions") == 0


def test_chat_needs_a_session_or_an_assistant(api):
    """Neither sessionId nor assistantId: a 4xx whose message names both; an unknown assistantId: 422."""
    response = api.post("/api/chats", {"input": "hi"})
    assert response.status_code in (400, 422)
    error = error_of(response, response.status_code)
    assert "sessionId" in error["message"] and "assistantId" in error["message"]
    assert_invalid(api.post("/api/chats", {"assistantId": UNKNOWN_ID, "input": "hi"}), "assistantId")
    assert api.total("/api/sessions") == 0


def test_chat_input_must_be_present_non_empty_and_within_the_limit(api, assistant):
    """Missing, empty, non-string or over-long input (20,001 characters): 422 naming input; nothing stored."""
    session = api.new_session(assistantId=assistant.id)
    for label, value in [("empty", ""), ("too long", "x" * 20_001), ("number", 5), ("list", ["hi"]), ("null", None)]:
        assert_invalid(api.post("/api/chats", {"sessionId": session["id"], "input": value}), "input", label)
    assert_invalid(api.post("/api/chats", {"sessionId": session["id"]}), "input", "missing")
    assert api.total("/api/messages", sessionId=session["id"]) == 0
    assert api.chat(session["id"], "x")["output"][0]["content"] == "x"


def test_whitespace_only_chat_input_gets_422_and_stores_nothing(api, assistant):
    """input made only of spaces, tabs and newlines is empty: 422 naming input; no message or chat is stored."""
    session = api.new_session(assistantId=assistant.id)
    assert_invalid(api.post("/api/chats", {"sessionId": session["id"], "input": "  \n\t "}), "input")
    assert api.total("/api/messages", sessionId=session["id"]) == 0
    assert api.total("/api/chats", sessionId=session["id"]) == 0


# -- GET /api/chats/session/{id}, GET /api/chats, DELETE /api/chats/{id} -------------------------------


def test_chat_history_returns_the_session_with_its_messages_in_order(api, assistant, clock):
    """GET /api/chats/session/{id}: {"session": {...every field, "messages": [...]}} oldest first."""
    session = api.new_session(assistantId=assistant.id)
    for text in ("first", "second"):
        clock.advance(1)
        api.chat(session["id"], text)
    body = ok(api.get(f"/api/chats/session/{session['id']}"))
    assert set(body) == {"session"}
    assert set(body["session"]) == SESSION_FIELDS | {"messages"}
    assert [(m["role"], m["content"]) for m in body["session"]["messages"]] == [
        ("user", "first"), ("assistant", "first"), ("user", "second"), ("assistant", "second")]
    assert body["session"] == api.session(session["id"])


def test_list_chats_by_session_with_paging_and_total_count(api, assistant, clock):
    """?sessionId= lists that session's chats; limit/offset pages cover them once; totalCount counts them all."""
    session = api.new_session(assistantId=assistant.id)
    other = api.new_session(assistantId=assistant.id)
    made = []
    for index in range(5):
        clock.advance(1)
        made.append(api.chat(session["id"], f"turn {index}")["id"])
    api.chat(other["id"], "elsewhere")

    paged = []
    for offset in (0, 2, 4):
        page = ok(api.get("/api/chats", query_string={"sessionId": session["id"], "limit": 2, "offset": offset}))
        assert set(page) == {"chats", "totalCount"}
        assert page["totalCount"] == 5
        assert all(set(chat) == CHAT_FIELDS and chat["sessionId"] == session["id"] for chat in page["chats"])
        paged += ids(page["chats"])
    assert sorted(paged) == sorted(made)
    assert api.total("/api/chats") == 6
    assert ok(api.get("/api/chats", query_string={"sessionId": UNKNOWN_ID})) == {"chats": [], "totalCount": 0}


def test_delete_chat_answers_its_id_and_then_404(api, assistant):
    """DELETE /api/chats/{id}: {"chat": {"id"}}; the chat leaves the list; deleting it again is 404."""
    session = api.new_session(assistantId=assistant.id)
    chat = api.chat(session["id"], "forget me")
    kept = api.chat(session["id"], "keep me")
    assert ok(api.delete(f"/api/chats/{chat['id']}")) == {"chat": {"id": chat["id"]}}
    assert ids(ok(api.get("/api/chats", query_string={"sessionId": session["id"]}))["chats"]) == [kept["id"]]
    assert error_of(api.delete(f"/api/chats/{chat['id']}"), 404)["code"] == "not_found"
    assert api.session(session["id"])["status"] == "active"


# -- GET /api/messages --------------------------------------------------------------------------------


def test_list_messages_by_session_and_status(api, webhook, runtime, assistant, number):
    """?sessionId= and ?status= filter messages and totalCount; SMS texts end processed."""
    session = api.new_session(assistantId=assistant.id)
    api.chat(session["id"], "one")
    api.chat(session["id"], "two")
    assert webhook("by sms", from_=CUSTOMER, to=BUSINESS).status_code == 200
    assert runtime.queue.wait_idle(10)

    body = ok(api.get("/api/messages", query_string={"sessionId": session["id"]}))
    assert set(body) == {"messages", "totalCount"}
    assert body["totalCount"] == 4
    assert sorted(m["content"] for m in body["messages"]) == ["one", "one", "two", "two"]
    assert all(set(m) == MESSAGE_FIELDS and m["sessionId"] == session["id"] for m in body["messages"])
    assert api.total("/api/messages") == 6

    processed = ok(api.get("/api/messages", query_string={"status": "processed"}))
    assert processed["totalCount"] == 3
    assert sorted(m["content"] for m in processed["messages"]) == ["by sms", "one", "two"]
    assert api.total("/api/messages", sessionId=session["id"], status="processed") == 2
    assert api.total("/api/messages", status="failed") == 0
    page = ok(api.get("/api/messages", query_string={"limit": 2, "offset": 1}))
    assert len(page["messages"]) == 2 and page["totalCount"] == 6


# -- auth ------------------------------------------------------------------------------------------------

ROUTES = [  # (method, path, body, success status); {session} and {chat} stand for ids that exist
    ("POST", "/api/sessions", {"assistantId": "{assistant}"}, 201),
    ("GET", "/api/sessions", None, 200),
    ("GET", "/api/sessions/{session}", None, 200),
    ("PATCH", "/api/sessions/{session}", {"name": "renamed"}, 200),
    ("POST", "/api/sessions/get-or-create", {"assistantId": "{assistant}", "customer": {"number": CUSTOMER}}, 201),
    ("POST", "/api/chats", {"sessionId": "{session}", "input": "hi"}, 201),
    ("GET", "/api/chats/session/{session}", None, 200),
    ("GET", "/api/chats?sessionId={session}", None, 200),
    ("GET", "/api/messages?sessionId={session}", None, 200),
    ("DELETE", "/api/chats/{chat}", None, 200),
    ("POST", "/api/sessions/{session}/end", None, 200),
    ("DELETE", "/api/sessions/{session}", None, 200),
    ("POST", "/api/sessions/delete-many", {"ids": ["{other}"]}, 200),
]


def _fill(value, names: dict):
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


def _objects(api: SessionApi, assistant_id: str) -> dict:
    session = api.new_session(assistantId=assistant_id)
    other = api.new_session(assistantId=assistant_id)
    chat = api.chat(session["id"], "hello")
    return {"assistant": assistant_id, "session": session["id"], "other": other["id"], "chat": chat["id"]}


def test_every_route_refuses_requests_without_a_valid_key(client, api, api_key, assistant):
    """No key, a wrong x-api-key, a wrong Bearer token or the key under another scheme: 401 with the error body on
    every session, chat and message route, and nothing changes."""
    names = _objects(api, assistant.id)
    before = {"sessions": api.total("/api/sessions"), "chats": api.total("/api/chats"),
              "messages": api.total("/api/messages")}
    refused = [{}, {"x-api-key": "gk_wrong"}, {"Authorization": "Bearer gk_wrong"},
               {"Authorization": f"Basic {api_key}"}, {"Authorization": api_key}]
    for method, path, body, _ in ROUTES:
        for headers in refused:
            response = client.open(_fill(path, names), method=method, json=_fill(body, names), headers=headers)
            assert error_of(response, 401)["code"] == "unauthorized", (method, path, headers)
    after = {"sessions": api.total("/api/sessions"), "chats": api.total("/api/chats"),
             "messages": api.total("/api/messages")}
    assert after == before
    assert api.session(names["session"])["name"] is None


@pytest.mark.parametrize("style", ["x-api-key", "Authorization: Bearer"])
def test_every_route_accepts_the_key_as_x_api_key_or_bearer(client, api, api_key, assistant, style):
    """With the key in either header every route does its work and answers its success status."""
    names = _objects(api, assistant.id)
    headers = {"x-api-key": api_key} if style == "x-api-key" else {"Authorization": f"Bearer {api_key}"}
    for method, path, body, status in ROUTES:
        response = client.open(_fill(path, names), method=method, json=_fill(body, names), headers=headers)
        ok(response, status)


# -- bad input ----------------------------------------------------------------------------------------

BODY_ROUTES = [
    ("POST", "/api/sessions"),
    ("PATCH", "/api/sessions/{session}"),
    ("POST", "/api/sessions/delete-many"),
    ("POST", "/api/sessions/get-or-create"),
    ("POST", "/api/chats"),
]


def test_malformed_bodies_get_400_and_never_500(api, runtime, assistant):
    """Invalid JSON, a JSON array, string, number or null, an empty body, non-UTF-8 bytes, NaN: 400 bad_request on
    every route that reads a body; a body over the request cap: 413 with the error body; nothing is stored."""
    names = _objects(api, assistant.id)
    bodies = [b'{"name": "x",', b'[{"assistantId": "x"}]', b"[]", b'"x"', b"42", b"null", b"", b'{"name": "\xff"}',
              b'{"expirationSeconds": NaN}']
    for method, path in BODY_ROUTES:
        for data in bodies:
            response = api.request(method, _fill(path, names), data=data, content_type="application/json")
            assert error_of(response, 400)["code"] == "bad_request", (method, path, data)
    too_big = {"sessionId": names["session"], "input": "x" * (runtime.settings.max_request_bytes + 1)}
    error = error_of(api.post("/api/chats", too_big), 413)
    assert error["code"] == "payload_too_large"
    assert api.total("/api/sessions") == 2
    assert api.total("/api/chats") == 1
    assert api.session(names["session"])["name"] is None


def test_deeply_nested_json_gets_a_4xx_not_a_500(api, assistant):
    """Pathologically nested JSON is refused with a 4xx error body on both databases; nothing is stored."""
    nested_array = b"[" * 2000 + b"]" * 2000
    nested_metadata = ('{"assistantId": "%s", "metadata": %s}' % (assistant.id, '{"a":' * 900 + "1" + "}" * 900))
    for label, data in [("array nested 2000 deep", nested_array), ("metadata nested 900 deep", nested_metadata)]:
        response = api.post("/api/sessions", data=data, content_type="application/json")
        assert 400 <= response.status_code < 500, (label, response.status_code, response.get_data(as_text=True))
        error_of(response, response.status_code)
    assert api.total("/api/sessions") == 0


def test_number_too_large_for_json_gets_a_4xx_and_stores_nothing(api, assistant):
    """1e400 in metadata or variableValues: 400 or 422 with the error body on POST and PATCH; nothing changes."""
    session = api.new_session(assistantId=assistant.id, metadata={"n": 1})
    cases = [
        ("POST", "/api/sessions", '{"assistantId": "%s", "metadata": {"n": 1e400}}' % assistant.id),
        ("POST", "/api/sessions",
         '{"assistantId": "%s", "assistantOverrides": {"variableValues": {"n": -1e400}}}' % assistant.id),
        ("PATCH", f"/api/sessions/{session['id']}", '{"metadata": {"n": 1e400}}'),
    ]
    for method, path, data in cases:
        response = api.request(method, path, data=data, content_type="application/json")
        assert response.status_code in (400, 422), (method, data, response.status_code,
                                                    response.get_data(as_text=True)[:300])
        error_of(response, response.status_code)
    assert api.total("/api/sessions") == 1
    assert api.session(session["id"])["metadata"] == {"n": 1}


def test_unknown_fields_get_422_naming_the_field(api, assistant):
    """A field a route does not know, at the top or nested: 422 whose details.field is that field."""
    names = _objects(api, assistant.id)
    cases = [
        ("POST", "/api/sessions", {"assistantId": assistant.id, "colour": "blue"}, "colour"),
        ("POST", "/api/sessions", {"assistantId": assistant.id, "customer": {"number": CUSTOMER, "age": 3}},
         "customer.age"),
        ("PATCH", "/api/sessions/{session}", {"customer": {"number": CUSTOMER}}, "customer"),
        ("POST", "/api/sessions/delete-many", {"ids": ["{other}"], "all": True}, "all"),
        ("POST", "/api/sessions/get-or-create", {"assistantId": assistant.id, "customer": {"number": CUSTOMER},
                                                 "metadata": {}}, "metadata"),
        ("POST", "/api/chats", {"sessionId": "{session}", "input": "hi", "stream": True}, "stream"),
        ("POST", "/api/chats", {"sessionId": "{session}", "input": "hi", "assistantOverrides": {"voice": "x"}},
         "assistantOverrides.voice"),
    ]
    for method, path, body, field in cases:
        assert_invalid(api.request(method, _fill(path, names), _fill(body, names)), field, f"{method} {path}")
    assert api.total("/api/sessions") == 2
    assert api.total("/api/chats") == 1


def test_wrong_types_get_422_naming_the_field(api, assistant):
    """Objects where strings belong, strings where numbers or lists belong: 422 naming the field, never a 500."""
    names = _objects(api, assistant.id)
    cases = [
        ("POST", "/api/sessions", {"assistantId": ["x"]}, "assistantId"),
        ("POST", "/api/sessions", {"assistantId": assistant.id, "name": {"first": "x"}}, "name"),
        ("POST", "/api/sessions", {"assistantId": assistant.id, "expirationSeconds": [60]}, "expirationSeconds"),
        ("POST", "/api/sessions", {"assistantId": assistant.id, "expirationSeconds": 10**30}, "expirationSeconds"),
        ("POST", "/api/sessions", {"assistantId": assistant.id, "assistantOverrides": "x"}, "assistantOverrides"),
        ("POST", "/api/sessions", {"assistantId": assistant.id, "phoneNumberId": 7}, "phoneNumberId"),
        ("POST", "/api/sessions", {"assistantId": assistant.id, "customer": {"number": 14155550123}},
         "customer.number"),
        ("PATCH", "/api/sessions/{session}", {"name": ["x"]}, "name"),
        ("PATCH", "/api/sessions/{session}", {"expirationSeconds": "soon"}, "expirationSeconds"),
        ("POST", "/api/sessions/get-or-create", {"assistantId": assistant.id, "customer": "+14155550123"},
         "customer"),
        ("POST", "/api/chats", {"sessionId": 12, "input": "hi"}, "sessionId"),
        ("POST", "/api/chats", {"sessionId": "{session}", "input": {"text": "hi"}}, "input"),
        ("POST", "/api/chats", {"sessionId": "{session}", "input": "hi", "assistantOverrides": []},
         "assistantOverrides"),
    ]
    for method, path, body, field in cases:
        assert_invalid(api.request(method, _fill(path, names), _fill(body, names)), field, f"{method} {body}")
    assert api.total("/api/sessions") == 2
    assert api.session(names["session"])["name"] is None


def test_sql_and_script_text_is_stored_and_returned_verbatim(api, assistant):
    """SQL and script in name, metadata, customer name and chat input are plain data: stored, returned exactly as
    JSON, searchable, and the tables are still there."""
    session = api.new_session(assistantId=assistant.id, name=SQL_AND_SCRIPT,
                              customer={"number": CUSTOMER, "name": SQL_AND_SCRIPT},
                              metadata={SQL_AND_SCRIPT: SQL_AND_SCRIPT})
    assert session["name"] == SQL_AND_SCRIPT
    assert session["customer"]["name"] == SQL_AND_SCRIPT
    assert session["metadata"] == {SQL_AND_SCRIPT: SQL_AND_SCRIPT}
    hostile_input = "1; DELETE FROM messages WHERE '1'='1'; <img src=x onerror=alert(1)> %_\\"
    chat = api.chat(session["id"], hostile_input)
    assert chat["input"] == hostile_input
    assert chat["output"][0]["content"] == hostile_input
    response = api.get(f"/api/sessions/{session['id']}")
    assert response.mimetype == "application/json"
    fetched = ok(response)["session"]
    assert fetched["name"] == SQL_AND_SCRIPT
    assert [m["content"] for m in fetched["messages"]] == [hostile_input, hostile_input]
    renamed = ok(api.patch(f"/api/sessions/{session['id']}", {"name": "<b>x</b>' OR 1=1 --"}))["session"]
    assert renamed["name"] == "<b>x</b>' OR 1=1 --"
    assert ids(ok(api.get("/api/sessions", query_string={"search": "onerror=alert"}))["sessions"]) == [session["id"]]
    assert ok(api.get("/api/sessions", query_string={"search": "' OR '1'='1"}))["totalCount"] == 0
    assert api.total("/api/sessions") == 1
    assert api.total("/api/messages") == 2


def test_lone_surrogates_anywhere_in_a_body_get_a_4xx_and_change_nothing(api, assistant):
    """Half a surrogate pair ("\\ud800", which JSON may escape) in free-form JSON (metadata, variableValues) or in
    an id list: refused with the error body, never a 500, and nothing changes. UTF-8 cannot encode one, so once
    stored it could not be sent in an event body (the delivery would crash on every try) nor matched as an id."""
    names = _objects(api, assistant.id)
    session = names["session"]
    cases = [
        ("POST", "/api/sessions", '{"assistantId": "%s", "metadata": {"k": "a\\ud800"}}' % assistant.id),
        ("POST", "/api/sessions", '{"assistantId": "%s", "metadata": {"\\udfff": 1}}' % assistant.id),
        ("POST", "/api/sessions", '{"assistantId": "%s", "metadata": {"list": [["x\\udc00"]]}}' % assistant.id),
        ("POST", "/api/sessions",
         '{"assistantId": "%s", "assistantOverrides": {"variableValues": {"v": "\\udc00"}}}' % assistant.id),
        ("PATCH", f"/api/sessions/{session}", '{"metadata": {"k": "\\ud800"}}'),
        ("PATCH", f"/api/sessions/{session}", '{"assistantOverrides": {"variableValues": {"\\ud800": "v"}}}'),
        ("POST", "/api/sessions/delete-many", '{"ids": ["\\udc00"]}'),
        ("POST", "/api/sessions/delete-many", '{"ids": ["%s", "\\ud800"]}' % names["other"]),
        ("POST", "/api/chats",
         '{"sessionId": "%s", "input": "hi", "assistantOverrides": {"variableValues": {"v": "\\ud800"}}}' % session),
    ]
    for method, path, data in cases:
        response = api.request(method, path, data=data.encode(), content_type="application/json")
        assert 400 <= response.status_code < 500, (method, data, response.status_code,
                                                   response.get_data(as_text=True)[:300])
        error_of(response, response.status_code)
    assert api.total("/api/sessions") == 2
    assert api.total("/api/chats") == 1
    fetched = api.session(session)
    assert (fetched["metadata"], fetched["assistantOverrides"]) == ({}, {})
