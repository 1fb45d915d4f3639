"""What `gateway serve` writes to its log during a full run holds no secret and no whole phone number.

A real `gateway serve` process at GATEWAY_LOG_LEVEL=DEBUG answers texts through an
OpenAI-compatible engine (with an API key), sends replies through the real twilio
client to the fake Twilio (with the account's auth token), takes status callbacks,
delivers signed events (with the assistant's serverSecret) and serves API calls
(with an API key), including an engine that refuses its key and a wrongly signed
webhook. Then its whole output is scanned.
"""

from __future__ import annotations

import re

import httpx
import pytest

from gateway.bootstrap import build_runtime
from gateway.config import Settings
from gateway.domain.phone import mask
from gateway.schemas import AssistantCreate, PhoneNumberCreate
from gateway.services.api_keys import create_key
from gateway.services.assistants import create_assistant
from gateway.services.phone_numbers import create_phone_number
from gateway.simulator import Phone
from tests.conftest import BUSINESS, CUSTOMER
from tests.support.event_receiver import EventReceiver
from tests.support.fake_engines import FakeOpenAI
from tests.support.fake_twilio import ACCOUNT_SID, AUTH_TOKEN
from tests.support.net import free_port, wait_for_http
from tests.support.processes import GatewayProcess, clean_env

pytestmark = pytest.mark.slow

ENGINE_KEY = "sk-engine-secret-4242424242424242"
WRONG_ENGINE_KEY = "sk-wrong-engine-key-1717171717171717"
SERVER_SECRET = "event-signing-secret-9393939393"


def test_a_full_run_logs_ids_but_no_secret_and_no_whole_phone_number(tmp_path, fake_twilio):
    folder = tmp_path / "instance"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    receiver = EventReceiver(secret=SERVER_SECRET).start()
    with FakeOpenAI(ENGINE_KEY) as engine:
        runtime = build_runtime(Settings.from_env({}, instance_path=folder), start_embedded=False)
        try:
            good = create_assistant(runtime, AssistantCreate(
                name="Good", engine={"provider": "openai", "baseUrl": engine.base_url, "apiKey": ENGINE_KEY,
                                     "model": "fake-model"},
                serverUrl=receiver.url, serverSecret=SERVER_SECRET))
            refused = create_assistant(runtime, AssistantCreate(
                name="Refused", engine={"provider": "openai", "baseUrl": engine.base_url, "apiKey": WRONG_ENGINE_KEY,
                                        "model": "fake-model"}))
            create_phone_number(runtime, PhoneNumberCreate(number=BUSINESS, assistantId=good.id, messagesPerSecond=100))
            api_key = create_key(runtime, "log-scan")[1]
        finally:
            runtime.close()

        process = GatewayProcess(["serve", "--port", str(port)], clean_env(
            GATEWAY_INSTANCE_PATH=str(folder), GATEWAY_PUBLIC_URL=url, GATEWAY_LOG_LEVEL="DEBUG",
            TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_API_BASE_URL=fake_twilio.base_url,
        )).start()
        try:
            wait_for_http(f"{url}/healthz", timeout=30)
            phone = Phone(url, AUTH_TOKEN, ACCOUNT_SID)
            assert phone.text(BUSINESS, CUSTOMER, "hello there").http_status == 200
            fake_twilio.wait_for_creates(1, timeout=20)
            forged = httpx.post(f"{url}/twilio/sms", data=phone.params(BUSINESS, CUSTOMER, "forged"),
                                headers={"X-Twilio-Signature": "not-the-signature"})
            assert forged.status_code == 403
            headers = {"Authorization": f"Bearer {api_key}"}
            chat = httpx.post(f"{url}/api/chats", json={"assistantId": good.id, "input": "hi from the API"},
                              headers=headers, timeout=30)
            assert chat.status_code == 201, chat.text
            failed = httpx.post(f"{url}/api/chats", json={"assistantId": refused.id, "input": "will fail"},
                                headers={"x-api-key": api_key}, timeout=60)
            assert failed.status_code == 502, failed.text
            assert httpx.get(f"{url}/api/assistants", headers=headers).status_code == 200
            receiver.wait_for(lambda: receiver.of_type("chat.created"), timeout=20, what="a chat.created event")
        finally:
            process.stop()
            receiver.stop()
        phone.close()

    output = process.output()
    for secret in (ENGINE_KEY, WRONG_ENGINE_KEY, SERVER_SECRET, AUTH_TOKEN, api_key):
        assert secret not in output, f"a secret ({secret[:6]}...) is in the log"
        assert secret[-12:] not in output, f"the tail of a secret ({secret[:6]}...) is in the log"
    for number in (CUSTOMER, BUSINESS):
        for form in (number, number[1:], number[2:]):  # E.164, without +, without the country code
            assert form not in output, f"a whole phone number ({mask(number)}) is in the log"
    assert mask(CUSTOMER) in output  # masked numbers are there to tell conversations apart
    # Structured lines that carry the ids an operator searches by.
    assert re.search(r"event=webhook\.stored message=[0-9a-f-]{36} session=[0-9a-f-]{36}", output)
    assert re.search(r"event=turn\.processed session=[0-9a-f-]{36}", output)
    assert "event=webhook.bad_signature" in output
