"""The REST API under /api (SPEC section 4). Every route needs an API key."""

from __future__ import annotations

import json

from flask import Blueprint, g, request

from gateway.errors import BadRequest, Unauthorized
from gateway.schemas import Page, parse
from gateway.services.api_keys import authenticate
from gateway.web import runtime

api = Blueprint("api", __name__, url_prefix="/api")
OPEN_ENDPOINTS: set[str] = set()


@api.before_request
def require_key():
    # PostgreSQL text cannot hold NUL: refuse it in ids and filters up front.
    if "\x00" in request.path or any("\x00" in value for value in request.args.values()):
        raise BadRequest("the URL must not contain NUL characters")
    if request.endpoint in OPEN_ENDPOINTS:
        return
    presented = request.headers.get("x-api-key")
    if not presented:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        presented = token.strip() if scheme.lower() == "bearer" else None
    key = authenticate(runtime(), presented)
    if key is None:
        raise Unauthorized("a valid API key is required (x-api-key header or Authorization: Bearer)")
    g.api_key = key


def json_body() -> dict:
    raw = request.get_data(cache=True)
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body must be valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    if _holds_nul(data):
        raise BadRequest("text must not contain NUL characters")
    return data


def _refuse_constant(name: str):
    # Python's json accepts NaN and Infinity; JSON does not, and neither can be stored.
    raise ValueError(f"{name} is not valid JSON")


def _holds_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def page() -> Page:
    raw = {name: request.args.get(name) for name in ("limit", "offset") if request.args.get(name) is not None}
    return parse(Page, raw)


from gateway.web.api import assistants, chats, phone_numbers, sessions  # noqa: E402,F401  (routes register on import)
