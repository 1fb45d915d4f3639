"""Helpers for tests/integration/test_session_api.py: an authenticated client and checks of SPEC 4's shapes."""

from __future__ import annotations

import re
import uuid

from tests.support.api_client import ApiClient

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
UNKNOWN_ID = str(uuid.UUID(int=0))

# SPEC 3: every field of a Session (``messages`` only when one session is fetched), a Message and a Chat.
SESSION_FIELDS = {"id", "name", "status", "assistantId", "phoneNumberId", "customer", "expirationSeconds", "expiresAt",
                  "assistantOverrides", "metadata", "cost", "createdAt", "updatedAt"}
MESSAGE_FIELDS = {"id", "sessionId", "role", "content", "media", "channel", "twilioSid", "status", "errorCode",
                  "errorMessage", "segments", "encoding", "createdAt"}
CHAT_FIELDS = {"id", "sessionId", "input", "output", "status", "cost", "createdAt", "updatedAt"}


class SessionApi(ApiClient):
    """An API caller with shortcuts for the sessions and chats most tests here need."""

    def new_session(self, **fields) -> dict:
        return ok(self.post("/api/sessions", fields), 201)["session"]

    def session(self, session_id: str) -> dict:
        return ok(self.get(f"/api/sessions/{session_id}"))["session"]

    def chat(self, session_id: str, text: str) -> dict:
        return ok(self.post("/api/chats", {"sessionId": session_id, "input": text}), 201)["chat"]

    def total(self, path: str, **query) -> int:
        return ok(self.get(path, query_string=query))["totalCount"]


def ok(response, status: int = 200) -> dict:
    """The JSON body of a response that must have ``status``."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:500])
    assert response.mimetype == "application/json"
    return response.get_json()


def error_of(response, status: int) -> dict:
    """The ``error`` object of an error response, checking SPEC 4's error shape."""
    body = ok(response, status)
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def assert_invalid(response, field: str, label: str = "") -> dict:
    """A 422 whose ``error.details.field`` names ``field`` (or a part of it, e.g. customer.number)."""
    assert response.status_code == 422, (label, response.status_code, response.get_data(as_text=True)[:500])
    error = error_of(response, 422)
    named = (error.get("details") or {}).get("field")
    assert named == field or (named or "").startswith(field + "."), (label, named, error)
    return error


def ids(items: list[dict]) -> list[str]:
    return [item["id"] for item in items]
