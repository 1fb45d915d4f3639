"""SPEC section 6 under real processes and real faults.

Each test starts a production-shaped gateway (tests/support/cluster.py): two
gunicorn web processes, several `gateway worker` processes and the
scheduler, on our own redis-server and PostgreSQL or a shared SQLite file;
the real twilio client talks to the fake Twilio, the webhook engine to the
fake engine. Workers are killed with SIGKILL and Redis is stopped for real.
Leases are 4 s and the sweep runs every second, so recovery takes seconds.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.schemas import AssistantCreate, PhoneNumberCreate
from gateway.services.assistants import create_assistant
from gateway.services.phone_numbers import create_phone_number
from tests.conftest import BUSINESS, CUSTOMER
from tests.support.cluster import Cluster
from tests.support.fake_twilio import Fault

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def make_cluster(request, redis_url, redis_server, fake_twilio, instance_path):
    database_url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    clusters = []

    def make(**options) -> Cluster:
        cluster = Cluster(database_url=database_url, instance_path=instance_path, redis=redis_server,
                          fake_twilio=fake_twilio, **options).start()
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop()


def configure(cluster: Cluster, fake_engine, **number_settings):
    assistant = create_assistant(
        cluster.runtime,
        AssistantCreate(name="Engine", engine={"provider": "webhook", "url": fake_engine.url},
                        fallbackMessage="Sorry, try again."),
    )
    fake_engine.secret = assistant.server_secret
    settings = {"messagesPerSecond": 100, **number_settings}
    return create_phone_number(cluster.runtime, PhoneNumberCreate(number=BUSINESS, assistantId=assistant.id, **settings))


def creates_to(fake_twilio, customer: str) -> list:
    return [c for c in fake_twilio.creates if c.to == customer]


def test_fifty_simultaneous_first_texts_over_two_web_processes_create_one_session(make_cluster, fake_engine, fake_twilio):
    """50 first texts from one new customer, released at once over 2 web processes: exactly one session."""
    cluster = make_cluster(workers=2)
    configure(cluster, fake_engine)
    start = threading.Barrier(50)

    def send(index: int):
        phone = cluster.phones[index % 2]
        params = phone.params(BUSINESS, CUSTOMER, f"text {index}")
        start.wait()
        return phone.post(params).http_status

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(send, range(50)))
    assert statuses == [200] * 50

    messages = cluster.settled(50)
    sessions = cluster.sessions()
    print(f"\n50-text race: {len(sessions)} session(s) created")
    assert len(sessions) == 1, f"{len(sessions)} sessions created"
    inbound = [m for m in messages if m.role == "user"]
    assert len(inbound) == 50 and {m.session_id for m in inbound} == {sessions[0].id}
    assert {m.status for m in inbound} == {"processed"}
    # All 50 in one session: the engine saw them one at a time.
    calls = sorted(fake_engine.calls_for(sessions[0].id), key=lambda c: c.started)
    assert len(calls) == 50
    assert all(earlier.answered <= later.started for earlier, later in zip(calls, calls[1:]))


def test_one_session_reaches_the_engine_one_at_a_time_in_order_over_three_workers(make_cluster, fake_engine, fake_twilio):
    """With 3 worker processes, a session's texts reach the engine one at a time in order; replies leave in order."""
    cluster = make_cluster(workers=3)
    configure(cluster, fake_engine)
    texts = [f"message {index} [slow 0.15]" for index in range(8)]
    for index, text in enumerate(texts):
        assert cluster.phones[index % 2].text(BUSINESS, CUSTOMER, text).http_status == 200

    cluster.settled(len(texts))
    (session,) = cluster.sessions()
    calls = fake_engine.calls_for(session.id)
    assert [c.text for c in calls] == texts
    assert all(earlier.answered <= later.started for earlier, later in zip(calls, calls[1:])), "engine calls overlapped"
    assert [c.body for c in creates_to(fake_twilio, CUSTOMER)] == [f"re: {text}" for text in texts]


