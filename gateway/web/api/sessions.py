"""/api/sessions (SPEC section 4, shapes of the CallHQ and Vapi session APIs)."""

from __future__ import annotations

from flask import jsonify

from gateway.api_models import (
    DeletedCount, SessionCreated, SessionDeleted, SessionEnvelope, SessionList, SessionWithMessagesEnvelope,
)
from gateway.schemas import DeleteMany, SessionCreate, SessionGetOrCreate, SessionQuery, SessionUpdate
from gateway.services import session_api
from gateway.services.session_queries import SessionFilter, get_session, list_sessions
from gateway.services.sessions import end_session
from gateway.views import session_view
from gateway.web import runtime
from gateway.web.api import api
from gateway.web.api.operations import operation

TAG = "Sessions"


def _view(session_id: str, with_messages: bool = False) -> dict:
    session, customer, messages = get_session(runtime(), session_id, with_messages=with_messages)
    return session_view(session, customer, messages)


@api.post("/sessions")
@operation(TAG, "Create a session", body=SessionCreate, response=SessionCreated, status=201,
           description="The assistant's firstMessage, if set, becomes the session's first assistant message.")
def create_session(body: SessionCreate):
    session = session_api.create_session(runtime(), body)
    return jsonify({"message": "Session created successfully", "session": _view(session.id)}), 201


@api.get("/sessions")
@operation(TAG, "List sessions", query=SessionQuery, response=SessionList,
           description="Newest first. `search` matches session names and message content; "
                       "`totalCount` counts every match, not just this page.")
def list_all_sessions(query: SessionQuery):
    filters = SessionFilter(
        search=query.search, status=query.status, assistant_id=query.assistantId,
        phone_number_id=query.phoneNumberId, customer_number=query.customerNumber,
    )
    rows, total = list_sessions(runtime(), filters, query.limit, query.offset)
    return jsonify({"sessions": [session_view(s, c) for s, c in rows], "totalCount": total})


@api.get("/sessions/<session_id>")
@operation(TAG, "Get a session with its messages", response=SessionWithMessagesEnvelope)
def get_one_session(session_id):
    return jsonify({"session": _view(session_id, with_messages=True)})


@api.patch("/sessions/<session_id>")
@operation(TAG, "Update a session", body=SessionUpdate, response=SessionEnvelope, errors=(409,),
           description="A completed session cannot be set back to active (409).")
def update_session(session_id, body: SessionUpdate):
    session_api.update_session(runtime(), session_id, body)
    return jsonify({"session": _view(session_id)})


@api.delete("/sessions/<session_id>")
@operation(TAG, "Delete a session with its messages and chats", response=SessionDeleted)
def delete_session(session_id):
    session_api.delete_session(runtime(), session_id)
    return jsonify({"session": {"id": session_id}})


@api.post("/sessions/delete-many")
@operation(TAG, "Delete several sessions", body=DeleteMany, response=DeletedCount,
           description="Unknown ids are skipped; `deleted` counts the sessions that existed.")
def delete_many_sessions(body: DeleteMany):
    return jsonify({"deleted": session_api.delete_sessions(runtime(), body.ids)})


@api.post("/sessions/get-or-create")
@operation(TAG, "Get a customer's active session, or create it", body=SessionGetOrCreate,
           response=SessionEnvelope, status=201, errors=(200,),
           description="200 with the active session of that customer with that assistant (that number's SMS "
                       "session when phoneNumberId is given), 201 when it had to be created.")
def get_or_create_session(body: SessionGetOrCreate):
    session, created = session_api.get_or_create(runtime(), body)
    return jsonify({"session": _view(session.id)}), 201 if created else 200


@api.post("/sessions/<session_id>/end")
@operation(TAG, "End a session", response=SessionEnvelope,
           description="Completes the session; ending a completed session is a no-op answered 200.")
def end_one_session(session_id):
    end_session(runtime(), session_id)
    return jsonify({"session": _view(session_id)})
