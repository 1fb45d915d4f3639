"""A fake of Twilio's Messages REST API on 127.0.0.1, for the real ``twilio`` client to talk to.

It records every create, answers like Twilio (201 with a Message resource,
or an error body with Twilio's code), and then posts signed status callbacks
to the StatusCallback URL the way Twilio does. Faults are scripted per test:
errors for a destination, the next N answers, latency, duplicated or
out-of-order callbacks.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import httpx
from twilio.request_validator import RequestValidator

ACCOUNT_SID = "AC" + "f" * 32
AUTH_TOKEN = "fake-twilio-auth-token-0123456789"

# Twilio's magic test numbers (TWILIO.md, "Testing aids").
MAGIC_ERRORS = {
    "+15005550001": (400, 21211, "The 'To' number is not a valid phone number."),
    "+15005550002": (400, 21612, "The 'To' phone number is not currently reachable via SMS."),
    "+15005550003": (400, 21408, "Permission to send an SMS has not been enabled for the region."),
    "+15005550004": (400, 21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (400, 21614, "'To' number is not a valid mobile number"),
}


@dataclass
class Fault:
    status: int
    code: int | None = None
    message: str = "fault injected by the test"
    retry_after: float | str | None = None  # a str is sent as it is (an HTTP date, or garbage)
    hang: float = 0.0  # wait this long before answering; the message is never created
    created: bool = False  # Twilio created the message and then answered with the fault (a 5xx after accepting)


@dataclass
class Attempt:
    at: float
    to: str | None
    status: int


@dataclass
class Create:
    sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    media_urls: list[str]
    status_callback: str | None
    at: float
    params: dict
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))  # Twilio's date_created


@dataclass
class Script:
    """What the fake does; tests change it while it runs."""

    next_faults: list[Fault] = field(default_factory=list)
    faults_by_to: dict[str, Fault] = field(default_factory=dict)
    latency: float = 0.0
    callbacks: tuple[str, ...] = ("sent", "delivered")
    callback_delay: float = 0.0
    duplicate_callbacks: bool = False
    reverse_callbacks: bool = False
    # The list (GET Messages.json) leaves out messages created less than this long ago, as a read that lags
    # the writes would; before_list runs as a list request comes in, before it is answered.
    list_lag: float = 0.0
    before_list: Callable[[], None] | None = None


class FakeTwilio:
    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.script = Script()
        self.creates: list[Create] = []
        self.refused: list[tuple[int, dict]] = []
        self.attempts: list[Attempt] = []
        self.callbacks_sent: list[tuple[str, str, int]] = []
        self._lock = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._http = httpx.Client(timeout=5.0)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeTwilio":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def wait_for_creates(self, count: int, timeout: float = 10.0) -> list[Create]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.creates) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} creates, got {len(self.creates)}")
                self._lock.wait(remaining)
            return list(self.creates)

    # -- request handling ---------------------------------------------------------

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output readable
                pass

            def do_POST(self):
                fake._post(self)

            def do_GET(self):
                fake._get(self)

        return Handler

    def _authorised(self, request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    def _messages_path(self, path: str) -> bool:
        return path == f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def _post(self, request) -> None:
        if not self._messages_path(urlparse(request.path).path):
            return self._reply(request, 404, {"code": 20404, "message": "not found", "status": 404})
        if not self._authorised(request):
            return self._reply(request, 401, {"code": 20003, "message": "Authenticate", "status": 401})
        length = int(request.headers.get("Content-Length") or 0)
        form = {k: v if len(v) > 1 else v[0] for k, v in parse_qs(request.rfile.read(length).decode(), keep_blank_values=True).items()}
        fault = self._fault_for(form.get("To"))
        with self._lock:
            self.attempts.append(Attempt(time.monotonic(), form.get("To"), fault.status if fault else 201))
        if fault is not None and fault.created:
            self._create(form, answered=False)
        if fault is not None:
            if fault.hang:
                time.sleep(fault.hang)
            with self._lock:
                self.refused.append((fault.status, form))
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            body = {"code": fault.code, "message": fault.message, "status": fault.status,
                    "more_info": f"https://www.twilio.com/docs/errors/{fault.code}"}
            return self._reply(request, fault.status, body, headers)
        create = self._create(form, answered=True)
        # Accepted first, answered after the latency: a sender that dies while
        # waiting leaves a message that Twilio has and the gateway does not know of.
        if self.script.latency:
            time.sleep(self.script.latency)
        try:
            self._reply(request, 201, self._resource(create, "accepted" if create.messaging_service_sid else "queued"))
        except (BrokenPipeError, ConnectionResetError):
            pass
        if create.status_callback and self.script.callbacks:
            threading.Thread(target=self._send_callbacks, args=(create,), daemon=True).start()

    def _create(self, form: dict, answered: bool) -> Create:
        """Twilio's record of a message it took; one not ``answered`` gets its callbacks here, as Twilio sends them
        whatever its answer to the create was."""
        sid = "SM" + uuid.uuid4().hex
        media = form.get("MediaUrl") or []
        create = Create(
            sid=sid,
            to=form.get("To"),
            from_=form.get("From"),
            messaging_service_sid=form.get("MessagingServiceSid"),
            body=form.get("Body", ""),
            media_urls=media if isinstance(media, list) else [media],
            status_callback=form.get("StatusCallback"),
            at=time.monotonic(),
            params=form,
        )
        with self._lock:
            self.creates.append(create)
            self._lock.notify_all()
        if not answered and create.status_callback and self.script.callbacks:
            threading.Thread(target=self._send_callbacks, args=(create,), daemon=True).start()
        return create

    def _fault_for(self, to: str | None) -> Fault | None:
        with self._lock:
            if self.script.next_faults:
                return self.script.next_faults.pop(0)
        if to in self.script.faults_by_to:
            return self.script.faults_by_to[to]
        if to in MAGIC_ERRORS:
            status, code, message = MAGIC_ERRORS[to]
            return Fault(status, code, message)
        return None

    def _get(self, request) -> None:
        parsed = urlparse(request.path)
        if not self._messages_path(parsed.path):
            return self._reply(request, 404, {"code": 20404, "message": "not found", "status": 404})
        if not self._authorised(request):
            return self._reply(request, 401, {"code": 20003, "message": "Authenticate", "status": 401})
        query = {name: values[0] for name, values in parse_qs(parsed.query).items()}
        if self.script.before_list is not None:
            self.script.before_list()
        newest = datetime.now(timezone.utc) - timedelta(seconds=self.script.list_lag)
        # Twilio's filters: To and From exactly, DateSent by day ("DateSent>" since that day); newest first.
        since = query.get("DateSent>", "")[:10]
        with self._lock:
            found = [c for c in self.creates
                     if query.get("To", c.to) == c.to and query.get("From", c.from_) == c.from_
                     and c.created.date().isoformat() >= since and c.created <= newest]
        page = {"messages": [self._resource(c, "sent") for c in reversed(found)], "page": 0, "page_size": 50,
                "next_page_uri": None, "uri": parsed.path}
        self._reply(request, 200, page)

    def _resource(self, create: Create, status: str) -> dict:
        created = format_datetime(create.created, usegmt=True)
        return {
            "sid": create.sid,
            "account_sid": self.account_sid,
            "to": create.to,
            "from": create.from_,
            "messaging_service_sid": create.messaging_service_sid,
            "body": create.body,
            "status": status,
            "num_segments": "1",
            "num_media": str(len(create.media_urls)),
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": created,
            "date_updated": created,
            "date_sent": created,
            "error_code": None,
            "error_message": None,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{create.sid}.json",
        }

    @staticmethod
    def _reply(request, status: int, body: dict, headers: dict | None = None) -> None:
        payload = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(payload)

    # -- status callbacks ------------------------------------------------------------

    def _send_callbacks(self, create: Create) -> None:
        statuses = list(self.script.callbacks)
        if self.script.reverse_callbacks:
            statuses.reverse()
        if self.script.duplicate_callbacks:
            statuses = [s for status in statuses for s in (status, status)]
        for status in statuses:
            if self.script.callback_delay:
                time.sleep(self.script.callback_delay)
            self.post_callback(create, status)

    def post_callback(self, create: Create, status: str, error_code: int | None = None) -> int:
        params = {
            "MessageSid": create.sid,
            "SmsSid": create.sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": self.account_sid,
            "To": create.to,
            "From": create.from_ or "",
            "ApiVersion": "2010-04-01",
        }
        if create.messaging_service_sid:
            params["MessagingServiceSid"] = create.messaging_service_sid
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        signature = RequestValidator(self.auth_token).compute_signature(create.status_callback, params)
        try:
            response = self._http.post(create.status_callback, data=params, headers={"X-Twilio-Signature": signature})
            code = response.status_code
        except httpx.HTTPError:
            code = 0
        except RuntimeError:
            # The fake was stopped while this callback thread was still sleeping: like Twilio
            # giving up on an endpoint that went away, nothing is delivered.
            code = 0
        with self._lock:
            self.callbacks_sent.append((create.sid, status, code))
            self._lock.notify_all()
        return code
