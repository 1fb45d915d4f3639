"""Twilio's webhooks (SPEC section 5) and the simulator's read-back endpoint.

Every route here checks X-Twilio-Signature with the account's auth token (the
sandbox token when no Twilio credentials are set) against the public URL
Twilio called, built from GATEWAY_PUBLIC_URL since a proxy in front of the
gateway changes the URL Flask sees.
"""

from __future__ import annotations

import functools
import hmac
import logging

from flask import Blueprint, Response, after_this_request, jsonify, request
from twilio.request_validator import RequestValidator

from gateway import metrics
from gateway.errors import BadRequest, Forbidden, GatewayError, NotFound
from gateway.services import outbound, readback
from gateway.services.inbound import accept_inbound, parse_inbound
from gateway.web import runtime

log = logging.getLogger("gateway.twilio")

blueprint = Blueprint("twilio", __name__, url_prefix="/twilio")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def empty_twiml() -> Response:
    return Response(EMPTY_TWIML, status=200, mimetype="text/xml")


def signed_url() -> str:
    base = (runtime().settings.public_url or request.host_url).rstrip("/")
    query = request.query_string.decode("utf-8", "replace")
    return base + request.path + (f"?{query}" if query else "")


def require_signature(params) -> None:
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not signature_matches(RequestValidator(runtime().auth_token), signed_url(), params, signature):
        log.warning("event=webhook.bad_signature path=%s", request.path)
        raise Forbidden("invalid or missing X-Twilio-Signature")


def signature_matches(validator: RequestValidator, url: str, params, signature: str) -> bool:
    """RequestValidator.validate, with one HMAC instead of two when Twilio signed ``url`` as it stands.

    validate signs the URL both with the default port added and with any port removed (Twilio's
    signing is inconsistent there) and checks both, every time: the signing is most of what a
    webhook's check costs. ``url`` as configured is always one of those two forms, so a match on
    it is a match validate would find; anything else gets validate's full check.
    """
    if isinstance(params, str):  # a JSON body, checked through bodySHA256: validate alone knows how
        return validator.validate(url, params, signature)
    if hmac.compare_digest(validator.compute_signature(url, params).encode(), signature.encode()):
        return True
    return validator.validate(url, params, signature)


def counted(kind: str):
    """Count each webhook by its outcome: the view returns one, a refusal is counted by its kind."""

    def decorate(view):
        @functools.wraps(view)
        def handle():
            try:
                outcome = view()
            except Forbidden:
                metrics.webhook(kind, "bad_signature")
                raise
            except GatewayError:
                metrics.webhook(kind, "invalid")
                raise
            metrics.webhook(kind, outcome)
            return empty_twiml()

        return handle

    return decorate


@blueprint.post("/sms")
@counted("sms")
def inbound_sms() -> str:
    require_signature(request.form)
    deferred: list = []
    outcome = accept_inbound(runtime(), parse_inbound(request.form), deferred).outcome
    if deferred:
        after_response(deferred)
    return outcome


def after_response(work: list) -> None:
    """Run ``work`` once the response has been sent: the WSGI server closes the response after writing it
    (PEP 3333 requires it to, also when the client went away), and closing runs these.

    The webhook's text is committed before it answers (SPEC 5); queueing its turn is a round trip to
    Redis that Twilio need not wait for, and when it never happens (the process died in between) the
    sweep re-enqueues the turn, as when Redis is down.
    """

    def register(response: Response) -> Response:
        for step in work:
            response.call_on_close(step)
        return response

    after_this_request(register)


@blueprint.post("/status")
@counted("status")
def status_callback() -> str:
    require_signature(request.form)
    form = request.form
    message_id, sid = request.args.get("messageId") or None, form.get("MessageSid") or None
    # Both are looked up, and the sid may be stored: a NUL (which PostgreSQL text cannot hold) or a sid
    # longer than its column would fail the statement with a 500. No message can have such an id or
    # sid, so the callback is refused as malformed (SPEC 6.12), with the inbound webhook's rule for sids.
    if sid is not None and (len(sid) > 64 or not sid.isalnum() or not sid.isascii()):
        raise BadRequest("MessageSid must be up to 64 letters and digits")
    if message_id is not None and (len(message_id) > 64 or not message_id.replace("-", "").isalnum()
                                   or not message_id.isascii()):
        raise BadRequest("messageId is not a message id")
    known = outbound.apply_status(runtime(), message_id, sid, form.get("MessageStatus", ""), form.get("ErrorCode"))
    if not known:
        log.info("event=status.unknown sid=%s status=%s", form.get("MessageSid"), form.get("MessageStatus"))
    return "applied" if known else "unknown_sid"


@blueprint.get("/simulator/conversation")
def simulator_conversation():
    """What became of one inbound text: its status, its session and the replies after it.

    Signed like a webhook (a GET, so the signature covers the URL alone);
    `gateway simulate` and `gateway demo` use it to print the replies.
    """
    require_signature({})
    view = readback.conversation_after(runtime(), request.args.get("MessageSid", ""))
    if view is None:
        raise NotFound("no inbound text with that MessageSid")
    return jsonify(view)
