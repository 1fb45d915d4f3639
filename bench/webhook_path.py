"""bench/webhook_path: the CPU one inbound webhook costs the web process, in process, beside bare Flask.

bench/ingest measures the web tier under gunicorn, where the machine's noise
(other tenants, stolen CPU, thread switches) moves every figure. This one
calls the WSGI apps directly, one request after another on one thread, so the
gateway's own work per webhook can be compared run to run and with a git ref:
the bare Flask app, the signature app (form + RequestValidator), and the
gateway with PostgreSQL and RQ on a redis-server of its own. Each round runs in
a fresh process on a fresh database: first texts of new customers (a session
opened per text), then a second text of each (to a live session), then first
texts to a second number whose assistant subscribes to session.created (an
event written with each session). Webhooks go one at a time (batches of one,
as at half the peak) and then four at a time from four threads, which group
commit stores together as under load. Logs go to a file at INFO, as in
production. Beside the web process's CPU it prints the CPU of the PostgreSQL
backends serving the round's database (from /proc/<pid>/schedstat: the server
runs on this machine), the other half of a webhook's cost.

    .venv/bin/python bench/webhook_path.py [--texts 400] [--rounds 3] [--baseline HEAD] [--profile]

With --baseline, each round runs the two trees at the same time, in two processes, and the
comparison is made round by round: the VM's speed, which moves from minute to minute, is then the
same for both (``--one-after-the-other`` runs them in turn, as before 2026-12-02).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ("bare", "signature", "new, alone", "returning, alone", "new, 4 at once", "returning, 4 at once",
         "subscriber, new, alone", "subscriber, new, 4 at once")
# A second business number, whose assistant takes session.created events: each first text writes one.
SUBSCRIBER_NUMBER = "+14155550177"
PUBLIC_URL = "https://gateway.bench.example"
OUT = Path(__file__).resolve().parent / "out"


def _environ(params: dict[str, str], signature: str) -> dict:
    from urllib.parse import urlencode

    body = urlencode(params).encode()
    return {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/twilio/sms", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "5000", "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:5000", "HTTP_USER_AGENT": "TwilioProxy/1.1", "HTTP_ACCEPT": "*/*",
        "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(body)),
        "HTTP_X_TWILIO_SIGNATURE": signature, "HTTP_CONNECTION": "keep-alive",
        "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": True,
        "wsgi.run_once": False, "wsgi.errors": sys.stderr, "_body": body,
    }


def _call(app, environ: dict) -> float:
    """One request, as a WSGI server serves it: the body written, then the response closed (PEP 3333),
    which runs what the view left for after its answer. Returns the seconds until the body was complete:
    how long the client waited."""
    environ = dict(environ)
    environ["wsgi.input"] = io.BytesIO(environ.pop("_body"))
    status = []
    started = time.perf_counter()
    response = app(environ, lambda s, h, exc=None: status.append(s))
    try:
        body = b"".join(response)
        answered = time.perf_counter() - started
    finally:
        if hasattr(response, "close"):
            response.close()
    if not status[0].startswith("200") or b"<Response/>" not in body:
        raise SystemExit(f"webhook answered {status[0]}: {body[:200]!r}")
    return answered


def child(texts: int, profile: Path | None) -> dict:
    """Runs in a process whose sys.path starts with the tree being measured."""
    from twilio.request_validator import RequestValidator

    from bench.bare_app import create_app as bare_app
    from bench.common import BUSINESS, customer_number, webhook_params
    from gateway import create_app
    from gateway.config import Settings
    from gateway.schemas import AssistantCreate, PhoneNumberCreate
    from gateway.services.assistants import create_assistant
    from gateway.services.phone_numbers import create_phone_number
    from tests.support.fake_twilio import ACCOUNT_SID, AUTH_TOKEN
    from tests.support.postgres import ScratchDatabase, engine_url
    from tests.support.redis_server import RedisServer

    os.environ.update(TWILIO_AUTH_TOKEN=AUTH_TOKEN, GATEWAY_PUBLIC_URL=PUBLIC_URL)
    from bench.signature_app import create_app as signature_app

    database = ScratchDatabase().create()
    redis_server = RedisServer().start()
    runtime = backends = None
    try:
        settings = Settings.from_env({
            "GATEWAY_DATABASE_URL": engine_url(database.url), "GATEWAY_REDIS_URL": redis_server.url,
            "GATEWAY_PUBLIC_URL": PUBLIC_URL, "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_BASE_URL": "http://127.0.0.1:9", "GATEWAY_LOG_LEVEL": "INFO",
        })
        from gateway.bootstrap import build_runtime

        runtime = build_runtime(settings, migrate=True)
        gateway = create_app(runtime=runtime)
        assistant = create_assistant(runtime, AssistantCreate(name="Echo", engine={"provider": "echo"}))
        create_phone_number(runtime, PhoneNumberCreate(number=BUSINESS, assistantId=assistant.id))
        hooked = create_assistant(runtime, AssistantCreate(
            name="Hooked", engine={"provider": "echo"}, serverUrl="https://hooks.bench.example/gateway",
            serverEvents=["session.created"]))
        create_phone_number(runtime, PhoneNumberCreate(number=SUBSCRIBER_NUMBER, assistantId=hooked.id))
        validator = RequestValidator(AUTH_TOKEN)

        def requests(round_: int, start: int, count: int, to: str = BUSINESS) -> list[dict]:
            out = []
            for n in range(start, start + count):
                params = webhook_params(customer_number(n), n + round_, to=to)
                out.append(_environ(params, validator.compute_signature(PUBLIC_URL + "/twilio/sms", params)))
            return out

        plan = {
            "bare": (bare_app(), requests(0, 500_000, texts)),
            "signature": (signature_app(), requests(0, 500_000, texts)),
            "new, alone": (gateway, requests(0, 0, texts)),
            "returning, alone": (gateway, requests(1, 0, texts)),
            "new, 4 at once": (gateway, requests(0, texts, texts)),
            "returning, 4 at once": (gateway, requests(1, texts, texts)),
            "subscriber, new, alone": (gateway, requests(0, 2 * texts, texts, SUBSCRIBER_NUMBER)),
            "subscriber, new, 4 at once": (gateway, requests(0, 3 * texts, texts, SUBSCRIBER_NUMBER)),
        }
        # Warm up: imports, compiled statements, pools. The gateway's warm-up texts are extra customers.
        for app in (plan["bare"][0], plan["signature"][0]):
            for environ in requests(0, 900_000, 8):
                _call(app, environ)
        for environ in requests(0, 900_000, 8):
            _call(gateway, environ)
        # As in a gunicorn worker (gateway.heap): start-up objects frozen, out of the collector's walks.
        # Otherwise a full collection, which walks them all (some 100 ms here), falls in whichever
        # case happens to reach its threshold and adds some 250 us to each of that case's webhooks.
        import gc

        gc.collect()
        gc.freeze()

        profiler = None
        if profile:
            import cProfile

            # Timed by this thread's CPU clock: waits on PostgreSQL and Redis cost nothing, and what
            # the profile shows adds up to the CPU figures above. Only this thread is profiled: the
            # cases that post alone.
            profiler = cProfile.Profile(time.thread_time)
        from sqlalchemy import event

        backends = _Backends(database)
        statements = [0]
        event.listen(runtime.engine, "before_cursor_execute", lambda *a: statements.__setitem__(0, statements[0] + 1))
        cpu, wall, answered, trips, postgres = {}, {}, {}, {}, {}
        for case, (app, batch) in plan.items():
            together = case.endswith("at once")
            if profiler and app is gateway:
                profiler.enable()
            before, started, count = time.process_time(), time.perf_counter(), statements[0]
            backends_before = backends.cpu_ns()
            if together:
                waited = _in_fours(app, batch)
            else:
                waited = sum(_call(app, environ) for environ in batch)
            cpu[case] = (time.process_time() - before) / len(batch) * 1e6
            wall[case] = (time.perf_counter() - started) / len(batch) * 1e6
            answered[case] = waited / len(batch) * 1e6
            trips[case] = (statements[0] - count) / len(batch)
            postgres[case] = backends.used_since(backends_before) / len(batch) / 1e3
            if profiler and app is gateway:
                profiler.disable()
        if profiler:
            profiler.dump_stats(str(profile))
        _check_stored(runtime, 6 * texts + 8)
        return {"cpu_us": cpu, "wall_us": wall, "answered_us": answered, "statements": trips, "postgres_us": postgres}
    finally:
        if runtime is not None:
            runtime.close()
        if backends is not None:
            backends.close()
        redis_server.stop()
        database.drop()


class _Backends:
    """CPU time of the PostgreSQL backends serving the scratch database (the server is shared with
    other databases), read from /proc/<pid>/schedstat in nanoseconds: the webhook's cost on the
    database's side, which the web process's own CPU figure leaves out."""

    def __init__(self, database):
        import psycopg

        self._admin = psycopg.connect(database.admin_url, autocommit=True)
        self._name = database.name

    def cpu_ns(self) -> dict[int, int]:
        from bench.common import cpu_ns

        pids = [row[0] for row in self._admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self._name,)).fetchall()]
        used = {}
        for pid in pids:
            try:
                used[pid] = cpu_ns(pid)
            except (OSError, ValueError, IndexError):
                pass  # ended meanwhile, or another machine's server: no figure
        return used

    def close(self) -> None:
        self._admin.close()

    def used_since(self, before: dict[int, int]) -> int:
        """Nanoseconds since ``before``; a backend started since counts from its start."""
        return sum(ns - before.get(pid, 0) for pid, ns in self.cpu_ns().items())


def _check_stored(runtime, expected: int) -> None:
    """Every gateway webhook answered 200 above; its text must be in the database too."""
    from sqlalchemy import func, select

    from gateway.db.models import Message

    with runtime.db.begin() as tx:
        stored = tx.scalar(select(func.count()).select_from(Message).where(Message.role == "user"))
    if stored != expected:
        raise SystemExit(f"{stored} texts stored for {expected} webhooks")


def _in_fours(app, batch: list[dict]) -> float:
    """Four threads post together, four at a time, so group commit stores batches of about four.
    Returns the seconds the posts waited for their answers, all added up."""
    barrier = threading.Barrier(4)
    errors, waited = [], []

    def post(mine: list[dict]) -> None:
        try:
            for environ in mine:
                barrier.wait()
                waited.append(_call(app, environ))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=post, args=(batch[i::4][: len(batch) // 4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(waited)


def round_command(tree: Path, texts: int, profile: Path | None = None) -> tuple[list[str], Path]:
    """One measurement in a fresh process that imports the gateway from ``tree``; its log lines go to a
    file, written as in production (see bench.common.child_rounds)."""
    command = [sys.executable, __file__, "--texts", str(texts), "--child-of", str(tree)]
    if profile:
        command += ["--profile-to", str(profile)]
    return command, tree


def print_profile(path: Path, top: int = 30) -> None:
    import pstats

    stats = pstats.Stats(str(path), stream=sys.stdout)
    print(f"  cProfile (CPU time) of the gateway's cases posted alone (this tree), by own time; raw: {path}")
    stats.sort_stats("tottime").print_stats(top)
    print("  the same, by inclusive time")
    stats.sort_stats("cumulative").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=400, help="webhooks per case (a multiple of 4)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", metavar="GIT_REF",
                        help="also measure the code at this ref: each round runs both trees at the same time")
    parser.add_argument("--one-after-the-other", action="store_true",
                        help="with --baseline, run each round's trees one after the other instead")
    parser.add_argument("--profile", action="store_true", help="cProfile one extra round of this tree")
    parser.add_argument("--child-of", type=Path, help=argparse.SUPPRESS)  # a round, in the tree given
    parser.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.texts -= args.texts % 4
    if args.child_of:
        sys.path.insert(0, str(args.child_of))
        print(json.dumps(child(args.texts, args.profile_to)))
        return
    sys.path.insert(0, str(ROOT))
    from bench.common import child_rounds, export_tree, print_machine

    trees = {"this tree": ROOT}
    with tempfile.TemporaryDirectory(prefix="gw-bench-base-") as scratch:
        if args.baseline:
            trees[args.baseline] = export_tree(args.baseline, Path(scratch))
        print(f"bench/webhook_path: {args.texts} webhooks per case, {args.rounds} rounds, in process, "
              "PostgreSQL and RQ on its own redis-server")
        print_machine()
        results: dict[str, list[dict]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            commands = {name: round_command(tree, args.texts) for name, tree in trees.items()}
            for name, figures in child_rounds(commands, together=not args.one_after_the_other).items():
                results[name].append(figures)
        for name, rounds in results.items():
            print(f"  {name}: CPU us per webhook (median of rounds; the rounds); wall us per webhook; "
                  "us until answered (the client's wait, before the response is closed); "
                  "postgres: CPU us per webhook of the database's backends")
            for case in CASES:
                cpu = [r["cpu_us"][case] for r in rounds]
                wall = statistics.median(r["wall_us"][case] for r in rounds)
                answered = statistics.median(r["answered_us"][case] for r in rounds)
                trips = rounds[-1]["statements"][case]
                postgres = statistics.median(r.get("postgres_us", {}).get(case, 0) for r in rounds)
                print(f"    {case:21s} {statistics.median(cpu):6.0f}  ({', '.join(f'{c:.0f}' for c in cpu)})"
                      f"  wall {wall:6.0f}  answered {answered:6.0f}  postgres {postgres:5.0f}"
                      f"  {trips:4.2f} statements/webhook")
        if args.baseline:
            how = "one after the other" if args.one_after_the_other else "run at the same time"
            print(f"  this tree / {args.baseline}, CPU per webhook, round by round ({how}), and the median:")
            for case in CASES[2:]:
                ratios = [now["cpu_us"][case] / then["cpu_us"][case]
                          for now, then in zip(results["this tree"], results[args.baseline])]
                print(f"    {case:26s} {statistics.median(ratios):.2f}  ({', '.join(f'{r:.2f}' for r in ratios)})")
            print(f"  this tree / {args.baseline}, the database's CPU per webhook, round by round, and the median:")
            for case in CASES[2:]:
                ratios = [now["postgres_us"][case] / then["postgres_us"][case]
                          for now, then in zip(results["this tree"], results[args.baseline])
                          if then.get("postgres_us", {}).get(case)]
                if ratios:
                    print(f"    {case:26s} {statistics.median(ratios):.2f}  ({', '.join(f'{r:.2f}' for r in ratios)})")
            print(f"  this tree / {args.baseline}, time until answered, round by round, and the median:")
            for case in CASES[2:]:
                ratios = [now["answered_us"][case] / then["answered_us"][case]
                          for now, then in zip(results["this tree"], results[args.baseline])]
                print(f"    {case:26s} {statistics.median(ratios):.2f}  ({', '.join(f'{r:.2f}' for r in ratios)})")
        if args.profile:
            OUT.mkdir(parents=True, exist_ok=True)
            path = OUT / "webhook_path.prof"
            child_rounds({"profile": round_command(ROOT, args.texts, path)}, together=False)
            print_profile(path)


if __name__ == "__main__":
    main()
