"""The gateway's named errors, mapped to HTTP responses once in gateway.web.errors."""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, details: Any = None):
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"


class Unauthorized(GatewayError):
    status = 401
    code = "unauthorized"


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class Conflict(GatewayError):
    status = 409
    code = "conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"


class InvalidField(GatewayError):
    """A field has a value outside what the gateway accepts; ``field`` names it."""

    status = 422
    code = "invalid_field"

    def __init__(self, field: str, message: str):
        super().__init__(message, {"field": field})
        self.field = field


class EngineFailed(GatewayError):
    """The chat engine could not answer an API chat (and the assistant has no fallback message)."""

    status = 502
    code = "engine_error"