@pytest.mark.timing
def test_a_slow_engine_call_in_one_session_does_not_hold_up_another(make_cluster, fake_engine, fake_twilio):
    """Sessions proceed in parallel: B is answered while A's engine call is still running."""
    cluster = make_cluster(workers=3)
    configure(cluster, fake_engine)
    slow_customer, quick_customer = "+14155550001", "+14155550002"
    cluster.phones[0].text(BUSINESS, slow_customer, "[slow 2.5] please think hard")
    fake_engine.wait_for_calls(1, started_only=True)
    cluster.phones[1].text(BUSINESS, quick_customer, "quick one")

    cluster.wait_for(lambda: creates_to(fake_twilio, quick_customer), timeout=10, what="the quick reply")
    slow_call = next(c for c in fake_engine.calls if c.text.startswith("[slow 2.5]"))
    assert slow_call.ended is None or creates_to(fake_twilio, quick_customer)[0].at < slow_call.ended
    cluster.settled(2)


def test_same_message_sid_at_the_same_instant_to_two_web_processes_is_stored_and_answered_once(
    make_cluster, fake_engine, fake_twilio
):
    """Twilio's duplicate delivery, racing into two web processes: one stored text, one engine call, one reply."""
    cluster = make_cluster(workers=2)
    configure(cluster, fake_engine)
    rounds = 10
    for index in range(rounds):
        params = cluster.phones[0].params(BUSINESS, f"+1415555{index:04d}", f"hello {index}")
        start = threading.Barrier(2)

        def deliver(phone):
            start.wait()
            return phone.post(params).http_status

        with ThreadPoolExecutor(max_workers=2) as pool:
            assert list(pool.map(deliver, cluster.phones)) == [200, 200]

    messages = cluster.settled(rounds)
    assert len([m for m in messages if m.role == "user"]) == rounds
    assert len(fake_engine.calls) == rounds
    assert len(fake_twilio.creates) == rounds
    assert sorted(c.body for c in fake_twilio.creates) == sorted(f"re: hello {i}" for i in range(rounds))


def test_worker_killed_during_the_engine_call_loses_no_turn_and_replies_once(make_cluster, fake_engine, fake_twilio):
    """SIGKILL every worker mid engine call: the turn is taken up again after the lease and answered exactly once."""
    cluster = make_cluster(workers=2)
    configure(cluster, fake_engine)
    cluster.phones[0].text(BUSINESS, CUSTOMER, "[slow 2] an important question")
    fake_engine.wait_for_calls(1, started_only=True)
    killed_at = time.monotonic()
    cluster.kill_workers()
    cluster.add_worker()

    messages = cluster.settled(1, timeout=40)
    recovered_in = creates_to(fake_twilio, CUSTOMER)[0].at - killed_at
    print(f"\nkilled mid engine call: reply sent {recovered_in:.1f} s after the kill, "
          f"{len(creates_to(fake_twilio, CUSTOMER))} create(s)")
    assert [m.status for m in messages if m.role == "user"] == ["processed"]
    assert [c.body for c in creates_to(fake_twilio, CUSTOMER)] == ["re: [slow 2] an important question"]
    # The engine was asked twice (the first answer went to a dead worker); the customer got one reply.
    assert len(fake_engine.calls) == 2
    assert recovered_in < 4 + 1 + 2 + 5, f"recovered in {recovered_in:.1f}s"  # lease + sweep + engine + slack


def test_worker_killed_after_twilio_accepted_does_not_send_twice(make_cluster, fake_engine, fake_twilio):
    """SIGKILL during the create call that Twilio already accepted: recovery asks Twilio and does not resend."""
    fake_twilio.script.latency = 2.0  # accepted at once, answered after 2 s
    fake_twilio.script.callbacks = ()  # no callback to rescue us: the lookup must
    cluster = make_cluster(workers=2)
    configure(cluster, fake_engine)
    cluster.phones[0].text(BUSINESS, CUSTOMER, "send this once")
    fake_twilio.wait_for_creates(1, timeout=15)
    cluster.kill_workers()
    fake_twilio.script.latency = 0.0
    cluster.add_worker()

    def recorded():
        reply = cluster.messages("assistant")
        return reply if reply and reply[0].twilio_sid else None

    killed_at = time.monotonic()
    (reply,) = cluster.wait_for(recorded, timeout=40, what="the reply's sid recorded from Twilio's records")
    print(f"\nkilled mid send: sid recovered from Twilio {time.monotonic() - killed_at:.1f} s after the kill")
    assert len(fake_twilio.creates) == 1
    assert reply.twilio_sid == fake_twilio.creates[0].sid
    time.sleep(2)  # a double send would show up here
    print(f"killed mid send: {len(fake_twilio.creates) - 1} duplicate(s)")
    assert len(fake_twilio.creates) == 1


