"""Engine failures over real HTTP (SPEC 6.6, 6.10, section 7 `webhook`): timeouts, backoff, fallback.

A live embedded gateway (on SQLite and on PostgreSQL) answers signed Twilio
webhooks with the `webhook` engine pointed at a fake engine on 127.0.0.1,
and sends through the real twilio client to a fake Twilio. The fake engine
records when each call started and ended, so the tests read the retry
schedule off the engine's side: tries, gaps between tries, overlap. The FAST
tunables (1 s engine timeout, 0.05 s first delay, 0.4 s cap) keep every
retry sequence to tenths of a second.
"""

from __future__ import annotations

import random
import socket
import socketserver
import threading
import time

import pytest
from sqlalchemy import select

from gateway.db.models import Chat
from gateway.schemas import AssistantCreate, PhoneNumberCreate
from gateway.services.assistants import create_assistant
from gateway.services.phone_numbers import create_phone_number
from tests.conftest import BUSINESS, CUSTOMER, FAST
from tests.support.fake_engine import EngineFault
from tests.support.net import free_port

SLACK = 0.2  # how far the fake's clock may lag the gateway's: a busy machine delays its request thread
# How late a try may start after its backoff: scheduling, the lease renewal's commit and a fresh
# HTTP connection. Generous because a commit on PostgreSQL stalled 0.28 s once in CI, right after
# the parallel pass; the lower bounds, which show the backoff itself, stay exact.
LATE = 0.5
FALLBACK = "Sorry, we cannot answer right now. Please try again later."
OTHERS = ("+14155550124", "+14155550125")


@pytest.fixture
def database_url_or_default(database_url):
    """Every test here runs on the embedded SQLite file and on PostgreSQL."""
    return database_url


# -- helpers ----------------------------------------------------------------------------


def configure(gw, url: str, fallback: str | None = FALLBACK, **assistant):
    """A webhook-engine assistant on BUSINESS; returns the assistant."""
    created = create_assistant(
        gw.runtime,
        AssistantCreate(
            name="Webhook", engine={"provider": "webhook", "url": url}, fallbackMessage=fallback, **assistant
        ),
    )
    create_phone_number(gw.runtime, PhoneNumberCreate(number=BUSINESS, assistantId=created.id, messagesPerSecond=100))
    return created


def text(gw, body: str, from_: str = CUSTOMER, media: list[tuple[str, str]] | None = None) -> None:
    sent = gw.phone.text(BUSINESS, from_, body, media=media)
    assert sent.http_status == 200, sent.body


def starts_gaps(calls) -> list[float]:
    return [later.started - earlier.started for earlier, later in zip(calls, calls[1:])]


def chats(gw) -> list[Chat]:
    with gw.runtime.db.begin() as tx:
        return list(tx.scalars(select(Chat).order_by(Chat.created_at)))


def only_inbound(gw):
    (inbound,) = gw.messages("user")
    return inbound


def fail(times: int, **fault) -> list[EngineFault]:
    return [EngineFault(**fault) for _ in range(times)]


class RawEngine:
    """A TCP server on 127.0.0.1 whose handler misbehaves below HTTP; records when each connection came."""

    def __init__(self, handle):
        self.accepted: list[float] = []
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                outer.accepted.append(time.monotonic())
                try:
                    handle(self.request)
                except OSError:
                    pass  # the gateway hung up: exactly what some tests expect

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/turn"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def read_request(connection: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            return
        body += chunk


def hang_up(connection: socket.socket) -> None:
    """Read the request, then close without a word."""
    read_request(connection)


def trickle(connection: socket.socket) -> None:
    """Answer 200 at once, then the body one byte every 0.15 s (2 s in all), never silent for a whole second."""
    read_request(connection)
    body = b'{"reply":"x"}'
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    for byte in body:
        time.sleep(0.15)
        connection.sendall(bytes([byte]))


@pytest.fixture
def raw_engines():
    started: list[RawEngine] = []

    def start(handle) -> RawEngine:
        engine = RawEngine(handle)
        started.append(engine)
        return engine

    yield start
    for engine in started:
        engine.stop()


# -- timeouts and transient errors ----------------------------------------------------------


