"""Sending under fire (SPEC 6.7 to 6.10): Twilio errors, throttling, pacing, loop protection, callbacks.

Every test runs an embedded gateway on a real port that sends through the
real ``twilio`` client to the fake Twilio on 127.0.0.1, which answers with
scripted faults and posts signed status callbacks back. Retry delays are
shortened (conftest ``FAST``) so each test finishes in a second or two.
Timings are read from the fake's own clock (``attempts[].at``,
``creates[].at``): when a request reached "Twilio", not when the gateway
meant to send it. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from datetime import datetime, timezone
from email.utils import format_datetime

import httpx
import pytest
from sqlalchemy import func, select

from gateway.db.models import Chat, Message, OptOut
from gateway.domain.segments import describe
from gateway.schemas import AssistantCreate, PhoneNumberCreate
from gateway.services.assistants import create_assistant
from gateway.services.phone_numbers import create_phone_number
from tests.conftest import BUSINESS, CUSTOMER
from tests.support.fake_twilio import Create, Fault

OTHER_BUSINESS = "+15550100001"
SENT = {"sent", "delivered"}


@pytest.fixture
def database_url_or_default(database_url):
    return database_url


@pytest.fixture
def gateway(live_gateway):
    """Factory: a live gateway with one business number answered by ``engine`` (echo unless told)."""

    def start(engine: dict | None = None, mps: float = 100, **tunables):
        gw = live_gateway(**tunables)
        add_number(gw, BUSINESS, mps, engine)
        return gw

    return start


def add_number(gw, number: str, mps: float, engine: dict | None = None):
    assistant = create_assistant(gw.runtime, AssistantCreate(name="Echo", engine=engine or {"provider": "echo"}))
    return create_phone_number(
        gw.runtime, PhoneNumberCreate(number=number, assistantId=assistant.id, messagesPerSecond=mps)
    )


def text(gw, body: str, from_: str = CUSTOMER, to: str = BUSINESS, **kwargs) -> None:
    sent = gw.phone.text(to, from_, body, **kwargs)
    assert sent.http_status == 200, sent.body


def replies(gw) -> list[Message]:
    return gw.messages("assistant")


def only_reply(gw) -> Message:
    (reply,) = replies(gw)
    return reply


def posts_to(fake_twilio, number: str) -> list:
    return [a for a in fake_twilio.attempts if a.to == number]


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:])]


def wait_delivered(gw, count: int = 1, timeout: float = 10.0) -> list[Message]:
    """All ``count`` replies, once every one is delivered."""

    def delivered():
        found = replies(gw)
        return found if len(found) == count and all(m.status == "delivered" for m in found) else None

    return gw.wait_for(delivered, timeout, f"{count} replies delivered")


def wait_status(gw, status: str, timeout: float = 10.0) -> Message:
    """The one reply, once it has ``status``."""

    def reached():
        found = replies(gw)
        return found[0] if len(found) == 1 and found[0].status == status else None

    return gw.wait_for(reached, timeout, f"the reply to be {status}")


def settled(gw, timeout: float = 10.0) -> Message:
    """The one reply, once it is no longer queued."""

    def done():
        found = replies(gw)
        return found[0] if len(found) == 1 and found[0].status != "queued" else None

    return gw.wait_for(done, timeout, "the reply to be settled")


def customer(index: int) -> str:
    return f"+1415555{index:04d}"


# -- transient errors: retried with backoff -------------------------------------------------------


def test_transient_500s_are_retried_and_the_reply_is_sent_once(gateway, fake_twilio):
    """Two 500s then success: one create, the reply ends delivered, and ``attempts`` counts all three tries."""
    gw = gateway(send_tries=3)
    fake_twilio.script.next_faults.extend([Fault(500, 20500), Fault(500, 20500)])
    fake_twilio.script.callback_delay = 0.1  # the usual order: the create's answer, then the callbacks

    text(gw, "hello")
    (reply,) = wait_delivered(gw)

    assert [a.status for a in fake_twilio.attempts] == [500, 500, 201]
    (create,) = fake_twilio.creates
    assert (create.to, create.body) == (CUSTOMER, "hello")
    assert reply.twilio_sid == create.sid
    assert reply.attempts == 3
    assert reply.throttled == 0
    assert (reply.error_code, reply.error_message) == (None, None)


@pytest.mark.timing
def test_a_retried_reply_whose_callbacks_arrive_first_keeps_no_stale_error(gateway, fake_twilio):
    """500, then a create whose callbacks beat its answer: the delivered reply does not keep the 500's error."""
    gw = gateway()
    fake_twilio.script.next_faults.append(Fault(500, 20500))
    fake_twilio.script.latency = 0.5
    fake_twilio.script.callbacks = ()  # posted by hand below, before the create answers

    text(gw, "hello")
    (create,) = fake_twilio.wait_for_creates(1)
    assert fake_twilio.post_callback(create, "sent") == 200
    assert fake_twilio.post_callback(create, "delivered") == 200
    early = only_reply(gw)
    assert time.monotonic() - create.at < fake_twilio.script.latency, "the callbacks came too late to prove anything"
    # Before the create has even answered, the delivered reply shows no error of the earlier try.
    assert (early.status, early.error_code, early.error_message) == ("delivered", None, None)
    time.sleep(fake_twilio.script.latency)
    gw.settled()

    reply = only_reply(gw)
    assert (reply.status, reply.twilio_sid, reply.attempts) == ("delivered", create.sid, 2)
    assert (reply.error_code, reply.error_message) == (None, None)


