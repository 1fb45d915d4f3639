"""Chat engines on 127.0.0.1 for the adapters to talk to over real HTTP.

* ``ScriptedUpstream`` answers the responses a test declared, in order, and
  records every request; a request past the end of the script is answered
  418 and reported, and a declared answer never asked for is reported too.
  The adapter harness runs on it.
* ``FakeCallHQ``, ``FakeVapi`` and ``FakeOpenAI`` speak their engine's
  protocol the way the real service does: they check the credentials, keep
  remote sessions (or chained chats), refuse unknown ids with 404 and bad
  requests with 400, and answer with the service's response shapes. Each
  reply says what it heard and which turn of the remote conversation it is,
  so end-to-end tests can see that state carried over. ``FakeOpenAI`` is also
  checked against the official ``openai`` client.

The webhook engine's fake is tests/support/fake_engine.py.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it; header names lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass(frozen=True)
class Answer:
    """One scripted response."""

    status: int = 200
    json: Any = None
    body: bytes | None = None  # raw bytes (a malformed answer); wins over json
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0  # seconds before answering (past the caller's timeout = a timeout)
    drop: bool = False  # close the connection without answering

    def encoded(self) -> bytes:
        if self.body is not None:
            return self.body
        return b"" if self.json is None else json.dumps(self.json).encode()


class JsonServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 that records requests and asks ``answer`` what to send."""

    def __init__(self):
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        # Kept-alive connections would otherwise outlive the server and answer
        # a pooled client's next request from a stale script.
        with self._lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def answer(self, request: Recorded) -> Answer:
        raise NotImplementedError  # abstract: each fake says how it answers (ScriptedUpstream, _ProtocolFake)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with server._lock:
                    server._connections.add(self.connection)

            def finish(self):
                with server._lock:
                    server._connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def log_message(self, *args):
                pass

            def do_GET(self):
                server._serve(self)

            def do_POST(self):
                server._serve(self)

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        request = Recorded(handler.command, handler.path, {k.lower(): v for k, v in handler.headers.items()}, body)
        with self._lock:
            self.requests.append(request)
            answer = self.answer(request)
        if answer.delay:
            time.sleep(answer.delay)
        if answer.drop:
            handler.close_connection = True
            return
        content = answer.encoded()
        try:
            handler.send_response(answer.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(content)))
            for name, value in answer.headers:
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(content)
        except OSError:
            handler.close_connection = True  # the caller gave up (a timeout)


class ScriptedUpstream(JsonServer):
    """Answers the declared responses in order; tells what was left unused and what came unasked."""

    def __init__(self, answers=()):
        super().__init__()
        self.script = list(answers)
        self.unexpected: list[Recorded] = []

    @property
    def unused(self) -> list[Answer]:
        return list(self.script)

    def answer(self, request: Recorded) -> Answer:
        if self.script:
            return self.script.pop(0)
        self.unexpected.append(request)
        return Answer(418, {"error": "the test declared no response for this request"})


# -- protocol fakes ------------------------------------------------------------------------------


def _error(status: int, message: str) -> Answer:
    return Answer(status, {"error": {"message": message}})


class _ProtocolFake(JsonServer):
    """Routes POSTs by path to ``post_<name>`` methods and counts what it was asked."""

    routes: dict[tuple[str, str], str] = {}  # (method, path) -> name of the method that answers

    def __init__(self, api_key: str):
        super().__init__()
        self.api_key = api_key
        self._ids = itertools.count(1)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"

    def answer(self, request: Recorded) -> Answer:
        route = self.routes.get((request.method, request.path.split("?")[0]))
        if route is None:
            return _error(404, f"Cannot {request.method} {request.path}")
        if not self.authorised(request):
            return _error(401, "invalid or missing API key")
        body = request.json
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        return getattr(self, route)(body)

    def authorised(self, request: Recorded) -> bool:
        raise NotImplementedError  # abstract: each protocol checks its own header (x-api-key or Bearer)

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.split("?")[0] == path]


@dataclass
class RemoteConversation:
    assistant_id: str
    inputs: list[str] = field(default_factory=list)
    variables: list[dict] = field(default_factory=list)


class FakeCallHQ(_ProtocolFake):
    """CallHQ-style: ``x-api-key``; POST /api/sessions, POST /api/chats (the shapes of this gateway's own API)."""

    routes = {("POST", "/api/sessions"): "post_session", ("POST", "/api/chats"): "post_chat"}

    def __init__(self, api_key: str, assistant_ids: tuple[str, ...] = ("asst_callhq",)):
        super().__init__(api_key)
        self.assistant_ids = assistant_ids
        self.sessions: dict[str, RemoteConversation] = {}
        self.failing_chats: list[int] = []  # statuses the next chats are answered with, instead of a reply

    def authorised(self, request: Recorded) -> bool:
        return request.headers.get("x-api-key") == self.api_key

    def forget_sessions(self) -> None:
        """As if every remote session had expired."""
        with self._lock:
            self.sessions.clear()

    def post_session(self, body: dict) -> Answer:
        name, assistant_id = body.get("name"), body.get("assistantId")
        if not isinstance(name, str) or len(name) > 40:
            return _error(422, "name must be text of at most 40 characters")
        if assistant_id not in self.assistant_ids:
            return _error(404, f"no assistant with id {assistant_id!r}")
        session_id = self.new_id("ses")
        self.sessions[session_id] = RemoteConversation(assistant_id)
        session = {"id": session_id, "name": name, "assistantId": assistant_id, "status": "active"}
        return Answer(201, {"message": "Session created successfully", "session": session})

    def post_chat(self, body: dict) -> Answer:
        if self.failing_chats:
            return _error(self.failing_chats.pop(0), "failure injected by the test")
        conversation = self.sessions.get(body.get("sessionId"))
        if conversation is None:
            return _error(404, f"no session with id {body.get('sessionId')!r}")
        if not isinstance(body.get("input"), str):
            return _error(422, "input is required")
        overrides = body.get("assistantOverrides") or {}
        conversation.inputs.append(body["input"])
        conversation.variables.append(overrides.get("variableValues") or {})
        content = f"callhq heard: {body['input']} (turn {len(conversation.inputs)})"
        chat = {"id": self.new_id("chat"), "sessionId": body["sessionId"], "input": body["input"],
                "output": [{"role": "assistant", "content": content}], "status": "completed", "cost": 0.002}
        return Answer(201, {"message": "Chat created successfully", "chat": chat})


