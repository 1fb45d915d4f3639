"""A pretend phone: sends signed inbound webhooks to a running gateway and reads back the replies.

Used by ``gateway simulate``, ``gateway demo`` and tests. It speaks to the
gateway only over HTTP, exactly as Twilio would, so a simulated text travels
the whole path: signature check, session, engine, queue, sender.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import httpx
from twilio.request_validator import RequestValidator

TERMINAL_WAIT = 0.05


@dataclass(frozen=True)
class Sent:
    sid: str
    http_status: int
    elapsed_ms: float
    body: str


class SimulatorError(Exception):
    pass


class Phone:
    def __init__(self, base_url: str, auth_token: str, account_sid: str, public_url: str | None = None):
        self.base_url = base_url.rstrip("/")
        # The URL the gateway believes Twilio called: its GATEWAY_PUBLIC_URL.
        self.public_url = (public_url or base_url).rstrip("/")
        self.validator = RequestValidator(auth_token)
        self.account_sid = account_sid
        self.http = httpx.Client(timeout=10.0)

    def close(self) -> None:
        self.http.close()

    def text(self, to: str, from_: str, body: str, media: list[tuple[str, str]] | None = None) -> Sent:
        return self.post(self.params(to, from_, body, media))

    def params(self, to: str, from_: str, body: str, media: list[tuple[str, str]] | None = None) -> dict:
        """The form Twilio would post for this text, with a fresh MessageSid."""
        sid = "SM" + uuid.uuid4().hex
        params = {
            "MessageSid": sid,
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "AccountSid": self.account_sid,
            "From": from_,
            "To": to,
            "Body": body,
            "NumMedia": str(len(media or [])),
            "NumSegments": "1",
            "SmsStatus": "received",
            "ApiVersion": "2010-04-01",
        }
        for index, (url, content_type) in enumerate(media or []):
            params[f"MediaUrl{index}"] = url
            params[f"MediaContentType{index}"] = content_type
        return params

    def post(self, params: dict) -> Sent:
        """Sign and post one inbound webhook (posting the same params again is Twilio's retry)."""
        sid = params["MessageSid"]
        signature = self.validator.compute_signature(self.public_url + "/twilio/sms", params)
        started = time.perf_counter()
        try:
            response = self.http.post(
                self.base_url + "/twilio/sms",
                data=params,
                headers={"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1 (gateway simulator)"},
            )
        except httpx.HTTPError as error:
            raise SimulatorError(f"cannot reach the gateway at {self.base_url}: {error}") from None
        elapsed = (time.perf_counter() - started) * 1000
        return Sent(sid, response.status_code, elapsed, response.text)

    def outcome(self, sid: str) -> dict | None:
        path = f"/twilio/simulator/conversation?MessageSid={sid}"
        signature = self.validator.compute_signature(self.public_url + path, {})
        response = self.http.get(self.base_url + path, headers={"X-Twilio-Signature": signature})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise SimulatorError(f"gateway answered {response.status_code}: {response.text.strip()}")
        return response.json()

    def wait(self, sid: str, timeout: float = 30.0, on_progress=None) -> dict | None:
        """Poll until the text is processed and its replies are sent (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.outcome(sid)
            if last is None:
                # The gateway commits a text before it answers 200, so a text
                # it does not know now (unknown number) never appears.
                return None
            if on_progress is not None and last is not None:
                on_progress(last)
            if last is not None and last["done"]:
                return last
            time.sleep(TERMINAL_WAIT)
        return last
