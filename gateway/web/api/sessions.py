"""/api/sessions (SPEC section 4, shapes of the CallHQ and Vapi session APIs)."""

from __future__ import annotations

from flask import jsonify, request

from gateway.schemas import DeleteMany, SessionCreate, SessionGetOrCreate, SessionQuery, SessionUpdate, parse, parse_query
from gateway.services import session_api
from gateway.services.session_queries import SessionFilter, get_session, list_sessions
from gateway.services.sessions import end_session
from gateway.web import runtime
from gateway.web.api import api, json_body
from gateway.views import session_view


def _view(session_id: str, with_messages: bool = False) -> dict:
    session, customer, messages = get_session(runtime(), session_id, with_messages=with_messages)
    return session_view(session, customer, messages)


@api.post("/sessions")
def create_session():
    session = session_api.create_session(runtime(), parse(SessionCreate, json_body()))
    return jsonify({"message": "Session created successfully", "session": _view(session.id)}), 201


@api.get("/sessions")
def list_all_sessions():
    query = parse_query(SessionQuery, request.args)
    filters = SessionFilter(
        search=query.search, status=query.status, assistant_id=query.assistantId,
        phone_number_id=query.phoneNumberId, customer_number=query.customerNumber,
    )
    rows, total = list_sessions(runtime(), filters, query.limit, query.offset)
    return jsonify({"sessions": [session_view(s, c) for s, c in rows], "totalCount": total})


@api.get("/sessions/<session_id>")
def get_one_session(session_id):
    return jsonify({"session": _view(session_id, with_messages=True)})


@api.patch("/sessions/<session_id>")
def update_session(session_id):
    session_api.update_session(runtime(), session_id, parse(SessionUpdate, json_body()))
    return jsonify({"session": _view(session_id)})


@api.delete("/sessions/<session_id>")
def delete_session(session_id):
    session_api.delete_session(runtime(), session_id)
    return jsonify({"session": {"id": session_id}})


@api.post("/sessions/delete-many")
def delete_many_sessions():
    deleted = session_api.delete_sessions(runtime(), parse(DeleteMany, json_body()).ids)
    return jsonify({"deleted": deleted})


@api.post("/sessions/get-or-create")
def get_or_create_session():
    session, created = session_api.get_or_create(runtime(), parse(SessionGetOrCreate, json_body()))
    return jsonify({"session": _view(session.id)}), 201 if created else 200


@api.post("/sessions/<session_id>/end")
def end_one_session(session_id):
    """Complete the session; ending a completed session is a no-op answered 200."""
    end_session(runtime(), session_id)
    return jsonify({"session": _view(session_id)})