@pytest.mark.timing
def test_an_engine_that_hangs_is_tried_engine_tries_times_then_the_fallback_goes_out(
    live_gateway, fake_engine, fake_twilio
):
    """Each call past engine_timeout: tries run out, the fallback is sent, text and chat fail with the timeout."""
    gw = live_gateway()
    assert gw.runtime.settings.engine_tries == 3  # the default, untouched by FAST
    configure(gw, fake_engine.url)
    fake_engine.script.next_faults.extend(fail(3, hang=FAST["engine_timeout"] + 0.5))

    text(gw, "is anyone there?")
    gw.settled(timeout=20)

    calls = fake_engine.wait_for_calls(3, started_only=True)
    assert len(calls) == 3
    # Each try was abandoned after the timeout (1 s here), not the 20 s default or the engine's 1.5 s.
    assert all(FAST["engine_timeout"] <= gap < FAST["engine_timeout"] + FAST["engine_retry_cap"] + LATE
               for gap in starts_gaps(calls))
    inbound = only_inbound(gw)
    assert inbound.status == "failed"
    assert "timed out" in inbound.error_message
    creates = fake_twilio.wait_for_creates(1)
    assert [(c.to, c.body) for c in creates] == [(CUSTOMER, FALLBACK)]
    (reply,) = gw.messages("assistant")
    assert (reply.kind, reply.content) == ("fallback", FALLBACK)
    (chat,) = chats(gw)
    assert chat.status == "failed"
    assert "timed out" in chat.error_message
    assert chat.output == [{"role": "assistant", "content": FALLBACK}]


TRANSIENT = {
    "HTTP 500": dict(status=500),
    "HTTP 502": dict(status=502),
    "HTTP 503": dict(status=503),
    "HTTP 429 without Retry-After": dict(status=429),
    "timeout": dict(hang=FAST["engine_timeout"] + 0.3),
}


@pytest.mark.parametrize("fault", list(TRANSIENT.values()), ids=list(TRANSIENT))
def test_transient_errors_are_retried_until_the_engine_answers(live_gateway, fake_engine, fake_twilio, fault):
    """Two transient failures then an answer: three calls, the real reply is sent, the text is processed."""
    gw = live_gateway()
    configure(gw, fake_engine.url)
    fake_engine.script.next_faults.extend(fail(2, **fault))

    text(gw, "hello")
    gw.settled(timeout=20)

    calls = fake_engine.wait_for_calls(3)
    assert len(calls) == 3
    assert calls[-1].outcome == "answered"
    inbound = only_inbound(gw)
    assert (inbound.status, inbound.error_message) == ("processed", None)
    assert [c.body for c in fake_twilio.wait_for_creates(1)] == ["re: hello"]
    (reply,) = gw.messages("assistant")
    assert reply.kind == "reply"
    assert chats(gw)[0].status == "completed"


RETRY_AFTER = {
    # label: (Retry-After seconds, shortest gap, longest gap) with FAST's 0.4 s cap
    "honoured below the cap": (0.3, 0.3, FAST["engine_retry_cap"] + LATE),
    "cut to the cap above it": (5, FAST["engine_retry_cap"], FAST["engine_retry_cap"] + LATE),
}


@pytest.mark.timing
@pytest.mark.parametrize("retry_after, shortest, longest", list(RETRY_AFTER.values()), ids=list(RETRY_AFTER))
def test_a_429_with_retry_after_waits_that_long_within_the_cap(
    live_gateway, fake_engine, fake_twilio, retry_after, shortest, longest
):
    """HTTP 429 with Retry-After: the next try waits that long (not the 0.05 s backoff), but never past the cap."""
    gw = live_gateway()
    configure(gw, fake_engine.url)
    fake_engine.script.next_faults.append(EngineFault(status=429, retry_after=retry_after))

    text(gw, "hello")
    gw.settled()

    calls = fake_engine.calls
    assert [c.outcome for c in calls] == ["fault 429", "answered"]
    (gap,) = starts_gaps(calls)
    assert shortest <= gap < longest
    assert only_inbound(gw).status == "processed"


