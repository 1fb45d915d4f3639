"""Sessions: a searchable, filterable list and one session's transcript, both refreshed live by
console.js from their fragment routes; and ending a session."""

from __future__ import annotations

from dataclasses import dataclass

from flask import flash, redirect, render_template, request, url_for

from gateway.services.session_queries import SessionFilter, get_session, list_sessions
from gateway.services.sessions import end_session
from gateway.web import runtime
from gateway.web.console import console
from gateway.web.console.reads import session_context, session_rows

PAGE_SIZE = 25
STATUSES = ("active", "completed")
MAX_SEARCH = 200  # the API's limit on `search`


@dataclass(frozen=True)
class ListQuery:
    search: str
    status: str
    page: int

    @classmethod
    def from_args(cls, args) -> "ListQuery":
        status = args.get("status", "")
        try:
            page = max(1, min(int(args.get("page", 1)), 1_000_000))
        except ValueError:
            page = 1
        # A bad filter in a URL shows everything rather than an error page.
        return cls(args.get("search", "").strip()[:MAX_SEARCH], status if status in STATUSES else "", page)

    def args(self, **changes) -> dict:
        """Query parameters for a link to this list, with ``changes``; empty ones left out."""
        values = {"search": self.search, "status": self.status, "page": self.page, **changes}
        return {name: value for name, value in values.items() if value not in ("", None, 1)}


def _table_context(query: ListQuery) -> dict:
    filters = SessionFilter(search=query.search or None, status=query.status or None)
    pairs, total = list_sessions(runtime(), filters, PAGE_SIZE, (query.page - 1) * PAGE_SIZE)
    pages = max(1, -(-total // PAGE_SIZE))
    skipped = (query.page - 1) * PAGE_SIZE
    return {"rows": session_rows(runtime(), pairs), "total": total, "query": query, "pages": pages,
            "first": skipped + 1 if pairs else 0, "last": skipped + len(pairs)}


@console.get("/sessions")
def sessions():
    query = ListQuery.from_args(request.args)
    return render_template("console/sessions.html", statuses=STATUSES, **_table_context(query))


@console.get("/sessions/rows")
def session_table():
    """The table alone, for console.js to swap in every couple of seconds."""
    return render_template("console/_sessions_table.html", **_table_context(ListQuery.from_args(request.args)))


def transcript_context(session_id: str) -> dict:
    session, customer, messages = get_session(runtime(), session_id)
    number, assistant_name = session_context(runtime(), session)
    return {"session": session, "customer": customer, "messages": messages, "number": number,
            "assistant_name": assistant_name}


@console.get("/sessions/<session_id>")
def session_page(session_id):
    return render_template("console/session.html", **transcript_context(session_id))


@console.get("/sessions/<session_id>/transcript")
def transcript(session_id):
    """The session's state and messages alone, for console.js to swap in."""
    return render_template("console/_transcript.html", **transcript_context(session_id))


@console.post("/sessions/<session_id>/end")
def end(session_id):
    _, changed = end_session(runtime(), session_id)
    flash("Session ended." if changed else "The session had already ended.", "info")
    back = request.form.get("back")
    # Only the two pages that offer the button are places to go back to.
    if back == "simulator":
        return redirect(url_for("console.simulator", session=session_id), 303)
    return redirect(url_for("console.session_page", session_id=session_id), 303)
