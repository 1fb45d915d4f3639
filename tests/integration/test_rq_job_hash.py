"""The gateway writes RQ's job hash itself (gateway/jobs/job_hash.py): on a real redis-server, the hash
is the one RQ's own enqueue writes for the same call, and RQ reads it back as that job."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.utils import utcparse

from gateway.jobs.redis_queue import ENTRY_POINT, FAILURE_TTL, JOB_TIMEOUT, QUEUE_NAME, RESULT_TTL, RedisJobQueue

TIMES = {b"created_at", b"enqueued_at"}


@pytest.fixture
def connection(redis_url):
    client = Redis.from_url(redis_url)
    yield client
    client.close()


def _rqs_own_hash(connection, args: tuple) -> dict:
    """What RQ's enqueue_many writes for ``gateway.jobs.run(*args)`` with the gateway's options."""
    queue = Queue("rq-reference", connection=connection)
    (job,) = queue.enqueue_many([Queue.prepare_data(ENTRY_POINT, args, timeout=JOB_TIMEOUT, result_ttl=RESULT_TTL,
                                                    failure_ttl=FAILURE_TTL)])
    written = connection.hgetall(job.key)
    assert written[b"origin"] == b"rq-reference"
    written[b"origin"] = QUEUE_NAME.encode()
    return written


@pytest.mark.parametrize("args", [
    ("process_turns", "9a7c1e52-0f3b-4b9e-8d2a-3c4f5e6a7b8c"),
    ("deliver_event", "x" * 200),  # RQ truncates long arguments in the description
    ("sweep",),
])
def test_the_hash_is_the_one_rq_writes_for_the_same_call(connection, redis_url, args):
    jobs = RedisJobQueue(redis_url)
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    jobs.enqueue_many([(args[0], args[1:])])
    (job_id,) = connection.lrange(f"rq:queue:{QUEUE_NAME}", 0, -1)
    ours = connection.hgetall(f"rq:job:{job_id.decode()}")
    reference = _rqs_own_hash(connection, args)

    assert {k: v for k, v in ours.items() if k not in TIMES} == {k: v for k, v in reference.items() if k not in TIMES}
    assert set(ours) == set(reference)
    for field in TIMES:
        assert before <= utcparse(ours[field].decode()) <= datetime.now(timezone.utc)
    assert connection.sismember("rq:queues", f"rq:queue:{QUEUE_NAME}")


def test_rq_reads_the_jobs_back_in_the_order_written(connection, redis_url):
    jobs = RedisJobQueue(redis_url)
    jobs.enqueue_many([("process_turns", ("s1",)), ("process_turns", ("s2",))])
    jobs.enqueue("send_pending", "s3")

    queue = Queue(QUEUE_NAME, connection=connection)
    read = [Job.fetch(job_id, connection=connection) for job_id in queue.job_ids]
    assert [(job.func_name, job.args, job.kwargs) for job in read] == [
        (ENTRY_POINT, ("process_turns", "s1"), {}),
        (ENTRY_POINT, ("process_turns", "s2"), {}),
        (ENTRY_POINT, ("send_pending", "s3"), {}),
    ]
    for job in read:
        assert job.get_status() == JobStatus.QUEUED
        assert (job.origin, job.timeout, job.result_ttl, job.failure_ttl) == (QUEUE_NAME, JOB_TIMEOUT, RESULT_TTL,
                                                                              FAILURE_TTL)
        assert job.description == f"{ENTRY_POINT}{job.args!r}".replace(",)", ")")
    assert len({job.id for job in read}) == 3


def test_a_delayed_job_still_goes_through_rqs_scheduler(connection, redis_url):
    jobs = RedisJobQueue(redis_url)
    jobs.enqueue("deliver_event", "e1", delay=30)
    queue = Queue(QUEUE_NAME, connection=connection)
    assert queue.job_ids == []
    (job_id,) = queue.scheduled_job_registry.get_job_ids()
    assert Job.fetch(job_id, connection=connection).args == ("deliver_event", "e1")