@pytest.mark.timing
def test_backoff_doubles_from_the_first_delay_with_jitter(live_gateway, fake_engine):
    """Delay n lies in [ceiling/2, ceiling], ceiling = first * 2**(n-1); across sessions some fall short of it."""
    first = 0.1
    gw = live_gateway(engine_tries=4, engine_retry_delay=first, engine_retry_cap=10.0)
    configure(gw, fake_engine.url)
    ceilings = [first * 2 ** n for n in range(3)]  # 0.1, 0.2, 0.4
    all_gaps: list[list[float]] = []

    for index, customer in enumerate((CUSTOMER, *OTHERS, "+14155550126")):
        fake_engine.script.next_faults.extend(fail(3, status=500))
        text(gw, "hello", from_=customer)
        calls_so_far = 4 * (index + 1)
        gw.wait_for(lambda: len(fake_engine.calls) == calls_so_far and fake_engine.calls[-1].outcome == "answered",
                    what="three failures and an answer")
        session_calls = fake_engine.calls[-4:]
        assert len({c.session_id for c in session_calls}) == 1
        gaps = starts_gaps(session_calls)
        for gap, ceiling in zip(gaps, ceilings):
            assert ceiling / 2 <= gap < ceiling + LATE, (gaps, ceilings)
        all_gaps.append(gaps)

    assert {m.status for m in gw.settled(timeout=20) if m.role == "user"} == {"processed"}
    # Without jitter every gap would be its full ceiling plus overhead; with it, some land well below.
    assert any(gap < 0.85 * ceiling for gaps in all_gaps for gap, ceiling in zip(gaps, ceilings)), all_gaps
    assert len({round(gap, 3) for gaps in all_gaps for gap in gaps}) > 3


@pytest.mark.timing
def test_the_cap_bounds_every_delay(live_gateway, fake_engine):
    """first delay 0.2, cap 0.25, five tries: no delay exceeds the cap although doubling would reach 1.6 s."""
    cap = 0.25
    gw = live_gateway(engine_tries=5, engine_retry_delay=0.2, engine_retry_cap=cap)
    configure(gw, fake_engine.url)
    fake_engine.script.next_faults.extend(fail(5, status=503))

    text(gw, "hello")
    gw.settled()

    calls = fake_engine.calls
    assert len(calls) == 5
    gaps = starts_gaps(calls)
    # Uncapped they would be 0.2, 0.4, 0.8, 1.6, the last at least 0.8 after jitter: past cap + LATE.
    ceilings = [0.2, cap, cap, cap]
    assert all(ceiling / 2 <= gap < cap + LATE for gap, ceiling in zip(gaps, ceilings)), gaps
    assert only_inbound(gw).status == "failed"


# -- permanent errors --------------------------------------------------------------------------


PERMANENT = {
    # label: (what the engine answers, what the stored reason says)
    "HTTP 400": (EngineFault(status=400), "HTTP 400"),
    "HTTP 401": (EngineFault(status=401), "HTTP 401"),
    "HTTP 404": (EngineFault(status=404), "HTTP 404"),
    "malformed JSON": (EngineFault(status=200, body='{"reply": "unterminated'), "not JSON"),
    "JSON without reply or replies": (EngineFault(status=200, body='{"answer": "hi"}'), '{"reply": "..."}'),
    "replies with a non-string": (EngineFault(status=200, body='{"replies": ["hi", 3]}'), '{"replies": [...]}'),
    "a JSON list instead of an object": (EngineFault(status=200, body='["hi"]'), '{"reply": "..."}'),
    "a blank reply": (EngineFault(status=200, body='{"reply": "  "}'), "empty reply"),
    "no replies at all": (EngineFault(status=200, body='{"replies": []}'), "empty reply"),
}


@pytest.mark.parametrize("fault, reason", list(PERMANENT.values()), ids=list(PERMANENT))
def test_permanent_errors_are_not_retried(live_gateway, fake_engine, fake_twilio, fault, reason):
    """A permanent error is tried once: the fallback goes out and the text is failed with the reason."""
    gw = live_gateway()
    configure(gw, fake_engine.url)
    fake_engine.script.next_faults.append(fault)

    text(gw, "hello")
    gw.settled()

    assert len(fake_engine.calls) == 1  # a second try would have been answered and the text processed
    inbound = only_inbound(gw)
    assert inbound.status == "failed"
    assert reason in inbound.error_message
    assert [c.body for c in fake_twilio.wait_for_creates(1)] == [FALLBACK]
    (chat,) = chats(gw)
    assert chat.status == "failed" and reason in chat.error_message


# -- the fallback -----------------------------------------------------------------------------


