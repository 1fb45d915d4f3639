"""CSRF protection for the console's forms: one random token per browser session, echoed in a hidden field.

A cross-site page can make the browser POST here with its cookie, but it
cannot read the token, so a POST without the session's token is refused.
"""

from __future__ import annotations

import hmac
import secrets

from flask import request, session

from gateway.errors import Forbidden

SESSION_KEY = "csrf"
FORM_FIELD = "csrf_token"


def token() -> str:
    """The session's token, created on first use (templates call this for every form)."""
    if not session.get(SESSION_KEY):
        session[SESSION_KEY] = secrets.token_urlsafe(32)
    return session[SESSION_KEY]


def renew() -> None:
    """A fresh token, e.g. at sign-in, so a token seen before signing in is worthless after."""
    session[SESSION_KEY] = secrets.token_urlsafe(32)


def check() -> None:
    expected = session.get(SESSION_KEY) or ""
    given = request.form.get(FORM_FIELD, "")
    # Compared as bytes: compare_digest refuses non-ASCII str, and a form may carry anything.
    if not expected or not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
        raise Forbidden("This form is out of date or was not sent from this console (CSRF check failed). "
                        "Reload the page and try again; the console needs cookies enabled.")
