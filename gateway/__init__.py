"""SMS session gateway: puts a chat assistant behind a phone number."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.config import Settings

# Every `gateway.*` import runs this module: Flask is imported only when an app is built, so the
# CLI, workers and tests that never serve do not pay for it.
if TYPE_CHECKING:
    from flask import Flask


def create_app(settings: Settings | None = None, runtime=None) -> Flask:
    """Build the web app. Nothing connects before this is called.

    ``runtime`` lets tests and the CLI share one set of parts (database,
    queue, sender) with the app; by default one is built from ``settings``.
    """
    from flask import Flask

    from gateway.bootstrap import build_runtime
    from gateway.heap import freeze_startup_objects, under_gunicorn
    from gateway.logs import configure_logging
    from gateway.web import ClosingTestClient, errors, health, twilio
    from gateway.web.session_cookie import SessionCookie
    from gateway.web.api import api
    from gateway.web.console import console

    settings = settings or (runtime.settings if runtime else Settings.from_env())
    configure_logging(settings.log_level)
    runtime = runtime or build_runtime(settings)

    app = Flask(__name__, instance_path=str(settings.instance_path), template_folder="web/templates",
                static_folder="web/static")
    app.config.update(MAX_CONTENT_LENGTH=settings.max_request_bytes, SECRET_KEY=runtime.secret_key)
    app.extensions["gateway"] = runtime
    app.session_interface = SessionCookie()
    app.test_client_class = ClosingTestClient
    app.register_blueprint(twilio.blueprint)
    app.register_blueprint(api)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(console)
    errors.register(app)
    # Only in a process that serves this one app from now on: tests and CLI commands build many
    # apps in one process, and frozen objects are never collected.
    if under_gunicorn():
        freeze_startup_objects()
    return app