GIVE_UP_CASES = {
    # label: (HTTP status, Twilio code in the body, code the message records)
    "500 with code 20500": (500, 20500, 20500),
    "503 with code 20503": (503, 20503, 20503),
    "502 without a code": (502, None, None),
}


@pytest.mark.parametrize("status, code, recorded", GIVE_UP_CASES.values(), ids=GIVE_UP_CASES.keys())
def test_a_send_that_keeps_failing_gives_up_after_send_tries(gateway, fake_twilio, status, code, recorded):
    """5xx on every try: exactly ``send_tries`` POSTs, then ``failed``, saying it gave up, with Twilio's code if any."""
    gw = gateway(send_tries=3)
    fake_twilio.script.faults_by_to[CUSTOMER] = Fault(status, code)

    text(gw, "hello")
    wait_status(gw, "failed")
    time.sleep(0.5)  # longer than any backoff: a fourth try would show up now

    assert [a.status for a in fake_twilio.attempts] == [status] * 3
    assert fake_twilio.creates == []
    reply = only_reply(gw)
    assert reply.status == "failed"
    assert reply.error_code == recorded
    assert "gave up after 3 tries" in reply.error_message
    assert reply.twilio_sid is None


def test_throttling_does_not_use_up_the_retry_budget(gateway, fake_twilio):
    """Four 429s and one 500 with send_tries=2: the 429s are given back, so the third real try is not needed."""
    gw = gateway(send_tries=2)
    fake_twilio.script.next_faults.extend([Fault(429, 20429)] * 4 + [Fault(500, 20500)])

    text(gw, "hello")
    (reply,) = wait_delivered(gw)

    assert [a.status for a in fake_twilio.attempts] == [429, 429, 429, 429, 500, 201]
    assert len(fake_twilio.creates) == 1
    assert reply.twilio_sid == fake_twilio.creates[0].sid
    assert (reply.attempts, reply.throttled) == (2, 4)


RETRY_AFTER_CASES = {
    # label: the refusal that carries Retry-After (0.5 s, above send_retry_cap of 0.4 s)
    "429 throttled": Fault(429, 20429, retry_after=0.5),
    "503 unavailable": Fault(503, 20503, retry_after=0.5),
}


@pytest.mark.parametrize("fault", RETRY_AFTER_CASES.values(), ids=RETRY_AFTER_CASES.keys())
def test_retry_after_is_honoured(gateway, fake_twilio, fault):
    """The next POST for the message waits at least Retry-After, even when that is longer than the backoff cap."""
    gw = gateway()
    fake_twilio.script.next_faults.append(fault)

    text(gw, "hello")
    wait_delivered(gw)

    refused, accepted = fake_twilio.attempts
    assert (refused.status, accepted.status) == (fault.status, 201)
    assert accepted.at - refused.at >= fault.retry_after


