"""The fake engines answer like the real ones: checked with the official ``openai`` client and this gateway's own API.

* ``FakeOpenAI`` is driven by ``openai.OpenAI(base_url=..., api_key=...)``;
  the scripted answers of the openai adapter table parse as the client's
  ``ChatCompletion``.
* The callhq adapter and ``FakeCallHQ`` follow the CallHQ session/chat
  shapes, which this gateway's own REST API implements (SPEC section 4); the
  adapter is run against the gateway's API served for real.
"""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletion

from adapters import create_engine
from adapters.base import EngineContext, Media, UserTurn
from gateway import create_app
from gateway.schemas import AssistantCreate
from gateway.services.api_keys import create_key
from gateway.services.assistants import create_assistant
from gateway.services.session_queries import SessionFilter, list_sessions
from tests.adapters.test_openai_adapter import CASES as OPENAI_CASES
from tests.support.fake_engines import FakeCallHQ, FakeOpenAI
from tests.support.net import LiveServer

KEY = "sk-fake-honesty-1234567890"


@pytest.fixture
def fake_openai():
    with FakeOpenAI(KEY, models=("fake-model",)) as fake:
        yield fake


def test_the_official_client_gets_the_fakes_reply(fake_openai):
    """The official client (base_url=fake/v1) sends what the fake checks: path, Bearer key, model, messages."""
    client = openai.OpenAI(base_url=fake_openai.base_url, api_key=KEY, max_retries=0, timeout=5)
    completion = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "what are your hours?"}],
    )
    assert completion.choices[0].message.content == "openai heard: what are your hours? (2 messages)"
    assert completion.usage.total_tokens > 0
    (request,) = fake_openai.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_the_official_client_gets_the_fakes_errors(fake_openai):
    """A wrong key is the client's AuthenticationError, an unknown model its NotFoundError, as with OpenAI."""
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=fake_openai.base_url, api_key="wrong", max_retries=0).chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=fake_openai.base_url, api_key=KEY, max_retries=0).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}])


def test_the_adapter_and_the_official_client_send_the_same_request(fake_openai):
    """For one image turn the adapter's body is what the official client sends for the same messages."""
    image = {"type": "image_url", "image_url": {"url": "https://media.example/bike.jpg"}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "fixable?"}, image]}]
    openai.OpenAI(base_url=fake_openai.base_url, api_key=KEY, max_retries=0).chat.completions.create(
        model="fake-model", messages=messages)

    engine = create_engine({"provider": "openai", "baseUrl": fake_openai.base_url, "apiKey": KEY,
                            "model": "fake-model"})
    context = EngineContext(session_id="s", assistant_id="a", config={})
    reply = engine.reply(context, UserTurn("fixable?", (Media("https://media.example/bike.jpg", "image/jpeg"),)))
    by_client, by_adapter = fake_openai.requests
    assert by_adapter.json == by_client.json
    assert reply.texts == ["openai heard: fixable? https://media.example/bike.jpg (1 messages)"]


def test_the_scripted_openai_answers_parse_as_the_clients_chat_completion():
    """Every successful answer scripted in the openai adapter table is a valid ChatCompletion for the official client.

    Cases labelled "tolerated:" script answers some other servers give, which OpenAI's own shape does not allow.
    """
    answers = [answer.json for case in OPENAI_CASES if case.error is None and not case.label.startswith("tolerated:")
               for answer in case.answers]
    assert answers
    for body in answers:
        ChatCompletion.model_validate(body)


def test_the_callhq_adapter_talks_to_this_gateways_own_callhq_shaped_api(runtime):
    """Pointed at the gateway's API with an echo assistant: one remote session, two chats, the echoed replies."""
    echo = create_assistant(runtime, AssistantCreate(name="Echo", engine={"provider": "echo"}))
    key = create_key(runtime, "callhq-adapter")[1]
    server = LiveServer(create_app(runtime=runtime)).start()
    try:
        engine = create_engine({"provider": "callhq", "baseUrl": server.url, "apiKey": key, "assistantId": echo.id})
        context = EngineContext(session_id="gw-session", assistant_id="a", config={}, variables={"city": "Oslo"},
                                overrides={"model": "m", "temperature": 0.5, "maxTokens": 10})
        first = engine.reply(context, UserTurn("hello"))
        second = engine.reply(context, UserTurn("again"))
    finally:
        server.stop()
    assert (first.texts, second.texts) == (["hello"], ["again"])
    sessions, total = list_sessions(runtime, SessionFilter(), 10, 0)
    assert total == 1 and sessions[0][0].id == context.state["sessionId"]
    assert sessions[0][0].name == "gw-gw-session"


def test_fake_callhq_answers_in_the_shapes_of_this_gateways_api(runtime):
    """FakeCallHQ's session and chat answers carry the same keys as the gateway's own answers."""
    echo = create_assistant(runtime, AssistantCreate(name="Echo", engine={"provider": "echo"}))
    key = create_key(runtime, "shapes")[1]
    client = create_app(runtime=runtime).test_client()
    headers = {"x-api-key": key}
    real_session = client.post("/api/sessions", headers=headers, json={"name": "n", "assistantId": echo.id}).get_json()
    real_chat = client.post("/api/chats", headers=headers,
                            json={"sessionId": real_session["session"]["id"], "input": "hi"}).get_json()
    with FakeCallHQ("k", assistant_ids=("a",)) as fake:
        fake_session = fake.post_session({"name": "n", "assistantId": "a"}).json
        fake_chat = fake.post_chat({"sessionId": fake_session["session"]["id"], "input": "hi"}).json
    assert fake_session["message"] == real_session["message"]
    assert fake_chat["message"] == real_chat["message"]
    assert set(fake_session["session"]) <= set(real_session["session"])
    assert set(fake_chat["chat"]) <= set(real_chat["chat"])
    assert set(fake_chat["chat"]["output"][0]) == set(real_chat["chat"]["output"][0])
