"""A production-shaped gateway made of real processes, for the guarantees of SPEC section 6.

Two web processes under gunicorn (each with two workers), several
`gateway worker` processes and `gateway scheduler`, on our own redis-server and
a database (PostgreSQL or a shared SQLite file), sending through the real
twilio client to the fake Twilio and answering with the fake engine.
Tunables are shortened so that recovery takes seconds instead of minutes.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from gateway.bootstrap import build_runtime
from gateway.config import Settings
from gateway.db.models import Message, Session
from gateway.simulator import Phone
from tests.support.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio
from tests.support.net import free_port, wait_for_http
from tests.support.observe import all_messages, still_busy, wait_until
from tests.support.processes import GUNICORN, GatewayProcess, clean_env
from tests.support.redis_server import RedisServer

# Recovery in seconds: leases of 4 s, a sweep every second; loop protection pauses 1 s instead of 30.
FAST_RECOVERY = {
    "GATEWAY_LEASE_SECONDS": "4",
    "GATEWAY_SWEEP_INTERVAL_SECONDS": "1",
    "GATEWAY_RECOVERY_GRACE_SECONDS": "0.5",
    "GATEWAY_ENGINE_TIMEOUT_SECONDS": "3",
    "GATEWAY_ENGINE_RETRY_DELAY_SECONDS": "0.1",
    "GATEWAY_ENGINE_RETRY_CAP_SECONDS": "0.5",
    "GATEWAY_TWILIO_TIMEOUT_SECONDS": "3",
    "GATEWAY_SEND_RETRY_DELAY_SECONDS": "0.1",
    "GATEWAY_SEND_RETRY_CAP_SECONDS": "0.5",
    "GATEWAY_LOOP_PROTECTION_SECONDS": "1",  # the 30-replies rule still applies, with a 1 s pause
    "GATEWAY_LOG_LEVEL": "INFO",
}


class Cluster:
    def __init__(self, *, database_url: str | None, instance_path: Path, redis: RedisServer, fake_twilio: FakeTwilio,
                 webs: int = 2, workers: int = 3, scheduler: bool = True, env: dict | None = None):
        self.instance_path = instance_path
        self.redis = redis
        self.fake_twilio = fake_twilio
        self.database_url = database_url or f"sqlite:///{instance_path / 'gateway.db'}"
        self.web_ports = [free_port() for _ in range(webs)]
        self.public_url = f"http://127.0.0.1:{self.web_ports[0]}"
        self.env = clean_env(
            GATEWAY_DATABASE_URL=self.database_url,
            GATEWAY_REDIS_URL=redis.url,
            GATEWAY_PUBLIC_URL=self.public_url,
            GATEWAY_INSTANCE_PATH=str(instance_path),
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_API_BASE_URL=fake_twilio.base_url,
            **{**FAST_RECOVERY, **(env or {})},
        )
        self.webs = [
            GatewayProcess(
                ["--workers", "2", "--threads", "8", "--bind", f"127.0.0.1:{port}", "gateway:create_app()"],
                self.env, program=GUNICORN,
            )
            for port in self.web_ports
        ]
        self.workers = [GatewayProcess(["worker"], self.env) for _ in range(workers)]
        self.scheduler = GatewayProcess(["scheduler"], self.env) if scheduler else None
        # The test's own view of the database, for configuring and asserting.
        self.runtime = build_runtime(Settings.from_env(self.env), migrate=False)
        self.phones = [
            Phone(f"http://127.0.0.1:{port}", AUTH_TOKEN, ACCOUNT_SID, public_url=self.public_url)
            for port in self.web_ports
        ]

    def start(self) -> "Cluster":
        for process in self.processes():
            process.start()
        for port in self.web_ports:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
        return self

    def processes(self) -> list[GatewayProcess]:
        return [*self.webs, *self.workers, *([self.scheduler] if self.scheduler else [])]

    def stop(self) -> None:
        """Tear down at once: the test is over, so no process needs a graceful shutdown."""
        for phone in self.phones:
            phone.close()
        for process in self.processes():
            process.kill(wait=False)
        for process in self.processes():
            process.wait()
        self.runtime.close()

    def kill_workers(self) -> None:
        for worker in self.workers:
            worker.kill()

    def add_worker(self) -> GatewayProcess:
        worker = GatewayProcess(["worker"], self.env).start()
        self.workers.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(f"--- {' '.join(p.args[:1])} ---\n{p.output()[-3000:]}" for p in self.processes())

    # -- reading the outcome ------------------------------------------------------------

    def messages(self, role: str | None = None) -> list[Message]:
        return all_messages(self.runtime, role)

    def sessions(self) -> list[Session]:
        with self.runtime.db.begin() as tx:
            return list(tx.scalars(select(Session)))

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        return wait_until(predicate, timeout, what, detail=self.logs)

    def settled(self, texts: int, timeout: float = 60.0) -> list[Message]:
        """Wait until ``texts`` inbound texts are in a final state and no reply is queued or in flight."""

        def done():
            messages = self.messages()
            arrived = sum(1 for m in messages if m.role == "user")
            return messages if arrived >= texts and not still_busy(messages) else None

        return self.wait_for(done, timeout, f"{texts} texts handled and their replies sent")
