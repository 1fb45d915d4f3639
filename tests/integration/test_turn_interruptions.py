"""A turn job interrupted by something other than its engine (SPEC 6.5, 6.6), and how long one job works.

The engine failing is the engine's: the text is marked failed with the reason and
the fallback goes out. The database failing the lease's keep-alive, or RQ stopping
a job that ran past its timeout, is not: the text stays received, nothing is sent,
and the sweep hands it to a worker again, which answers it. Jobs wait here for the
test to run them, on SQLite and on PostgreSQL, on the test's clock.
"""

from __future__ import annotations

import pytest
from rq.timeouts import JobTimeoutException
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from adapters.echo import EchoEngine
from gateway.db.models import Message
from gateway.jobs import run_job
from gateway.schemas import AssistantUpdate
from gateway.services import leases
from gateway.services.assistants import update_assistant
from gateway.services.inbound import commit_texts, jobs_for, parse_inbound
from gateway.services.leases import Lease
from tests.conftest import inbound_params
from tests.support.recording_queue import queue, runtime  # noqa: F401 - pytest fixtures: jobs wait for the test

FALLBACK = "Sorry, try again later."


@pytest.fixture(autouse=True)
def with_fallback(runtime, assistant, number):
    update_assistant(runtime, assistant.id, AssistantUpdate(fallbackMessage=FALLBACK))


def text(runtime, *bodies: str) -> None:
    """The texts arrive together (one batch, one turn job for the session)."""
    accepted = commit_texts(runtime, [parse_inbound(inbound_params(body)) for body in bodies])
    runtime.enqueue_many(jobs_for(accepted))


def messages(runtime) -> list[tuple[str, str, str]]:
    with runtime.db.begin() as tx:
        return [(m.role, m.content, m.status) for m in tx.scalars(select(Message).order_by(Message.seq))]


def run_next_turn(runtime, queue) -> None:
    """Run the first process_turns job waiting, as one RQ worker would; a job's error is RQ's to record."""
    index = next(i for i, (job, _, _) in enumerate(queue.jobs) if job == "process_turns")
    job, args, _ = queue.jobs.pop(index)
    run_job(runtime, job, *args)


def swept_and_answered(runtime, queue, clock) -> None:
    clock.advance(runtime.settings.lease_seconds + runtime.settings.recovery_grace + 1)
    run_job(runtime, "sweep")
    queue.run_all(runtime)


def test_a_database_error_keeping_the_lease_leaves_the_text_for_the_sweep(runtime, queue, clock, monkeypatch):
    """The keep-alive before an engine try fails on the database (a dropped connection): that is not the
    engine crashing, so no fallback goes out and the text is not failed; the sweep has it answered."""
    real_renew = Lease.renew
    failures = []

    def renew(self, tx=None):
        if tx is None and not failures:  # the keep-alive, on its own; a fence in a transaction is left alone
            failures.append(self.session_id)
            raise OperationalError("UPDATE sessions SET turn_lease_until=...", {},
                                   Exception("server closed the connection unexpectedly"))
        return real_renew(self, tx)

    monkeypatch.setattr(Lease, "renew", renew)
    text(runtime, "hello")

    with pytest.raises(OperationalError):
        run_next_turn(runtime, queue)

    assert failures and messages(runtime) == [("user", "hello", "received")]
    swept_and_answered(runtime, queue, clock)
    assert [(role, content) for role, content, _ in messages(runtime)] == [("user", "hello"), ("assistant", "hello")]
    assert messages(runtime)[0][2] == "processed"


def test_a_job_stopped_by_rq_past_its_timeout_leaves_the_text_for_the_sweep(runtime, queue, clock, monkeypatch):
    """RQ stops a job that outlives its timeout by raising JobTimeoutException in it, wherever it is (here:
    in the engine call). The turn was not the engine's failure: no fallback; the sweep has it answered."""
    real_reply = EchoEngine.reply
    stopped = []

    def reply(self, context, turn):
        if not stopped:
            stopped.append(turn.text)
            raise JobTimeoutException("Task exceeded maximum timeout value (600 seconds)")
        return real_reply(self, context, turn)

    monkeypatch.setattr(EchoEngine, "reply", reply)
    text(runtime, "hello")

    with pytest.raises(JobTimeoutException):
        run_next_turn(runtime, queue)

    assert stopped == ["hello"] and messages(runtime) == [("user", "hello", "received")]
    swept_and_answered(runtime, queue, clock)
    assert [(role, content) for role, content, _ in messages(runtime)] == [("user", "hello"), ("assistant", "hello")]
    assert messages(runtime)[0][2] == "processed"


def test_an_engine_that_crashes_still_fails_its_text_with_the_fallback(runtime, queue, monkeypatch):
    """The contrast: an adapter's own bug is final, with the reason and the fallback (SPEC 6.6)."""

    def reply(self, context, turn):
        raise KeyError("reply")

    monkeypatch.setattr(EchoEngine, "reply", reply)
    text(runtime, "hello")
    queue.run_all(runtime)

    assert [(role, content, status) for role, content, status in messages(runtime)][0] == ("user", "hello", "failed")
    assert [content for role, content, _ in messages(runtime) if role == "assistant"] == [FALLBACK]


def test_a_job_that_has_worked_a_lane_long_enough_hands_the_rest_to_a_fresh_job(runtime, queue, monkeypatch):
    """After LANE_BUDGET_SECONDS a turn job finishes the turn in hand and queues a fresh job for the rest,
    behind other work, instead of holding a worker until RQ's timeout stops it; the texts keep their order."""
    monkeypatch.setattr(leases, "LANE_BUDGET_SECONDS", 0.0)
    text(runtime, "one", "two", "three")

    run_next_turn(runtime, queue)

    assert [(role, content, status) for role, content, status in messages(runtime) if role == "user"] == [
        ("user", "one", "processed"), ("user", "two", "received"), ("user", "three", "received")]
    assert [job for job, _, _ in queue.jobs].count("process_turns") == 1  # the fresh job, for the rest
    queue.run_all(runtime)
    # The three texts took the session's first positions together; each reply follows in turn.
    assert messages(runtime)[:3] == [("user", "one", "processed"), ("user", "two", "processed"),
                                     ("user", "three", "processed")]
    assert [content for role, content, _ in messages(runtime) if role == "assistant"] == ["one", "two", "three"]


def test_rqs_job_timeout_outlasts_the_budget_and_the_longest_engine_turn(settings):
    """RQ's timeout is a backstop: a job stopped by it in the middle of a turn would be stopped there again on
    every retry. With the defaults it is 600 s; with engine calls allowed to run longer, it grows with them."""
    from gateway.jobs.redis_queue import job_timeout

    assert job_timeout(settings) == 600
    slow = settings.replace(engine_timeout=300.0, engine_tries=3, engine_retry_cap=30.0, lease_seconds=400.0)
    longest_turn = 3 * 300 + 2 * 30
    assert job_timeout(slow) >= leases.LANE_BUDGET_SECONDS + longest_turn
