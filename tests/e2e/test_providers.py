"""Each remote engine end to end: signed texts to /twilio/sms, answered by that engine's fake, sent to the fake Twilio.

An embedded gateway on a real port (tests/conftest.py ``live_gateway``) gets
two texts from one customer. Each engine's fake speaks its protocol over
HTTP on 127.0.0.1 and numbers the turns of its remote conversation, so the
second reply shows the remote session (or the history) carried over between
turns, through the engine state the gateway stores. No connection may leave
127.0.0.1.
"""

from __future__ import annotations

import httpx
import pytest

from gateway.schemas import AssistantCreate, PhoneNumberCreate
from gateway.services.api_keys import create_key
from gateway.services.assistants import create_assistant
from gateway.services.phone_numbers import create_phone_number
from tests.adapters.network_guard import network_guard  # noqa: F401  (autouse: nothing leaves 127.0.0.1)
from tests.conftest import BUSINESS, CUSTOMER
from tests.support.fake_engine import FakeEngine
from tests.support.fake_engines import FakeCallHQ, FakeOpenAI, FakeVapi

KEY = "engine-key-e2e-0123456789abcdef"


def configure(gw, engine: dict, **assistant) -> str:
    created = create_assistant(gw.runtime, AssistantCreate(name="Engine", engine=engine, **assistant))
    create_phone_number(gw.runtime, PhoneNumberCreate(number=BUSINESS, assistantId=created.id, messagesPerSecond=100))
    return created.id


def converse(gw, fake_twilio, *texts: str, media=None) -> list[str]:
    """Send each text after the reply to the one before went out; return the bodies Twilio was asked to send."""
    for count, text in enumerate(texts, 1):
        sent = gw.phone.text(BUSINESS, CUSTOMER, text, media=media if count == 1 else None)
        assert sent.http_status == 200, sent.body
        fake_twilio.wait_for_creates(count, timeout=15)
    creates = fake_twilio.wait_for_creates(len(texts))
    assert all(create.to == CUSTOMER and create.from_ == BUSINESS for create in creates)
    return [create.body for create in creates]


def engine_state(gw) -> tuple[dict, float]:
    """The one session's engine state and cost."""
    from sqlalchemy import select

    from gateway.db.models import Session

    with gw.runtime.db.begin() as tx:
        (session,) = tx.scalars(select(Session))
        return dict(session.engine_state), session.cost


def test_callhq_end_to_end(live_gateway, fake_twilio):
    """callhq: one remote session for two texts, the assistant's variables passed, cost summed, the key masked."""
    with FakeCallHQ(KEY, assistant_ids=("asst_remote",)) as fake:
        gw = live_gateway()
        assistant_id = configure(gw, {"provider": "callhq", "baseUrl": fake.url, "apiKey": KEY,
                                      "assistantId": "asst_remote"}, variableValues={"city": "Oslo"})
        bodies = converse(gw, fake_twilio, "hello", "and again")

    assert bodies == ["callhq heard: hello (turn 1)", "callhq heard: and again (turn 2)"]
    assert len(fake.calls("/api/sessions")) == 1
    (conversation,) = fake.sessions.values()
    assert conversation.variables == [{"city": "Oslo"}, {"city": "Oslo"}]
    state, cost = engine_state(gw)
    assert state["sessionId"] in fake.sessions and cost == pytest.approx(0.004)

    api_key = create_key(gw.runtime, "e2e")[1]
    shown = httpx.get(f"{gw.url}/api/assistants/{assistant_id}", headers={"x-api-key": api_key}).text
    assert KEY not in shown and "****cdef" in shown


def test_callhq_remote_session_opened_by_a_failed_turn_is_reused(live_gateway, fake_twilio):
    """The first chat fails permanently after the remote session was opened; the next text reuses that session."""
    with FakeCallHQ(KEY, assistant_ids=("asst_remote",)) as fake:
        fake.failing_chats.append(400)
        gw = live_gateway()
        configure(gw, {"provider": "callhq", "baseUrl": fake.url, "apiKey": KEY, "assistantId": "asst_remote"},
                  fallbackMessage="Sorry, try again later.")
        bodies = converse(gw, fake_twilio, "hello", "and again")

    assert bodies == ["Sorry, try again later.", "callhq heard: and again (turn 1)"]
    assert len(fake.calls("/api/sessions")) == 1
    assert [m.status for m in gw.messages("user")] == ["failed", "processed"]


@pytest.mark.parametrize("sessions", [True, False], ids=["with sessions", "chained chats"])
def test_vapi_end_to_end(live_gateway, fake_twilio, sessions):
    """vapi: one remote session for two texts, or, where the server offers none, chats chained by previousChatId."""
    with FakeVapi(KEY, assistant_ids=("asst_vapi",), sessions=sessions) as fake:
        gw = live_gateway()
        configure(gw, {"provider": "vapi", "baseUrl": fake.url, "apiKey": KEY, "assistantId": "asst_vapi"})
        bodies = converse(gw, fake_twilio, "hello", "and again")

    assert bodies == ["vapi heard: hello (turn 1)", "vapi heard: and again (turn 2)"]
    assert len(fake.calls("/session")) == 1  # asked once; without sessions the answer (404) is remembered
    second_chat = fake.calls("/chat")[1].json
    state, _ = engine_state(gw)
    if sessions:
        assert second_chat["sessionId"] == state["sessionId"] and len(fake.sessions) == 1
    else:
        assert "sessionId" not in second_chat and second_chat["previousChatId"] == "chat_1"
        assert state["chaining"] is True and state["previousChatId"] == "chat_2"


def test_openai_end_to_end(live_gateway, fake_twilio):
    """openai: the system prompt with variables filled in, the photo as an image part, the first turn as history."""
    with FakeOpenAI(KEY, models=("fake-model",)) as fake:
        gw = live_gateway()
        configure(gw, {"provider": "openai", "baseUrl": fake.base_url, "apiKey": KEY, "model": "fake-model"},
                  systemPrompt="You help customers of Harbor Bikes in {{city}}.", variableValues={"city": "Oslo"})
        bodies = converse(gw, fake_twilio, "fixable?", "thanks",
                          media=[("https://media.example/bike.jpg", "image/jpeg")])

    assert bodies == ["openai heard: fixable? https://media.example/bike.jpg (2 messages)",
                      "openai heard: thanks (4 messages)"]
    first, second = (request.json for request in fake.calls("/v1/chat/completions"))
    assert first["messages"][0] == {"role": "system", "content": "You help customers of Harbor Bikes in Oslo."}
    assert first["messages"][1]["content"][1] == {"type": "image_url",
                                                  "image_url": {"url": "https://media.example/bike.jpg"}}
    assert second["messages"][1:] == [
        {"role": "user", "content": "fixable?\n[1 attachment: image/jpeg]"},
        {"role": "assistant", "content": bodies[0]},
        {"role": "user", "content": "thanks"},
    ]


def test_webhook_end_to_end(live_gateway, fake_twilio):
    """webhook: each text POSTed signed with the serverSecret, with the earlier turn as history."""
    secret = "s" * 32
    engine = FakeEngine(secret=secret).start()
    try:
        gw = live_gateway()
        configure(gw, {"provider": "webhook", "url": engine.url}, serverSecret=secret)
        bodies = converse(gw, fake_twilio, "hello", "and again")
    finally:
        engine.stop()

    assert bodies == ["re: hello", "re: and again"]
    first, second = engine.calls
    assert first.signature_ok and second.signature_ok
    history = [(item["role"], item["content"]) for item in second.history]
    assert history == [("user", "hello"), ("assistant", "re: hello")]
