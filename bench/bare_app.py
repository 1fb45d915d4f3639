"""The baseline of bench/ingest.py: a bare Flask app whose one route answers empty TwiML.

Served by gunicorn with the Procfile's own arguments, next to the gateway, so
the difference between the two is the gateway's work alone.
"""

from flask import Flask, Response

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/twilio/sms")
    def inbound_sms() -> Response:
        return Response(EMPTY_TWIML, status=200, mimetype="text/xml")

    return app
