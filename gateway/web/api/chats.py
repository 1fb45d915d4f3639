"""/api/chats and /api/messages (SPEC section 4)."""

from __future__ import annotations

from flask import jsonify, request

from gateway.schemas import ChatCreate, ChatQuery, MessageQuery, parse, parse_query
from gateway.services import chats
from gateway.services.session_queries import get_session
from gateway.web import runtime
from gateway.web.api import api, json_body
from gateway.views import chat_view, message_view, session_view


@api.post("/chats")
def create_chat():
    chat = chats.create_chat(runtime(), parse(ChatCreate, json_body()))
    return jsonify({"message": "Chat created successfully", "chat": chat_view(chat)}), 201


@api.get("/chats/session/<session_id>")
def chat_history(session_id):
    session, customer, messages = get_session(runtime(), session_id)
    return jsonify({"session": session_view(session, customer, messages)})


@api.get("/chats")
def list_chats():
    query = parse_query(ChatQuery, request.args)
    rows, total = chats.list_chats(runtime(), query.sessionId, query.limit, query.offset)
    return jsonify({"chats": [chat_view(c) for c in rows], "totalCount": total})


@api.delete("/chats/<chat_id>")
def delete_chat(chat_id):
    chats.delete_chat(runtime(), chat_id)
    return jsonify({"chat": {"id": chat_id}})


@api.get("/messages")
def list_messages():
    query = parse_query(MessageQuery, request.args)
    rows, total = chats.list_messages(runtime(), query.sessionId, query.status, query.limit, query.offset)
    return jsonify({"messages": [message_view(m) for m in rows], "totalCount": total})
