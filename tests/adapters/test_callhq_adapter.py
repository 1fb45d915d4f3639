"""The callhq adapter (SPEC section 7) against a scripted CallHQ-style engine on 127.0.0.1."""

from __future__ import annotations

from dataclasses import replace

import pytest

from adapters.base import HistoryItem, Media, PermanentEngineError, Reply, TransientEngineError, UserTurn
from adapters.http import EngineRefused
from tests.adapters.harness import UPSTREAM, Case, Exactly, Expect, params, run
from tests.support.fake_engines import Answer

KEY = "chq-live-3f9a1c7e5b2d4086"
CONFIG = {"provider": "callhq", "baseUrl": UPSTREAM, "apiKey": KEY, "assistantId": "asst_remote"}
AUTH = {"x-api-key": KEY}
KEPT = {"provider": "callhq", "baseUrl": UPSTREAM, "assistantId": "asst_remote", "sessionId": "ses_kept"}


def session(session_id: str = "ses_1") -> Answer:
    return Answer(201, {"message": "Session created successfully",
                        "session": {"id": session_id, "name": "x", "assistantId": "asst_remote", "status": "active"}})


def chat(*texts: str, cost=None, output=None) -> Answer:
    output = [{"role": "assistant", "content": text} for text in texts] if output is None else output
    return Answer(201, {"message": "Chat created successfully",
                        "chat": {"id": "chat_1", "sessionId": "ses_1", "input": "hello", "output": output,
                                 "status": "completed", "cost": cost}})


def opens(name: str = "gw-sess-1") -> Expect:
    return Expect("POST", "/api/sessions", AUTH, {"name": name, "assistantId": "asst_remote"})


def chats(session_id: str = "ses_1", text: str = "hello", **body) -> Expect:
    return Expect("POST", "/api/chats", AUTH, {"sessionId": session_id, "input": text, **body})


