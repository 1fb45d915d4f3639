"""The one place that picks real or local parts: Twilio or sandbox, RQ or the in-process queue.

``build_runtime`` returns a ``Runtime``: the settings plus every part the
services need. Web processes, workers, the CLI and tests all build one here.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from gateway.config import Settings
from gateway.db.engine import make_engine, make_session_factory
from gateway.instance import read_or_create_secret, sandbox_account_sid, sandbox_auth_token
from gateway.ports import Clock, JobQueue, SmsSender, SystemClock

log = logging.getLogger("gateway.bootstrap")


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    db: sessionmaker
    clock: Clock
    queue: JobQueue
    sender: SmsSender
    auth_token: str  # checks webhook signatures: Twilio's, or the sandbox's own
    account_sid: str
    secret_key: str
    background: list[Any] = field(default_factory=list)
    inbound: Any = None  # GroupCommit of inbound texts: stores those arriving together in one transaction
    on_close: list[Callable[[], None]] = field(default_factory=list)

    def enqueue(self, job: str, *args: Any, delay: float = 0.0) -> bool:
        """Enqueue a job; False when the queue is down (the sweep will find the work later)."""
        try:
            self.queue.enqueue(job, *args, delay=delay)
            return True
        except Exception as error:  # Redis down, connection reset: never fail the caller
            log.warning("event=queue.enqueue_failed job=%s error=%s", job, type(error).__name__)
            return False

    def enqueue_many(self, jobs: list[tuple[str, tuple]]) -> bool:
        """Enqueue (job, args) pairs together; False when the queue is down (the sweep will find the work later)."""
        if not jobs:
            return True
        try:
            self.queue.enqueue_many(jobs)
            return True
        except Exception as error:  # Redis down, connection reset: never fail the caller
            log.warning("event=queue.enqueue_failed job=%s count=%d error=%s", jobs[0][0], len(jobs),
                        type(error).__name__)
            return False

    def close(self) -> None:
        for part in self.background:
            part.stop()
        self.background.clear()
        for undo in self.on_close:
            undo()
        self.on_close.clear()
        self.engine.dispose()


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    sender: SmsSender | None = None,
    queue: JobQueue | None = None,
    migrate: bool | None = None,
    start_embedded: bool = True,
) -> Runtime:
    engine = make_engine(settings.sqlalchemy_url)
    if migrate if migrate is not None else settings.embedded_database:
        from gateway.db.migrate import upgrade

        upgrade(engine)

    if settings.uses_twilio:
        auth_token, account_sid = settings.twilio_auth_token, settings.twilio_account_sid
    else:
        auth_token = sandbox_auth_token(settings.instance_path)
        account_sid = sandbox_account_sid(auth_token)

    runtime = Runtime(
        settings=settings,
        engine=engine,
        db=make_session_factory(engine),
        clock=clock or SystemClock(),
        queue=queue,  # type: ignore[arg-type]  # set just below
        sender=sender or _make_sender(settings),
        auth_token=auth_token,
        account_sid=account_sid,
        secret_key=settings.secret_key or read_or_create_secret(settings.instance_path, "secret_key"),
    )
    if queue is None:
        runtime.queue = _make_queue(runtime, start_embedded)
    runtime.inbound = _make_inbound(runtime)
    _enqueue_events_after_commit(runtime)
    return runtime


# Every CLI command builds a Runtime and most never store a text or emit an event, so the services behind
# these hooks (with the httpx, views and metrics they import) are not imported here: web processes import
# them with their routes, workers with their jobs.


def _enqueue_events_after_commit(runtime: Runtime) -> None:
    """Events are written in the transaction of their change and handed to the queue once it commits."""
    from sqlalchemy import event

    def after_commit(tx) -> None:
        events = _events_if_imported()
        if events is not None:
            events.enqueue_committed(runtime, tx)

    def after_rollback(tx) -> None:
        events = _events_if_imported()
        if events is not None:
            events.forget_rolled_back(tx)

    # SQLAlchemy keeps these in a registry of its own, weakly keyed by the sessionmaker's Session class,
    # which the runtime holds through the closures: unless removed, every Runtime ever built (one per
    # test, per CLI call in a process) stays alive with its engine and statement cache.
    for name, hook in (("after_commit", after_commit), ("after_rollback", after_rollback)):
        event.listen(runtime.db, name, hook)
        runtime.on_close.append(lambda name=name, hook=hook: event.remove(runtime.db, name, hook))


def _events_if_imported():
    """gateway.services.events, or None: only it adds events to a transaction, so until imported there are none."""
    return sys.modules.get("gateway.services.events")


def _make_inbound(runtime: Runtime):
    from gateway.db.group_commit import GroupCommit

    def store(batch):
        from gateway.services.inbound import commit_texts

        return commit_texts(runtime, batch)

    def push(job_lists):
        runtime.enqueue_many([job for jobs in job_lists for job in jobs])
        return [None] * len(job_lists)

    # The jobs of committed batches are pushed to Redis in batches of their own: releasing the store's
    # lane before its push makes batches smaller under load, and the pushes of several of them share
    # one round trip instead.
    pushes = GroupCommit(push, runtime.settings.inbound_batch)

    def after(accepted):
        from gateway.services.inbound import jobs_for

        jobs = jobs_for(accepted)
        if jobs:
            pushes.submit(jobs)

    return GroupCommit(store, runtime.settings.inbound_batch, after)


def _make_sender(settings: Settings) -> SmsSender:
    if settings.uses_twilio:
        from gateway.senders.twilio import TwilioSender

        return TwilioSender(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            settings.twilio_api_base_url,
            settings.twilio_timeout,
        )
    from gateway.senders.sandbox import SandboxSender

    return SandboxSender()


def _make_queue(runtime: Runtime, start_embedded: bool) -> JobQueue:
    settings = runtime.settings
    if settings.redis_url:
        from gateway.jobs.redis_queue import RedisJobQueue, job_timeout

        return RedisJobQueue(settings.redis_url, timeout=job_timeout(settings))

    from gateway.jobs import run_job
    from gateway.jobs.inprocess import InProcessQueue

    queue = InProcessQueue(lambda job, *args: run_job(runtime, job, *args), workers=settings.embedded_workers)
    if start_embedded:
        queue.start()
        runtime.background.append(queue)
        ticker = PeriodicSweep(lambda: runtime.enqueue("sweep"), settings.sweep_interval).start()
        runtime.background.append(ticker)
    return queue


class PeriodicSweep:
    """In embedded mode, stands in for RQ's scheduler: enqueues the sweep every interval."""

    def __init__(self, tick: Callable[[], Any], interval: float):
        self._tick = tick
        self._interval = interval
        self._stop = threading.Event()

    def start(self) -> "PeriodicSweep":
        threading.Thread(target=self._loop, name="gateway-sweep", daemon=True).start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._tick()

    def stop(self) -> None:
        self._stop.set()
