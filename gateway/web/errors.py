"""Maps errors to responses, once: JSON under /api, plain text elsewhere. Never a 500 for client input."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from gateway.errors import GatewayError

log = logging.getLogger("gateway.web")

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
              422: "invalid_field", 429: "too_many_requests"}


def error_response(status: int, code: str, message: str, details=None):
    if request.path.startswith("/api"):
        response = jsonify({"error": {"code": code, "message": message, "details": details}})
    else:
        response = (message + "\n", {"Content-Type": "text/plain; charset=utf-8"})
        from flask import make_response

        response = make_response(*response)
    response.status_code = status
    return response


def register(app: Flask) -> None:
    @app.errorhandler(GatewayError)
    def gateway_error(error: GatewayError):
        return error_response(error.status, error.code, error.message, error.details)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        status = error.code or 500
        message = {413: "request body too large"}.get(status, error.description or error.name)
        return error_response(status, HTTP_CODES.get(status, "http_error"), message)

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("event=request.crashed path=%s", request.path)
        return error_response(500, "internal_error", "internal error")
