"""Sending through Twilio's REST API with the official ``twilio`` client."""

from __future__ import annotations

import threading
from datetime import datetime

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from adapters.http import retry_after_seconds
from gateway.ports import OutboundSms, SendError, SendReceipt

# Twilio error codes that no retry can fix (TWILIO.md, "Error codes").
PERMANENT_CODES = frozenset(
    {21211, 21212, 21408, 21606, 21610, 21612, 21614, 21617, 21635, 30004, 30005, 30006, 30007, 30034}
)
# Codes Twilio answers with a 4xx status that still mean "later": queue full, loop protection.
TRANSIENT_CODES = frozenset({20429, 21611, 30001, 14107})


class _RefusedConnection(Exception):
    """Stands for a connection error raised before any byte of the request was sent."""


def _refused(error: requests.ConnectionError) -> bool:
    text = repr(error)
    return "NewConnectionError" in text or "Connection refused" in text or "Name or service not known" in text


class _HeaderKeepingHttpClient(TwilioHttpClient):
    """Keeps the last response's headers per thread so a 429's Retry-After can be honoured.

    TwilioRestException carries the status and Twilio's error code but not the
    headers; the client object is shared by worker threads, hence thread-local.
    """

    def __init__(self, timeout: float):
        super().__init__(timeout=timeout)
        self._local = threading.local()

    def request(self, *args, **kwargs):
        self._local.headers = None
        try:
            response = super().request(*args, **kwargs)
        except requests.ConnectionError as error:
            if _refused(error) and not isinstance(error, requests.ConnectTimeout):
                raise _RefusedConnection(type(error).__name__) from error
            raise
        self._local.headers = response.headers
        return response

    def last_header(self, name: str) -> str | None:
        headers = getattr(self._local, "headers", None)
        return headers.get(name) if headers else None


class TwilioSender:
    name = "twilio"

    def __init__(self, account_sid: str, auth_token: str, base_url: str, timeout: float):
        self.http = _HeaderKeepingHttpClient(timeout=timeout)
        # environment={} keeps TWILIO_EDGE/TWILIO_REGION from rewriting the host:
        # TWILIO_API_BASE_URL is the one place that says where the API lives.
        self.client = Client(account_sid, auth_token, http_client=self.http, environment={})
        self.client.api.base_url = base_url.rstrip("/")

    def send(self, sms: OutboundSms) -> SendReceipt:
        params: dict = {"to": sms.to, "body": sms.body}
        if sms.messaging_service_sid:
            params["messaging_service_sid"] = sms.messaging_service_sid
        else:
            params["from_"] = sms.from_
        if sms.media_urls:
            params["media_url"] = list(sms.media_urls)
        if sms.status_callback:
            params["status_callback"] = sms.status_callback
        try:
            message = self.client.messages.create(**params)
        except TwilioRestException as error:
            raise self._classify(error) from None
        except (requests.ConnectTimeout, _RefusedConnection) as error:
            # The request never reached Twilio: safe to send again.
            raise SendError(f"Twilio unreachable: {type(error).__name__}", transient=True) from None
        except (requests.ConnectionError, requests.Timeout) as error:
            # Sent, but no answer: Twilio may have accepted it.
            raise SendError(f"no answer from Twilio: {type(error).__name__}", transient=True, maybe_sent=True) from None
        return SendReceipt(sid=message.sid, status=message.status or "queued")

    def find_sent(self, sms: OutboundSms, since: datetime) -> list[SendReceipt]:
        """What Twilio holds that ``sms`` may have become: messages to its recipient, from its number (or
        through its messaging service), with its body, created since ``since``; the oldest first.

        Used after a worker died during a create, or a create timed out or got a 5xx: Twilio has no
        idempotency key, so the only safe way to avoid a double send is to ask. The caller drops the
        sids it already recorded for other messages. Not filtered on DateSent: Twilio sets it only once
        a message has left its queue, and a message still queued there is sent all the same.
        """
        filters = {"to": sms.to} if sms.messaging_service_sid else {"to": sms.to, "from_": sms.from_}
        found = []
        try:
            for message in self.client.messages.list(**filters, limit=50):  # the newest first
                if message.body != sms.body or (message.date_created is not None and message.date_created < since):
                    continue
                if sms.messaging_service_sid and message.messaging_service_sid != sms.messaging_service_sid:
                    continue
                found.append(SendReceipt(sid=message.sid, status=message.status or "sent"))
        except TwilioRestException as error:
            raise self._classify(error) from None
        except (requests.ConnectionError, requests.Timeout) as error:
            raise SendError(f"Twilio unreachable: {type(error).__name__}", transient=True) from None
        return found[::-1]

    def _classify(self, error: TwilioRestException) -> SendError:
        status, code = error.status, error.code
        reason = f"Twilio error {code or status}: {error.msg}".strip()
        retry_after = _seconds(self.http.last_header("Retry-After"))
        if status == 429 or code == 20429:
            return SendError(reason, transient=True, code=code, http_status=status, retry_after=retry_after, throttled=True)
        if code in PERMANENT_CODES:
            return SendError(reason, transient=False, code=code, http_status=status)
        if status >= 500:
            # Twilio may have created the message before failing (TWILIO.md): ask before resending.
            return SendError(reason, transient=True, code=code, http_status=status, retry_after=retry_after, maybe_sent=True)
        if code in TRANSIENT_CODES:
            return SendError(reason, transient=True, code=code, http_status=status, retry_after=retry_after)
        # Other 4xx: the request itself is wrong (bad credentials, bad parameters).
        return SendError(reason, transient=False, code=code, http_status=status)


# The longest Retry-After honoured: a message does not wait longer than a default session lives on
# one answer's say-so (a larger value is a misconfigured proxy, not Twilio pacing a sender).
MAX_RETRY_AFTER = 86400.0


def _seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds to wait (delay-seconds or an HTTP date), at most MAX_RETRY_AFTER; None when absent
    or unreadable: the backoff alone then decides."""
    seconds = retry_after_seconds(value, None if now is None else now.timestamp())
    return None if seconds is None else min(seconds, MAX_RETRY_AFTER)