def test_without_a_fallback_message_nothing_is_sent(live_gateway, fake_engine, fake_twilio):
    """No fallbackMessage: after the last try the text is failed with the reason and Twilio hears nothing."""
    gw = live_gateway()
    configure(gw, fake_engine.url, fallback=None)
    fake_engine.script.next_faults.extend(fail(3, status=500))

    text(gw, "hello")
    gw.settled()

    assert len(fake_engine.calls) == 3
    inbound = only_inbound(gw)
    assert inbound.status == "failed"
    assert "HTTP 500" in inbound.error_message
    assert gw.messages("assistant") == []
    time.sleep(0.3)  # a send, had one been queued, would reach the fake Twilio by now
    assert fake_twilio.creates == []
    (chat,) = chats(gw)
    assert (chat.status, chat.output) == ("failed", [])


def test_the_fallback_message_fills_template_variables(live_gateway, fake_engine, fake_twilio):
    """{{customer.number}}, {{phoneNumber.number}} and the assistant's variableValues are filled into the fallback."""
    gw = live_gateway()
    configure(
        gw,
        fake_engine.url,
        fallback="Sorry {{customer.number}}, {{company}} ({{phoneNumber.number}}) will text you back.",
        variableValues={"company": "Harbor Dental"},
    )
    fake_engine.script.next_faults.append(EngineFault(status=401))

    text(gw, "hello")
    gw.settled()

    (created,) = fake_twilio.wait_for_creates(1)
    assert created.body == f"Sorry {CUSTOMER}, Harbor Dental ({BUSINESS}) will text you back."


# -- what the engine answers and what it is sent -------------------------------------------------


def answered_once(gw, fake_engine, body: str, answer: str):
    """``gw`` with the webhook engine, texted ``body``, which the fake engine answers with ``answer``; settled."""
    configure(gw, fake_engine.url)
    fake_engine.script.next_faults.append(EngineFault(status=200, body=answer))
    text(gw, body)
    gw.settled()
    return gw


def test_several_replies_go_out_as_separate_messages_in_order(live_gateway, fake_engine, fake_twilio):
    """{"replies": ["a", "b"]}: two outbound messages, "a" then "b", both from one chat."""
    gw = answered_once(live_gateway(), fake_engine, "news?", '{"replies": ["First, the good news.", "Then the rest."]}')

    creates = fake_twilio.wait_for_creates(2)
    assert [c.body for c in creates] == ["First, the good news.", "Then the rest."]
    assert [m.content for m in gw.messages("assistant")] == ["First, the good news.", "Then the rest."]
    (chat,) = chats(gw)
    assert [part["content"] for part in chat.output] == ["First, the good news.", "Then the rest."]
    assert only_inbound(gw).status == "processed"


def test_a_reply_the_database_cannot_hold_as_sent_is_stored_and_sent_cleaned(live_gateway, fake_engine, fake_twilio):
    """A NUL (PostgreSQL text has none) and half a surrogate pair (UTF-8 has none, so neither database) in
    the engine's answer: the NUL is dropped and the half pair becomes U+FFFD. Refused, the turn could never be
    stored: every sweep would ask the engine again, and the session's later texts wait behind it."""
    gw = answered_once(live_gateway(), fake_engine, "odd?", '{"replies": ["Null\\u0000 here.", "Half a pair \\ud83d here."]}')

    creates = fake_twilio.wait_for_creates(2)
    assert [c.body for c in creates] == ["Null here.", "Half a pair \ufffd here."]
    assert [m.content for m in gw.messages("assistant")] == ["Null here.", "Half a pair \ufffd here."]
    assert only_inbound(gw).status == "processed"
    assert len(fake_engine.calls) == 1


def test_the_engine_gets_history_session_media_and_a_valid_signature(live_gateway, fake_engine, fake_twilio):
    """The webhook payload: earlier messages without the new one, the session id, MMS media as sent, signed."""
    gw = live_gateway()
    assistant = configure(gw, fake_engine.url)
    fake_engine.secret = assistant.server_secret
    photo = ("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1", "image/jpeg")

    text(gw, "hello")
    gw.settled()
    text(gw, "is this tooth ok?", media=[photo])
    gw.settled()

    first, second = fake_engine.calls
    session_id = gw.messages("user")[0].session_id
    assert {first.session_id, second.session_id} == {session_id}
    assert first.history == []
    assert second.history == [
        {"role": "user", "content": "hello", "media": []},
        {"role": "assistant", "content": "re: hello", "media": []},
    ]
    # The webhook engine takes media itself, so the text carries no note about it.
    assert second.text == "is this tooth ok?"
    assert second.media == [{"url": photo[0], "contentType": photo[1]}]
    assert gw.messages("user")[1].media == [{"url": photo[0], "contentType": photo[1]}]
    assert [first.signature_ok, second.signature_ok] == [True, True]


