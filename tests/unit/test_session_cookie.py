"""gateway.web.session_cookie.SessionCookie: Flask's signed cookie sessions, the signer built once per key set."""

from __future__ import annotations

from flask import Flask, session

from gateway.web.session_cookie import SessionCookie


def app_with(secret: str) -> Flask:
    app = Flask(__name__)
    app.secret_key = secret
    app.session_interface = SessionCookie()

    @app.post("/in")
    def sign_in():
        session["who"] = "operator"
        return ""

    @app.get("/who")
    def who():
        return session.get("who", "nobody")

    return app


def test_a_session_survives_requests_and_the_signer_is_built_once():
    app = app_with("first-secret")
    client = app.test_client()
    client.post("/in")
    assert client.get("/who").text == "operator"
    assert client.get("/who").text == "operator"
    interface = app.session_interface
    assert interface.get_signing_serializer(app) is interface.get_signing_serializer(app)


def test_a_new_secret_key_refuses_old_cookies_and_a_fallback_accepts_them():
    app = app_with("first-secret")
    client = app.test_client()
    client.post("/in")
    app.secret_key = "second-secret"
    assert client.get("/who").text == "nobody"  # signed with a key no longer trusted
    app.config["SECRET_KEY_FALLBACKS"] = ["first-secret"]
    assert client.get("/who").text == "operator"


def test_no_secret_key_means_no_signer():
    app = app_with("x")
    app.secret_key = None
    assert app.session_interface.get_signing_serializer(app) is None
