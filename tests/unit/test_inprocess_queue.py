"""The embedded queue: jobs on worker threads of this process, delayed ones released by a timer.

Real threads and real (short) waits; every wait is bounded so a broken queue
fails a test instead of hanging it.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from gateway.jobs.inprocess import InProcessQueue

SHORT = 1.0  # the longest any single wait in this file may block


class RecordingRunner:
    """A job runner that records (job, args, thread) and can be told to block or crash per job."""

    def __init__(self):
        self.calls: list[tuple[str, tuple, threading.Thread, float]] = []
        self.gates: dict[str, threading.Event] = {}
        self.crash: set[str] = set()
        self.done = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, job: str, *args) -> None:
        with self._lock:
            self.calls.append((job, args, threading.current_thread(), time.monotonic()))
        gate = self.gates.get(job)
        if gate is not None:
            gate.wait(SHORT)
        if job in self.crash:
            raise RuntimeError(f"job {job} crashed")
        self.done.set()

    def jobs(self) -> list[str]:
        with self._lock:
            return [job for job, *_ in self.calls]


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner()


@pytest.fixture
def make_queue():
    started: list[InProcessQueue] = []

    def make(run, workers: int = 2, start: bool = True) -> InProcessQueue:
        queue = InProcessQueue(run, workers=workers)
        started.append(queue)
        return queue.start() if start else queue

    yield make
    for queue in started:
        queue.stop(timeout=SHORT)


# --- running jobs -----------------------------------------------------------------------


def test_job_runs_with_its_arguments(make_queue, runner):
    """An enqueued job is run once with its name and positional arguments."""
    queue = make_queue(runner)
    queue.enqueue("turn", "session-1", 42)
    assert queue.wait_idle(timeout=SHORT)
    assert [(job, args) for job, args, *_ in runner.calls] == [("turn", ("session-1", 42))]


def test_jobs_run_on_worker_threads_not_the_callers(make_queue, runner):
    """Jobs run on the queue's own named worker threads, never on the enqueuing thread."""
    queue = make_queue(runner)
    for n in range(5):
        queue.enqueue("job", n)
    assert queue.wait_idle(timeout=SHORT)
    threads = {thread for _, _, thread, _ in runner.calls}
    assert threading.current_thread() not in threads
    assert all(thread.name.startswith("gateway-worker-") for thread in threads)
    assert len(runner.calls) == 5


@pytest.mark.timing
def test_enqueue_returns_before_the_job_finishes(make_queue, runner):
    """enqueue hands the job over and returns at once, while the job is still blocked."""
    queue = make_queue(runner)
    runner.gates["slow"] = gate = threading.Event()
    started = time.monotonic()
    queue.enqueue("slow")
    assert time.monotonic() - started < 0.1
    assert not runner.done.is_set()
    gate.set()
    assert queue.wait_idle(timeout=SHORT)
    assert runner.done.is_set()


def test_workers_run_jobs_in_parallel(make_queue):
    """With two workers, two jobs run at the same time (each waits for the other)."""
    barrier = threading.Barrier(2, timeout=SHORT)
    met: list[bool] = []

    def run(job):
        barrier.wait()
        met.append(True)

    queue = make_queue(run, workers=2)
    queue.enqueue("a")
    queue.enqueue("b")
    assert queue.wait_idle(timeout=SHORT)
    assert met == [True, True]


def test_jobs_enqueued_before_start_run_after_start(make_queue, runner):
    """Jobs may be enqueued before start; they run once the threads start."""
    queue = make_queue(runner, start=False)
    queue.enqueue("early")
    queue.start()
    assert queue.wait_idle(timeout=SHORT)
    assert runner.jobs() == ["early"]


# --- wait_idle ------------------------------------------------------------------------


@pytest.mark.timing
def test_wait_idle_on_an_empty_queue_is_true_at_once(make_queue, runner):
    """With nothing enqueued, wait_idle returns True straight away."""
    queue = make_queue(runner)
    started = time.monotonic()
    assert queue.wait_idle(timeout=SHORT) is True
    assert time.monotonic() - started < 0.1


def test_wait_idle_true_when_jobs_are_done(make_queue, runner):
    """wait_idle returns True once every ready job has run."""
    queue = make_queue(runner, workers=1)
    for n in range(10):
        queue.enqueue("job", n)
    assert queue.wait_idle(timeout=SHORT) is True
    assert len(runner.calls) == 10


@pytest.mark.timing
def test_wait_idle_false_on_timeout_with_a_blocked_job(make_queue, runner):
    """A job that is still running makes wait_idle give up with False after its timeout."""
    queue = make_queue(runner)
    runner.gates["stuck"] = gate = threading.Event()
    queue.enqueue("stuck")
    started = time.monotonic()
    assert queue.wait_idle(timeout=0.2) is False
    assert 0.2 <= time.monotonic() - started < 0.2 + 0.3
    gate.set()
    assert queue.wait_idle(timeout=SHORT) is True


def test_wait_idle_counts_jobs_waiting_for_a_worker(make_queue, runner):
    """A job queued behind a blocked one keeps the queue busy until it has run too."""
    queue = make_queue(runner, workers=1)
    runner.gates["first"] = gate = threading.Event()
    queue.enqueue("first")
    queue.enqueue("second")
    assert queue.wait_idle(timeout=0.1) is False
    gate.set()
    assert queue.wait_idle(timeout=SHORT) is True
    assert runner.jobs() == ["first", "second"]


# --- delayed jobs ------------------------------------------------------------------------


