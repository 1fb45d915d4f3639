"""The whole path, over real HTTP: signed webhook -> session -> engine -> queued reply -> Twilio -> status callback.

Runs on four stacks: the embedded in-process queue and RQ on our own
redis-server with a `gateway worker` subprocess, each on SQLite and on
PostgreSQL. Twilio is the real `twilio` client talking to a fake Twilio
server on 127.0.0.1, which posts signed status callbacks back.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from gateway import create_app
from gateway.schemas import AssistantCreate, PhoneNumberCreate
from gateway.services.api_keys import create_key
from gateway.services.assistants import create_assistant
from gateway.services.phone_numbers import create_phone_number
from gateway.simulator import Phone
from tests.conftest import BUSINESS, CUSTOMER
from tests.support.fake_twilio import ACCOUNT_SID, AUTH_TOKEN
from tests.support import observe
from tests.support.net import LiveServer, free_port
from tests.support.processes import GatewayProcess, clean_env

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    runtime: object
    server: LiveServer
    phone: Phone
    api: httpx.Client
    worker: GatewayProcess | None


@pytest.fixture(
    params=[
        "embedded-sqlite",
        pytest.param("embedded-postgres", marks=pytest.mark.postgres),
        pytest.param("redis-sqlite", marks=pytest.mark.redis),
        pytest.param("redis-postgres", marks=[pytest.mark.redis, pytest.mark.postgres]),
    ]
)
def stack(request, settings, make_runtime, fake_twilio, instance_path):
    queue_kind, database = request.param.split("-")
    database_url = request.getfixturevalue("postgres_url") if database == "postgres" else None
    redis_url = request.getfixturevalue("redis_url") if queue_kind == "redis" else None
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    settings = settings.replace(
        database_url=database_url,
        redis_url=redis_url,
        public_url=public_url,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base_url=fake_twilio.base_url,
    )
    runtime = make_runtime(settings)
    server = LiveServer(create_app(runtime=runtime), port).start()
    worker = None
    if redis_url:
        worker = GatewayProcess(
            ["worker"],
            clean_env(
                GATEWAY_DATABASE_URL=database_url or f"sqlite:///{instance_path / 'gateway.db'}",
                GATEWAY_REDIS_URL=redis_url,
                GATEWAY_PUBLIC_URL=public_url,
                GATEWAY_INSTANCE_PATH=str(instance_path),
                TWILIO_ACCOUNT_SID=ACCOUNT_SID,
                TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                TWILIO_API_BASE_URL=fake_twilio.base_url,
            ),
        ).start()
    key = create_key(runtime, "e2e")[1]
    api = httpx.Client(base_url=public_url, headers={"x-api-key": key}, timeout=10)
    phone = Phone(public_url, AUTH_TOKEN, ACCOUNT_SID)
    yield Stack(runtime, server, phone, api, worker)
    phone.close()
    api.close()
    if worker is not None:
        worker.stop()
    server.stop()


def wait_until(predicate, timeout: float = 20.0, message: str = "condition", worker: GatewayProcess | None = None):
    return observe.wait_until(predicate, timeout, message, detail=(lambda: worker.output()) if worker else None)


def test_a_text_travels_the_whole_path_and_context_carries_over(stack, fake_twilio):
    """Two texts: each answered through Twilio, delivered by callback, the second using the first as context."""
    assistant = create_assistant(stack.runtime, AssistantCreate(name="Harbor", engine={"provider": "faq"}))
    number = create_phone_number(
        stack.runtime, PhoneNumberCreate(number=BUSINESS, assistantId=assistant.id, messagesPerSecond=50)
    )

    first = stack.phone.text(BUSINESS, CUSTOMER, "what are your hours?")
    assert first.http_status == 200
    created = fake_twilio.wait_for_creates(1, timeout=30)[0]
    assert created.to == CUSTOMER
    assert created.from_ == number.number
    assert "open" in created.body.lower()

    second = stack.phone.text(BUSINESS, CUSTOMER, "what was my first question?")
    assert second.http_status == 200
    created_again = fake_twilio.wait_for_creates(2, timeout=30)[1]
    assert created_again.body == 'Your first question was: "what are your hours?"'

    # The status callback URL carries the gateway's own message id.
    callback = urlparse(created.status_callback)
    assert f"{callback.scheme}://{callback.netloc}" == stack.server.url
    assert callback.path == "/twilio/status"
    message_id = parse_qs(callback.query)["messageId"][0]

    def delivered_transcript():
        sessions = stack.api.get("/api/sessions").json()["sessions"]
        if not sessions:
            return None
        messages = stack.api.get(f"/api/sessions/{sessions[0]['id']}").json()["session"]["messages"]
        outbound = [m for m in messages if m["role"] == "assistant"]
        if len(outbound) == 2 and all(m["status"] == "delivered" for m in outbound):
            return messages
        return None

    messages = wait_until(delivered_transcript, message="both replies delivered", worker=stack.worker)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert [m["status"] for m in messages] == ["processed", "delivered", "processed", "delivered"]
    assert messages[1]["id"] == message_id
    assert [messages[1]["twilioSid"], messages[3]["twilioSid"]] == [created.sid, created_again.sid]
    assert messages[1]["segments"] == 1 and messages[1]["encoding"] == "GSM-7"
    assert len({m["sessionId"] for m in messages}) == 1


def test_status_callbacks_only_move_forward(stack, fake_twilio):
    """A late 'sent' after 'delivered' and a repeated callback leave the message delivered."""
    assistant = create_assistant(stack.runtime, AssistantCreate(name="Echo", engine={"provider": "echo"}))
    create_phone_number(stack.runtime, PhoneNumberCreate(number=BUSINESS, assistantId=assistant.id))
    fake_twilio.script.callbacks = ("delivered", "sent", "sending", "delivered")

    stack.phone.text(BUSINESS, CUSTOMER, "ping")
    created = fake_twilio.wait_for_creates(1, timeout=30)[0]
    wait_until(lambda: len(fake_twilio.callbacks_sent) == 4, message="four callbacks", worker=stack.worker)
    assert all(code == 200 for _, _, code in fake_twilio.callbacks_sent)
    sessions = stack.api.get("/api/sessions").json()["sessions"]
    transcript = stack.api.get(f"/api/sessions/{sessions[0]['id']}").json()["session"]["messages"]
    reply = [m for m in transcript if m["role"] == "assistant"][0]
    assert reply["twilioSid"] == created.sid
    assert reply["status"] == "delivered"
