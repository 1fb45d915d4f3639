"""A second reference for bench/ingest.py: the least a webhook can do and still keep SPEC 5's promise.

SPEC 5 says a text is committed to the database before the webhook answers,
and its work is queued. This app does only that, as cheaply as we know how: it
checks the signature with twilio's RequestValidator, reads the form, and hands
the text to the gateway's own group commit (gateway/db/group_commit.py), so
that texts arriving together share one statement, one commit and one queue
push: INSERT ... SELECT FROM unnest(...) ON CONFLICT (sid) DO NOTHING in
autocommit (one round trip), then one RPUSH of the new sids. No sessions, no
customers, no ORM, no RQ job, no log line. Served under the same gunicorn
arguments as the gateway and the bare app, its rate is a ceiling for any
design of the webhook that stores before it answers, on this machine.
"""

from __future__ import annotations

import os
import threading

import psycopg
import redis
from flask import Flask, Response, request
from twilio.request_validator import RequestValidator

from gateway.db.group_commit import GroupCommit

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
TABLE = "bench_store_floor"
INSERT = (f"INSERT INTO {TABLE} (sid, sender, body) SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) "
          "ON CONFLICT (sid) DO NOTHING RETURNING sid")


def create_app() -> Flask:
    app = Flask(__name__)
    validator = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])
    url = os.environ["GATEWAY_PUBLIC_URL"].rstrip("/") + "/twilio/sms"
    database_url = os.environ["GATEWAY_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://", 1)
    queue = redis.Redis.from_url(os.environ["GATEWAY_REDIS_URL"])  # a thread-safe connection pool
    local = threading.local()  # a psycopg connection per gunicorn thread that stores a batch

    with psycopg.connect(database_url, autocommit=True) as connection:
        try:
            connection.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (sid text PRIMARY KEY, sender text, body text)")
        except psycopg.errors.UniqueViolation:
            pass  # the other gunicorn worker created it at the same moment

    def store(batch: list[tuple[str, str, str]]) -> list[bool]:
        """One statement (so one commit) and one push for the whole batch; True for each text stored."""
        if getattr(local, "connection", None) is None:
            local.connection = psycopg.connect(database_url, autocommit=True)
        sids, senders, bodies = (list(column) for column in zip(*batch))
        stored = {row[0] for row in local.connection.execute(INSERT, (sids, senders, bodies))}
        if stored:
            queue.rpush(TABLE, *stored)
        return [sid in stored for sid in sids]

    texts = GroupCommit(store, int(os.environ.get("GATEWAY_INBOUND_BATCH_MAX", "32")))

    @app.post("/twilio/sms")
    def inbound_sms() -> Response:
        form = request.form
        if not validator.validate(url, form, request.headers.get("X-Twilio-Signature", "")):
            return Response("invalid signature", status=403)
        texts.submit((form["MessageSid"], form["From"], form.get("Body", "")))
        return Response(EMPTY_TWIML, status=200, mimetype="text/xml")

    return app
