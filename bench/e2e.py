"""bench/e2e: from a text's webhook to the reply's create at (fake) Twilio, at a steady rate.

    .venv/bin/python bench/e2e.py [--rate 20] [--seconds 15] [--workers 2]

The production stack of bench/common.py with its `gateway worker` processes
and `gateway scheduler` running, an assistant on the `echo` engine (it
answers at once, so what is measured is the gateway: webhook, commit, queue,
turn job, send job, Twilio client), the number paced at 1000 messages/s (a
short code's pace; pacing is not what this bench measures). The fake
Twilio posts signed `sent` and `delivered` status callbacks back to the
gateway, as Twilio does, so the web tier also takes those.

Texts come at ``--rate`` per second (open loop) from a set of customers who
each text several times, so there are conversations, not only first texts.
Each text's body is unique; the echo reply carries it back, which pairs each
create at the fake Twilio with its webhook. Latency: from the moment the
webhook was written to the socket to the moment the fake Twilio received the
create. Also checked: every text answered exactly once, and each customer's
replies arrive in the order of their texts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    EMPTY_TWIML, Profiler, Stack, customer_number, exit_cleanly_on_signals, load_note, machine, percentile, print_machine,
    signed_request, webhook_params,
)
from bench.load import fire  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
TARGET_P50_MS = 50.0
TARGET_P99_MS = 250.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="texts per second")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2, help="`gateway worker` processes")
    parser.add_argument("--texts-per-customer", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="py-spy the workers and gunicorn during the run")
    parser.add_argument("--baseline", metavar="GIT_REF",
                        help="compare with the gateway as of this git ref (e.g. HEAD): the two run alternately, "
                             "twice each, each in a process of its own")
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)  # run the gateway from this tree
    parser.add_argument("--json", type=Path, default=OUT / "e2e.json")
    args = parser.parse_args()
    exit_cleanly_on_signals()
    if args.baseline:
        return compare(args)
    return measure(args, source=args.source, profile=args.profile, json_path=args.json)


def compare(args) -> int:
    """This tree and --baseline alternately, each run a fresh bench process (nothing carried over)."""
    import shutil
    import subprocess
    import tempfile

    from bench.common import export_tree

    tree = export_tree(args.baseline, Path(tempfile.mkdtemp(prefix="gw-bench-baseline-")))
    common = [sys.executable, __file__, "--rate", str(args.rate), "--seconds", str(args.seconds),
              "--workers", str(args.workers), "--texts-per-customer", str(args.texts_per_customer)]
    status = 0
    try:
        for run in range(2):
            for name, extra in ((args.baseline, ["--source", str(tree)]), ("this tree", [])):
                print(f"== {name} (run {run + 1})", flush=True)
                json_path = args.json.with_name(f"{args.json.stem}-{'baseline' if extra else 'tree'}-{run + 1}.json")
                status |= subprocess.run(common + extra + ["--json", str(json_path)]).returncode
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    return status


def measure(args, source: Path | None, profile: bool, json_path: Path) -> int:
    print(f"bench/e2e: {args.rate:g} texts/s for {args.seconds:g} s, echo engine, {args.workers} workers + scheduler")
    print_machine()
    count = int(args.rate * args.seconds)
    customers = max(1, count // args.texts_per_customer)

    with Stack(callbacks=("sent", "delivered"), source=source) as stack:
        stack.configure_number()
        stack.start_workers(args.workers)
        stack.start_scheduler()

        def text(index: int, body_prefix: str) -> tuple[str, str, bytes]:
            # Customers take turns: text i comes from customer i % customers, so each texts every ~customers/rate s.
            customer = customer_number(index % customers, "718")
            params = webhook_params(customer, index)
            params["Body"] = f"{body_prefix} {index}: {params['Body']}"
            return customer, params["Body"], signed_request(params, stack.web_port, stack.public_url)

        # Warm-up: every process has imported what it needs and holds its connections.
        warm = [text(i, "warm-up")[2] for i in range(10)]
        fire(stack.web_port, warm, connections=4, rate=10)
        stack.fake_twilio.wait_for_creates(10, timeout=30)
        time.sleep(1)
        baseline = len(stack.fake_twilio.creates)

        planned = [text(i, "e2e") for i in range(count)]
        settled = stack.settle()  # before the load is read, so that the two lines agree
        print(f"{count} texts from {customers} customers ({load_note()}; {settled})")
        result = fire(stack.web_port, [request for _, _, request in planned], connections=4, rate=args.rate,
                      expect_body=EMPTY_TWIML)
        print(f"  webhooks: {result.summary()}  (client CPU includes the fake Twilio in the same process)")
        deadline = time.monotonic() + 60
        while len(stack.fake_twilio.creates) < baseline + count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # a duplicate reply would arrive about now
        creates = list(stack.fake_twilio.creates[baseline:])

        if profile:
            # An extra run, not counted above: py-spy on the workers (their own summary) and on gunicorn.
            extra = [text(count + i, "profiled")[2] for i in range(count)]
            workers = [worker.process.pid for worker in stack.workers]
            profilers = [Profiler(workers, args.seconds + 2, OUT / "e2e-profile-workers.txt"),
                         Profiler(stack.pids(stack.web)[1:], args.seconds + 2, OUT / "e2e-profile-web.txt")]
            try:
                fire(stack.web_port, extra, connections=4, rate=args.rate, expect_body=EMPTY_TWIML)
            finally:
                summaries = [profiler.finish() for profiler in profilers]
            print("  profile of the workers (py-spy, extra run):\n    " + "\n    ".join(summaries[0].splitlines()[:45]))
            print(f"  (summaries: {profilers[0].out}, {profilers[1].out})")

    by_body = defaultdict(list)
    for create in creates:
        by_body[create.body].append(create)
    latencies, missing, duplicates = [], 0, 0
    order_ok = True
    last_create_at: dict[str, float] = {}
    for index, (customer, body, _) in enumerate(planned):
        replies = by_body.get(body, [])
        if not replies:
            missing += 1
            continue
        duplicates += len(replies) - 1
        reply = replies[0]
        latencies.append(reply.at - result.written_at[index])
        if reply.at < last_create_at.get(customer, 0.0):
            order_ok = False
        last_create_at[customer] = reply.at
    p50 = percentile(latencies, 50) * 1000
    p99 = percentile(latencies, 99) * 1000
    worst = max(latencies) * 1000 if latencies else float("nan")
    print(f"  end to end (webhook written -> create at Twilio): p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {worst:.1f} ms "
          f"over {len(latencies)} replies")
    print(f"  check: {missing} texts unanswered, {duplicates} duplicate replies, per-customer order "
          f"{'kept' if order_ok else 'BROKEN'}")
    print("\nresult")
    print(f"  end-to-end p50 {p50:.1f} ms (target < {TARGET_P50_MS:g}): {'holds' if p50 < TARGET_P50_MS else 'MISSED'}; "
          f"p99 {p99:.1f} ms (target < {TARGET_P99_MS:g}): {'holds' if p99 < TARGET_P99_MS else 'MISSED'}")
    print(f"  {load_note()}")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({
        "machine": machine(), "rate": args.rate, "seconds": args.seconds, "workers": args.workers,
        "texts": count, "customers": customers, "p50_ms": round(p50, 1), "p99_ms": round(p99, 1),
        "max_ms": round(worst, 1), "webhook_p50_ms": round(result.p(50), 2), "webhook_p99_ms": round(result.p(99), 2),
        "missing": missing, "duplicates": duplicates, "order_kept": order_ok, "load": load_note(),
    }, indent=2))
    return 0 if not missing and not duplicates and order_ok else 1


if __name__ == "__main__":
    sys.exit(main())
