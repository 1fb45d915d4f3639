"""The embedded queue: jobs run on worker threads of this process, delayed ones by a timer.

It runs the same job functions as the RQ workers, asynchronously to the
request that enqueued them. Nothing survives a restart, which is why every
job's effect is driven by database state that the sweep re-examines.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from typing import Any, Callable

log = logging.getLogger("gateway.queue")

Runner = Callable[..., None]


class InProcessQueue:
    name = "embedded"

    def __init__(self, run: Runner, workers: int = 4):
        self._run = run
        self._ready: queue.Queue = queue.Queue()
        self._delayed: list[tuple[float, int, str, tuple]] = []
        self._order = itertools.count()
        self._lock = threading.Condition()
        self._busy = 0
        self._threads: list[threading.Thread] = []
        self._workers = max(1, workers)
        self._stopping = False

    def start(self) -> "InProcessQueue":
        if self._threads:
            return self
        for index in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"gateway-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        timer = threading.Thread(target=self._release_delayed, name="gateway-timer", daemon=True)
        timer.start()
        self._threads.append(timer)
        return self

    def enqueue(self, job: str, *args: Any, delay: float = 0.0) -> None:
        with self._lock:
            if delay > 0:
                heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._order), job, args))
                self._lock.notify_all()
                return
            self._busy += 1
        self._ready.put((job, args))

    def enqueue_many(self, jobs: list[tuple[str, tuple]]) -> None:
        for job, args in jobs:
            self.enqueue(job, *args)

    def depth(self) -> int:
        """Jobs waiting: ready ones not yet taken by a thread, and delayed ones."""
        with self._lock:
            return self._ready.qsize() + len(self._delayed)

    def ping(self) -> None:
        if not self._threads or not all(t.is_alive() for t in self._threads):
            raise RuntimeError("embedded queue threads are not running")

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the jobs already running, drop the rest, and join the threads."""
        self._stopping = True
        with self._lock:
            self._lock.notify_all()
        for _ in self._threads:
            self._ready.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        self._threads.clear()

    def wait_idle(self, timeout: float = 10.0, include_delayed_within: float = 0.0) -> bool:
        """Block until no job is running or ready (tests and the demo use this)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                soon = [d for d in self._delayed if d[0] - time.monotonic() <= include_delayed_within]
                if self._busy == 0 and not soon:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.05))

    def _work(self) -> None:
        while not self._stopping:
            item = self._ready.get()
            if item is None:
                return
            job, args = item
            try:
                self._run(job, *args)
            except Exception:
                log.exception("event=job.crashed job=%s", job)
            finally:
                with self._lock:
                    self._busy -= 1
                    self._lock.notify_all()

    def _release_delayed(self) -> None:
        while not self._stopping:
            with self._lock:
                now = time.monotonic()
                due = []
                while self._delayed and self._delayed[0][0] <= now:
                    _, _, job, args = heapq.heappop(self._delayed)
                    self._busy += 1
                    due.append((job, args))
                wait = (self._delayed[0][0] - now) if self._delayed else 1.0
                if not due:
                    self._lock.wait(min(wait, 1.0))
            for item in due:
                self._ready.put(item)
