"""The console's signed session cookie, with its signer built once instead of on every request."""

from __future__ import annotations

from flask.sessions import SecureCookieSessionInterface


class SessionCookie(SecureCookieSessionInterface):
    """Flask's own cookie sessions. Flask opens the session of every request, webhooks included,
    and builds a new serializer (key list, signer settings) each time to do it; the keys only change
    with the app's SECRET_KEY and SECRET_KEY_FALLBACKS, so one serializer per key set serves them all."""

    def __init__(self) -> None:
        self._serializers: dict = {}

    def get_signing_serializer(self, app):
        keys = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        serializer = self._serializers.get(keys)
        if serializer is None:
            serializer = self._serializers[keys] = super().get_signing_serializer(app)
        return serializer
