"""``gateway serve``: the web app on a threaded WSGI server, for the embedded default and small set-ups.

Production runs the same app under gunicorn (see Procfile).
"""

from __future__ import annotations

import logging

from werkzeug.serving import make_server

from gateway import create_app
from gateway.config import Settings
from gateway.heap import freeze_startup_objects

log = logging.getLogger("gateway.server")


def describe_mode(settings: Settings) -> str:
    database = "SQLite in " + str(settings.instance_path) if settings.embedded_database else "external database"
    queue = "RQ on Redis" if settings.redis_url else "in-process queue"
    sender = "Twilio" if settings.uses_twilio else "sandbox sender (nothing leaves this machine)"
    return f"{database}; {queue}; {sender}"


def serve_forever(settings: Settings, host: str, port: int) -> None:
    app = create_app(settings)
    server = make_server(host, port, app, threaded=True)
    freeze_startup_objects()
    log.info("event=server.started url=http://%s:%d public_url=%s", host, server.port, settings.public_url)
    print(f"gateway listening on http://{host}:{server.port} ({describe_mode(settings)})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.extensions["gateway"].close()
