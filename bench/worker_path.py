"""bench/worker_path: the CPU one text costs the workers, measured in process, side by side with a git ref.

The end-to-end bench shows the whole path under load; this one isolates what
the gateway's own code spends in a worker, where SQLAlchemy and psycopg are
most of the time. Each round, in a fresh process on a fresh PostgreSQL
database, it stores texts (first texts of new customers, then a second text
of each), then runs the jobs they queued the way a worker does: the turn job
(echo engine, in process), the send job (a sender that answers at once as
Twilio does, with status "queued"), and the two delivery callbacks a web
process would apply ("sent", "delivered"). Since 2026-12-02 the turn job
sends its replies itself, so its line holds the send too, and send_pending's
line is empty unless the tree measured is older. It prints the thread's CPU per
text for each step, the wall time (one text after another, so round trips
and commits count), and the SQL statements per text. Then what RQ itself
costs per job, as the tree sets jobs and its worker up (no-op jobs through its
GatewayWorker on a redis-server of its own), and how many jobs a text takes.

    .venv/bin/python bench/worker_path.py [--texts 200] [--rounds 3] [--baseline HEAD]

With --baseline, each round runs the two trees at the same time and they are compared round by
round (see bench/webhook_path.py); ``--one-after-the-other`` runs them in turn.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("process_turns", "send_pending", "status callbacks")


def child(texts: int) -> dict:
    """Runs in a process whose sys.path starts with the tree being measured."""
    from sqlalchemy import event

    from gateway.bootstrap import build_runtime
    from gateway.config import Settings
    from gateway.jobs import run_job
    from gateway.ports import SendReceipt
    from gateway.schemas import AssistantCreate, PhoneNumberCreate
    from gateway.services.assistants import create_assistant
    from gateway.services.inbound import accept_inbound, parse_inbound
    from gateway.services.outbound import apply_status
    from gateway.services.phone_numbers import create_phone_number
    from tests.support.postgres import ScratchDatabase, engine_url
    from tests.support.recording_queue import RecordingQueue

    class AcceptingSender:
        """Answers as Twilio does, at once: the gateway's work, not an HTTP client's, is measured."""

        name = "bench"

        def send(self, sms):
            return SendReceipt(sid="SM" + uuid.uuid4().hex, status="queued")

    database = ScratchDatabase().create()
    queue = RecordingQueue()
    runtime = None
    try:
        settings = Settings.from_env({"GATEWAY_DATABASE_URL": engine_url(database.url), "GATEWAY_LOG_LEVEL": "WARNING"})
        runtime = build_runtime(settings, queue=queue, sender=AcceptingSender(), migrate=True)
        import logging

        logging.getLogger().setLevel(logging.WARNING)
        assistant = create_assistant(runtime, AssistantCreate(name="Echo", engine={"provider": "echo"}))
        # Paced at the most a number allows, so no send waits for its slot.
        create_phone_number(runtime, PhoneNumberCreate(number="+14155550100", assistantId=assistant.id,
                                                       messagesPerSecond=1000))
        statements = [0]
        event.listen(runtime.engine, "before_cursor_execute", lambda *a: statements.__setitem__(0, statements[0] + 1))

        cpu = {step: 0.0 for step in STEPS}
        wall = {step: 0.0 for step in STEPS}
        trips = {step: 0 for step in STEPS}
        handled = jobs_run = 0
        for round_ in range(2):  # first texts (new sessions), then texts to live sessions
            for n in range(texts):
                form = {"MessageSid": f"SM{round_}x{n:030d}", "From": f"+1415555{n:04d}", "To": "+14155550100",
                        "Body": f"text {round_} {n}"}
                accept_inbound(runtime, parse_inbound(form))
            while queue.jobs:
                job, args, _ = queue.jobs.pop(0)
                jobs_run += 1
                step = job if job in cpu else None
                before, started, count = time.thread_time(), time.perf_counter(), statements[0]
                run_job(runtime, job, *args)
                if step:
                    cpu[step] += time.thread_time() - before
                    wall[step] += time.perf_counter() - started
                    trips[step] += statements[0] - count
            sids = _sent(runtime)
            before, started, count = time.thread_time(), time.perf_counter(), statements[0]
            for message_id, sid in sids:
                apply_status(runtime, message_id, sid, "sent", None)
                apply_status(runtime, message_id, sid, "delivered", None)
            cpu["status callbacks"] += time.thread_time() - before
            wall["status callbacks"] += time.perf_counter() - started
            trips["status callbacks"] += statements[0] - count
            handled += len(sids)
        assert handled == 2 * texts, f"{handled} replies for {2 * texts} texts"
        return {"texts": handled, "cpu_us": {k: v / handled * 1e6 for k, v in cpu.items()},
                "wall_us": {k: v / handled * 1e6 for k, v in wall.items()},
                "statements": {k: v / handled for k, v in trips.items()},
                "jobs_per_text": jobs_run / handled, "rq_per_job": _rq_bookkeeping(300)}
    finally:
        if runtime is not None:
            runtime.close()
        database.drop()


def _rq_bookkeeping(count: int) -> dict:
    """What RQ itself costs per job as the tree sets it up: ``count`` no-op jobs (builtins.len) with
    the tree's job options, worked by the tree's worker class on a redis-server of its own. The
    thread's CPU, the wall time and the round trips to Redis per job."""
    import redis.connection
    from redis import Redis
    from rq import Queue

    from gateway.jobs import redis_queue
    from gateway.worker import GatewayWorker
    from tests.support.redis_server import RedisServer

    server = RedisServer().start()
    original = redis.connection.AbstractConnection.send_packed_command
    sent = [0]

    def counting(self, command, check_health=True):
        sent[0] += 1
        return original(self, command, check_health)

    try:
        connection = Redis.from_url(server.url)
        queue = Queue(redis_queue.QUEUE_NAME, connection=connection)
        options = dict(timeout=redis_queue.JOB_TIMEOUT, failure_ttl=redis_queue.FAILURE_TTL,
                       result_ttl=getattr(redis_queue, "RESULT_TTL", 0))  # 0 before 2026-12-02
        with connection.pipeline(transaction=False) as pipeline:
            queue.enqueue_many([Queue.prepare_data("builtins.len", ("text",), **options) for _ in range(count)],
                               pipeline=pipeline)
            pipeline.execute()
        worker = GatewayWorker([queue], connection=connection)
        redis.connection.AbstractConnection.send_packed_command = counting
        before, started = time.thread_time(), time.perf_counter()
        worker.work(burst=True, logging_level="WARNING")
        cpu, wall = time.thread_time() - before, time.perf_counter() - started
        redis.connection.AbstractConnection.send_packed_command = original
        failed = len(queue.failed_job_registry)
        assert len(queue) == 0 and failed == 0, f"{len(queue)} no-op jobs left, {failed} failed"
        return {"cpu_us": cpu / count * 1e6, "wall_us": wall / count * 1e6, "round_trips": sent[0] / count}
    finally:
        redis.connection.AbstractConnection.send_packed_command = original
        server.stop()


