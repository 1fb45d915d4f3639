"""The ``gateway`` command (SPEC section 2).

User errors print one line to stderr and exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import click

from gateway.config import DEFAULT_PORT, ConfigError, Settings

EXIT_USER_ERROR = 2
PROGRESS_FROM = 100  # items; below this an operation is over before a bar would help


class GatewayGroup(click.Group):
    """Turns the gateway's named errors into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from gateway.errors import GatewayError

        try:
            return super().invoke(ctx)
        except GatewayError as error:
            _fail(error.message)
        except ConfigError as error:
            _fail(str(error))
        except Exception as error:
            if _is_a(error, "gateway.simulator", "SimulatorError"):
                _fail(str(error))
            elif _is_a(error, "sqlalchemy.exc", "OperationalError"):
                _fail(f"cannot use the database: {str(error.orig).strip().splitlines()[0]}")
            elif _is_a(error, "redis.exceptions", "ConnectionError"):
                _fail(f"cannot reach Redis: {error}")
            elif isinstance(error, OSError):
                _fail(str(error))
            else:
                raise


def _is_a(error: Exception, module: str, name: str) -> bool:
    """Whether ``error`` is a ``module.name``, without importing ``module``.

    Importing redis, SQLAlchemy and the simulator (httpx) just to name their
    errors would cost every command, ``gateway --help`` included, a third of a
    second; a class can only have been raised if its module was imported.
    """
    cls = getattr(sys.modules.get(module), name, None)
    return cls is not None and isinstance(error, cls)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USER_ERROR)


@click.group(cls=GatewayGroup)
def main() -> None:
    """SMS session gateway: puts chat assistants behind phone numbers."""


def settings_from_env(**overrides: Any) -> Settings:
    return Settings.from_env(**overrides)


@contextmanager
def runtime_for_command(start_queue: bool = False) -> Iterator[Any]:
    """A Runtime for one CLI command; the embedded queue runs only when the command enqueues work."""
    from gateway.bootstrap import build_runtime
    from gateway.logs import configure_logging

    settings = settings_from_env()
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    runtime = build_runtime(settings, start_embedded=start_queue)
    try:
        yield runtime
        wait_idle = getattr(runtime.queue, "wait_idle", None)
        if start_queue and wait_idle is not None:
            wait_idle(timeout=30)
    finally:
        runtime.close()


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


class _Silent:
    def update(self, steps: int) -> None:
        pass


@contextmanager
def progress(total: int, label: str) -> Iterator[Any]:
    """A progress bar on stderr for long operations (stdout stays clean for --json); nothing for small ones."""
    if total < PROGRESS_FROM:
        yield _Silent()
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar


# -- running -----------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Run the web app (and, in embedded mode, the in-process worker)."""
    from gateway.server import serve_forever

    settings = settings_from_env()
    if settings.public_url is None:
        settings = settings.replace(public_url=f"http://localhost:{port}")
    serve_forever(settings, host, port)


@main.command()
@click.option("--burst", is_flag=True, help="Work until the queue is empty, then exit.")
def worker(burst: bool) -> None:
    """Run an RQ worker on GATEWAY_REDIS_URL."""
    from gateway.worker import run_worker

    run_worker(settings_from_env(), burst=burst)


@main.command()
def scheduler() -> None:
    """Run RQ's cron scheduler for the periodic sweep (the Procfile's scheduler: process)."""
    from gateway.worker import run_scheduler

    run_scheduler(settings_from_env())


@main.command()
@click.option("--port", default=None, type=int, help=f"Port to serve on (default {DEFAULT_PORT}, or a free one).")
@click.option("--customer", "customer_number", default="+15550001234", show_default=True, help="The number you text from.")
@click.option("--number", "business_number", default="+15550100000", show_default=True, help="The demo business number.")
def demo(port: int | None, customer_number: str, business_number: str) -> None:
    """Start the gateway on embedded defaults with a demo assistant, and text it from the terminal."""
    from gateway.demo import run_demo

    run_demo(settings_from_env(), port, customer_number, business_number)


@main.command()
@click.option("--to", "to", required=True, help="The business number (Twilio's To).")
@click.option("--from", "from_", required=True, help="The customer's number (Twilio's From).")
@click.option("--url", default=None, help="Where the gateway listens (default GATEWAY_PUBLIC_URL or localhost).")
@click.option("--media", multiple=True, help="A media URL to attach (repeatable).")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for replies.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.argument("text")
def simulate(to: str, from_: str, url: str | None, media: tuple[str, ...], timeout: float, as_json: bool, text: str) -> None:
    """Send one signed inbound webhook to a running gateway and print the replies."""
    from gateway.demo import phone_for

    settings = settings_from_env()
    phone = phone_for(settings, url)
    try:
        sent = phone.text(to, from_, text, [(m, "image/jpeg") for m in media])
        if sent.http_status != 200:
            _fail(f"the gateway answered {sent.http_status}: {sent.body.strip()}")
        outcome = phone.wait(sent.sid, timeout)
    finally:
        phone.close()
    if outcome is None:
        _fail("the gateway accepted the text but did not store it (is the To number configured?)")
    if as_json:
        print_json({"messageSid": sent.sid, **outcome})
    else:
        for reply in outcome["replies"]:
            click.echo(reply["content"])
        if outcome["inbound"]["status"] == "failed":
            click.echo(f"(text failed: {outcome['inbound']['errorMessage']})", err=True)
    if not outcome["done"]:
        _fail(f"no complete answer within {timeout:g}s (text is {outcome['inbound']['status']})")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def sweep(as_json: bool) -> None:
    """Run the expiry and recovery sweep once."""
    from dataclasses import asdict

    from gateway.services.sweeper import count_expired
    from gateway.services.sweeper import sweep as run_sweep

    with runtime_for_command(start_queue=True) as runtime:
        with progress(count_expired(runtime), "completing expired sessions") as bar:
            report = run_sweep(runtime, progress=bar.update)
    if as_json:
        print_json(asdict(report))
        return
    click.echo(
        f"expired sessions completed: {report.expired}; "
        f"turns re-enqueued: {report.turns_recovered}; sends re-enqueued: {report.sends_recovered}; "
        f"event deliveries re-enqueued: {report.events_recovered}"
    )


# -- database ------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database migrations."""


@db.command()
@click.option("--json", "as_json", is_flag=True, help="Print the applied revisions as JSON.")
def upgrade(as_json: bool) -> None:
    """Apply pending Alembic migrations."""
    from gateway.db.engine import make_engine
    from gateway.db.migrate import pending_revisions
    from gateway.db.migrate import upgrade as apply

    settings = settings_from_env()
    engine = make_engine(settings.sqlalchemy_url)
    try:
        pending = pending_revisions(engine)
        apply(engine)
    finally:
        engine.dispose()
    if as_json:
        print_json({"applied": list(reversed(pending))})  # oldest first, the order they ran in
        return
    click.echo(f"database is up to date ({len(pending)} migration(s) applied)")


from gateway import cli_admin  # noqa: E402,F401  (registers keys, assistants, numbers, sessions)