def test_worker_killed_before_twilio_got_the_message_sends_it_once(make_cluster, fake_engine, fake_twilio):
    """SIGKILL while the create hangs unprocessed: Twilio has no record, so recovery sends it, once."""
    fake_twilio.script.next_faults.append(Fault(500, 20500, hang=2.0))
    cluster = make_cluster(workers=2)
    configure(cluster, fake_engine)
    cluster.phones[0].text(BUSINESS, CUSTOMER, "send this exactly once")
    cluster.wait_for(lambda: fake_twilio.attempts, timeout=15, what="the first create attempt")
    cluster.kill_workers()
    cluster.add_worker()

    cluster.wait_for(lambda: creates_to(fake_twilio, CUSTOMER), timeout=40, what="the resend")
    cluster.settled(1)
    assert [c.body for c in fake_twilio.creates] == ["re: send this exactly once"]


@pytest.mark.timing
def test_texts_arriving_while_redis_is_down_are_stored_and_answered_after(make_cluster, fake_engine, fake_twilio,
                                                                          redis_server):
    """Redis stopped: the webhook still stores and answers 200 fast; once Redis is back every text is answered."""
    cluster = make_cluster(workers=2)
    configure(cluster, fake_engine)
    redis_server.stop()
    try:
        durations = []
        for index in range(5):
            sent = cluster.phones[index % 2].text(BUSINESS, f"+1415555{index:04d}", f"during the outage {index}")
            assert sent.http_status == 200
            durations.append(sent.elapsed_ms)
        stored = cluster.messages("user")
        assert len(stored) == 5 and {m.status for m in stored} == {"received"}
        assert max(durations) < 1500, durations
    finally:
        redis_server.start()

    messages = cluster.settled(5, timeout=60)
    inbound = [m for m in messages if m.role == "user"]
    lost = [m for m in inbound if m.status not in ("processed", "failed")]
    print(f"\nRedis outage: webhook answered in at most {max(durations):.0f} ms; {len(lost)} of 5 texts lost")
    assert lost == []
    assert {m.status for m in inbound} == {"processed"}
    assert len(fake_twilio.creates) == 5


@pytest.mark.timing
def test_pacing_per_number_holds_across_worker_processes(make_cluster, fake_engine, fake_twilio):
    """messagesPerSecond is one pace for the number, shared by all workers: nothing dropped, nothing early.

    Each message reserves the number's next slot (1/mps apart) and is never
    sent before it, so the k-th send comes at least k/mps after the first. RQ
    delays jobs in whole seconds, so a message may leave up to about two
    seconds after its slot, and messages of one second may leave together.
    """
    rate, count = 4, 12
    cluster = make_cluster(workers=3)
    configure(cluster, fake_engine, messagesPerSecond=rate)
    customers = [f"+1415555{index:04d}" for index in range(count)]
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(lambda c: cluster.phones[0].text(BUSINESS, c, "hi"), customers))

    cluster.settled(count, timeout=30)
    times = sorted(c.at for c in fake_twilio.creates)
    assert len(times) == count
    early = [k for k, t in enumerate(times) if t - times[0] < k / rate - 0.15]
    assert early == [], f"sends {early} came before their slots: {[round(t - times[0], 2) for t in times]}"
    assert times[-1] - times[0] <= (count - 1) / rate + 3, "pacing held messages far past their slots"
