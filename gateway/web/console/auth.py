"""Signing in to the console with an API key, and the check every other console request passes.

The session cookie (signed with the app's SECRET_KEY) holds the key's id and
when it signed in, never the key itself: the cookie is signed, not encrypted.
Each request loads the key by id, so revoking it (``gateway keys revoke``)
signs out every console session using it at their next click.
"""

from __future__ import annotations

from datetime import timedelta

from flask import flash, g, redirect, render_template, request, session, url_for

from gateway.db.models import ApiKey
from gateway.services.api_keys import authenticate
from gateway.web import runtime
from gateway.web.console import console, csrf, display

KEY_ID = "key_id"
SIGNED_IN_AT = "signed_in_at"
# A console sign-in lasts a working day; then the key is asked for again.
MAX_SIGN_IN_AGE = timedelta(hours=12)
OPEN_ENDPOINTS = {"console.sign_in"}


def signed_in_key() -> ApiKey | None:
    """The key this browser signed in with, if it still exists, is not revoked and the sign-in is recent."""
    key_id, signed_in_at = session.get(KEY_ID), session.get(SIGNED_IN_AT)
    if not isinstance(key_id, str) or not isinstance(signed_in_at, (int, float)):
        return None
    now = runtime().clock.now()
    if now.timestamp() - signed_in_at > MAX_SIGN_IN_AGE.total_seconds():
        return None
    with runtime().db.begin() as tx:
        key = tx.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        return None
    return key


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only back into the console, never to another site."""
    if target and target.startswith("/console") and "\\" not in target and target.isprintable():
        return target
    return url_for("console.sessions")


@console.before_request
def guard():
    if request.endpoint not in OPEN_ENDPOINTS:
        key = signed_in_key()
        if key is None:
            had_key = KEY_ID in session
            session.pop(KEY_ID, None)
            session.pop(SIGNED_IN_AT, None)
            if had_key:
                flash("Your sign-in ended (the key was revoked or the sign-in expired). Sign in again.", "error")
            back = request.full_path.rstrip("?") if request.method == "GET" else None
            # 303: a POST that lost its sign-in continues as a GET of the sign-in page.
            return redirect(url_for("console.sign_in", next=back), 303)
        g.console_key = key
    if request.method == "POST":
        csrf.check()


@console.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        if signed_in_key() is not None:
            return redirect(next_url)
        return render_template("console/sign_in.html", next_url=next_url, error=None)
    key = authenticate(runtime(), request.form.get("key", "").strip())
    if key is None:
        return render_template("console/sign_in.html", next_url=next_url,
                               error="That key is not valid, or it has been revoked."), 401
    # A new session from scratch: nothing from before signing in (a planted token) carries over.
    session.clear()
    session[KEY_ID] = key.id
    session[SIGNED_IN_AT] = runtime().clock.now().timestamp()
    csrf.renew()
    return redirect(next_url, 303)


@console.post("/sign-out")
def sign_out():
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("console.sign_in"), 303)


@console.get("/")
def index():
    return redirect(url_for("console.sessions"))


@console.context_processor
def _template_helpers():
    return {"csrf_token": csrf.token, "console_key": g.get("console_key"), **display.HELPERS}
