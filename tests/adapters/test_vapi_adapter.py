"""The vapi adapter (SPEC section 7) against a scripted Vapi-style engine on 127.0.0.1."""

from __future__ import annotations

from dataclasses import replace

import pytest

from adapters.base import Media, PermanentEngineError, Reply, TransientEngineError, UserTurn
from tests.adapters.harness import UPSTREAM, Case, Exactly, Expect, params, run
from tests.support.fake_engines import Answer

KEY = "vapi-private-7c1e9b3a5d2f4e60"
CONFIG = {"provider": "vapi", "baseUrl": UPSTREAM, "apiKey": KEY, "assistantId": "asst_vapi"}
AUTH = {"Authorization": f"Bearer {KEY}"}
IN_SESSION = {"provider": "vapi", "baseUrl": UPSTREAM, "assistantId": "asst_vapi", "sessionId": "session_kept"}
CHAINED = {"provider": "vapi", "baseUrl": UPSTREAM, "assistantId": "asst_vapi", "chaining": True,
           "previousChatId": "chat_kept"}


def session(session_id: str = "session_1") -> Answer:
    return Answer(201, {"id": session_id, "orgId": "org_1", "assistantId": "asst_vapi", "status": "active"})


def chat(*texts: str, chat_id: str = "chat_1", cost=None, output=None) -> Answer:
    output = [{"role": "assistant", "content": text} for text in texts] if output is None else output
    return Answer(201, {"id": chat_id, "orgId": "org_1", "assistantId": "asst_vapi", "input": "hello",
                        "output": output, "cost": cost})


NO_SESSIONS = Answer(404, {"message": "Cannot POST /session", "error": "Not Found", "statusCode": 404})
OPENS = Expect("POST", "/session", AUTH, Exactly({"assistantId": "asst_vapi"}))


def chats(session_id: str = "session_1", text: str = "hello", **body) -> Expect:
    return Expect("POST", "/chat", AUTH, {"assistantId": "asst_vapi", "input": text, "sessionId": session_id, **body},
                  absent=("previousChatId",))


def chained(previous: str | None, text: str = "hello") -> Expect:
    body = {"assistantId": "asst_vapi", "input": text}
    if previous:
        body["previousChatId"] = previous
    return Expect("POST", "/chat", AUTH, body, absent=("sessionId",) if previous else ("sessionId", "previousChatId"))