def test_a_text_sent_while_the_engine_is_slow_is_answered_after_it(live_gateway, fake_engine, fake_twilio):
    """Two texts of one session never overlap at the engine; the second sees the first's reply in its history."""
    gw = live_gateway()
    configure(gw, fake_engine.url)

    text(gw, "[slow 0.5] first")
    fake_engine.wait_for_calls(1, started_only=True)
    text(gw, "second")
    gw.settled()

    slow, quick = fake_engine.wait_for_calls(2)
    assert (slow.text, quick.text) == ("[slow 0.5] first", "second")
    assert slow.answered <= quick.started
    assert [c.body for c in fake_twilio.wait_for_creates(2)] == ["re: [slow 0.5] first", "re: second"]
    assert [m.status for m in gw.messages("user")] == ["processed", "processed"]


def test_the_next_call_sees_the_reply_the_engine_gave_before_it(live_gateway, fake_engine, fake_twilio):
    """A text that waited for a slow turn: its engine call's history holds that turn's text and its reply."""
    gw = live_gateway()
    configure(gw, fake_engine.url)

    text(gw, "[slow 0.5] first")
    fake_engine.wait_for_calls(1, started_only=True)
    text(gw, "second")
    gw.settled()

    slow, quick = fake_engine.wait_for_calls(2)
    assert slow.answered <= quick.started  # the reply existed before the second call was made
    assert quick.history == [
        {"role": "user", "content": "[slow 0.5] first", "media": []},
        {"role": "assistant", "content": "re: [slow 0.5] first", "media": []},
    ]


# -- an engine that is down ----------------------------------------------------------------------


DOWN = ("engine stopped", "nothing listening on the port")


@pytest.mark.timing
@pytest.mark.parametrize("how", DOWN)
def test_an_unreachable_engine_is_a_transient_error(live_gateway, fake_engine, fake_twilio, how):
    """Connection refused is retried engine_tries times (read off the backoff it took), then the fallback goes out."""
    first = 0.3
    gw = live_gateway(engine_retry_delay=first, engine_retry_cap=10.0)
    if how == "engine stopped":
        url = fake_engine.url
        fake_engine.stop()
    else:
        url = f"http://127.0.0.1:{free_port()}/turn"
    configure(gw, url)

    text(gw, "hello")
    gw.settled()

    inbound = only_inbound(gw)
    assert inbound.status == "failed"
    assert "unreachable" in inbound.error_message
    assert [c.body for c in fake_twilio.wait_for_creates(1)] == [FALLBACK]
    # Three tries wait two delays, 0.15-0.3 s then 0.3-0.6 s; one or two tries
    # would wait at most 0.3 s, a fourth at least 1.05 s in all.
    (chat,) = chats(gw)
    assert 450 <= chat.engine_ms < 1050, chat.engine_ms


def test_an_engine_that_drops_the_connection_is_tried_engine_tries_times(live_gateway, raw_engines, fake_twilio):
    """A connection closed without an answer is transient: exactly engine_tries connections, then the fallback."""
    gw = live_gateway()
    dropping = raw_engines(hang_up)
    configure(gw, dropping.url)

    text(gw, "hello")
    gw.settled()

    assert len(dropping.accepted) == 3
    inbound = only_inbound(gw)
    assert inbound.status == "failed"
    assert "unreachable" in inbound.error_message
    assert [c.body for c in fake_twilio.wait_for_creates(1)] == [FALLBACK]


@pytest.mark.timing
def test_the_engine_timeout_bounds_the_whole_call(live_gateway, raw_engines, fake_twilio):
    """An engine trickling its answer over 2 s is cut off at engine_timeout (1 s), like one that stays silent."""
    gw = live_gateway()
    slow = raw_engines(trickle)
    configure(gw, slow.url)

    text(gw, "hello")
    gw.settled(timeout=20)

    inbound = only_inbound(gw)
    assert inbound.status == "failed"
    assert "timed out" in inbound.error_message
    (chat,) = chats(gw)
    # Three tries of at most 1 s plus two delays of at most 0.05 and 0.1 s.
    assert chat.engine_ms < 3 * 1000 + 150 + 3 * LATE * 1000, chat.engine_ms


