"""A job queue that keeps what is enqueued for the test to run when it chooses."""

from __future__ import annotations

import pytest

from gateway.jobs import run_job


class RecordingQueue:
    """Keeps enqueued jobs for the test to run when it chooses."""

    name = "recording"

    def __init__(self):
        self.jobs: list[tuple[str, tuple, float]] = []
        self.down = False

    def enqueue(self, job, *args, delay=0.0):
        if self.down:
            raise ConnectionError("queue is down")
        self.jobs.append((job, args, delay))

    def enqueue_many(self, jobs):
        for job, args in jobs:
            self.enqueue(job, *args)

    def ping(self):
        if self.down:
            raise ConnectionError("queue is down")

    def depth(self) -> int:
        return len(self.jobs)

    def run_all(self, runtime):
        while self.jobs:
            job, args, _ = self.jobs.pop(0)
            run_job(runtime, job, *args)


# Fixtures for test modules whose jobs wait for the test to run them: a module imports both names
# (``from tests.support.recording_queue import queue, runtime``) to replace the default runtime,
# which runs jobs on its own worker threads, on every database and on the test's clock.


@pytest.fixture
def queue():
    return RecordingQueue()


@pytest.fixture
def runtime(make_runtime, settings, clock, queue, database_url):
    return make_runtime(settings.replace(database_url=database_url), clock=clock, queue=queue)