class FakeVapi(_ProtocolFake):
    """Vapi-style: Bearer key; POST /session and POST /chat, or (``sessions=False``) chats chained by previousChatId."""

    routes = {("POST", "/session"): "post_session", ("POST", "/chat"): "post_chat"}

    def __init__(self, api_key: str, assistant_ids: tuple[str, ...] = ("asst_vapi",), sessions: bool = True):
        super().__init__(api_key)
        self.assistant_ids = assistant_ids
        self.offers_sessions = sessions
        self.sessions: dict[str, RemoteConversation] = {}
        self.chats: dict[str, RemoteConversation] = {}  # chat id -> the conversation it belongs to

    def authorised(self, request: Recorded) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    def answer(self, request: Recorded) -> Answer:
        if not self.offers_sessions and request.path.split("?")[0] == "/session":
            return _error(404, "Cannot POST /session")
        return super().answer(request)

    def post_session(self, body: dict) -> Answer:
        if body.get("assistantId") not in self.assistant_ids:
            return _error(400, "assistantId must be an existing assistant")
        session_id = self.new_id("session")
        self.sessions[session_id] = RemoteConversation(body["assistantId"])
        return Answer(201, {"id": session_id, "orgId": "org_fake", "assistantId": body["assistantId"],
                            "status": "active", "createdAt": "2025-01-01T00:00:00.000Z"})

    def post_chat(self, body: dict) -> Answer:
        if body.get("assistantId") not in self.assistant_ids:
            return _error(400, "assistantId must be an existing assistant")
        if body.get("sessionId") and body.get("previousChatId"):
            return _error(400, "sessionId and previousChatId are mutually exclusive")
        if not isinstance(body.get("input"), (str, list)):
            return _error(400, "input must be a string or a list of messages")
        if body.get("sessionId"):
            conversation = self.sessions.get(body["sessionId"])
        elif body.get("previousChatId"):
            conversation = self.chats.get(body["previousChatId"])
        else:
            conversation = RemoteConversation(body["assistantId"])
        if conversation is None:
            return _error(404, "no such session or previous chat")
        text = body["input"] if isinstance(body["input"], str) else json.dumps(body["input"])
        conversation.inputs.append(text)
        conversation.variables.append((body.get("assistantOverrides") or {}).get("variableValues") or {})
        chat_id = self.new_id("chat")
        self.chats[chat_id] = conversation
        content = f"vapi heard: {text} (turn {len(conversation.inputs)})"
        chat = {"id": chat_id, "orgId": "org_fake", "assistantId": body["assistantId"], "input": body["input"],
                "output": [{"role": "assistant", "content": content}], "cost": 0.001,
                "createdAt": "2025-01-01T00:00:00.000Z"}
        if body.get("sessionId"):
            chat["sessionId"] = body["sessionId"]
        return Answer(201, chat)


class FakeOpenAI(_ProtocolFake):
    """OpenAI Chat Completions under ``/v1``: Bearer key, ``model`` and ``messages`` checked, OpenAI's shapes."""

    routes = {("POST", "/v1/chat/completions"): "post_completion"}
    ROLES = ("system", "developer", "user", "assistant", "tool")

    def __init__(self, api_key: str, models: tuple[str, ...] = ("fake-model",)):
        super().__init__(api_key)
        self.models = models

    @property
    def base_url(self) -> str:
        """What the official client's ``base_url`` (and the adapter's ``baseUrl``) takes."""
        return self.url + "/v1"

    def authorised(self, request: Recorded) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    def answer(self, request: Recorded) -> Answer:
        answer = super().answer(request)
        if answer.status == 401:
            return Answer(401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                          "param": None, "code": "invalid_api_key"}})
        return answer

    def post_completion(self, body: dict) -> Answer:
        if body.get("model") not in self.models:
            return _error(404, f"The model `{body.get('model')}` does not exist")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(self._valid(m) for m in messages):
            return _error(400, "messages must be a non-empty list of {role, content}")
        last = messages[-1]["content"]
        heard = last if isinstance(last, str) else " ".join(
            part.get("text") or part.get("image_url", {}).get("url", "") for part in last)
        content = f"openai heard: {heard} ({len(messages)} messages)"
        prompt_tokens = sum(len(json.dumps(m)) for m in messages) // 4
        return Answer(200, {
            "id": self.new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content) // 4,
                      "total_tokens": prompt_tokens + len(content) // 4},
        })

    def _valid(self, message) -> bool:
        if not isinstance(message, dict) or message.get("role") not in self.ROLES:
            return False
        content = message.get("content")
        if isinstance(content, str):
            return True
        return isinstance(content, list) and all(
            isinstance(part, dict) and part.get("type") in ("text", "image_url") for part in content)