def test_retry_after_as_an_http_date_is_honoured(gateway, fake_twilio):
    """RFC 9110 allows Retry-After as a date: the next POST waits until then, not only the backoff (0.4 s cap)."""
    gw = gateway()
    # A whole second (the format's resolution) 1 to 2 s from now.
    until = datetime.fromtimestamp(math.floor(time.time()) + 2, tz=timezone.utc)
    fake_twilio.script.next_faults.append(Fault(429, 20429, retry_after=format_datetime(until, usegmt=True)))

    text(gw, "hello")
    wait_delivered(gw)

    refused, accepted = fake_twilio.attempts
    assert (refused.status, accepted.status) == (429, 201)
    assert accepted.at - refused.at >= 0.9


@pytest.mark.parametrize("value", ["inf", "nan", "soon", "-5"])
def test_an_unreadable_retry_after_leaves_the_backoff_to_decide(gateway, fake_twilio, value):
    """A Retry-After that is no wait ("inf" and "nan" parse as floats) is ignored, not a crashed send job:
    the message goes out after the backoff."""
    gw = gateway()
    fake_twilio.script.next_faults.append(Fault(503, 20503, retry_after=value))

    text(gw, "hello")
    (reply,) = wait_delivered(gw)

    assert [a.status for a in fake_twilio.attempts] == [503, 201]
    assert reply.twilio_sid == fake_twilio.creates[0].sid


@pytest.mark.timing
def test_backoff_grows_but_never_beyond_send_retry_cap(gateway, fake_twilio):
    """500 on every try: the gaps between tries back off but stay under send_retry_cap (plus overhead)."""
    cap = 0.25
    gw = gateway(send_tries=5, send_retry_delay=0.2, send_retry_cap=cap)
    fake_twilio.script.faults_by_to[CUSTOMER] = Fault(500, 20500)

    text(gw, "hello")
    wait_status(gw, "failed")

    times = [a.at for a in posts_to(fake_twilio, CUSTOMER)]
    assert len(times) == 5
    # Uncapped, the 4th gap would be at least 0.8 s (0.2 * 2**3, halved by jitter); 0.5 s is room for
    # a commit that stalls on a busy machine (0.28 s was seen in CI).
    assert all(0.1 <= gap < cap + 0.5 for gap in gaps(times)), gaps(times)


# -- permanent errors --------------------------------------------------------------------------------

PERMANENT_CASES = {
    # label: (customer number that Twilio's magic list refuses, the error code)
    "21211 invalid To": ("+15005550001", 21211),
    "21612 unroutable": ("+15005550002", 21612),
    "21408 region not enabled": ("+15005550003", 21408),
    "21614 not a mobile": ("+15005550009", 21614),
}


@pytest.mark.parametrize("number, code", PERMANENT_CASES.values(), ids=PERMANENT_CASES.keys())
def test_permanent_errors_fail_at_once_with_the_code(gateway, fake_twilio, number, code):
    """A permanent Twilio error is not retried: one POST, the reply ``failed`` with Twilio's code."""
    gw = gateway(send_tries=5)

    text(gw, "hello", from_=number)
    wait_status(gw, "failed")
    time.sleep(0.3)  # longer than the first backoff: a retry would show up now

    assert [a.status for a in posts_to(fake_twilio, number)] == [400]
    reply = only_reply(gw)
    assert reply.error_code == code
    assert reply.error_message
    assert reply.attempts == 1
    with gw.runtime.db.begin() as tx:
        assert tx.scalar(select(func.count()).select_from(OptOut)) == 0


# -- 21610: Twilio says the customer unsubscribed ---------------------------------------------------

UNSUBSCRIBED = "+15005550004"


def test_21610_opts_the_customer_out_and_later_texts_are_not_forwarded(gateway, fake_twilio):
    """21610 fails the reply and records an opt-out; the customer's next text is processed, not answered."""
    gw = gateway()

    text(gw, "first", from_=UNSUBSCRIBED)
    wait_status(gw, "failed")
    text(gw, "second", from_=UNSUBSCRIBED)
    messages = gw.settled()
    time.sleep(0.3)  # a reply to "second" would be sent by now

    assert [(m.role, m.content, m.status) for m in messages] == [
        ("user", "first", "processed"),
        ("assistant", "first", "failed"),
        ("user", "second", "processed"),
    ]
    assert messages[1].error_code == 21610
    assert len(posts_to(fake_twilio, UNSUBSCRIBED)) == 1
    with gw.runtime.db.begin() as tx:
        assert list(tx.scalars(select(OptOut.source))) == ["twilio_21610"]
        assert tx.scalar(select(func.count()).select_from(Chat)) == 1  # "second" never reached the engine


