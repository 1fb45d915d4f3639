"""``gateway demo``: the gateway on embedded defaults plus a phone in the terminal.

Every text typed here goes the whole way a real one does: a signed webhook
over HTTP, the session, the turn job on the in-process queue, the faq engine,
the send job and the sandbox sender. Each step is printed as it happens.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading

import click

from gateway.config import DEFAULT_PORT, Settings
from gateway.instance import sandbox_account_sid, sandbox_auth_token
from gateway.simulator import Phone

DEMO_ASSISTANT = "Harbor Bikes (demo)"
HANDLING = {
    "opt_out": "STOP keyword: customer opted out, not forwarded to the engine",
    "opt_in": "START keyword: customer opted back in, not forwarded to the engine",
    "help": "HELP keyword: answered with the number's help message",
    "opted_out": "customer is opted out: stored, not forwarded, no reply (text START to opt back in)",
}


def phone_for(settings: Settings, url: str | None) -> Phone:
    """A simulator phone that signs the way the gateway at ``url`` checks."""
    if settings.uses_twilio:
        token, account = settings.twilio_auth_token, settings.twilio_account_sid
    else:
        token = sandbox_auth_token(settings.instance_path)
        account = sandbox_account_sid(token)
    base = url or settings.public_url or f"http://localhost:{DEFAULT_PORT}"
    return Phone(base, token, account, public_url=settings.public_url or base)


def _free_port(preferred: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]


def ensure_demo_setup(runtime, business_number: str):
    """The demo assistant on the demo number, created on first run and reused after."""
    from sqlalchemy import select

    from gateway.db.models import Assistant, PhoneNumber
    from gateway.schemas import AssistantCreate, PhoneNumberCreate, PhoneNumberUpdate
    from gateway.services.assistants import create_assistant
    from gateway.services.phone_numbers import create_phone_number, update_phone_number

    with runtime.db.begin() as tx:
        assistant = tx.scalar(select(Assistant).where(Assistant.name == DEMO_ASSISTANT))
        number = tx.scalar(select(PhoneNumber).where(PhoneNumber.number == business_number))
    if assistant is None:
        assistant = create_assistant(
            runtime,
            AssistantCreate(
                name=DEMO_ASSISTANT,
                engine={"provider": "faq"},
                fallbackMessage="Sorry, something went wrong on our side. Please try again in a minute.",
            ),
        )
    if number is None:
        number = create_phone_number(
            runtime,
            PhoneNumberCreate(
                number=business_number,
                name="Demo number",
                assistantId=assistant.id,
                # Fast enough that the demo never waits on pacing between turns.
                messagesPerSecond=10,
                helpMessage="Harbor Bikes demo: ask about hours, rentals, repairs or prices. Reply STOP to opt out.",
                optOutMessage="You are unsubscribed from Harbor Bikes texts. Reply START to resubscribe.",
                optInMessage="Welcome back! Ask me anything about Harbor Bikes.",
            ),
        )
    elif number.assistant_id is None:
        number = update_phone_number(runtime, number.id, PhoneNumberUpdate(assistantId=assistant.id))
    return assistant, number


def run_demo(settings: Settings, port: int | None, customer_number: str, business_number: str) -> None:
    from gateway import create_app
    from gateway.bootstrap import build_runtime
    from gateway.domain.phone import to_e164
    from gateway.logs import configure_logging
    from gateway.server import describe_mode

    customer_number, business_number = to_e164(customer_number), to_e164(business_number)
    port = _free_port(port or DEFAULT_PORT)
    # The demo is always the embedded default: local SQLite, in-process queue
    # and the sandbox sender, whatever the environment says about production.
    settings = settings.replace(
        database_url=None, redis_url=None, twilio_account_sid=None, twilio_auth_token=None,
        public_url=f"http://127.0.0.1:{port}",
    )
    # The terminal is the demo's screen: only warnings and errors go to the log.
    if settings.log_level == "INFO":
        settings = settings.replace(log_level="WARNING")
    configure_logging(settings.log_level)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    runtime = build_runtime(settings)
    app = create_app(runtime=runtime)
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, name="demo-server", daemon=True).start()
    assistant, number = ensure_demo_setup(runtime, business_number)
    phone = phone_for(settings, settings.public_url)

    out = DemoPrinter(sys.stdout.isatty())
    out.banner(settings, describe_mode(settings), assistant.name, business_number, customer_number)
    try:
        for text in _lines(out):
            out.turn(phone, business_number, customer_number, text)
    finally:
        phone.close()
        server.shutdown()
        runtime.close()
    out.bye()


def _lines(out: "DemoPrinter"):
    while True:
        try:
            line = input(out.prompt()) if out.interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            return
        if not out.interactive:
            if line == "":
                return
            line = line.rstrip("\n")
            click.echo(out.prompt() + line)
        if line.strip() in ("/quit", "/exit"):
            return
        if line.strip():
            yield line


class DemoPrinter:
    def __init__(self, interactive: bool):
        self.interactive = interactive

    def _style(self, text: str, **style) -> str:
        return click.style(text, **style) if self.interactive else text

    def prompt(self) -> str:
        return self._style("you> ", fg="cyan", bold=True)

    def banner(self, settings, mode, assistant_name, business, customer) -> None:
        click.echo(self._style("SMS gateway demo", bold=True) + f": {mode}")
        click.echo(f"  gateway     {settings.public_url}  (webhook: {settings.public_url}/twilio/sms)")
        click.echo(f"  business    {business} -> assistant \"{assistant_name}\" (faq engine)")
        click.echo(f"  your phone  {customer}")
        click.echo("Type a text and press Enter (try: hi / what are your hours? / what was my first question?).")
        click.echo("Ctrl-D or /quit to leave.\n")

    def step(self, label: str, text: str) -> None:
        click.echo("  " + self._style(f"{label:<8}", fg="bright_black") + " " + text)

    def turn(self, phone: Phone, business: str, customer: str, text: str) -> None:
        sent = phone.text(business, customer, text)
        self.step("webhook", f"POST /twilio/sms, signed -> {sent.http_status} in {sent.elapsed_ms:.0f} ms ({sent.sid[:10]}...)")
        if sent.http_status != 200:
            self.step("error", sent.body.strip())
            return
        outcome = phone.wait(sent.sid, timeout=60)
        if outcome is None:
            self.step("error", "the gateway did not store the text")
            return
        session = outcome["session"]
        state = "created" if session["firstText"] else "continued"
        self.step("session", f"{session['id'][:8]} {state}")
        turn = outcome["turn"]
        inbound = outcome["inbound"]
        if turn:
            self.step("engine", f"{turn['engine']} answered in {turn['engineMs']} ms ({inbound['status']})")
        elif inbound["handling"] in HANDLING:
            self.step("turn", HANDLING[inbound["handling"]])
        if inbound["status"] == "failed":
            self.step("failed", inbound["errorMessage"] or "")
        for reply in outcome["replies"]:
            sid = (reply["twilioSid"] or "-")[:10]
            self.step("send", f"{sid}... via sandbox: {reply['status']} ({reply['segments']} segment(s), {reply['encoding']})")
        if not outcome["done"]:
            self.step("waiting", "no complete answer yet; see `gateway sessions show`")
        for reply in outcome["replies"]:
            click.echo(self._style("bot> ", fg="green", bold=True) + reply["content"])
        click.echo()

    def bye(self) -> None:
        click.echo("bye. The conversation is stored: `gateway sessions list` shows it.")
