"""The production queue: RQ on Redis. Delayed jobs go through RQ's scheduler."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from rq import Queue

from gateway.jobs.job_hash import JobHashes

if TYPE_CHECKING:
    from gateway.config import Settings

QUEUE_NAME = "gateway"
ENTRY_POINT = "gateway.jobs.run"
# Jobs hold their session's lease for at most lease_seconds per engine try; RQ's
# own timeout is a backstop far beyond that (at least this; see job_timeout).
JOB_TIMEOUT = 600
FAILURE_TTL = 24 * 3600  # how long RQ keeps a crashed job for inspection
# How long RQ keeps a finished job. Deleting it at once (0) costs RQ 3.0 seven more round trips to
# Redis per job than letting a short TTL expire it; nothing reads a finished job.
RESULT_TTL = 10


def job_timeout(settings: "Settings") -> int:
    """RQ's timeout of every job: twice the longest a job may run with these settings.

    A lane's job hands on to a fresh job after LANE_BUDGET_SECONDS, once the piece of work in hand is
    done; the longest piece is an engine turn that uses every try and the longest backoffs, a send
    with the lookup of an interrupted one before it, or an event's delivery. RQ stops a job past its
    timeout by raising in it: a turn then leaves its text for the sweep (turns.NOT_THE_ENGINE), so a
    timeout below one piece of work would stop the same turn again on every retry.
    """
    from gateway.services.leases import LANE_BUDGET_SECONDS

    tries = settings.engine_tries
    engine_turn = tries * settings.engine_timeout + (tries - 1) * settings.engine_retry_cap
    piece = max(engine_turn, 2 * settings.twilio_timeout, settings.event_timeout)
    return max(JOB_TIMEOUT, math.ceil(2 * (LANE_BUDGET_SECONDS + piece)))


class RedisJobQueue:
    name = "redis"

    def __init__(self, redis_url: str, timeout: int = JOB_TIMEOUT):
        from redis import Redis

        # Short timeouts: when Redis is down the webhook must still answer fast;
        # the sweep re-enqueues whatever could not be enqueued.
        self.connection = Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=2)
        self.queue = Queue(QUEUE_NAME, connection=self.connection)
        # Jobs due now are written as RQ's enqueue would write them, without its per-job cost (see job_hash).
        self.timeout = timeout
        self.hashes = JobHashes(self.queue, ENTRY_POINT, timeout=timeout, result_ttl=RESULT_TTL,
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
                                  job, *args, job_timeout=self.timeout, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL,
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
