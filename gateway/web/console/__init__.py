"""The operator console under /console (SPEC section 8): server-rendered pages, signed in with an API key.

Each page module registers its routes on ``console`` when imported at the
bottom of this file. Every request but sign-in passes ``auth.guard`` (a valid,
unrevoked key in the signed session cookie) and every POST its CSRF check.
"""

from __future__ import annotations

from flask import Blueprint, render_template

from gateway.errors import GatewayError

console = Blueprint("console", __name__, url_prefix="/console")

# The pages show conversations and phone numbers: never cache them, never frame
# them (the end-session button must not be clickjacked), and allow only the
# console's own script and stylesheet, so injected markup could not run even
# if escaping ever failed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@console.record_once
def _cookie_defaults(state) -> None:
    # Lax keeps the session cookie off cross-site POSTs: a second line behind the CSRF token.
    if state.app.config.get("SESSION_COOKIE_SAMESITE") is None:
        state.app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    # Behind HTTPS (GATEWAY_PUBLIC_URL says so) the sign-in cookie never travels over plain HTTP.
    public_url = state.app.extensions["gateway"].settings.public_url or ""
    if public_url.startswith("https://"):
        state.app.config["SESSION_COOKIE_SECURE"] = True


@console.after_request
def _security_headers(response):
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@console.errorhandler(GatewayError)
def _error_page(error: GatewayError):
    return render_template("console/error.html", error=error), error.status


# The page modules register their routes on import.
from gateway.web.console import assistants, auth, numbers, sessions, simulator  # noqa: E402,F401
