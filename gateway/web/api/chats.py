"""/api/chats and /api/messages (SPEC section 4)."""

from __future__ import annotations

from flask import jsonify

from gateway.api_models import ChatCreated, ChatDeleted, ChatList, MessageList, SessionWithMessagesEnvelope
from gateway.schemas import ChatCreate, ChatQuery, MessageQuery
from gateway.services import chats
from gateway.services.session_queries import get_session
from gateway.views import chat_view, message_view, session_view
from gateway.web import runtime
from gateway.web.api import api
from gateway.web.api.operations import operation


@api.post("/chats")
@operation("Chats", "Send a message and get the assistant's reply", body=ChatCreate, response=ChatCreated,
           status=201, errors=(409, 502),
           description="The engine is called synchronously; `chat.output[0].content` holds the reply. Give "
                       "`sessionId` to continue a session (409 if it is completed or expired: create a new one), "
                       "or `assistantId` to start a new session. 502 when the engine failed and the assistant "
                       "has no fallbackMessage.")
def create_chat(body: ChatCreate):
    return jsonify({"message": "Chat created successfully", "chat": chat_view(chats.create_chat(runtime(), body))}), 201


@api.get("/chats/session/<session_id>")
@operation("Chats", "A session's history", response=SessionWithMessagesEnvelope)
def chat_history(session_id):
    session, customer, messages = get_session(runtime(), session_id)
    return jsonify({"session": session_view(session, customer, messages)})


@api.get("/chats")
@operation("Chats", "List chats", query=ChatQuery, response=ChatList)
def list_chats(query: ChatQuery):
    rows, total = chats.list_chats(runtime(), query.sessionId, query.limit, query.offset)
    return jsonify({"chats": [chat_view(c) for c in rows], "totalCount": total})


@api.delete("/chats/<chat_id>")
@operation("Chats", "Delete a chat", response=ChatDeleted,
           description="The chat record goes; the session's messages stay.")
def delete_chat(chat_id):
    chats.delete_chat(runtime(), chat_id)
    return jsonify({"chat": {"id": chat_id}})


@api.get("/messages")
@operation("Messages", "List messages", query=MessageQuery, response=MessageList,
           description="Newest first.")
def list_messages(query: MessageQuery):
    rows, total = chats.list_messages(runtime(), query.sessionId, query.status, query.limit, query.offset)
    return jsonify({"messages": [message_view(m) for m in rows], "totalCount": total})
