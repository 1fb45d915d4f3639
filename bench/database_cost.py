"""bench/database_cost: what storing a text costs PostgreSQL, per statement, and what in the schema it pays for.

bench/ingest shows PostgreSQL's CPU per webhook under load (418-570 us at the
peak against the store floor's 80-128 on 2026-12-03); this one takes it apart.
Texts are stored the way the webhook stores them (``commit_texts``, one text
per batch, as at half the peak): first texts of new customers (a customer, a
session and a text inserted), then a second text of each (a live session's
positions reserved, a text inserted). For each of the webhook's two
statements, the lookup and the write (run in autocommit, so the write
includes its commit), it prints the CPU of the backend that ran it, from
/proc/<pid>/schedstat (the server runs on this machine).

Each variant is a fresh database, migrated, then changed:
  as migrated            the schema as deployed
  no foreign keys        the foreign keys of sessions and messages dropped: the checks each insert runs
  no secondary indexes   the non-unique indexes of sessions and messages dropped: kept up by every
                         insert, read by the sweep and the API but not by the webhook
  async commit           synchronous_commit off: the commit's WAL flush left out. No deployment should
                         run so (a text answered 200 could be lost in a crash); it shows the flush's share.
Then, for reference, a one-row autocommit INSERT into a table of its own, with the flush and without.
Only "as migrated" keeps SPEC 6: the others show what each piece of it costs. In each round the four
databases are open at once and take turns, 50 texts at a time, so that the VM's drift falls on all alike.

    .venv/bin/python bench/database_cost.py [--texts 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import cpu_ns  # noqa: E402

VARIANTS = ("as migrated", "no foreign keys", "no secondary indexes", "async commit")
TABLES = ("sessions", "messages")
STATEMENTS = ("lookup", "write")


def _change_schema(database, variant: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(database.url, autocommit=True) as connection:
        if variant == "no foreign keys":
            for table, name in connection.execute(
                    "SELECT conrelid::regclass::text, conname FROM pg_constraint WHERE contype = 'f' "
                    "AND conrelid::regclass::text = ANY(%s)", (list(TABLES),)).fetchall():
                connection.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.Identifier(table), sql.Identifier(name)))
        elif variant == "no secondary indexes":
            for (name,) in connection.execute(
                    "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisunique "
                    "AND indrelid::regclass::text = ANY(%s)", (list(TABLES),)).fetchall():
                connection.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        elif variant == "async commit":
            connection.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(
                sql.Identifier(database.name)))


class _StatementCpu:
    """The backend CPU of each DriverStatement run, by kind (the webhook's two statements run on them).

    Measured around the statement's execution by wrapping DriverStatement._run: a bench-only patch,
    so that the figure is the backend's time for that statement alone, round trip excluded."""

    def __init__(self):
        from gateway.db import driver

        self.used: dict[str, list[int]] = {}
        real = driver.DriverStatement._run

        def timed(statement, connection, parameters):
            pid = connection.connection.driver_connection.info.backend_pid
            before = cpu_ns(pid)
            try:
                return real(statement, connection, parameters)
            finally:
                kind = "lookup" if statement.sql.startswith("WITH texts") else "write"
                self.used.setdefault(kind, []).append(cpu_ns(pid) - before)

        driver.DriverStatement._run = timed

    def take(self) -> dict[str, list[int]]:
        used, self.used = self.used, {}
        return used


def one_round(texts: int, meter: _StatementCpu, chunk: int = 50) -> dict[str, dict]:
    """One round: a database per variant, all open at once, and the texts stored in chunks that take turns
    among them, so that the VM's speed, which drifts from second to second, is the same for every variant."""
    from contextlib import ExitStack

    from bench.common import customer_number, webhook_params
    from gateway.services.inbound import commit_texts, parse_inbound

    with ExitStack() as stack:
        runtimes = {variant: stack.enter_context(_database(variant)) for variant in VARIANTS}
        figures: dict[str, dict] = {variant: {} for variant in VARIANTS}
        warm = 50
        for case, offset in (("new", 0), ("returning", 1)):
            batch = [parse_inbound(webhook_params(customer_number(n), n + offset)) for n in range(texts + warm)]
            used: dict[str, dict[str, list[int]]] = {variant: {} for variant in VARIANTS}
            for start in range(0, texts + warm, chunk):
                for variant, runtime in runtimes.items():
                    meter.take()
                    for sms in batch[start:start + chunk]:
                        commit_texts(runtime, [sms])
                    if start >= warm:  # the first chunk warms each database's connection and plans
                        for kind, values in meter.take().items():
                            used[variant].setdefault(kind, []).extend(values)
            for variant in VARIANTS:
                figures[variant][case] = {kind: statistics.mean(used[variant].get(kind, [0])) / 1e3
                                          for kind in STATEMENTS}
        return figures


@contextmanager
def _database(variant: str):
    """A runtime on a fresh database, migrated, with a number to text, and changed as ``variant`` says."""
    from bench.common import BUSINESS
    from gateway.bootstrap import build_runtime
    from gateway.config import Settings
    from gateway.schemas import AssistantCreate, PhoneNumberCreate
    from gateway.services.assistants import create_assistant
    from gateway.services.phone_numbers import create_phone_number
    from tests.support.fake_twilio import ACCOUNT_SID, AUTH_TOKEN
    from tests.support.postgres import ScratchDatabase, engine_url

    database = ScratchDatabase().create()
    runtime = None
    try:
        settings = Settings.from_env({
            # No job is queued: texts are stored with commit_texts, whose jobs the group commit's ``after`` queues.
            "GATEWAY_DATABASE_URL": engine_url(database.url), "GATEWAY_REDIS_URL": "redis://127.0.0.1:9/0",
            "GATEWAY_PUBLIC_URL": "https://gateway.bench.example", "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_API_BASE_URL": "http://127.0.0.1:9", "GATEWAY_LOG_LEVEL": "WARNING",
        })
        runtime = build_runtime(settings, migrate=True)
        assistant = create_assistant(runtime, AssistantCreate(name="Echo", engine={"provider": "echo"}))
        create_phone_number(runtime, PhoneNumberCreate(number=BUSINESS, assistantId=assistant.id))
        _change_schema(database, variant)
        runtime.engine.dispose()  # new connections, which take the database's new settings
        yield runtime
    finally:
        if runtime is not None:
            runtime.close()
        database.drop()


def plain_insert_reference(count: int = 2000) -> dict[str, float]:
    """A one-row autocommit INSERT into a table with one index, ``count`` times with the commit's flush
    and ``count`` times without, taking turns 200 at a time: the cost of a commit's flush on this machine, apart from the gateway."""
    import psycopg

    from tests.support.postgres import ScratchDatabase

    database = ScratchDatabase().create()
    try:
        with psycopg.connect(database.url, autocommit=True) as connection:
            connection.execute("CREATE TABLE plain (id serial PRIMARY KEY, body text)")
            pid = connection.info.backend_pid
            used = {"on": [0, 0.0], "off": [0, 0.0]}  # backend ns, wall seconds
            for turn in range(2 * (count // 200)):
                mode = "on" if turn % 2 == 0 else "off"
                connection.execute(f"SET synchronous_commit = {mode}")
                before, started = cpu_ns(pid), time.perf_counter()
                for _ in range(200):
                    connection.execute("INSERT INTO plain (body) VALUES (%s)", ("a text",), prepare=True)
                used[mode][0] += cpu_ns(pid) - before
                used[mode][1] += time.perf_counter() - started
        inserts = 200 * (count // 200)  # per mode
        return {f"{kind}_{mode}": (value / 1e3 if kind == "cpu" else value * 1e6) / inserts
                for mode, (ns, wall) in used.items() for kind, value in (("cpu", ns), ("wall", wall))}
    finally:
        database.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1000, help="texts per case and variant in each round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from bench.common import print_machine

    print(f"bench/database_cost: {args.texts} texts per case, one per batch, {args.rounds} rounds; "
          "PostgreSQL backend CPU per statement (us)")
    print_machine()
    meter = _StatementCpu()
    results: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    for _ in range(args.rounds):
        for variant, figures in one_round(args.texts, meter).items():
            results[variant].append(figures)
    base = results["as migrated"]
    for case in ("new", "returning"):
        print(f"  {case} customers' texts" + (" (customer, session and text inserted)" if case == "new" else
                                              " (a live session's position reserved, the text inserted)"))
        for variant in VARIANTS:
            rounds = results[variant]
            lookup = statistics.median(r[case]["lookup"] for r in rounds)
            write = statistics.median(r[case]["write"] for r in rounds)
            total = [r[case]["lookup"] + r[case]["write"] for r in rounds]
            ratio = [t / (b[case]["lookup"] + b[case]["write"]) for t, b in zip(total, base)]
            print(f"    {variant:22s} lookup {lookup:5.0f}  write {write:5.0f}  both {statistics.median(total):5.0f}"
                  f"  ({', '.join(f'{t:.0f}' for t in total)})  / as migrated {statistics.median(ratio):.2f}")
    plain = plain_insert_reference()
    print(f"  reference, a one-row autocommit INSERT (one index): backend CPU {plain['cpu_on']:.0f} us with the "
          f"commit's flush, {plain['cpu_off']:.0f} without; wall {plain['wall_on']:.0f} and {plain['wall_off']:.0f} us")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "database_cost.json").write_text(json.dumps(results, indent=1))
    print(f"  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; figures: bench/out/database_cost.json; "
          f"done at {time.strftime('%H:%M:%S')}")


if __name__ == "__main__":
    main()
