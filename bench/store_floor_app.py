"""A second reference for bench/ingest.py: the least a webhook can do and still keep SPEC 5's promise.

SPEC 5 says a text is committed to the database before the webhook answers,
and its work is queued. This app does only that: it checks the signature with
twilio's RequestValidator, reads the form, commits one row (INSERT ... ON
CONFLICT (sid) DO NOTHING, autocommit: one round trip) and pushes the sid to a
Redis list (one round trip). No sessions, no ORM, no logging. Served under the
same gunicorn arguments as the gateway and the bare app, its rate is a ceiling
for any design of the webhook that stores before it answers, on this machine.
"""

from __future__ import annotations

import os
import threading

import psycopg
import redis
from flask import Flask, Response, request
from twilio.request_validator import RequestValidator

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
TABLE = "bench_store_floor"


def create_app() -> Flask:
    app = Flask(__name__)
    validator = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])
    url = os.environ["GATEWAY_PUBLIC_URL"].rstrip("/") + "/twilio/sms"
    database_url = os.environ["GATEWAY_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://", 1)
    queue = redis.Redis.from_url(os.environ["GATEWAY_REDIS_URL"])  # a thread-safe connection pool
    local = threading.local()  # a psycopg connection per gunicorn thread

    with psycopg.connect(database_url, autocommit=True) as connection:
        try:
            connection.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (sid text PRIMARY KEY, sender text, body text)")
        except psycopg.errors.UniqueViolation:
            pass  # the other gunicorn worker created it at the same moment

    @app.post("/twilio/sms")
    def inbound_sms() -> Response:
        form = request.form
        if not validator.validate(url, form, request.headers.get("X-Twilio-Signature", "")):
            return Response("invalid signature", status=403)
        if getattr(local, "connection", None) is None:
            local.connection = psycopg.connect(database_url, autocommit=True)
        local.connection.execute(
            f"INSERT INTO {TABLE} (sid, sender, body) VALUES (%s, %s, %s) ON CONFLICT (sid) DO NOTHING",
            (form["MessageSid"], form["From"], form.get("Body", "")),
        )
        queue.rpush(TABLE, form["MessageSid"])
        return Response(EMPTY_TWIML, status=200, mimetype="text/xml")

    return app