def test_delayed_job_waits_for_its_time(make_queue, runner):
    """A job enqueued with delay=0.2 does not run before 0.2 s and does run soon after."""
    queue = make_queue(runner)
    enqueued = time.monotonic()
    queue.enqueue("later", "x", delay=0.2)
    assert not runner.done.wait(0.1)
    assert runner.calls == []
    assert runner.done.wait(SHORT)
    (job, args, thread, ran_at), = runner.calls
    assert (job, args) == ("later", ("x",))
    assert 0.2 <= ran_at - enqueued < 0.2 + 0.5
    assert thread.name.startswith("gateway-worker-")


def test_wait_idle_ignores_delayed_jobs_beyond_the_window(make_queue, runner):
    """By default a job due later does not keep wait_idle from returning True."""
    queue = make_queue(runner)
    queue.enqueue("later", delay=0.3)
    assert queue.wait_idle(timeout=0.1) is True
    assert runner.calls == []


def test_wait_idle_waits_for_delayed_jobs_within_the_window(make_queue, runner):
    """include_delayed_within covers a job due within that many seconds."""
    queue = make_queue(runner)
    queue.enqueue("later", delay=0.2)
    assert queue.wait_idle(timeout=SHORT, include_delayed_within=0.5) is True
    assert runner.jobs() == ["later"]


def test_delayed_jobs_run_in_due_order(make_queue, runner):
    """Delayed jobs are released by due time, not by the order they were enqueued."""
    queue = make_queue(runner, workers=1)
    queue.enqueue("third", delay=0.25)
    queue.enqueue("first", delay=0.05)
    queue.enqueue("second", delay=0.15)
    assert queue.wait_idle(timeout=SHORT, include_delayed_within=0.5) is True
    assert runner.jobs() == ["first", "second", "third"]


def test_immediate_job_overtakes_a_delayed_one(make_queue, runner):
    """A job without delay runs before an earlier-enqueued delayed job."""
    queue = make_queue(runner, workers=1)
    queue.enqueue("delayed", delay=0.2)
    queue.enqueue("now")
    assert queue.wait_idle(timeout=SHORT, include_delayed_within=0.5) is True
    assert runner.jobs() == ["now", "delayed"]


# --- failures ----------------------------------------------------------------------------


def test_crashing_job_is_logged_and_queue_keeps_working(make_queue, runner, caplog):
    """An exception in a job is logged with its traceback; later jobs still run."""
    caplog.set_level(logging.ERROR, logger="gateway.queue")
    runner.crash.add("boom")
    queue = make_queue(runner, workers=1)
    queue.enqueue("boom")
    assert queue.wait_idle(timeout=SHORT) is True
    queue.enqueue("after")
    assert queue.wait_idle(timeout=SHORT) is True
    assert runner.jobs() == ["boom", "after"]
    crashed = [r for r in caplog.records if r.name == "gateway.queue" and "job.crashed" in r.getMessage()]
    assert len(crashed) == 1
    assert "job=boom" in crashed[0].getMessage()
    assert crashed[0].exc_info is not None and isinstance(crashed[0].exc_info[1], RuntimeError)
    queue.ping()


# --- lifecycle ---------------------------------------------------------------------------


def test_ping_raises_before_start(make_queue, runner):
    """A queue whose threads were never started fails its health check."""
    queue = make_queue(runner, start=False)
    with pytest.raises(RuntimeError):
        queue.ping()


def test_ping_passes_while_running(make_queue, runner):
    """A started queue passes its health check."""
    make_queue(runner).ping()


def test_ping_raises_after_stop(make_queue, runner):
    """A stopped queue fails its health check."""
    queue = make_queue(runner)
    queue.stop(timeout=SHORT)
    with pytest.raises(RuntimeError):
        queue.ping()


def test_start_twice_keeps_one_set_of_threads(make_queue, runner):
    """Starting an already started queue starts no further threads."""
    queue = make_queue(runner, workers=2)
    before = {t for t in threading.enumerate() if t.name.startswith("gateway-")}
    assert queue.start() is queue
    after = {t for t in threading.enumerate() if t.name.startswith("gateway-")}
    assert after == before


def test_stop_joins_worker_and_timer_threads(runner):
    """stop() ends and joins every worker thread and the timer thread."""
    queue = InProcessQueue(runner, workers=3)
    before = set(threading.enumerate())
    queue.start()
    ours = set(threading.enumerate()) - before
    assert len(ours) == 4
    assert {t.name for t in ours} == {"gateway-worker-0", "gateway-worker-1", "gateway-worker-2", "gateway-timer"}
    started = time.monotonic()
    queue.stop(timeout=SHORT)
    assert time.monotonic() - started < SHORT
    assert not any(thread.is_alive() for thread in ours)


def test_stop_lets_a_running_job_finish(runner):
    """A job already running when stop() is called completes before its thread is joined."""
    queue = InProcessQueue(runner, workers=1).start()
    runner.gates["running"] = gate = threading.Event()
    queue.enqueue("running")
    for _ in range(100):
        if runner.calls:
            break
        time.sleep(0.005)
    threading.Timer(0.05, gate.set).start()
    queue.stop(timeout=SHORT)
    assert runner.done.is_set()


def test_zero_workers_still_means_one(make_queue, runner):
    """Asking for zero workers still gives one worker thread, so jobs run."""
    queue = make_queue(runner, workers=0)
    queue.enqueue("job")
    assert queue.wait_idle(timeout=SHORT) is True
    assert runner.jobs() == ["job"]
