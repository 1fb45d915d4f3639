"""The REST API under /api (SPEC section 4). Every route needs an API key but the API's own description."""

from __future__ import annotations

from flask import Blueprint, g, request

from gateway.errors import BadRequest, Unauthorized
from gateway.services.api_keys import authenticate
from gateway.web import runtime

api = Blueprint("api", __name__, url_prefix="/api")
OPEN_ENDPOINTS = {"api.openapi_document", "api.docs_page"}  # the API's own description needs no key


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


from gateway.web.api import assistants, chats, openapi, phone_numbers, sessions  # noqa: E402,F401  (routes register on import)
