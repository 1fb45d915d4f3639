"""``gateway worker`` and ``gateway scheduler``: RQ processes for production.

Both outlive a Redis outage: RQ's own loops quit when Redis goes away, so
each is wrapped in a loop that reconnects with backoff until a signal asks it
to stop. Work enqueued meanwhile is not lost: it waits in the database and
the sweep enqueues it again once Redis is back (SPEC 6.5).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from rq import SimpleWorker

from gateway.bootstrap import build_runtime
from gateway.config import ConfigError, Settings
from gateway.heap import freeze_startup_objects
from gateway.jobs import load_jobs, run, set_runtime
from gateway.logs import configure_logging

log = logging.getLogger("gateway.worker")

RECONNECT_DELAYS = (0.5, 1, 2, 4, 8)


# A heartbeat is skipped when the one before already keeps the worker's keys alive this long
# past what the new one asks for (see GatewayWorker.heartbeat).
HEARTBEAT_SLACK_SECONDS = 10


class GatewayWorker(SimpleWorker):
    """RQ's in-process worker that remembers whether a signal, rather than Redis, ended its loop,
    and that sends its heartbeats as one round trip, and only when needed."""

    stop_signalled = False
    _keys_alive_until = 0.0  # monotonic time at which the last heartbeat's TTL runs out

    def request_stop(self, signum, frame):
        GatewayWorker.stop_signalled = True
        super().request_stop(signum, frame)

    def heartbeat(self, timeout: int | None = None, pipeline=None):
        """RQ's heartbeat (HSET last_heartbeat, EXPIRE on the worker's two keys).

        RQ sends one three times per job outside a pipeline, three round trips each: nine of a
        job's twenty-seven. Here one outside a pipeline is skipped when the TTL the last heartbeat
        set (in a pipeline or not) still runs past what this one asks for, less a few seconds; the
        keys then never expire sooner than RQ intends, and the key's last_heartbeat is at most that
        stale. Otherwise its three commands go in one pipeline. In steady work that is one round
        trip per job; when idle, RQ's own cadence (one every worker_ttl - 15 s) is kept.
        """
        ttl = timeout or self.worker_ttl + 60
        moment = time.monotonic()
        if pipeline is None and moment + ttl <= self._keys_alive_until + HEARTBEAT_SLACK_SECONDS:
            return
        self._keys_alive_until = moment + ttl
        if pipeline is not None:
            super().heartbeat(ttl, pipeline=pipeline)
            return
        with self.connection.pipeline(transaction=False) as own:
            super().heartbeat(ttl, pipeline=own)
            own.execute()


def _redis_runtime(settings: Settings, command: str, *, with_jobs: bool = False):
    if not settings.redis_url:
        raise ConfigError(f"gateway {command} needs GATEWAY_REDIS_URL (embedded mode runs jobs inside `gateway serve`)")
    configure_logging(settings.log_level)
    runtime = build_runtime(settings, migrate=False)
    if with_jobs:
        # A worker runs every job: importing their modules now, not at each one's first run, freezes them
        # with the rest of its start-up objects.
        load_jobs()
    freeze_startup_objects()
    return runtime


def run_worker(settings: Settings, burst: bool = False) -> None:
    """Work the gateway queue. The in-process SimpleWorker avoids a fork per job; jobs are short."""
    runtime = _redis_runtime(settings, "worker", with_jobs=True)
    set_runtime(runtime)

    def work() -> None:
        worker = GatewayWorker([runtime.queue.queue], connection=runtime.queue.connection)
        # with_scheduler: this worker also moves due delayed jobs (retries, pacing
        # waits) onto the queue; RQ elects one scheduler among all workers.
        worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level)

    _keep_running(work, stopped=lambda: burst or GatewayWorker.stop_signalled)


class GatewayCron:
    """RQ's cron scheduler; it returns from start() only when a signal asked it to stop."""

    def __init__(self, runtime, interval: float, log_level: str):
        self.runtime = runtime
        self.interval = max(1, int(interval))
        self.log_level = log_level
        self.stopped = False

    def start(self) -> None:
        from rq.cron import CronScheduler

        from gateway.jobs.redis_queue import QUEUE_NAME

        cron = CronScheduler(connection=self.runtime.queue.connection, logging_level=self.log_level)
        cron.register(run, queue_name=QUEUE_NAME, args=("sweep",), interval=self.interval, result_ttl=60)
        cron.start()  # raises when Redis goes away; returns on SIGTERM/SIGINT
        self.stopped = True


def run_scheduler(settings: Settings) -> None:
    """Enqueue the expiry and recovery sweep every GATEWAY_SWEEP_INTERVAL_SECONDS, with RQ's cron scheduler."""
    cron = GatewayCron(_redis_runtime(settings, "scheduler"), settings.sweep_interval, settings.log_level)
    _keep_running(cron.start, stopped=lambda: cron.stopped)


def _keep_running(start: Callable[[], None], stopped: Callable[[], bool]) -> None:
    """Run ``start`` again, with backoff, each time it ends without having been asked to stop."""
    failures = 0
    while True:
        began = time.monotonic()
        try:
            start()
        except Exception as error:  # Redis went away under RQ's loop
            log.warning("event=worker.redis_lost error=%s", type(error).__name__)
        if stopped():
            return
        if time.monotonic() - began > 60:
            failures = 0  # it ran for a while: start the backoff over
        delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
        failures += 1
        log.warning("event=worker.reconnecting in=%ss", delay)
        time.sleep(delay)
