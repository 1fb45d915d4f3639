"""HTTP surfaces: Twilio webhooks, the REST API, health."""

from __future__ import annotations

from flask import current_app
from flask.testing import FlaskClient


def runtime():
    """The Runtime the app was built with."""
    return current_app.extensions["gateway"]


class ClosingTestClient(FlaskClient):
    """Flask's test client, made to close each response as a WSGI server does (PEP 3333), which runs what
    a view left for after its response (``gateway.web.twilio.after_response``). Flask's own leaves a
    response open unless asked to buffer it; no view here streams."""

    def open(self, *args, buffered: bool = True, **kwargs):
        return super().open(*args, buffered=buffered, **kwargs)
