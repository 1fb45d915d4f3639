"""A chat engine on 127.0.0.1 speaking the gateway's `webhook` engine protocol.

It records every call's start and end (so tests can show at most one call in
flight per session, in order) and follows a script: a delay per text, or
failures for the next calls (HTTP statuses, hangs, malformed answers).
Texts may carry their own delay as ``[slow 1.5]``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW = re.compile(r"\[slow ([0-9.]+)\]")


@dataclass
class Call:
    session_id: str
    text: str
    media: list
    history: list
    started: float
    # When the fake began writing its answer (or fault): the caller cannot have it any sooner, so a
    # later call of the same session must start after this. ``ended`` is stamped after the write, and
    # on a busy machine this thread may stamp it after the caller has read the answer, finished its
    # turn and made its next call: ordering checks compare ``answered``.
    answered: float | None = None
    ended: float | None = None
    outcome: str = "pending"
    signature_ok: bool | None = None


@dataclass
class EngineFault:
    """What the next call gets instead of an answer."""

    status: int = 500
    body: str = '{"error": "fault injected by the test"}'
    hang: float = 0.0  # seconds to wait before answering (longer than the gateway's timeout = a timeout)
    retry_after: float | None = None


@dataclass
class EngineScript:
    next_faults: list[EngineFault] = field(default_factory=list)
    delay: float = 0.0
    replies: int = 1


class FakeEngine:
    def __init__(self, secret: str | None = None):
        self.secret = secret
        self.script = EngineScript()
        self.calls: list[Call] = []
        self._lock = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/turn"

    def start(self) -> "FakeEngine":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for_calls(self, count: int, timeout: float = 20.0, started_only: bool = False) -> list[Call]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                done = [c for c in self.calls if started_only or c.ended is not None]
                if len(done) >= count:
                    return list(self.calls)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} engine calls, saw {len(done)}")
                self._lock.wait(remaining)

    def calls_for(self, session_id: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.session_id == session_id]

    def _handler(self):
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                engine._answer(self)

        return Handler

    def _answer(self, request) -> None:
        raw = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        payload = json.loads(raw)
        call = Call(
            session_id=payload["session"]["id"],
            text=payload["message"]["content"],
            media=payload["message"]["media"],
            history=payload["history"],
            started=time.monotonic(),
        )
        if self.secret is not None:
            expected = "sha256=" + hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
            call.signature_ok = hmac.compare_digest(expected, request.headers.get("X-Gateway-Signature", ""))
        with self._lock:
            self.calls.append(call)
            fault = self.script.next_faults.pop(0) if self.script.next_faults else None
            self._lock.notify_all()
        slow = SLOW.search(call.text)
        time.sleep(fault.hang if fault else float(slow.group(1)) if slow else self.script.delay)
        call.answered = time.monotonic()
        try:
            if fault is not None:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                self._send(request, fault.status, fault.body.encode(), headers)
                call.outcome = f"fault {fault.status}"
            else:
                texts = [f"re: {call.text}"] + [f"re: {call.text} (part {i})" for i in range(2, self.script.replies + 1)]
                body = {"reply": texts[0]} if len(texts) == 1 else {"replies": texts}
                self._send(request, 200, json.dumps(body).encode(), {})
                call.outcome = "answered"
        except (BrokenPipeError, ConnectionResetError):
            call.outcome = "caller gone"
        finally:
            with self._lock:
                call.ended = time.monotonic()
                self._lock.notify_all()

    @staticmethod
    def _send(request, status: int, body: bytes, headers: dict) -> None:
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)