def test_a_reply_queued_before_21610_is_blocked_and_never_sent(gateway, fake_twilio):
    """Two texts in a burst; the first reply gets 21610 (slowly): the second, already queued, is ``blocked``."""
    # A Twilio timeout well above the slow refusal: on a busy machine the 2 s of the fast settings ran out
    # once, and a send interrupted with no record at Twilio is rightly sent again (tests/e2e/test_guarantees.py),
    # which is not what this test is about.
    gw = gateway(twilio_timeout=8.0, lease_seconds=10.0)
    customer_number = customer(7001)
    # The refusal takes 0.8 s, so the second reply is queued while the first send is in flight.
    fake_twilio.script.faults_by_to[customer_number] = Fault(400, 21610, "Attempt to send to unsubscribed recipient",
                                                             hang=0.8)

    text(gw, "one", from_=customer_number)
    text(gw, "two", from_=customer_number)
    gw.wait_for(lambda: [m.status for m in replies(gw)] == ["failed", "blocked"], 10, "one failed, one blocked")
    time.sleep(0.3)

    first, second = replies(gw)
    assert (first.content, first.error_code) == ("one", 21610)
    assert (second.content, second.twilio_sid, second.attempts) == ("two", None, 0)
    assert len(posts_to(fake_twilio, customer_number)) == 1
    with gw.runtime.db.begin() as tx:
        assert list(tx.scalars(select(OptOut.source))) == ["twilio_21610"]


# -- long replies --------------------------------------------------------------------------------------


def test_a_long_reply_is_split_at_sentence_ends_into_separately_tracked_parts(gateway, fake_twilio):
    """~4000 characters: three creates in order, none over 1600, each its own sid, segments and encoding."""
    sentences = [f"Sentence number {i} tells you a little more about our bikes and our shop." for i in range(55)]
    answer = " ".join(sentences) + " Coffee is on the house \u2615."  # the last part alone is UCS-2
    assert 3800 <= len(answer) <= 4200
    gw = gateway(engine={"provider": "faq", "entries": [{"question": "tell me everything", "answer": answer}]})

    text(gw, "tell me everything")
    parts = wait_delivered(gw, count=3)

    creates = sorted(fake_twilio.creates, key=lambda c: c.at)
    assert [c.body for c in creates] == [p.content for p in parts]
    assert [p.twilio_sid for p in parts] == [c.sid for c in creates]
    assert all(len(c.body) <= 1600 for c in creates)
    assert " ".join(c.body for c in creates) == answer
    assert all(c.body.endswith(".") for c in creates)
    assert all(c.body[0].isupper() for c in creates)
    assert [(p.segments, p.encoding) for p in parts] == [
        (describe(p.content).segments, describe(p.content).encoding) for p in parts
    ]
    assert [p.encoding for p in parts] == ["GSM-7", "GSM-7", "UCS-2"]


UNBREAKABLE = {
    # label: one character as the reader sees it, made of two code points or more
    "emoji with a skin tone": "\U0001F44D\U0001F3FD",
    "flag": "\U0001F1FA\U0001F1F8",
    "letter with a combining accent": "e\u0301",
}