CASES = [
    Case(
        "happy path: opens a session, then chats with it; cost recorded",
        CONFIG,
        answers=(session(), chat("Hello from Vapi", cost=0.0042)),
        requests=(OPENS, chats(assistantOverrides=Exactly({"variableValues": {}}))),
        replies=(Reply(["Hello from Vapi"], 0.0042),),
        state={"provider": "vapi", "sessionId": "session_1"},
    ),
    Case(
        "state kept across turns: the session is opened once",
        CONFIG,
        turns=(UserTurn("hello"), UserTurn("more")),
        answers=(session(), chat("one"), chat("two", chat_id="chat_2")),
        requests=(OPENS, chats(), chats(text="more")),
        replies=(Reply(["one"]), Reply(["two"])),
        state={"sessionId": "session_1"},
    ),
    Case(
        "a session kept from an earlier turn is reused",
        CONFIG,
        context={"state": dict(IN_SESSION)},
        answers=(chat("again"),),
        requests=(chats("session_kept"),),
        replies=(Reply(["again"]),),
    ),
    Case(
        "no sessions on the server (404 on /session): the chat goes without sessionId and its id is kept",
        CONFIG,
        answers=(NO_SESSIONS, chat("chained hello", chat_id="chat_9")),
        requests=(OPENS, chained(None)),
        replies=(Reply(["chained hello"]),),
        state={"chaining": True, "previousChatId": "chat_9"},
    ),
    Case(
        "no sessions (405): later turns chain previousChatId and never ask for a session again",
        CONFIG,
        turns=(UserTurn("first"), UserTurn("second"), UserTurn("third")),
        answers=(Answer(405, {}), chat("a", chat_id="chat_1"), chat("b", chat_id="chat_2"),
                 chat("c", chat_id="chat_3")),
        requests=(OPENS, chained(None, "first"), chained("chat_1", "second"), chained("chat_2", "third")),
        replies=(Reply(["a"]), Reply(["b"]), Reply(["c"])),
        state={"chaining": True, "previousChatId": "chat_3"},
    ),
    Case(
        "a chain kept from an earlier turn continues",
        CONFIG,
        context={"state": dict(CHAINED)},
        answers=(chat("continued", chat_id="chat_next"),),
        requests=(chained("chat_kept"),),
        replies=(Reply(["continued"]),),
        state={"previousChatId": "chat_next"},
    ),
    Case(
        "variables: operator variables in assistantOverrides; model settings are not Vapi's shape and stay out",
        CONFIG,
        context={
            "state": dict(IN_SESSION),
            "variables": {"name": "Ann", "tier": 2, "now": "2025-01-01T00:00:00", "customer.number": "+14155550123"},
            "overrides": {"model": "gpt-4o", "temperature": 0.5},
        },
        answers=(chat("ok"),),
        requests=(chats("session_kept", assistantOverrides=Exactly({"variableValues": {"name": "Ann", "tier": 2}})),),
        replies=(Reply(["ok"]),),
    ),
    Case(
        "media: the input names the attachments",
        CONFIG,
        context={"state": dict(IN_SESSION)},
        turns=(UserTurn("", (Media("https://m.example/a.png", "image/png"), Media("https://m.example/b.pdf", None))),),
        answers=(chat("got them"),),
        requests=(chats("session_kept", "[2 attachments: image/png, file]"),),
        replies=(Reply(["got them"]),),
    ),
    Case(
        "the session expired: a 404 on the chat opens a new session, once",
        CONFIG,
        context={"state": dict(IN_SESSION)},
        answers=(Answer(404, {}), session("session_2"), chat("new session")),
        requests=(chats("session_kept"), OPENS, chats("session_2")),
        replies=(Reply(["new session"]),),
        state={"sessionId": "session_2"},
    ),
    Case(
        "the chained chat is gone: the chain restarts once",
        CONFIG,
        context={"state": dict(CHAINED)},
        answers=(Answer(404, {}), chat("restarted", chat_id="chat_new")),
        requests=(chained("chat_kept"), chained(None)),
        replies=(Reply(["restarted"]),),
        state={"chaining": True, "previousChatId": "chat_new"},
    ),
    Case(
        "a 404 on the first chat of a new session is an error",
        CONFIG,
        answers=(session(), Answer(404, {})),
        requests=(OPENS, chats()),
        error=PermanentEngineError, reason="vapi engine answered HTTP 404 to /chat",
    ),
    Case(
        "a session answer other than 404/405 is not taken as 'no sessions'",
        CONFIG,
        answers=(Answer(403, {"message": "forbidden"}),),
        requests=(OPENS,),
        error=PermanentEngineError, reason="HTTP 403 to /session",
    ),
    Case(
        "429 with Retry-After is transient and carries the delay",
        CONFIG,
        context={"state": dict(IN_SESSION)},
        answers=(Answer(429, {}, headers=(("Retry-After", "3"),)),),
        requests=(chats("session_kept"),),
        error=TransientEngineError, reason="HTTP 429", retry_after=3,
    ),
    Case(
        "500 is transient",
        CONFIG,
        answers=(Answer(500, {}),),
        requests=(OPENS,),
        error=TransientEngineError, reason="HTTP 500",
    ),
    Case(
        "401 is permanent",
        CONFIG,
        answers=(Answer(401, {"message": "Invalid Key. You may be using the private key instead of the public key"}),),
        requests=(OPENS,),
        error=PermanentEngineError, reason="HTTP 401",
    ),
    Case(
        "400 is permanent",
        CONFIG,
        context={"state": dict(IN_SESSION)},
        answers=(Answer(400, {"message": ["input must be a string"]}),),
        requests=(chats("session_kept"),),
        error=PermanentEngineError, reason="HTTP 400",
    ),
    Case(
        "malformed JSON is permanent",
        CONFIG,
        context={"state": dict(IN_SESSION)},
        answers=(Answer(201, body=b"<html>gateway error</html>"),),
        requests=(chats("session_kept"),),
        error=PermanentEngineError, reason="not JSON",
    ),
    Case(
        "wrong shape: output items that are not objects are permanent",
        CONFIG,
        context={"state": dict(IN_SESSION)},
        answers=(chat(output=["hello"]),),
        requests=(chats("session_kept"),),
        error=PermanentEngineError, reason="malformed",
    ),
    Case(
        "wrong shape: a chained chat without an id cannot be chained and is permanent",
        CONFIG,
        context={"state": dict(CHAINED)},
        answers=(Answer(201, {"output": [{"role": "assistant", "content": "hi"}]}),),
        requests=(chained("chat_kept"),),
        error=PermanentEngineError, reason="the chat has no id",
    ),
    Case(
        "a timeout is transient",
        CONFIG,
        timeout=0.3,
        context={"state": dict(IN_SESSION)},
        answers=(replace(chat("late"), delay=1.0),),
        requests=(chats("session_kept"),),
        error=TransientEngineError, reason="vapi engine timed out",
    ),
    Case(
        "connection refused is transient",
        CONFIG,
        upstream="closed",
        error=TransientEngineError, reason="vapi engine unreachable",
    ),
    Case(
        "an empty reply is permanent",
        CONFIG,
        context={"state": dict(IN_SESSION)},
        answers=(chat(output=[]),),
        requests=(chats("session_kept"),),
        error=PermanentEngineError, reason="vapi engine returned an empty reply",
    ),
]


@pytest.mark.parametrize("case", params(CASES))
def test_vapi_adapter(case: Case, caplog):
    """Each labelled case: the requests made, the reply or error, and the state kept."""
    run(case, caplog)
