"""What the benches share: a production-shaped gateway stack, signed webhooks, statistics, clean-up.

The stack is the Procfile's: `gateway db upgrade`, gunicorn serving
`gateway:create_app()` with the Procfile's own arguments, `gateway worker`
processes (and optionally `gateway scheduler`), on a PostgreSQL database and a
redis-server of the bench's own, created here and removed on exit (also on
Ctrl-C, SIGTERM or an error). Replies go to the fake Twilio of the test suite.

The test suite's support modules are reused as they are (processes, scratch
database, redis-server, fake Twilio); nothing here is copied from them.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from twilio.request_validator import RequestValidator  # noqa: E402

from tests.support.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.postgres import ADMIN_URL, ScratchDatabase  # noqa: E402
from tests.support.processes import GatewayProcess, clean_env  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

BIN = Path(sys.executable).parent  # the virtualenv's bin/: gunicorn and gateway live beside its python
GUNICORN = [str(BIN / "gunicorn")]
GATEWAY = [str(BIN / "gateway")]

WEBHOOK_PATH = "/twilio/sms"
BUSINESS = "+14155550100"
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


# -- clean-up on every way out ----------------------------------------------------------


class Stopped(SystemExit):
    """Raised in the main thread on SIGTERM/SIGHUP so that every `finally` runs, as on Ctrl-C."""


def exit_cleanly_on_signals() -> None:
    def handler(signum, _frame):
        raise Stopped(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


# -- the gunicorn command line of the Procfile --------------------------------------------


def procfile_web_args(port: int, app: str) -> list[str]:
    """The `web:` line of the Procfile with its variables filled in, bound to 127.0.0.1:port, serving ``app``.

    Both the gateway and the bare app run under exactly these arguments (workers,
    worker class, access log), so their difference is the application's alone.
    """
    line = next(
        line.split(":", 1)[1] for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    line = line.replace("${WEB_CONCURRENCY:-2}", os.environ.get("WEB_CONCURRENCY", "2"))
    line = line.replace("${PORT:-5000}", str(port))
    args = shlex.split(line)
    assert args[0] == "gunicorn", f"unexpected web process in the Procfile: {line}"
    args = args[1:]
    args[args.index("--bind") + 1] = f"127.0.0.1:{port}"
    args[-1] = app  # the application spec is the last argument
    return args


def wait_for_port(port: int, process: GatewayProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise RuntimeError(f"process exited early:\n{process.output()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s:\n{process.output()[-3000:]}")


# -- the stack --------------------------------------------------------------------------


class Stack:
    """PostgreSQL database + redis-server + fake Twilio + gunicorn web (+ bare app) + workers."""

    def __init__(self, *, bare: bool = False, callbacks: tuple[str, ...] = (), env: dict | None = None,
                 log_level: str = "INFO", baseline: Path | None = None, source: Path | None = None):
        self.exits = ExitStack()
        # Where every gateway process (migrations, gunicorn, workers) takes its code from: this tree,
        # or another one (e.g. the last commit, exported by export_tree) to measure code before a change.
        self.source = source
        self.want_bare = bare
        self.baseline_tree = baseline
        self.callbacks = callbacks
        self.extra_env = env or {}
        self.log_level = log_level
        self.processes: list[GatewayProcess] = []
        self.workers: list[GatewayProcess] = []
        self.scheduler: GatewayProcess | None = None
        self.runtime = None

    # Each part registers its own undo as soon as it exists, so a failure half-way
    # through start() still removes everything started before it.
    def __enter__(self) -> "Stack":
        try:
            self.start()
        except BaseException:
            self.exits.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.exits.close()

    def start(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
        self.exits.callback(_remove_tree, self.tmp)

        self.database = ScratchDatabase()
        self.database.name = f"gw_bench_{uuid.uuid4().hex[:12]}"
        self.database.create()
        self.exits.callback(self.database.drop)

        self.redis = RedisServer().start()
        self.exits.callback(self.redis.stop)

        self.fake_twilio = FakeTwilio().start()
        self.fake_twilio.script.callbacks = self.callbacks
        self.exits.callback(self.fake_twilio.stop)

        self.web_port = free_port()
        self.public_url = f"http://127.0.0.1:{self.web_port}"
        self.env = clean_env(
            GATEWAY_DATABASE_URL=self.database.url,
            GATEWAY_REDIS_URL=self.redis.url,
            # What Twilio calls: signatures are checked against it (SPEC 5), and the fake
            # Twilio's status callbacks come back to it.
            GATEWAY_PUBLIC_URL=self.public_url,
            GATEWAY_INSTANCE_PATH=str(self.tmp / "instance"),
            GATEWAY_SECRET_KEY="bench-secret-key",
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_API_BASE_URL=self.fake_twilio.base_url,
            GATEWAY_LOG_LEVEL=self.log_level,
            **self.extra_env,
        )
        # release: the migrations, as `gateway db upgrade` runs them in production.
        if self.source is not None:
            self.env["PYTHONPATH"] = str(self.source)
        subprocess.run(GATEWAY + ["db", "upgrade"], env=self.env, check=True, capture_output=True,
                       cwd=self.source or ROOT)

        self.web = self._process(GUNICORN, procfile_web_args(self.web_port, "gateway:create_app()"))
        if self.want_bare:
            self.bare_port = free_port()
            self.bare = self._process(GUNICORN, procfile_web_args(self.bare_port, "bench.bare_app:create_app()"))
            # The other references: the signature check alone (bench/signature_app.py), and the signature
            # with the text committed and pushed, group-committed (bench/store_floor_app.py).
            self.signature_port = free_port()
            self.signature = self._process(GUNICORN, procfile_web_args(self.signature_port,
                                                                       "bench.signature_app:create_app()"))
            self.floor_port = free_port()
            self.floor = self._process(GUNICORN, procfile_web_args(self.floor_port, "bench.store_floor_app:create_app()"))
        if self.baseline_tree is not None:
            # The same gateway from another source tree (e.g. the last commit), on the same database
            # and Redis, to compare code before and after a change side by side.
            self.baseline_port = free_port()
            self.baseline = self._process(GUNICORN, procfile_web_args(self.baseline_port, "gateway:create_app()"),
                                          cwd=self.baseline_tree, env={"PYTHONPATH": str(self.baseline_tree)})
        wait_for_port(self.web_port, self.web)
        if self.want_bare:
            wait_for_port(self.bare_port, self.bare)
            wait_for_port(self.signature_port, self.signature)
            wait_for_port(self.floor_port, self.floor)
        if self.baseline_tree is not None:
            wait_for_port(self.baseline_port, self.baseline)

        from gateway.bootstrap import build_runtime
        from gateway.config import Settings

        # The bench's own view of the database, to configure the number and count what arrived.
        self.runtime = build_runtime(Settings.from_env(self.env), migrate=False)
        self.exits.callback(self.runtime.close)

    def settle(self, quiet_cores: float = 0.3, longest: float = 30.0) -> str:
        """Wait until what ran before (another bench, this one's seeding) no longer competes with the run.

        Run straight after bench/ingest, bench/e2e's webhooks once stalled for 300 ms. The ingest had
        just written some 15,000 texts and dropped its database; whether writing that out was the
        cause is not proven, but it need not be left to chance. So: a CHECKPOINT, the kernel's dirty
        pages synced, then up to ``longest`` seconds until the machine's CPU has been below
        ``quiet_cores`` for a second.
        Returns what it waited for, to print beside the figures.
        """
        started = time.monotonic()
        with self.psql() as connection:
            connection.execute("CHECKPOINT")
        os.sync()
        busy = quiet = 0.0
        while time.monotonic() - started < longest:
            meter = MachineCpu().start()
            time.sleep(0.5)
            busy = meter.stop() / 0.5
            quiet = quiet + 0.5 if busy < quiet_cores else 0.0
            if quiet >= 1.0:
                return f"settled in {time.monotonic() - started:.1f} s (machine {busy:.2f} cores busy)"
        return f"not settled after {longest:g} s (machine still {busy:.2f} cores busy); measuring anyway"

    def _process(self, program: list[str], args: list[str], cwd: Path | None = None,
                 env: dict | None = None) -> GatewayProcess:
        cwd = cwd or self.source or ROOT
        process = GatewayProcess(args, {**self.env, **(env or {})}, cwd=cwd, program=program).start()
        self.processes.append(process)
        self.exits.callback(_stop_process, process)
        return process

    def start_workers(self, count: int) -> None:
        for _ in range(count):
            self.workers.append(self._process(GATEWAY, ["worker"]))
        time.sleep(0.5)
        for worker in self.workers:
            if worker.process.poll() is not None:
                raise RuntimeError(f"gateway worker exited:\n{worker.output()[-3000:]}")

    def start_scheduler(self) -> None:
        self.scheduler = self._process(GATEWAY, ["scheduler"])

    def stop_workers(self) -> None:
        for worker in self.workers:
            _stop_process(worker)
        self.workers.clear()

    def configure_number(self, number: str = BUSINESS, provider: str = "echo", **settings) -> str:
        """An assistant on ``provider`` behind ``number``; returns the phone number's id."""
        from gateway.schemas import AssistantCreate, PhoneNumberCreate
        from gateway.services.assistants import create_assistant
        from gateway.services.phone_numbers import create_phone_number

        assistant = create_assistant(self.runtime, AssistantCreate(name="Bench", engine={"provider": provider}))
        # A short code's pace: the benches measure the gateway, not Twilio's 1 segment/s on a long code.
        values = {"messagesPerSecond": 1000, **settings}
        return create_phone_number(
            self.runtime, PhoneNumberCreate(number=number, assistantId=assistant.id, **values)
        ).id

    def psql(self):
        import psycopg

        return psycopg.connect(self.database.url, autocommit=True)

    def pids(self, process: GatewayProcess) -> list[int]:
        """The process and its children (gunicorn's master and workers)."""
        pid = process.process.pid
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        return [pid, *map(int, out)]


def export_tree(ref: str, into: Path) -> Path:
    """The repository's files at git ``ref`` (e.g. HEAD: the code before uncommitted changes), via git archive."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def child_rounds(commands: dict[str, tuple[list[str], Path]], together: bool) -> dict[str, dict]:
    """Run one round per tree in child processes ((argv, tree) by name; each prints its figures as JSON on
    its last line of stdout), all at the same time when ``together``, else one after the other.

    At the same time, whatever the VM does to its speed that minute (on these VMs the same code's CPU
    per text moves by up to 2x) it does to every tree alike, so each round is a paired comparison; on
    2 cores the children then share the machine, which raises the figures of both a little.
    """
    def start(argv: list[str], tree: Path):
        log = tempfile.TemporaryFile(mode="w+")
        process = subprocess.Popen(argv, env=dict(os.environ, PYTHONPATH=str(tree)), cwd=tree,
                                   stdout=subprocess.PIPE, stderr=log, text=True)
        return process, log, tree

    def wait(process, log, tree) -> tuple:
        return process.communicate()[0], process.returncode, log, tree

    def figures(stdout: str, returncode: int, log, tree: Path) -> dict:
        with log:
            if returncode != 0:
                log.seek(0)
                raise SystemExit(f"the round in {tree} failed:\n{log.read()[-3000:]}{stdout[-3000:]}")
        return json.loads(stdout.strip().splitlines()[-1])

    if together:  # every child is waited for before any failure is reported: none is left running
        started = {name: start(*command) for name, command in commands.items()}
        finished = {name: wait(*running) for name, running in started.items()}
        return {name: figures(*done) for name, done in finished.items()}
    return {name: figures(*wait(*start(*command))) for name, command in commands.items()}


def _stop_process(process: GatewayProcess) -> None:
    try:
        process.stop()
    finally:
        try:
            os.unlink(process.log.name)
        except OSError:
            pass


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# -- webhooks ----------------------------------------------------------------------------


def customer_number(index: int, area: str = "212") -> str:
    """Distinct, possible US numbers: +1 212 200 0000 onwards."""
    return f"+1{area}{2000000 + index:07d}"


BODIES = (
    "Hi, is the store on Main Street open tomorrow morning?",
    "Can I change my delivery address for order 48213?",
    "What are your opening hours on Sunday?",
    "I'd like to book a table for four at 7pm on Friday, please.",
    "Thanks! That's all I needed.",
    "Do you ship to Canada, and how long does it usually take?",
)


def webhook_params(customer: str, index: int, to: str = BUSINESS) -> dict[str, str]:
    """The form Twilio posts for one inbound text, with every parameter it usually carries."""
    sid = "SM" + uuid.uuid4().hex
    return {
        "ToCountry": "US", "ToState": "CA", "SmsMessageSid": sid, "NumMedia": "0", "ToCity": "SAN FRANCISCO",
        "FromZip": "10001", "SmsSid": sid, "FromState": "NY", "SmsStatus": "received", "FromCity": "NEW YORK",
        "Body": BODIES[index % len(BODIES)], "FromCountry": "US", "To": to, "ToZip": "94105", "NumSegments": "1",
        "MessageSid": sid, "AccountSid": ACCOUNT_SID, "From": customer, "ApiVersion": "2010-04-01",
    }


_VALIDATOR = RequestValidator(AUTH_TOKEN)


def signed_request(params: dict[str, str], port: int, public_url: str) -> bytes:
    """The whole HTTP/1.1 request, signed as Twilio signs it: URL = GATEWAY_PUBLIC_URL + path, auth token."""
    signature = _VALIDATOR.compute_signature(public_url + WEBHOOK_PATH, params)
    body = urlencode(params).encode()
    head = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "User-Agent: TwilioProxy/1.1\r\n"
        "Accept: */*\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"X-Twilio-Signature: {signature}\r\n"
        f"I-Twilio-Idempotency-Token: {uuid.uuid4()}\r\n"
        "Connection: keep-alive\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# -- figures -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def machine() -> dict:
    import flask
    import gunicorn
    import psycopg
    import redis as redis_client
    import rq
    import sqlalchemy

    with open("/proc/meminfo") as meminfo:
        mem_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    try:
        import psycopg as pg

        with pg.connect(ADMIN_URL, connect_timeout=3) as connection:
            postgres = connection.execute("SHOW server_version").fetchone()[0]
    except Exception:  # pragma: no cover - reported, not needed
        postgres = "?"
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "flask": flask.__version__ if hasattr(flask, "__version__") else _version("flask"),
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "gunicorn": gunicorn.__version__,
        "rq": rq.__version__ if hasattr(rq, "__version__") else _version("rq"),
        "redis-py": redis_client.__version__,
        "redis-server": next((part.split("=", 1)[1] for part in server if part.startswith("v=")), "?"),
        "postgresql": postgres,
    }


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def load_note() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def print_machine() -> None:
    info = machine()
    print("machine: " + ", ".join(f"{key} {value}" for key, value in info.items()))
    print(load_note())


@dataclass
class CpuMeter:
    """CPU seconds used by a set of processes between start() and stop(), from /proc."""

    pids: list[int]

    def _ticks(self) -> int:
        total = 0
        for pid in self.pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime + stime
            except (OSError, IndexError, ValueError):
                pass
        return total

    def start(self) -> "CpuMeter":
        self._start = self._ticks()
        return self

    def stop(self) -> float:
        return (self._ticks() - self._start) / os.sysconf("SC_CLK_TCK")


def cpu_ns(pid: int) -> int:
    """Nanoseconds a process (a PostgreSQL backend, say) has run on a CPU, from /proc/<pid>/schedstat:
    finer than /proc/<pid>/stat's clock ticks, for the cost of single statements."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


class MachineCpu:
    """Busy CPU seconds of the whole machine (all processes, /proc/stat) between start() and stop()."""

    def _busy(self) -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def start(self) -> "MachineCpu":
        self._start = self._busy()
        return self

    def stop(self) -> float:
        return self._busy() - self._start


def postgres_pids(stack: Stack) -> list[int]:
    """The PostgreSQL backends serving the bench's database (the server itself is shared with others)."""
    with stack.psql() as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (stack.database.name,)
        ).fetchall()
    return [row[0] for row in rows]


class Profiler:
    """py-spy sampling the given processes (non-blocking, so it barely slows them); folded stacks per pid."""

    def __init__(self, pids: list[int], seconds: float, out: Path, rate: int = 100):
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.files = [out.with_name(f"{out.stem}-{pid}.folded") for pid in pids]
        self.spies = [
            subprocess.Popen(
                [str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
                 "--rate", str(rate), "--format", "raw", "--output", str(path), "--nonblocking",
                 # Only the thread holding the GIL: where Python spends CPU. Without it, threads
                 # waiting on a lock, a socket or the next request fill most samples.
                 "--gil"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            for pid, path in zip(pids, self.files)
        ]

    def finish(self, top: int = 40) -> str:
        for spy in self.spies:
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
        from bench.profile_summary import summarise

        text = summarise([path for path in self.files if path.exists()], top=top)
        self.out.write_text(text)
        return text

    def kill(self) -> None:
        for spy in self.spies:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