def _sent(runtime) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from gateway.db.models import Message

    with runtime.db.begin() as tx:
        rows = tx.execute(select(Message.id, Message.twilio_sid).where(Message.role == "assistant",
                                                                       Message.status == "sending",
                                                                       Message.twilio_sid.is_not(None)))
        return [tuple(row) for row in rows]


def round_command(tree: Path, texts: int) -> tuple[list[str], Path]:
    """One measurement in a fresh process that imports the gateway from ``tree`` (see bench.common.child_rounds)."""
    return [sys.executable, __file__, "--texts", str(texts), "--child-of", str(tree)], tree


def _with_rq(result: dict) -> float:
    """A round's CPU per text in the gateway's code plus RQ's work for the jobs a text takes."""
    return sum(result["cpu_us"].values()) + result["jobs_per_text"] * result["rq_per_job"]["cpu_us"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=200, help="customers; each sends two texts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", metavar="GIT_REF",
                        help="also measure the code at this ref: each round runs both trees at the same time")
    parser.add_argument("--one-after-the-other", action="store_true",
                        help="with --baseline, run each round's trees one after the other instead")
    parser.add_argument("--child-of", type=Path, help=argparse.SUPPRESS)  # a round, in the tree given
    args = parser.parse_args()
    if args.child_of:
        sys.path.insert(0, str(args.child_of))
        print(json.dumps(child(args.texts)))
        return
    sys.path.insert(0, str(ROOT))
    from bench.common import child_rounds, export_tree, print_machine

    trees = {"this tree": ROOT}
    with tempfile.TemporaryDirectory(prefix="gw-bench-base-") as scratch:
        if args.baseline:
            trees[args.baseline] = export_tree(args.baseline, Path(scratch))
        print(f"bench/worker_path: {2 * args.texts} texts per round (half first texts), {args.rounds} rounds, PostgreSQL")
        print_machine()
        results: dict[str, list[dict]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            commands = {name: round_command(tree, args.texts) for name, tree in trees.items()}
            for name, figures in child_rounds(commands, together=not args.one_after_the_other).items():
                results[name].append(figures)
        for name, rounds in results.items():
            print(f"  {name}:")
            for step in STEPS:
                cpu = [r["cpu_us"][step] for r in rounds]
                wall = statistics.median(r["wall_us"][step] for r in rounds)
                trips = rounds[-1]["statements"][step]
                print(f"    {step:17s} CPU {statistics.median(cpu):6.0f} us/text (rounds {', '.join(f'{c:.0f}' for c in cpu)})"
                      f"  wall {wall:6.0f} us/text  {trips:4.1f} statements/text")
            total = [sum(r["cpu_us"].values()) for r in rounds]
            total_wall = statistics.median(sum(r["wall_us"].values()) for r in rounds)
            print(f"    {'total':17s} CPU {statistics.median(total):6.0f} us/text  wall {total_wall:6.0f} us/text")
            rq = [r["rq_per_job"]["cpu_us"] for r in rounds]
            jobs = rounds[-1]["jobs_per_text"]
            print(f"    RQ's own work per job (a no-op job): CPU {statistics.median(rq):5.0f} us (rounds "
                  f"{', '.join(f'{c:.0f}' for c in rq)})  wall {statistics.median(r['rq_per_job']['wall_us'] for r in rounds):5.0f} us"
                  f"  {rounds[-1]['rq_per_job']['round_trips']:.1f} round trips to Redis")
            print(f"    jobs per text {jobs:.2f}: with RQ's work, CPU {statistics.median(_with_rq(r) for r in rounds):6.0f} us/text")
        if args.baseline:
            how = "one after the other" if args.one_after_the_other else "run at the same time"
            pairs = list(zip(results["this tree"], results[args.baseline]))
            for what, measure in (("in the gateway's code", lambda r: sum(r["cpu_us"].values())),
                                  ("with RQ's work", _with_rq)):
                ratios = [measure(now) / measure(then) for now, then in pairs]
                print(f"  this tree / {args.baseline}: {statistics.median(ratios):.2f} of the CPU per text {what} "
                      f"(round by round, {how}: {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
