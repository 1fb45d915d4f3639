"""bench/scale: the webhook and the sweep with 1,000 and with 1,000,000 sessions stored.

    .venv/bin/python bench/scale.py [--large 1000000] [--small 1000]

Two production stacks side by side (bench/common.py), each on its own
PostgreSQL scratch database: one seeded with ``--small`` sessions, one with
``--large``, in bulk, server-side (INSERT ... SELECT over generate_series):
one customer per session, sessions spread over ten business numbers, 30 %
active with expiries spread over the next 24 hours and 70 % completed, a
small share (0.2 %) of all sessions already past their expiry and waiting for
the sweep, two messages per session (the text, processed; the reply,
delivered).

Then, for both sizes:
- EXPLAIN (ANALYZE, BUFFERS) of every statement the webhook and the sweep
  run, captured from the gateway's own code, with the scans they use;
- the sweep's duration: with the seeded expired sessions, then with none left,
  then with exactly 100 made to expire, which shows its cost follows the
  sessions that expire and not the sessions stored;
- webhook latency in paced runs, the two sizes at the same time (one client
  sends to both stacks, each at the rate given), so that the machine's changes
  of speed, which are large on the VMs this runs on, hit both alike: half the
  texts from customers with an active session, half from new customers.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    EMPTY_TWIML, Stack, customer_number, exit_cleanly_on_signals, load_note, machine, print_machine, signed_request,
    webhook_params,
)
from bench.load import fire_together  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
NUMBERS = [f"+1415555{100 + i:04d}" for i in range(10)]
AREA = "646"  # seeded customers: customer_number(i, AREA)
NEW_AREA = "917"  # customers that text for the first time during the paced runs
TARGET_P50_RATIO = 1.2
BIG_TABLES = ("sessions", "messages", "customers")
SCAN = re.compile(r"(Seq Scan|Index Only Scan|Index Scan|Bitmap Index Scan|Bitmap Heap Scan)( using \w+)? on \w+")

SEED = [
    # Customers: +1 646 200 0000 onwards, created over the last day.
    """
    INSERT INTO customers (id, number, name, created_at, updated_at)
    SELECT gen_random_uuid()::text, '+1646' || lpad((2000000 + g)::text, 7, '0'), NULL,
           %(t0)s - (g %% 86400) * interval '1 second', %(t0)s - (g %% 86400) * interval '1 second'
    FROM generate_series(0, %(n)s - 1) AS g
    """,
    # Sessions, one per customer: g %% 10 < 3 active, the rest completed; g %% 500 = 0 expired and still active.
    """
    INSERT INTO sessions (id, name, status, assistant_id, phone_number_id, customer_id, active_key,
                          expiration_seconds, inactivity_seconds, expires_at, last_activity_at,
                          assistant_overrides, metadata, cost, engine_state, last_seq, completed_at,
                          created_at, updated_at)
    SELECT gen_random_uuid()::text, c.number, s.status, (%(assistants)s::text[])[g %% 10 + 1],
           (%(numbers)s::text[])[g %% 10 + 1], c.id,
           CASE WHEN s.status = 'active' THEN (%(numbers)s::text[])[g %% 10 + 1] || ':' || c.number END,
           86400, NULL, s.expires_at, s.expires_at - interval '86000 seconds',
           '{}', '{}', 0, '{}', 2,
           CASE WHEN s.status = 'completed' THEN s.expires_at END,
           s.expires_at - interval '86400 seconds', s.expires_at - interval '86000 seconds'
    FROM (SELECT c.*, substring(c.number from 6)::int - 2000000 AS g FROM customers c) AS c
    CROSS JOIN LATERAL (
        SELECT CASE WHEN g %% 10 < 3 OR g %% 500 = 0 THEN 'active' ELSE 'completed' END AS status,
               CASE WHEN g %% 500 = 0 THEN %(t0)s - interval '30 seconds'
                    WHEN g %% 10 < 3 THEN %(t0)s + ((g::bigint * 7919) %% 86000 + 120) * interval '1 second'
                    ELSE %(t0)s - ((g::bigint * 7919) %% 2592000 + 60) * interval '1 second' END AS expires_at
    ) AS s
    """,
    # Two messages per session: the customer's text (processed) and the reply (delivered).
    """
    INSERT INTO messages (id, session_id, seq, role, content, media, channel, twilio_sid, status, segments,
                          encoding, kind, details, attempts, throttled, slot_reserved, sent_at, created_at, updated_at)
    SELECT gen_random_uuid()::text, s.id, m.seq, m.role, m.content, '[]', 'sms',
           'SM' || md5(s.id || m.role), m.status, 1, 'GSM-7', m.kind, '{}', m.attempts, 0, m.slot_reserved,
           CASE WHEN m.role = 'assistant' THEN s.created_at + interval '2 seconds' END,
           s.created_at + m.seq * interval '1 second', s.created_at + m.seq * interval '2 seconds'
    FROM sessions s
    CROSS JOIN (VALUES (1, 'user', 'Hi, is the store open tomorrow?', 'processed', NULL, 0, false),
                       (2, 'assistant', 'Yes, from 9am to 6pm.', 'delivered', 'reply', 1, true))
               AS m(seq, role, content, status, kind, attempts, slot_reserved)
    """,
]


class Sized:
    """One stack and its seeded database."""

    def __init__(self, size: int):
        self.size = size
        self.stack = Stack()
        self.numbers: list[tuple[str, str]] = []  # (number id, assistant id)
        self.figures: dict = {"size": size}

    def start(self) -> "Sized":
        self.stack.__enter__()
        from gateway.schemas import AssistantCreate, PhoneNumberCreate
        from gateway.services.assistants import create_assistant
        from gateway.services.phone_numbers import create_phone_number

        for number in NUMBERS:
            assistant = create_assistant(self.stack.runtime, AssistantCreate(name="Bench", engine={"provider": "echo"}))
            row = create_phone_number(self.stack.runtime,
                                      PhoneNumberCreate(number=number, assistantId=assistant.id, messagesPerSecond=1000))
            self.numbers.append((row.id, assistant.id))
        return self

    def seed(self) -> float:
        from datetime import datetime, timezone

        started = time.monotonic()
        params = {
            "n": self.size,
            "t0": datetime.now(timezone.utc).replace(tzinfo=None),
            "numbers": [number_id for number_id, _ in self.numbers],
            "assistants": [assistant_id for _, assistant_id in self.numbers],
        }
        with self.stack.psql() as connection:
            for statement in SEED:
                connection.execute(statement, params)
            connection.execute("VACUUM ANALYZE customers, sessions, messages")
            connection.execute("CHECKPOINT")  # the seed's dirty pages written out now, not during the timed runs
            counts = {
                table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in BIG_TABLES
            }
            counts["active"] = connection.execute("SELECT count(*) FROM sessions WHERE status = 'active'").fetchone()[0]
            counts["expired_active"] = connection.execute(
                "SELECT count(*) FROM sessions WHERE status = 'active' AND expires_at <= now() at time zone 'utc'"
            ).fetchone()[0]
            size = connection.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
        elapsed = time.monotonic() - started
        self.figures["seed"] = {"seconds": round(elapsed, 1), "rows": counts, "database_size": size}
        print(f"  seeded {self.size:,} sessions in {elapsed:.1f} s: {counts}, database {size}")
        return elapsed

    def webhooks(self, count: int, offset: int) -> list[bytes]:
        """Half from customers with a live session (on that session's number), half from new customers."""
        requests = []
        live = [g for g in range(self.size) if g % 10 < 3 and g % 500 != 0]
        for i in range(count):
            if i % 2 == 0:
                g = live[(offset + i * 7919) % len(live)]
                params = webhook_params(customer_number(g, AREA), i, to=NUMBERS[g % 10])
            else:
                params = webhook_params(customer_number(offset + i, NEW_AREA), i, to=NUMBERS[i % 10])
            requests.append(signed_request(params, self.stack.web_port, self.stack.public_url))
        return requests

    def close(self) -> None:
        self.stack.__exit__(None, None, None)


def captured(runtime, action) -> list[tuple[str, object]]:
    """The statements ``action`` sends to the database, in order, with their parameters."""
    from sqlalchemy import event

    statements: list[tuple[str, object]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many):
        statements.append((statement, parameters))

    event.listen(runtime.engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(runtime.engine, "before_cursor_execute", record)
    return statements


def explain(runtime, statements: list[tuple[str, object]], title: str) -> list[dict]:
    """EXPLAIN (ANALYZE, BUFFERS) each distinct statement, in a transaction that is rolled back."""
    from sqlalchemy.exc import IntegrityError

    plans, seen = [], set()
    for statement, parameters in statements:
        head = statement.split()[0].upper()
        if head not in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH") or statement in seen:
            continue
        seen.add(statement)
        with runtime.engine.connect() as connection:
            transaction = connection.begin()
            try:
                rows = connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, parameters).all()
            except IntegrityError:
                # A write whose rows the captured run already committed (the webhook's one statement
                # inserts its text with no ON CONFLICT): its plan, not run again.
                transaction.rollback()
                transaction = connection.begin()
                rows = connection.exec_driver_sql("EXPLAIN (COSTS OFF) " + statement, parameters).all()
                rows.append(("Execution Time: not run (its rows exist)",))
            transaction.rollback()
        lines = [row[0] for row in rows]
        scans = [match.group(0) for line in lines for match in [SCAN.search(line)] if match]
        seq_on_big = [scan for scan in scans if scan.startswith("Seq Scan") and scan.split()[-1] in BIG_TABLES]
        time_line = next((line for line in lines if line.startswith("Execution Time")), "")
        plans.append({"title": title, "sql": " ".join(statement.split())[:160], "scans": scans,
                      "seq_scan_on_big_table": seq_on_big, "execution": time_line, "plan": lines})
    return plans


def sweep_timed(runtime) -> tuple[float, object]:
    from gateway.services.sweeper import sweep

    started = time.perf_counter()
    report = sweep(runtime)
    return time.perf_counter() - started, report


def expire_some(sized: Sized, count: int) -> None:
    with sized.stack.psql() as connection:
        connection.execute(
            """UPDATE sessions SET expires_at = (now() at time zone 'utc') - interval '1 second'
               WHERE id IN (SELECT id FROM sessions WHERE status = 'active' AND expires_at > now() at time zone 'utc'
                            ORDER BY expires_at DESC LIMIT %s)""",
            (count,),
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=100.0, help="webhooks per second in the paced runs")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each paced run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--json", type=Path, default=OUT / "scale.json")
    args = parser.parse_args()
    exit_cleanly_on_signals()
    started = time.monotonic()

    print(f"bench/scale: {args.small:,} vs {args.large:,} sessions stored")
    print_machine()
    sizes = [Sized(args.small), Sized(args.large)]
    figures: dict = {"machine": machine(), "sizes": [], "load_before": load_note()}
    try:
        for sized in sizes:
            sized.start()
            sized.seed()

        from gateway.services.inbound import accept_inbound, parse_inbound

        for sized in sizes:
            runtime = sized.stack.runtime
            g = 1  # a seeded customer with a live session (g % 10 < 3, g % 500 != 0: see SEED)
            existing = webhook_params(customer_number(g, AREA), 0, to=NUMBERS[g % 10])
            new = webhook_params(customer_number(5_000_000, NEW_AREA), 1, to=NUMBERS[0])
            statements = captured(runtime, lambda: accept_inbound(runtime, parse_inbound(existing)))
            statements += captured(runtime, lambda: accept_inbound(runtime, parse_inbound(new)))
            plans = explain(runtime, statements, "webhook")
            sweep_statements: list = []

            def first_sweep():
                sweep_statements.append(sweep_timed(runtime))

            statements = captured(runtime, first_sweep)
            (seconds, report), = sweep_statements
            plans += explain(runtime, statements, "sweep")
            from gateway.services.sweeper import count_expired

            # `gateway sweep` (the CLI) counts first, for its progress bar: not the periodic sweep.
            plans += explain(runtime, captured(runtime, lambda: count_expired(runtime)), "cli count")
            # Right after completing many sessions, the first scan also steps over their dead index
            # entries (until vacuum or the scan itself clears them); the second is the steady state.
            first_idle_seconds, _ = sweep_timed(runtime)
            idle_seconds, _ = sweep_timed(runtime)
            expire_some(sized, 100)
            hundred_seconds, hundred = sweep_timed(runtime)
            sized.figures["plans"] = plans
            sized.figures["sweep"] = {
                "seeded_expired": {"expired": report.expired, "seconds": round(seconds, 3)},
                "nothing_expired": {"seconds": round(idle_seconds, 4), "first_after_seconds": round(first_idle_seconds, 4)},
                "hundred_expired": {"expired": hundred.expired, "seconds": round(hundred_seconds, 3)},
            }
            print(f"\n{sized.size:,} sessions: query plans (EXPLAIN ANALYZE, gateway's own statements)")
            for plan in plans:
                mark = "  SEQ SCAN ON A BIG TABLE" if plan["seq_scan_on_big_table"] else ""
                print(f"  [{plan['title']}] {plan['sql'][:110]}")
                print(f"      {'; '.join(plan['scans']) or '(no scan)'}; {plan['execution']}{mark}")
            print(f"{sized.size:,} sessions: sweep {report.expired} expired in {seconds * 1000:.0f} ms; "
                  f"nothing to expire {idle_seconds * 1000:.1f} ms (right after the first: "
                  f"{first_idle_seconds * 1000:.1f} ms); 100 expired in {hundred_seconds * 1000:.0f} ms")

        print(f"\npaced webhooks, {args.rate:g}/s for {args.seconds:g} s to each size, {args.connections} connections each, "
              "both sizes at the same time (latency from each request's due time)")
        p50s: dict[int, list[float]] = {sized.size: [] for sized in sizes}
        runs: dict[int, list[dict]] = {sized.size: [] for sized in sizes}
        for round_number in range(args.rounds):
            batches = [sized.webhooks(int(args.rate * args.seconds), offset=round_number * 100_000) for sized in sizes]
            fire_together([(sized.stack.web_port, requests[:50]) for sized, requests in zip(sizes, batches)],
                          connections=args.connections, rate=args.rate)  # warm-up
            results = fire_together([(sized.stack.web_port, requests[50:]) for sized, requests in zip(sizes, batches)],
                                    connections=args.connections, rate=args.rate, expect_body=EMPTY_TWIML)
            for sized, result in zip(sizes, results):
                print(f"  {sized.size:>9,} sessions: {result.summary()}")
                p50s[sized.size].append(result.p(50))
                runs[sized.size].append({"p50_ms": round(result.p(50), 2), "p99_ms": round(result.p(99), 2),
                                         "rate": round(result.rate, 1), "ok": result.ok,
                                         "requests": len(result.latencies)})
            small_run, large_run = results
            print(f"      round {round_number + 1}: p50 ratio {large_run.p(50) / small_run.p(50):.2f}")
        for sized in sizes:
            sized.figures["ingest"] = runs[sized.size]
            figures["sizes"].append(sized.figures)
    finally:
        for sized in sizes:
            sized.close()

    small, large = (statistics.median(p50s[s.size]) for s in sizes)
    ratio = large / small if small else float("nan")
    bad_plans = [(s.size, p["sql"]) for s in sizes for p in s.figures.get("plans", [])
                 if p["seq_scan_on_big_table"] and p["title"] != "cli count"]
    cli_seq = [s.size for s in sizes for p in s.figures.get("plans", [])
               if p["seq_scan_on_big_table"] and p["title"] == "cli count"]
    print("\nresult")
    print(f"  webhook p50: {small:.2f} ms with {args.small:,} sessions, {large:.2f} ms with {args.large:,} "
          f"(ratio {ratio:.2f}; target <= {TARGET_P50_RATIO}: {'holds' if ratio <= TARGET_P50_RATIO else 'MISSED'})")
    print(f"  sequential scans of sessions/messages/customers in the webhook and sweep: "
          f"{'none' if not bad_plans else bad_plans}")
    if cli_seq:
        print(f"  note: `gateway sweep`'s count of expired sessions (CLI progress bar) scans the table at {cli_seq}")
    for sized in sizes:
        sweep = sized.figures["sweep"]
        print(f"  sweep with {sized.size:,} sessions: {sweep['seeded_expired']['expired']} expired "
              f"{sweep['seeded_expired']['seconds'] * 1000:.0f} ms, none {sweep['nothing_expired']['seconds'] * 1000:.1f} ms, "
              f"100 expired {sweep['hundred_expired']['seconds'] * 1000:.0f} ms")
    print(f"  total run time {time.monotonic() - started:.0f} s; {load_note()}")
    figures.update(p50_small_ms=small, p50_large_ms=large, p50_ratio=ratio, load_after=load_note(),
                   seconds=round(time.monotonic() - started))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 0 if not bad_plans else 1


if __name__ == "__main__":
    sys.exit(main())