@pytest.mark.parametrize("cluster", UNBREAKABLE.values(), ids=UNBREAKABLE.keys())
def test_a_long_reply_without_spaces_is_never_cut_inside_a_character(gateway, fake_twilio, cluster):
    """A reply over 1600 characters with no space to break at is hard-cut, but never between the code points
    of one visible character: the first part would end in a bare thumbs-up (or half a flag, or an
    unaccented e) and the second start with a lone skin tone swatch (or the other half, or a bare accent)."""
    answer = "x" + cluster * 900  # unaligned: the 1600th code point falls inside a cluster
    gw = gateway(engine={"provider": "faq", "entries": [{"question": "tell me everything", "answer": answer}]})

    text(gw, "tell me everything")
    parts = wait_delivered(gw, count=2)

    bodies = [c.body for c in sorted(fake_twilio.creates, key=lambda c: c.at)]
    assert bodies == [p.content for p in parts]
    assert "".join(bodies) == answer
    assert all(len(body) <= 1600 for body in bodies)
    assert bodies[0] == answer[:1 + 1599 // len(cluster) * len(cluster)]  # whole clusters only


# -- pacing ---------------------------------------------------------------------------------------------


@pytest.mark.timing
def test_each_number_is_paced_to_its_messages_per_second(gateway, fake_twilio):
    """8 customers text a 4/s number at once: 8 creates, at least ~0.25 s apart, none dropped."""
    gw = gateway(mps=4)
    customers = [customer(100 + i) for i in range(8)]

    for number in customers:
        text(gw, "hi", from_=number)
    fake_twilio.wait_for_creates(8, timeout=15)
    sent = wait_delivered(gw, count=8)

    creates = sorted(fake_twilio.creates, key=lambda c: c.at)
    assert {c.from_ for c in creates} == {BUSINESS}
    assert sorted(c.to for c in creates) == customers
    # Paced by reserved slots 0.25 s apart, and a send is handed over (send_started_at) never before its
    # slot; the first reply's slot is the moment it is reserved, in the same transaction as its
    # hand-over. So the k-th hand-over comes at least k slots after the first, exactly, however busy
    # the machine. Later sends may leave late, and then together once their slots have passed (a
    # stall of 2.3 s was seen in CI): that is allowed, the average pace holds and Twilio queues per
    # sender. Unpaced, the 8 would be handed over within a few ms.
    started = sorted(m.send_started_at for m in sent)
    for k, moment in enumerate(started):
        assert (moment - started[0]).total_seconds() >= k * 0.25 - 0.001, (k, gaps([t.timestamp() for t in started]))
    # As Twilio saw them: the same pace, less the time between a hand-over and its arrival, which a
    # busy machine stretches (0.21 s for the first reply once in CI). With 0.5 s of slack for it,
    # unpaced sends would still fail from the fourth on, and sends paced at twice the rate by the
    # eighth (0.875 s after the first instead of at least 1.25 s).
    times = [c.at for c in creates]
    for k, later in enumerate(times):
        assert later - times[0] >= k * 0.25 - 0.5, (k, gaps(times))


@pytest.mark.timing
def test_a_busy_number_does_not_slow_another_number(live_gateway, fake_twilio):
    """While a 4/s number works through a burst of 8, a second 4/s number answers its 2 texts at its own pace."""
    gw = live_gateway()
    add_number(gw, BUSINESS, 4)
    add_number(gw, OTHER_BUSINESS, 4)

    for i in range(8):
        text(gw, "hi", from_=customer(100 + i))
    asked = time.monotonic()
    for i in range(2):
        text(gw, "hi", from_=customer(200 + i), to=OTHER_BUSINESS)
    fake_twilio.wait_for_creates(10, timeout=15)

    quiet = sorted(c.at - asked for c in fake_twilio.creates if c.from_ == OTHER_BUSINESS)
    busy = [c.at for c in fake_twilio.creates if c.from_ == BUSINESS]
    assert len(quiet) == 2 and len(busy) == 8
    # Its own pace allows the first at once and the second 0.25 s later, while the busy number is still
    # working through its burst (its eighth slot comes 1.75 s after its first): both leave before the busy
    # number's last. Queued behind the busy number, they would leave after it.
    assert asked + quiet[1] < max(busy), (quiet, max(busy) - asked)
    # 1 s is slack for the turn and HTTP (0.4 s flaked once on a loaded machine).
    assert quiet[0] < 1.0 and quiet[1] < 0.25 + 1.0, quiet


# -- loop protection --------------------------------------------------------------------------------


@pytest.mark.timing
def test_loop_protection_holds_the_next_reply_and_drops_none(gateway, fake_twilio):
    """After loop_replies quick replies to one customer, the next waits loop_window; all eight go out in order."""
    gw = gateway(loop_replies=5, loop_window=1.0)
    bodies = [f"text {i}" for i in range(1, 9)]

    for body in bodies:
        text(gw, body)
    fake_twilio.wait_for_creates(8, timeout=15)
    delivered = wait_delivered(gw, count=8)

    creates = sorted(fake_twilio.creates, key=lambda c: c.at)
    assert [c.body for c in creates] == bodies == [m.content for m in delivered]
    times = [c.at for c in creates]
    assert times[4] - times[0] < 1.0, "the first five replies go out without waiting"
    assert times[5] - times[4] >= 0.95


@pytest.mark.timing
def test_loop_protection_of_one_customer_does_not_hold_up_the_others(gateway, fake_twilio):
    """A reply held back by loop protection for customer A does not delay the number's reply to customer B."""
    gw = gateway(loop_replies=3, loop_window=2.0)
    chatty, other = customer(301), customer(302)

    for i in range(4):
        text(gw, f"text {i}", from_=chatty)
    fake_twilio.wait_for_creates(3)
    time.sleep(0.2)  # the fourth reply to the chatty customer is now waiting out the window
    asked = time.monotonic()
    text(gw, "hello", from_=other)
    fake_twilio.wait_for_creates(5, timeout=10)

    (to_other,) = [c for c in fake_twilio.creates if c.to == other]
    assert to_other.at - asked < 0.8


def test_a_reply_refused_with_14107_waits_out_the_block_and_is_sent(gateway, fake_twilio):
    """Twilio blocks the pair for loop_window after 14107: the reply is retried after the block, not dropped."""
    window = 1.0
    gw = gateway(loop_window=window, send_tries=5)
    fake_twilio.script.faults_by_to[CUSTOMER] = Fault(400, 14107, "Message loop detected")

    def lift_block():
        deadline = time.monotonic() + 5
        while not fake_twilio.attempts and time.monotonic() < deadline:
            time.sleep(0.01)
        if fake_twilio.attempts:
            time.sleep(max(0.0, fake_twilio.attempts[0].at + window - time.monotonic()))
        fake_twilio.script.faults_by_to.pop(CUSTOMER, None)

    lifter = threading.Thread(target=lift_block, daemon=True)
    lifter.start()
    text(gw, "hello")
    lifter.join(6)
    settled(gw)

    reply = gw.wait_for(lambda: only_reply(gw) if only_reply(gw).status in SENT else None, what="the reply sent")
    assert reply.error_code is None
    assert len(fake_twilio.creates) == 1


# -- status callbacks -------------------------------------------------------------------------------

CALLBACK_ORDERS = {
    # label: (duplicate every callback, reverse their order)
    "duplicated": (True, False),
    "reversed": (False, True),
    "duplicated and reversed": (True, True),
}


@pytest.mark.parametrize("duplicate, reverse", CALLBACK_ORDERS.values(), ids=CALLBACK_ORDERS.keys())
def test_repeated_or_late_callbacks_leave_the_message_delivered(gateway, fake_twilio, duplicate, reverse):
    """Callbacks move status forward only: a repeated or late ``sent`` never undoes ``delivered``."""
    gw = gateway()
    fake_twilio.script.duplicate_callbacks = duplicate
    fake_twilio.script.reverse_callbacks = reverse
    expected = 4 if duplicate else 2

    text(gw, "hello")
    gw.wait_for(lambda: len(fake_twilio.callbacks_sent) == expected, 10, "all callbacks posted")

    assert {code for _, _, code in fake_twilio.callbacks_sent} == {200}
    reply = only_reply(gw)
    assert (reply.status, reply.twilio_sid) == ("delivered", fake_twilio.creates[0].sid)


def test_undelivered_callback_records_the_error_code(gateway, fake_twilio):
    """``undelivered`` with ErrorCode 30003 after ``sent`` is recorded; a late ``sent`` does not move it back."""
    gw = gateway()
    fake_twilio.script.callbacks = ("sent",)

    text(gw, "hello")
    wait_status(gw, "sent")
    gw.wait_for(lambda: fake_twilio.callbacks_sent, 5, "the sent callback")
    (create,) = fake_twilio.creates
    assert fake_twilio.post_callback(create, "undelivered", 30003) == 200
    assert fake_twilio.post_callback(create, "sent") == 200

    reply = only_reply(gw)
    assert (reply.status, reply.error_code) == ("undelivered", 30003)


def snapshot(gw) -> list[tuple]:
    return [(m.id, m.status, m.twilio_sid, m.error_code) for m in gw.messages()]


def test_callback_for_an_unknown_sid_is_acknowledged_and_changes_nothing(gateway, fake_twilio):
    """A signed callback for a MessageSid the gateway never sent gets 200 and touches no message."""
    gw = gateway()
    fake_twilio.script.callbacks = ("sent",)
    text(gw, "hello")
    wait_status(gw, "sent")
    gw.wait_for(lambda: fake_twilio.callbacks_sent, 5, "the sent callback")
    before = snapshot(gw)

    stranger = Create(
        sid="SM" + uuid.uuid4().hex, to=CUSTOMER, from_=BUSINESS, messaging_service_sid=None, body="?",
        media_urls=[], status_callback=gw.url + "/twilio/status", at=time.monotonic(), params={},
    )
    assert fake_twilio.post_callback(stranger, "undelivered", 30003) == 200

    assert snapshot(gw) == before


def test_callback_with_a_bad_signature_is_refused_and_changes_nothing(gateway, fake_twilio):
    """A status callback that is not signed with the account's token gets 403 and changes nothing."""
    gw = gateway()
    fake_twilio.script.callbacks = ("sent",)
    text(gw, "hello")
    reply = wait_status(gw, "sent")
    gw.wait_for(lambda: fake_twilio.callbacks_sent, 5, "the sent callback")
    (create,) = fake_twilio.creates
    before = snapshot(gw)

    params = {"MessageSid": create.sid, "MessageStatus": "failed", "ErrorCode": "30007",
              "AccountSid": fake_twilio.account_sid, "To": CUSTOMER, "From": BUSINESS}
    for signature in ("", "bm90IGEgc2lnbmF0dXJl"):
        response = httpx.post(
            f"{gw.url}/twilio/status?messageId={reply.id}", data=params, headers={"X-Twilio-Signature": signature}
        )
        assert response.status_code == 403

    assert snapshot(gw) == before


@pytest.mark.timing
def test_a_callback_that_beats_the_create_response_finds_its_message(gateway, fake_twilio):
    """Callbacks arriving while the create call is still waiting for its answer settle the message by its id."""
    gw = gateway()
    fake_twilio.script.latency = 0.5
    fake_twilio.script.callbacks = ()  # posted by hand below, before the create answers

    text(gw, "hello")
    (create,) = fake_twilio.wait_for_creates(1)
    assert fake_twilio.post_callback(create, "sent") == 200
    assert fake_twilio.post_callback(create, "delivered") == 200
    early = only_reply(gw)
    assert time.monotonic() - create.at < fake_twilio.script.latency, "the callbacks came too late to prove anything"
    assert (early.status, early.twilio_sid) == ("delivered", create.sid)

    time.sleep(fake_twilio.script.latency)
    gw.settled()
    reply = only_reply(gw)
    assert (reply.status, reply.twilio_sid) == ("delivered", create.sid)
    assert reply.attempts == 1
    assert len(fake_twilio.attempts) == 1


# -- an answer that never comes -------------------------------------------------------------------


def test_a_timed_out_create_that_twilio_accepted_is_not_sent_twice(gateway, fake_twilio):
    """Twilio accepts the create but answers after the client timed out: the gateway asks, it does not resend."""
    gw = gateway(twilio_timeout=0.3, send_tries=3)
    fake_twilio.script.latency = 0.8
    fake_twilio.script.callbacks = ()

    text(gw, "hello")
    settled(gw)
    time.sleep(0.5)  # any blind resend would have reached Twilio by now

    (create,) = fake_twilio.creates
    reply = only_reply(gw)
    assert reply.status in SENT
    assert reply.twilio_sid == create.sid


SETTLED_FIRST = {
    # label: (the callbacks Twilio posts before the create's answer is lost, the code the last one carries)
    "undelivered with 30003": (("sent", "undelivered"), 30003),
    "delivered": (("sent", "delivered"), None),
}


@pytest.mark.timing
@pytest.mark.parametrize("statuses, code", SETTLED_FIRST.values(), ids=SETTLED_FIRST.keys())
def test_a_timed_out_create_whose_callbacks_came_first_keeps_their_outcome(gateway, fake_twilio, statuses, code):
    """Twilio takes the create and its callbacks settle the reply, then the client times out waiting for the
    answer: the timeout must not overwrite the callbacks' outcome, neither the delivery's error code (an
    undelivered reply recorded with the timeout instead of 30003) nor a clean delivered one (SPEC 6.8)."""
    gw = gateway(twilio_timeout=0.6, send_tries=3)
    fake_twilio.script.latency = 1.2
    fake_twilio.script.callbacks = ()  # posted by hand below, before the client gives up

    text(gw, "hello")
    (create,) = fake_twilio.wait_for_creates(1)
    for status in statuses:
        assert fake_twilio.post_callback(create, status, code if status == statuses[-1] else None) == 200
    assert time.monotonic() - create.at < 0.6, "the callbacks came too late to prove anything"
    time.sleep(1.0)  # the client's timeout has come and been handled by now
    gw.settled()

    reply = only_reply(gw)
    assert (reply.status, reply.twilio_sid) == (statuses[-1], create.sid)
    assert (reply.error_code, reply.error_message) == (code, None)
    assert len(fake_twilio.attempts) == 1


@pytest.mark.parametrize("earlier", ["from another number", "in an earlier session"])
def test_a_send_that_got_a_500_is_not_taken_for_the_same_words_sent_before(gateway, fake_twilio, earlier):
    """After a 5xx the gateway asks Twilio whether it has the message before sending it again. The customer
    got the very same words a moment before, from another number or in an earlier session of this one: that
    message is not this one. Taken for it, this reply would carry another message's sid (refused by the
    unique constraint on every try, so stuck for ever) or be marked sent without being sent."""
    from gateway.services.sessions import end_session

    gw = gateway(send_tries=3)
    first_to = OTHER_BUSINESS if earlier == "from another number" else BUSINESS
    if first_to == OTHER_BUSINESS:
        add_number(gw, OTHER_BUSINESS, 100)
    text(gw, "hello", to=first_to)
    (before,) = wait_delivered(gw)
    if earlier == "in an earlier session":
        end_session(gw.runtime, before.session_id)
    fake_twilio.script.next_faults.append(Fault(500, 20500))  # not created: Twilio has no such message

    text(gw, "hello")
    replies_now = wait_delivered(gw, 2)

    assert [c.body for c in fake_twilio.creates] == ["hello", "hello"]
    assert [c.from_ for c in fake_twilio.creates] == [first_to, BUSINESS]
    assert sorted(m.twilio_sid for m in replies_now) == sorted(c.sid for c in fake_twilio.creates)


# -- media ------------------------------------------------------------------------------------------


def test_outbound_media_is_empty_and_the_engine_note_is_in_the_reply(gateway, fake_twilio):
    """An MMS to the echo engine: the reply carries the attachment note as text and sends no media."""
    gw = gateway()

    text(gw, "see this", media=[("https://media.example/a.jpg", "image/jpeg")])
    inbound, reply = gw.settled()

    assert inbound.media == [{"url": "https://media.example/a.jpg", "contentType": "image/jpeg"}]
    assert reply.content == "see this\n[1 attachment: image/jpeg]"
    assert reply.media == []
    (create,) = fake_twilio.wait_for_creates(1)
    assert create.body == "see this\n[1 attachment: image/jpeg]"
    assert create.media_urls == []
    assert "MediaUrl" not in create.params


def test_callbacks_that_settle_a_maybe_sent_reply_while_twilio_is_asked_are_not_overwritten(gateway, fake_twilio):
    """Twilio took the create and answered 500. When the gateway asks whether Twilio has the message, the list
    does not show it yet (it lags the writes), but the message's callbacks land meanwhile, carrying its sid.
    With its tries used up, the gateway would give it up: it must go by the callbacks instead, and not turn a
    delivered reply into a failed one (SPEC 6.8: a status never moves back)."""
    gw = gateway(send_tries=1)
    fake_twilio.script.callbacks = ()  # posted by hand, while the gateway asks
    fake_twilio.script.list_lag = 60.0
    fake_twilio.script.next_faults.append(Fault(500, 20500, created=True))
    landed = threading.Event()

    def callbacks_land():
        if not landed.is_set():
            (create,) = fake_twilio.creates
            assert [fake_twilio.post_callback(create, status) for status in ("sent", "delivered")] == [200, 200]
            landed.set()

    fake_twilio.script.before_list = callbacks_land
    text(gw, "hello")
    assert landed.wait(10), "the gateway never asked Twilio about the reply"
    time.sleep(1.0)  # the worker's answer to its lookup comes within milliseconds
    gw.settled()

    reply = only_reply(gw)
    assert (reply.status, reply.twilio_sid) == ("delivered", fake_twilio.creates[0].sid)
    assert (reply.error_code, reply.error_message) == (None, None)
    assert len(fake_twilio.attempts) == 1
