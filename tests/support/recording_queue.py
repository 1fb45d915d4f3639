"""A job queue that keeps what is enqueued for the test to run when it chooses."""

from __future__ import annotations

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
