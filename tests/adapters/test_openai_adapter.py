"""The openai adapter (SPEC section 7) against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import time
from dataclasses import replace
from email.utils import formatdate

import pytest

from adapters.base import HistoryItem, Media, PermanentEngineError, Reply, TransientEngineError, UserTurn
from tests.adapters.harness import UPSTREAM, Case, Exactly, Expect, params, run
from tests.support.fake_engines import Answer

KEY = "sk-test-9d8c7b6a5f4e3d2c1b0a"
CONFIG = {"provider": "openai", "baseUrl": UPSTREAM + "/v1", "apiKey": KEY, "model": "gpt-test"}
AUTH = {"Authorization": f"Bearer {KEY}"}
PATH = "/v1/chat/completions"
SYSTEM = "You are the assistant of Harbor Bikes in Oslo."
HISTORY = [HistoryItem("user", "hi"), HistoryItem("assistant", "Hello! How can I help?")]


def completion(content="Open 9 to 5.", *, usage=None, cost=None, message=None) -> Answer:
    """A chat.completion object as OpenAI sends it (the official client parses these; see test_openai_client)."""
    body = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1735689600, "model": "gpt-test",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": message or {"role": "assistant", "content": content, "refusal": None}}],
        "usage": usage or {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
    }
    if cost is not None:
        body["cost"] = cost
    return Answer(200, body)


def asks(messages, **body) -> Expect:
    return Expect("POST", PATH, AUTH, {"model": "gpt-test", "messages": Exactly(messages), **body})


def user(content) -> dict:
    return {"role": "user", "content": content}


def said(item: HistoryItem) -> dict:
    return {"role": item.role, "content": item.content}


def history(*lengths: int) -> list[HistoryItem]:
    """Alternating user/assistant messages of the given lengths, oldest first; each text its own letter."""
    return [HistoryItem("user" if i % 2 == 0 else "assistant", chr(ord("a") + i) * n) for i, n in enumerate(lengths)]


ONE_IMAGE = (Media("https://media.example/bike.jpg", "image/jpeg"),)
RETRY_DATE = formatdate(time.time() + 3600, usegmt=True)  # an hour from when the module was loaded

CASES = [
    Case(
        "happy path: system prompt, history, then the new turn; nothing else sent",
        CONFIG,
        context={"system_prompt": SYSTEM, "history": list(HISTORY)},
        turns=(UserTurn("what are your hours?"),),
        answers=(completion(),),
        requests=(Expect("POST", PATH, AUTH, Exactly({"model": "gpt-test", "messages": [
            {"role": "system", "content": SYSTEM}, said(HISTORY[0]), said(HISTORY[1]),
            user("what are your hours?")]})),),
        replies=(Reply(["Open 9 to 5."]),),
    ),
    Case(
        "without a system prompt the messages start with the history",
        CONFIG,
        context={"history": list(HISTORY)},
        answers=(completion(),),
        requests=(Expect("POST", PATH, AUTH, Exactly({"model": "gpt-test", "messages": [
            said(HISTORY[0]), said(HISTORY[1]), user("hello")]})),),
        replies=(Reply(["Open 9 to 5."]),),
    ),
    Case(
        "state: nothing kept between turns, every turn carries its own history",
        CONFIG,
        turns=(UserTurn("one"), UserTurn("two")),
        answers=(completion("1"), completion("2")),
        requests=(asks([user("one")]), asks([user("two")])),
        replies=(Reply(["1"]), Reply(["2"])),
        state=Exactly({}),
    ),
    Case(
        "overrides: the session's model, temperature and maxTokens (as max_tokens) win over the settings",
        {**CONFIG, "temperature": 0.9, "maxTokens": 500},
        context={"overrides": {"model": "gpt-override", "temperature": 0.2, "maxTokens": 50,
                               "variableValues": {"city": "Oslo"}}},
        answers=(completion(),),
        requests=(Expect("POST", PATH, AUTH, Exactly({"model": "gpt-override", "messages": [user("hello")],
                                                      "temperature": 0.2, "max_tokens": 50})),),
        replies=(Reply(["Open 9 to 5."]),),
    ),
    Case(
        "settings: temperature and maxTokens from the engine settings when the session sets none",
        {**CONFIG, "temperature": 0.9, "maxTokens": 500},
        answers=(completion(),),
        requests=(asks([user("hello")], temperature=0.9, max_tokens=500),),
        replies=(Reply(["Open 9 to 5."]),),
    ),
    Case(
        "variables: the system prompt goes as the gateway filled it in",
        CONFIG,
        context={"system_prompt": "Shop in Oslo", "variables": {"city": "Oslo"}},
        answers=(completion(),),
        requests=(asks([{"role": "system", "content": "Shop in Oslo"}, user("hello")]),),
        replies=(Reply(["Open 9 to 5."]),),
    ),
    Case(
        "media: an image becomes an image_url part after the text",
        CONFIG,
        turns=(UserTurn("is this fixable?", ONE_IMAGE),),
        answers=(completion("Yes."),),
        requests=(asks([user([{"type": "text", "text": "is this fixable?"},
                              {"type": "image_url", "image_url": {"url": "https://media.example/bike.jpg"}}])]),),
        replies=(Reply(["Yes."]),),
    ),
    Case(
        "media: an image without text is sent as the image alone; other media as a note",
        CONFIG,
        turns=(UserTurn("", ONE_IMAGE + (Media("https://media.example/v.amr", "audio/amr"),)),),
        answers=(completion("Nice."),),
        requests=(asks([user([{"type": "text", "text": "[1 attachment: audio/amr]"},
                              {"type": "image_url", "image_url": {"url": "https://media.example/bike.jpg"}}])]),),
        replies=(Reply(["Nice."]),),
    ),
    Case(
        "media: earlier attachments appear in history as a note",
        CONFIG,
        context={"history": [HistoryItem("user", "see", ONE_IMAGE)]},
        answers=(completion(),),
        requests=(asks([user("see\n[1 attachment: image/jpeg]"), user("hello")]),),
        replies=(Reply(["Open 9 to 5."]),),
    ),
    Case(
        "history trimming: history exactly at the budget is sent whole",
        {**CONFIG, "maxHistoryChars": 10},
        context={"history": history(4, 3, 3)},
        answers=(completion(),),
        requests=(asks([said(item) for item in history(4, 3, 3)] + [user("hello")]),),
        replies=(Reply(["Open 9 to 5."]),),
    ),
    Case(
        "history trimming: one character over the budget drops the oldest message",
        {**CONFIG, "maxHistoryChars": 10},
        context={"history": history(5, 3, 3)},
        answers=(completion(),),
        requests=(asks([said(item) for item in history(5, 3, 3)[1:]] + [user("hello")]),),
        replies=(Reply(["Open 9 to 5."]),),
    ),
    Case(
        "history trimming: the default budget is 16000 characters",
        CONFIG,
        context={"history": history(1, 8000, 8000)},
        answers=(completion(),),
        requests=(asks([said(item) for item in history(1, 8000, 8000)[1:]] + [user("hello")]),),
        replies=(Reply(["Open 9 to 5."]),),
    ),
    Case(
        "history trimming: the system prompt and the new turn are never trimmed",
        {**CONFIG, "maxHistoryChars": 5},
        context={"system_prompt": "S" * 50, "history": history(6)},
        turns=(UserTurn("T" * 50),),
        answers=(completion(),),
        requests=(asks([{"role": "system", "content": "S" * 50}, user("T" * 50)]),),
        replies=(Reply(["Open 9 to 5."]),),
    ),
    Case(
        "cost: a top-level cost is recorded",
        CONFIG,
        answers=(completion(cost=0.0031),),
        requests=(asks([user("hello")]),),
        replies=(Reply(["Open 9 to 5."], 0.0031),),
    ),
    Case(
        "cost: usage.cost is recorded (OpenRouter-style)",
        CONFIG,
        answers=(completion(usage={"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cost": 0.0007}),),
        requests=(asks([user("hello")]),),
        replies=(Reply(["Open 9 to 5."], 0.0007),),
    ),
    Case(
        "cost: usage tokens times the configured prices per million tokens",
        {**CONFIG, "pricePerMillionInputTokens": 2.5, "pricePerMillionOutputTokens": 10},
        answers=(completion(usage={"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}),),
        requests=(asks([user("hello")]),),
        replies=(Reply(["Open 9 to 5."], 0.0075),),
    ),
    Case(
        "a refusal is the reply when there is no content",
        CONFIG,
        answers=(completion(message={"role": "assistant", "content": None, "refusal": "I can't help with that."}),),
        requests=(asks([user("hello")]),),
        replies=(Reply(["I can't help with that."]),),
    ),
    Case(
        "tolerated: content given as parts (as some non-OpenAI servers answer) is joined",
        CONFIG,
        answers=(completion(message={"role": "assistant", "content": [{"type": "text", "text": "Open "},
                                                                      {"type": "text", "text": "daily."}]}),),
        requests=(asks([user("hello")]),),
        replies=(Reply(["Open daily."]),),
    ),
    Case(
        "429 with Retry-After is transient and carries the delay",
        CONFIG,
        answers=(Answer(429, {"error": {"message": "Rate limit reached", "type": "requests"}},
                        headers=(("Retry-After", "20"),)),),
        requests=(asks([user("hello")]),),
        error=TransientEngineError, reason="openai engine answered HTTP 429 to /v1/chat/completions", retry_after=20,
    ),
    Case(
        "429 with Retry-After as an HTTP date is transient and carries the delay",
        CONFIG,
        answers=(Answer(429, {}, headers=(("Retry-After", RETRY_DATE),)),),
        requests=(asks([user("hello")]),),
        error=TransientEngineError, reason="HTTP 429", retry_after=(3000, 3600),
    ),
    Case(
        "500 is transient",
        CONFIG,
        answers=(Answer(500, {"error": {"message": "The server had an error"}}),),
        requests=(asks([user("hello")]),),
        error=TransientEngineError, reason="HTTP 500",
    ),
    Case(
        "401 is permanent, and the server's message (which quotes the key) is not repeated",
        CONFIG,
        answers=(Answer(401, {"error": {"message": f"Incorrect API key provided: {KEY}.",
                                        "code": "invalid_api_key"}}),),
        requests=(asks([user("hello")]),),
        error=PermanentEngineError, reason="openai engine answered HTTP 401",
    ),
    Case(
        "400 is permanent",
        CONFIG,
        answers=(Answer(400, {"error": {"message": "Invalid 'messages'"}}),),
        requests=(asks([user("hello")]),),
        error=PermanentEngineError, reason="HTTP 400",
    ),
    Case(
        "malformed JSON is permanent",
        CONFIG,
        answers=(Answer(200, body=b'{"choices": [{"message": '),),
        requests=(asks([user("hello")]),),
        error=PermanentEngineError, reason="not JSON",
    ),
    Case(
        "a body its Content-Encoding cannot decode (not gzip at all) is permanent, not a crash",
        CONFIG,
        answers=(Answer(200, body=b"this is not gzip data", headers=(("Content-Encoding", "gzip"),)),),
        requests=(asks([user("hello")]),),
        error=PermanentEngineError, reason="openai engine",
    ),
    Case(
        "JSON nested too deep to decode is permanent, not a crash",
        CONFIG,
        answers=(Answer(200, body=b"[" * 200_000 + b"]" * 200_000),),
        requests=(asks([user("hello")]),),
        error=PermanentEngineError, reason="not JSON",
    ),
    Case(
        "wrong shape: no choices is permanent",
        CONFIG,
        answers=(Answer(200, {"object": "chat.completion", "choices": []}),),
        requests=(asks([user("hello")]),),
        error=PermanentEngineError, reason="malformed: no choices",
    ),
    Case(
        "wrong shape: non-text content is permanent",
        CONFIG,
        answers=(completion(message={"role": "assistant", "content": 42}),),
        requests=(asks([user("hello")]),),
        error=PermanentEngineError, reason="malformed",
    ),
    Case(
        "a timeout is transient",
        CONFIG,
        timeout=0.3,
        answers=(replace(completion(), delay=1.0),),
        requests=(asks([user("hello")]),),
        error=TransientEngineError, reason="openai engine timed out after 0.3s",
    ),
    Case(
        "connection refused is transient",
        CONFIG,
        upstream="closed",
        error=TransientEngineError, reason="openai engine unreachable",
    ),
    Case(
        "an empty reply is permanent",
        CONFIG,
        answers=(completion(""),),
        requests=(asks([user("hello")]),),
        error=PermanentEngineError, reason="openai engine returned an empty reply",
    ),
    Case(
        "no content and no refusal is an empty reply",
        CONFIG,
        answers=(completion(message={"role": "assistant", "content": None}),),
        requests=(asks([user("hello")]),),
        error=PermanentEngineError, reason="empty reply",
    ),
]


@pytest.mark.parametrize("case", params(CASES))
def test_openai_adapter(case: Case, caplog):
    """Each labelled case: the request sent, the reply or error."""
    run(case, caplog)