CASES = [
    Case(
        "happy path: opens a remote session, then chats; cost recorded",
        CONFIG,
        answers=(session(), chat("Hi! How can I help?", cost=0.002)),
        requests=(opens(), chats(assistantOverrides=Exactly({"variableValues": {}}))),
        replies=(Reply(["Hi! How can I help?"], 0.002),),
        state={"provider": "callhq", "sessionId": "ses_1"},
    ),
    Case(
        "the session's own name is the remote session's name, cut to 40 characters",
        CONFIG,
        context={"session_name": "Front desk conversation with a very long name"},
        answers=(session(), chat("ok")),
        requests=(opens("Front desk conversation with a very long"), chats()),
        replies=(Reply(["ok"]),),
    ),
    Case(
        "state kept across turns: the remote session is created once",
        CONFIG,
        turns=(UserTurn("hello"), UserTurn("and again")),
        answers=(session(), chat("first"), chat("second")),
        requests=(opens(), chats(), chats(text="and again")),
        replies=(Reply(["first"]), Reply(["second"])),
        state={"sessionId": "ses_1"},
    ),
    Case(
        "a remote session kept from an earlier turn is reused",
        CONFIG,
        context={"state": dict(KEPT)},
        answers=(chat("welcome back"),),
        requests=(chats("ses_kept"),),
        replies=(Reply(["welcome back"]),),
        state={"sessionId": "ses_kept"},
    ),
    Case(
        "state made for another remote assistant starts a new remote session",
        CONFIG,
        context={"state": {**KEPT, "assistantId": "asst_old"}},
        answers=(session("ses_new"), chat("fresh")),
        requests=(opens(), chats("ses_new")),
        replies=(Reply(["fresh"]),),
        state={"assistantId": "asst_remote", "sessionId": "ses_new"},
    ),
    Case(
        "variables and overrides: operator variables passed, built-ins left out, model settings passed",
        CONFIG,
        context={
            "variables": {"city": "Oslo", "plan": "gold", "empty": None, "customer.number": "+14155550123",
                          "customer.name": "Ann", "phoneNumber.number": "+15550100000", "now": "2025-01-01T00:00:00"},
            "overrides": {"variableValues": {"plan": "gold"}, "model": "gpt-4o", "temperature": 0.3, "maxTokens": 99},
            "history": [HistoryItem("user", "earlier"), HistoryItem("assistant", "reply")],
        },
        answers=(session(), chat("ok")),
        requests=(opens(), chats(assistantOverrides=Exactly({
            "variableValues": {"city": "Oslo", "plan": "gold"}, "model": "gpt-4o", "temperature": 0.3, "maxTokens": 99,
        }))),
        replies=(Reply(["ok"]),),
    ),
    Case(
        "media: no media field in the protocol, so the input names the attachments",
        CONFIG,
        context={"state": dict(KEPT)},
        turns=(UserTurn("look at this", (Media("https://media.example/1.jpg", "image/jpeg"),)),),
        answers=(chat("nice bike"),),
        requests=(chats("ses_kept", "look at this\n[1 attachment: image/jpeg]"),),
        replies=(Reply(["nice bike"]),),
    ),
    Case(
        "several assistant outputs are several texts; other roles are skipped",
        CONFIG,
        context={"state": dict(KEPT)},
        answers=(chat(output=[{"role": "tool", "content": "lookup"}, {"role": "assistant", "content": "one"},
                              {"role": "assistant", "content": "two"}]),),
        requests=(chats("ses_kept"),),
        replies=(Reply(["one", "two"]),),
    ),
    Case(
        "the remote session expired: a 404 on the chat opens a new session, once",
        CONFIG,
        context={"state": dict(KEPT)},
        answers=(Answer(404, {"error": {"message": "no session"}}), session("ses_2"), chat("back again")),
        requests=(chats("ses_kept"), opens(), chats("ses_2")),
        replies=(Reply(["back again"]),),
        state={"sessionId": "ses_2"},
    ),
    Case(
        "a 404 again after reopening is an error, not a loop",
        CONFIG,
        context={"state": dict(KEPT)},
        answers=(Answer(404, {}), session("ses_2"), Answer(404, {})),
        requests=(chats("ses_kept"), opens(), chats("ses_2")),
        error=EngineRefused, reason="HTTP 404 to /api/chats",
    ),
    Case(
        "a 404 right after opening a session is an error (wrong assistant or URL)",
        CONFIG,
        answers=(session(), Answer(404, {})),
        requests=(opens(), chats()),
        error=PermanentEngineError, reason="HTTP 404",
    ),
    Case(
        "429 with Retry-After is transient, carries the delay, and keeps the new session for the retry",
        CONFIG,
        answers=(session(), Answer(429, {"error": "slow down"}, headers=(("Retry-After", "7"),))),
        requests=(opens(), chats()),
        error=TransientEngineError, reason="HTTP 429", retry_after=7,
        state={"sessionId": "ses_1"},
    ),
    Case(
        "500 is transient",
        CONFIG,
        context={"state": dict(KEPT)},
        answers=(Answer(500, {"error": "boom"}),),
        requests=(chats("ses_kept"),),
        error=TransientEngineError, reason="callhq engine answered HTTP 500",
    ),
    Case(
        "401 is permanent, and the engine's error text is not repeated",
        CONFIG,
        answers=(Answer(401, {"error": {"message": f"bad key {KEY}"}}),),
        requests=(opens(),),
        error=PermanentEngineError, reason="callhq engine answered HTTP 401 to /api/sessions",
    ),
    Case(
        "400 is permanent",
        CONFIG,
        context={"state": dict(KEPT)},
        answers=(Answer(400, {"error": "bad request"}),),
        requests=(chats("ses_kept"),),
        error=PermanentEngineError, reason="HTTP 400",
    ),
    Case(
        "a redirect is permanent and not followed",
        CONFIG,
        answers=(Answer(302, {}, headers=(("Location", "https://elsewhere.example/api/sessions"),)),),
        requests=(opens(),),
        error=PermanentEngineError, reason="redirects are not followed",
    ),
    Case(
        "malformed JSON is permanent",
        CONFIG,
        context={"state": dict(KEPT)},
        answers=(Answer(201, body=b'{"chat": {"output": '),),
        requests=(chats("ses_kept"),),
        error=PermanentEngineError, reason="not JSON",
    ),
    Case(
        "wrong shape: a chat without an output list is permanent",
        CONFIG,
        context={"state": dict(KEPT)},
        answers=(Answer(201, {"chat": {"id": "chat_1", "output": "hello"}}),),
        requests=(chats("ses_kept"),),
        error=PermanentEngineError, reason="malformed: output is not a list",
    ),
    Case(
        "wrong shape: an answer without chat is permanent",
        CONFIG,
        context={"state": dict(KEPT)},
        answers=(Answer(201, {"output": [{"role": "assistant", "content": "hi"}]}),),
        requests=(chats("ses_kept"),),
        error=PermanentEngineError, reason='expected {"chat": {...}}',
    ),
    Case(
        "wrong shape: a created session without an id is permanent",
        CONFIG,
        answers=(Answer(201, {"session": {"name": "x"}}),),
        requests=(opens(),),
        error=PermanentEngineError, reason="the created session has no id",
    ),
    Case(
        "a timeout is transient",
        CONFIG,
        timeout=0.3,
        context={"state": dict(KEPT)},
        answers=(Answer(201, {}, delay=1.0),),
        requests=(chats("ses_kept"),),
        error=TransientEngineError, reason="timed out after 0.3s",
    ),
    Case(
        "session set-up and chat share one timeout: a slow set-up leaves no time for the chat",
        CONFIG,
        timeout=0.5,
        answers=(replace(session(), delay=0.3), replace(chat("too late"), delay=0.3)),
        requests=(opens(), chats()),
        error=TransientEngineError, reason="timed out",
    ),
    Case(
        "connection refused is transient",
        CONFIG,
        upstream="closed",
        error=TransientEngineError, reason="callhq engine unreachable",
    ),
    Case(
        "a connection dropped without an answer is transient",
        CONFIG,
        context={"state": dict(KEPT)},
        answers=(Answer(drop=True),),
        requests=(chats("ses_kept"),),
        error=TransientEngineError, reason="unreachable",
    ),
    Case(
        "an empty reply is permanent",
        CONFIG,
        context={"state": dict(KEPT)},
        answers=(chat(output=[{"role": "assistant", "content": "  "}]),),
        requests=(chats("ses_kept"),),
        error=PermanentEngineError, reason="callhq engine returned an empty reply",
    ),
]


@pytest.mark.parametrize("case", params(CASES))
def test_callhq_adapter(case: Case, caplog):
    """Each labelled case: the requests made, the reply or error, and the state kept."""
    run(case, caplog)
