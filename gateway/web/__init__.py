"""HTTP surfaces: Twilio webhooks, the REST API, health."""

from __future__ import annotations

from flask import current_app


def runtime():
    """The Runtime the app was built with."""
    return current_app.extensions["gateway"]
