"""The production queue: RQ on Redis. Delayed jobs go through RQ's scheduler."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from rq import Queue

from gateway.jobs.job_hash import JobHashes

QUEUE_NAME = "gateway"
ENTRY_POINT = "gateway.jobs.run"
# Jobs hold their session's lease for at most lease_seconds per engine try; RQ's
# own timeout is a backstop far beyond that.
JOB_TIMEOUT = 600
FAILURE_TTL = 24 * 3600  # how long RQ keeps a crashed job for inspection
# How long RQ keeps a finished job. Deleting it at once (0) costs RQ 3.0 seven more round trips to
# Redis per job than letting a short TTL expire it; nothing reads a finished job.
RESULT_TTL = 10


class RedisJobQueue:
    name = "redis"

    def __init__(self, redis_url: str):
        from redis import Redis

        # Short timeouts: when Redis is down the webhook must still answer fast;
        # the sweep re-enqueues whatever could not be enqueued.
        self.connection = Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=2)
        self.queue = Queue(QUEUE_NAME, connection=self.connection)
        # Jobs due now are written as RQ's enqueue would write them, without its per-job cost (see job_hash).
        self.hashes = JobHashes(self.queue, ENTRY_POINT, timeout=JOB_TIMEOUT, result_ttl=RESULT_TTL,
                                failure_ttl=FAILURE_TTL)

    def enqueue(self, job: str, *args: Any, delay: float = 0.0) -> None:
        # One pipeline, so one round trip to Redis: without it RQ makes two per job. Not a MULTI/EXEC
        # transaction: Redis runs one connection's commands in order, so a job's hash is written
        # before its id reaches the queue, and the sweep re-enqueues work whose job was lost.
        if delay <= 0:
            self.enqueue_many([(job, args)])
            return
        with self.connection.pipeline(transaction=False) as pipeline:
            self.queue.enqueue_at(not_before(datetime.now(timezone.utc) + timedelta(seconds=delay)), ENTRY_POINT,
                                  job, *args, job_timeout=JOB_TIMEOUT, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL,
                                  pipeline=pipeline)
            pipeline.execute()

    def enqueue_many(self, jobs: list[tuple[str, tuple]]) -> None:
        # One pipeline, so one round trip to Redis for a whole batch of webhooks.
        with self.connection.pipeline(transaction=False) as pipeline:
            self.hashes.write(pipeline, [(job, *args) for job, args in jobs], datetime.now(timezone.utc))
            pipeline.execute()

    def ping(self) -> None:
        self.connection.ping()

    def depth(self) -> int:
        return self.queue.count


def not_before(moment: datetime) -> datetime:
    """``moment`` rounded up to a whole second.

    RQ's scheduled-job registry keeps whole seconds, cutting the fraction off,
    so an unrounded time would let a job run up to a second early (and a job
    that finds itself early and reschedules would spin). Rounded up, a delayed
    job never runs before its time; RQ's scheduler, polling once a second,
    makes it up to about a second late.
    """
    if moment.microsecond == 0:
        return moment
    return moment.replace(microsecond=0) + timedelta(seconds=1)