# -- nothing is left behind ------------------------------------------------------------------------


def random_script(rng: random.Random, length: int) -> list[EngineFault]:
    """A mix of answers and faults, handed to whichever call comes next."""
    palette = [
        EngineFault(status=200, body='{"reply": "scripted answer"}'),
        EngineFault(status=200, body='{"replies": ["part one", "part two"]}'),
        EngineFault(status=500),
        EngineFault(status=503),
        EngineFault(status=429, retry_after=0.1),
        EngineFault(status=400),
        EngineFault(status=200, body="<html>oops</html>"),
        EngineFault(status=200, body='{"replies": [null]}'),
    ]
    weights = [4, 1, 3, 1, 1, 1, 1, 1]
    script = rng.choices(palette, weights, k=length)
    script[rng.randrange(length)] = EngineFault(hang=FAST["engine_timeout"] + 0.2)
    return script


@pytest.mark.parametrize("seed", [7, 2024])
def test_every_text_ends_processed_or_failed_under_random_faults(live_gateway, fake_engine, fake_twilio, seed):
    """Ten texts from three customers against random engine faults: none stays received; each gets its answer."""
    rng = random.Random(seed)
    gw = live_gateway()
    configure(gw, fake_engine.url)
    fake_engine.script.next_faults.extend(random_script(rng, 16))
    customers = (CUSTOMER, *OTHERS)
    plan = [(rng.choice(customers), f"text {index}") for index in range(10)]

    for customer, body in plan:
        text(gw, body, from_=customer)
        time.sleep(rng.uniform(0, 0.05))
    messages = gw.settled(timeout=40)
    timeout = FAST["engine_timeout"]

    inbound = [m for m in messages if m.role == "user"]
    assert sorted(m.content for m in inbound) == sorted(body for _, body in plan)
    assert {m.status for m in inbound} <= {"processed", "failed"}
    assert all(m.error_message for m in inbound if m.status == "failed")
    assert all(m.error_message is None for m in inbound if m.status == "processed")
    # Each text has its chat, whose messages are the engine's replies or else the fallback.
    chat_of = {chat.input: chat for chat in chats(gw)}
    assert set(chat_of) == {m.content for m in inbound}
    for message in inbound:
        chat = chat_of[message.content]
        answer = [m for m in messages if m.chat_id == chat.id]
        assert answer, f"{message.content!r} ({message.status}) got no answer"
        assert chat.status == ("completed" if message.status == "processed" else "failed")
        assert {m.kind for m in answer} == {"reply" if message.status == "processed" else "fallback"}
    for session_id in {m.session_id for m in inbound}:
        received = [m.content for m in inbound if m.session_id == session_id]  # in seq order
        (sender,) = {customer for customer, body in plan if body in received}
        assert received == [body for customer, body in plan if customer == sender]
        # The engine saw one call at a time (a call that timed out was over for the gateway
        # after engine_timeout, however long the fake kept it), texts in the order they were sent...
        # For a call that timed out, the fake's `started` (stamped when its thread got the request,
        # which a busy machine delays) lags the gateway's own clock for the timeout: up to SLACK of
        # lag is not an overlap. A call that ended in time must have ended before the next began.
        calls = fake_engine.calls_for(session_id)
        for call, later in zip(calls, calls[1:]):
            if call.ended is not None and call.ended < call.started + timeout:
                assert call.answered <= later.started, (call, later)
            else:
                assert call.started + timeout - SLACK <= later.started, (call, later)
        assert list(dict.fromkeys(c.text for c in calls)) == received
        # ...and the answers went out in that order too.
        answered = [m for m in messages if m.session_id == session_id and m.role == "assistant"]
        order = {chat_id: index for index, chat_id in enumerate(chat_of[body].id for body in received)}
        assert [order[m.chat_id] for m in answered] == sorted(order[m.chat_id] for m in answered)
    outbound = [m for m in messages if m.role == "assistant"]
    assert len(fake_twilio.wait_for_creates(len(outbound), timeout=15)) == len(outbound)
