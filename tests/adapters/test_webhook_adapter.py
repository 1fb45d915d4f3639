"""The webhook adapter (SPEC section 7) against a scripted operator endpoint on 127.0.0.1."""

from __future__ import annotations

from dataclasses import replace

import pytest

from adapters.base import HistoryItem, Media, PermanentEngineError, Reply, TransientEngineError, UserTurn
from tests.adapters.harness import UPSTREAM, Case, Exactly, Expect, params, run
from tests.support.fake_engines import Answer

SECRET = "whsec-assistant-5e4d3c2b1a098765"
CONFIG = {"provider": "webhook", "url": UPSTREAM + "/turn"}
SIGNED = {"secret": SECRET}  # the assistant's serverSecret, as the turn service passes it


def calls(message: dict | None = None, **body) -> Expect:
    return Expect("POST", "/turn", {}, {"message": message or {"role": "user", "content": "hello"}, **body},
                  signed_with=SECRET)


def replies(*texts: str, **extra) -> Answer:
    return Answer(200, {"replies": list(texts), **extra})


CASES = [
    Case(
        "happy path: one signed POST of {session, message, history}, {reply} answered",
        CONFIG,
        context={**SIGNED, "customer_number": "+14155550123", "session_name": "Ann"},
        answers=(Answer(200, {"reply": "Hi Ann"}),),
        requests=(calls(
            {"role": "user", "content": "hello", "media": [], "ids": []},
            session={"id": "sess-1", "name": "Ann", "assistantId": "gw-assistant",
                     "customer": {"number": "+14155550123"}},
            history=[],
        ),),
        replies=(Reply(["Hi Ann"]),),
    ),
    Case(
        "{replies} are several texts; blank ones are dropped; cost recorded",
        CONFIG,
        context=SIGNED,
        answers=(replies("one", " ", "two", cost=0.01),),
        requests=(calls(),),
        replies=(Reply(["one", "two"], 0.01),),
    ),
    Case(
        "state: nothing kept, each turn is one call",
        CONFIG,
        context=SIGNED,
        turns=(UserTurn("hello"), UserTurn("again")),
        answers=(Answer(200, {"reply": "1"}), Answer(200, {"reply": "2"})),
        requests=(calls(), calls({"content": "again"})),
        replies=(Reply(["1"]), Reply(["2"])),
        state=Exactly({}),
    ),
    Case(
        "history, variables and overrides are passed",
        CONFIG,
        context={**SIGNED,
                 "history": [HistoryItem("user", "hi"), HistoryItem("assistant", "hello")],
                 "variables": {"city": "Oslo", "customer.number": "+14155550123"},
                 "overrides": {"model": "m-1", "variableValues": {"city": "Oslo"}}},
        answers=(Answer(200, {"reply": "ok"}),),
        requests=(calls(
            session={"variables": Exactly({"city": "Oslo", "customer.number": "+14155550123"}),
                     "assistantOverrides": Exactly({"model": "m-1", "variableValues": {"city": "Oslo"}})},
            history=[{"role": "user", "content": "hi", "media": []},
                     {"role": "assistant", "content": "hello", "media": []}],
        ),),
        replies=(Reply(["ok"]),),
    ),
    Case(
        "media travel as URLs, in the message and in history",
        CONFIG,
        context={**SIGNED, "history": [HistoryItem("user", "", (Media("https://m.example/0.png", "image/png"),))]},
        turns=(UserTurn("and this", (Media("https://m.example/1.jpg", "image/jpeg"),), ("msg-1",)),),
        answers=(Answer(200, {"reply": "seen"}),),
        requests=(calls(
            {"content": "and this", "media": [{"url": "https://m.example/1.jpg", "contentType": "image/jpeg"}],
             "ids": ["msg-1"]},
            history=[{"role": "user", "content": "", "media": [{"url": "https://m.example/0.png",
                                                                 "contentType": "image/png"}]}],
        ),),
        replies=(Reply(["seen"]),),
    ),
    Case(
        "a negative or non-numeric cost is not recorded",
        CONFIG,
        context=SIGNED,
        answers=(Answer(200, {"reply": "ok", "cost": -3}),),
        requests=(calls(),),
        replies=(Reply(["ok"], 0.0),),
    ),
    Case(
        "429 with Retry-After is transient and carries the delay",
        CONFIG,
        context=SIGNED,
        answers=(Answer(429, {}, headers=(("Retry-After", "2.5"),)),),
        requests=(calls(),),
        error=TransientEngineError, reason="webhook engine answered HTTP 429", retry_after=2.5,
    ),
    Case(
        "500 is transient",
        CONFIG,
        context=SIGNED,
        answers=(Answer(500, {}),),
        requests=(calls(),),
        error=TransientEngineError, reason="HTTP 500 to /turn",
    ),
    Case(
        "401 is permanent",
        CONFIG,
        context=SIGNED,
        answers=(Answer(401, {"error": "bad signature"}),),
        requests=(calls(),),
        error=PermanentEngineError, reason="HTTP 401",
    ),
    Case(
        "400 is permanent",
        CONFIG,
        context=SIGNED,
        answers=(Answer(400, {}),),
        requests=(calls(),),
        error=PermanentEngineError, reason="HTTP 400",
    ),
    Case(
        "malformed JSON is permanent",
        CONFIG,
        context=SIGNED,
        answers=(Answer(200, body=b'{"reply": "unterminated'),),
        requests=(calls(),),
        error=PermanentEngineError, reason="not JSON",
    ),
    Case(
        "NaN is not JSON",
        CONFIG,
        context=SIGNED,
        answers=(Answer(200, body=b'{"reply": "hi", "cost": NaN}'),),
        requests=(calls(),),
        error=PermanentEngineError, reason="not JSON",
    ),
    Case(
        "wrong shape: neither reply nor replies is permanent",
        CONFIG,
        context=SIGNED,
        answers=(Answer(200, {"answer": "hi"}),),
        requests=(calls(),),
        error=PermanentEngineError, reason='{"reply": "..."}',
    ),
    Case(
        "wrong shape: a list instead of an object is permanent",
        CONFIG,
        context=SIGNED,
        answers=(Answer(200, ["hi"]),),
        requests=(calls(),),
        error=PermanentEngineError, reason='{"replies": [...]}',
    ),
    Case(
        "a timeout is transient",
        CONFIG,
        timeout=0.3,
        context=SIGNED,
        answers=(Answer(200, {"reply": "late"}, delay=1.0),),
        requests=(calls(),),
        error=TransientEngineError, reason="webhook engine timed out",
    ),
    Case(
        "connection refused is transient",
        CONFIG,
        context=SIGNED,
        upstream="closed",
        error=TransientEngineError, reason="webhook engine unreachable",
    ),
    Case(
        "an empty reply is permanent",
        CONFIG,
        context=SIGNED,
        answers=(replace(replies(), json={"reply": "   "}),),
        requests=(calls(),),
        error=PermanentEngineError, reason="webhook engine returned an empty reply",
    ),
]


@pytest.mark.parametrize("case", params(CASES))
def test_webhook_adapter(case: Case, caplog):
    """Each labelled case: the signed request sent, the reply or error."""
    run(case, caplog)
