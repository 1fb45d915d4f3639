"""A receiver of the gateway's lifecycle events (SPEC 6.11): a real HTTP server on 127.0.0.1.

It plays the operator's ``serverUrl``. Every POST is recorded (event id,
type, raw body bytes, headers, arrival time on the monotonic clock, what it
was answered). The ``X-Gateway-Signature`` header is checked against the
secret it was given; a missing or wrong one is recorded and answered 401, as
a real receiver would. Faults are scripted per test:

- ``fail_first(n)``: the first ``n`` deliveries of *each* event id are
  answered 500 (``mode="500"``), held open past the gateway's timeout
  (``mode="hang"``) or cut off without an answer (``mode="drop"``);
- ``stop()`` / ``restart()``: the port is closed (connection refused) and
  later opened again on the same port.

``unique()`` is what a real receiver would keep: the deliveries it accepted
(2xx), each event id once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

SIGNATURE_HEADER = "X-Gateway-Signature"


def sign(secret: str, body: bytes) -> str:
    """The header value the gateway must send: ``sha256=<hex HMAC-SHA256 of the body>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str | None, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the signature of exactly these ``body`` bytes with ``secret``."""
    if not secret or not header:
        return False
    return hmac.compare_digest(sign(secret, body), header.strip())


@dataclass
class Delivery:
    """One POST that reached the receiver."""

    id: str | None
    type: str | None
    body: bytes
    headers: dict[str, str]  # names lower-cased
    at: float  # time.monotonic() on arrival
    attempt: int  # 1 for the first POST of this event id, 2 for the next, ...
    signature_ok: bool
    answer: int | str = 0  # the HTTP status answered, or "hang" / "drop"

    @property
    def accepted(self) -> bool:
        return isinstance(self.answer, int) and 200 <= self.answer < 300

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def message(self) -> dict:
        """The envelope's ``message`` object: id, type, timestamp and the reported object."""
        return self.json["message"]

    @property
    def subject(self) -> dict:
        """The reported object: ``message[<name>]`` where ``<name>`` is the type's first part."""
        return self.message[self.type.split(".", 1)[0]]

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class _Faults:
    count: int = 0
    mode: str = "500"
    hang: float = 30.0


@dataclass
class EventReceiver:
    secret: str | None = None
    path: str = "/events"
    deliveries: list[Delivery] = field(default_factory=list)
    bad_signatures: list[Delivery] = field(default_factory=list)

    def __post_init__(self):
        self._faults = _Faults()
        self._lock = threading.Condition()
        self._released = threading.Event()  # set on stop: hung requests give up at once
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # -- lifecycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> "EventReceiver":
        """Listen (on a free port the first time, on the same port after ``stop``)."""
        if self._server is not None:
            return self
        self._released.clear()
        server = ThreadingHTTPServer(("127.0.0.1", self.port or 0), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port: from now on the gateway's connections are refused."""
        server, self._server = self._server, None
        if server is None:
            return
        self._released.set()
        server.shutdown()
        server.server_close()

    def restart(self) -> "EventReceiver":
        return self.start()

    # -- scripting ------------------------------------------------------------------

    def fail_first(self, count: int, mode: str = "500", hang: float = 30.0) -> None:
        """Fail the first ``count`` deliveries of every event id: ``"500"``, ``"hang"`` or ``"drop"``."""
        if mode not in ("500", "hang", "drop"):
            raise ValueError(f"unknown fault mode {mode!r}")
        with self._lock:
            self._faults = _Faults(count, mode, hang)

    # -- reading ------------------------------------------------------------------------

    def all(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def accepted(self) -> list[Delivery]:
        return [d for d in self.all() if d.accepted]

    def unique(self) -> list[Delivery]:
        """Accepted deliveries with repeats of an event id dropped, as a receiver deduplicating by id would."""
        seen: set[str] = set()
        kept = []
        for delivery in self.accepted():
            if delivery.id in seen:
                continue
            seen.add(delivery.id)
            kept.append(delivery)
        return kept

    def of_type(self, event_type: str) -> list[Delivery]:
        return [d for d in self.unique() if d.type == event_type]

    def attempts(self, event_id: str) -> list[Delivery]:
        return [d for d in self.all() if d.id == event_id]

    def ids(self) -> set[str]:
        return {d.id for d in self.all() if d.id}

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every delivery and every 50 ms); return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [(d.type, d.id, d.answer) for d in self.all()]
                raise AssertionError(f"timed out waiting for {what}; deliveries so far: {seen}")
            with self._lock:
                self._lock.wait(min(remaining, 0.05))

    # -- request handling ------------------------------------------------------------------

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, so a stopped receiver refuses
            # the next delivery instead of serving it on a kept-alive connection.
            def log_message(self, *args):  # keep test output readable
                pass

            def do_POST(self):
                receiver._post(self)

        return Handler

    def _post(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length)
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            message = json.loads(body)["message"]
            event_id, event_type = message.get("id"), message.get("type")
        except (ValueError, KeyError, TypeError, AttributeError):
            event_id = event_type = None
        signature_ok = verify(self.secret, body, headers.get(SIGNATURE_HEADER.lower()))
        with self._lock:
            attempt = 1 + sum(1 for d in self.deliveries if event_id is not None and d.id == event_id)
            delivery = Delivery(event_id, event_type, body, headers, time.monotonic(), attempt, signature_ok)
            faults = self._faults
            if request.path != self.path:
                delivery.answer = 404
            elif event_id is None:
                delivery.answer = 400
            elif self.secret is not None and not signature_ok:
                delivery.answer = 401
                self.bad_signatures.append(delivery)
            elif attempt <= faults.count:
                delivery.answer = 500 if faults.mode == "500" else faults.mode
            else:
                delivery.answer = 200
            self.deliveries.append(delivery)
            self._lock.notify_all()
        if delivery.answer == "hang":
            self._released.wait(faults.hang)
            self._answer(request, 500)
        elif delivery.answer == "drop":
            request.close_connection = True
            try:
                request.connection.shutdown(2)
            except OSError:
                pass
        else:
            self._answer(request, delivery.answer)

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, status: int) -> None:
        payload = json.dumps({"received": 200 <= status < 300}).encode()
        try:
            request.send_response(status)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            request.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the gateway gave up waiting (a hang past its timeout)
