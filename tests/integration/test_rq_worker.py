"""The RQ worker's own bookkeeping, on a real redis-server: heartbeats that keep the worker's keys
alive as long as RQ intends in fewer round trips, and finished jobs that expire instead of piling up."""

from __future__ import annotations

import pytest
import redis.connection
from redis import Redis
from rq import Queue

from gateway.jobs.redis_queue import QUEUE_NAME, RESULT_TTL, RedisJobQueue
from gateway.worker import GatewayWorker


@pytest.fixture
def connection(redis_url):
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def round_trips(monkeypatch):
    """Counts what the process sends to Redis, one count per round trip (a pipeline is one)."""
    sent = [0]
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent[0] += 1
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


def _worker(connection) -> GatewayWorker:
    worker = GatewayWorker([Queue(QUEUE_NAME, connection=connection)], connection=connection)
    worker.register_birth()
    return worker


def test_a_heartbeat_is_one_round_trip_and_sets_rqs_ttl(connection, round_trips):
    worker = _worker(connection)
    connection.sadd(worker.executions_key, "one")  # RQ's set of the worker's executions, expired with it
    round_trips[0] = 0
    worker.heartbeat()
    assert round_trips[0] == 1  # RQ alone: three
    expected = worker.worker_ttl + 60
    assert expected - 2 <= connection.ttl(worker.key) <= expected
    assert expected - 2 <= connection.ttl(worker.executions_key) <= expected
    assert connection.hget(worker.key, "last_heartbeat")


def test_a_heartbeat_that_the_last_one_covers_is_skipped(connection, round_trips):
    worker = _worker(connection)
    worker.heartbeat()
    round_trips[0] = 0
    worker.heartbeat()
    worker.heartbeat(worker.worker_ttl)  # asks for less than is already set
    assert round_trips[0] == 0


def test_a_heartbeat_is_sent_when_a_shorter_ttl_was_set_since(connection, round_trips):
    """RQ sets a short TTL in the pipeline that starts each job: the next heartbeat must lengthen it again,
    or an idle worker's key would expire while it waits for work."""
    worker = _worker(connection)
    worker.heartbeat()
    with connection.pipeline() as pipeline:
        worker.heartbeat(90, pipeline=pipeline)
        pipeline.execute()
    assert connection.ttl(worker.key) <= 90
    round_trips[0] = 0
    worker.heartbeat()
    assert round_trips[0] == 1
    assert connection.ttl(worker.key) > worker.worker_ttl


def test_the_gateways_jobs_are_kept_briefly_once_finished(connection, redis_url):
    jobs = RedisJobQueue(redis_url)
    jobs.enqueue_many([("process_turns", ("s1",))])
    jobs.enqueue("send_pending", "s1")
    queue = Queue(QUEUE_NAME, connection=connection)
    assert [job.result_ttl for job in queue.jobs] == [RESULT_TTL, RESULT_TTL]


def test_finished_jobs_expire_and_cost_fewer_round_trips(connection, round_trips):
    queue = Queue(QUEUE_NAME, connection=connection)
    with connection.pipeline(transaction=False) as pipeline:
        queue.enqueue_many([Queue.prepare_data("builtins.len", ("abc",), result_ttl=RESULT_TTL) for _ in range(20)],
                           pipeline=pipeline)
        pipeline.execute()
    worker = GatewayWorker([queue], connection=connection)
    round_trips[0] = 0
    worker.work(burst=True, logging_level="WARNING")
    # RQ 3.0's SimpleWorker with result_ttl 0 takes 27 round trips per job here.
    assert round_trips[0] / 20 < 16
    finished = queue.finished_job_registry.get_job_ids()
    assert len(finished) == 20
    for job_id in finished:
        assert 0 < connection.ttl(f"rq:job:{job_id}") <= RESULT_TTL
