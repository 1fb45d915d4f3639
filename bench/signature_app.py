"""A third reference for bench/ingest.py: what checking a webhook costs before anything is stored.

It does what every webhook must do first (SPEC 5): read the form and check
X-Twilio-Signature with twilio's RequestValidator, then answers empty TwiML.
Nothing is stored. Between the bare app and the store floor app, it shows how
much of the budget the signature check alone takes.
"""

from __future__ import annotations

import os

from flask import Flask, Response, request
from twilio.request_validator import RequestValidator

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def create_app() -> Flask:
    app = Flask(__name__)
    validator = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])
    url = os.environ["GATEWAY_PUBLIC_URL"].rstrip("/") + "/twilio/sms"

    @app.post("/twilio/sms")
    def inbound_sms() -> Response:
        if not validator.validate(url, request.form, request.headers.get("X-Twilio-Signature", "")):
            return Response("invalid signature", status=403)
        return Response(EMPTY_TWIML, status=200, mimetype="text/xml")

    return app
